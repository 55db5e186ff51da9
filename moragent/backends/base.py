"""The backend protocol: one session of a model, fed and sampled role by role.

A backend holds one growing token sequence (the transcript) and its KV cache. The
controller appends text under a role (``feed``) and asks the model to continue under a
role (``generate``). Every token is evaluated under the role it was fed or generated
under, and never again: a role switch changes which adapters apply to new tokens only,
so the cache of earlier segments stays valid (DESIGN.md section 2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from moragent.roles import Role


@dataclass(frozen=True)
class Constraint:
    """What the generated text must look like.

    Exactly one of the fields is set. ``json_schema``: the output is one JSON value valid
    under the schema. ``reasoner``: the output is ``Thought: <one line>`` then
    ``Next: <role>`` with one of the given roles (see ``moragent.grammar``).
    """

    json_schema: dict[str, Any] | None = None
    next_roles: tuple[str, ...] | None = None
    max_thought_chars: int = 400


@dataclass
class Generation:
    """The result of one ``generate`` call."""

    text: str
    #: tokens of the prompt text evaluated by this call
    prompt_tokens: int
    #: tokens sampled by this call
    completion_tokens: int
    #: "stop" (end of turn or stop string) or "length" (max_tokens reached)
    finish_reason: str
    #: seconds spent in the model (prompt evaluation plus sampling)
    model_seconds: float = 0.0


@dataclass
class CacheStats:
    """Counts over one session, since the last ``reset``.

    ``reevaluated`` counts tokens evaluated at a position whose content had already been
    evaluated once in this session: the figure the segment rules keep at zero.
    """

    evaluated: int = 0
    reevaluated: int = 0
    generated: int = 0
    role_switches: int = 0
    model_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


TokenCallback = Callable[[str], None]


@runtime_checkable
class Backend(Protocol):
    """A model session that runs each segment of the transcript under its role."""

    #: a short name for messages and the CLI ("llamacpp", "torch", "openai")
    name: str

    def reset(self) -> None:
        """Start a new session: empty transcript, empty cache, counters at zero."""

    def feed(self, role: Role, text: str) -> int:
        """Append ``text`` under ``role`` and evaluate it. Returns the tokens evaluated."""

    def generate(
        self,
        role: Role,
        prompt: str,
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        constraint: Constraint | None = None,
        on_token: TokenCallback | None = None,
        temperature: float = 0.0,
    ) -> Generation:
        """Append ``prompt`` under ``role``, then generate under ``role``.

        Generation ends at the model's end-of-turn token, at a stop string (not part of
        the returned text nor of the cache), or after ``max_tokens``. The end-of-turn
        token itself is not kept: the caller feeds the turn's end marker, so the
        transcript text and the cache always agree. ``on_token`` receives each piece of
        text as it is generated.
        """

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is for this model."""

    @property
    def stats(self) -> CacheStats:
        """Counters of the current session."""

    def close(self) -> None:
        """Free the model."""


def find_stop(text: str, stop: Sequence[str], searched: int) -> int | None:
    """Index in ``text`` where the first stop string begins, looking at new text only.

    ``searched`` is how much of ``text`` was already looked at; a stop string may begin
    inside that part and end in the new part.
    """
    best = None
    for s in stop:
        if not s:
            continue
        index = text.find(s, max(0, searched - len(s) + 1))
        if index >= 0 and (best is None or index < best):
            best = index
    return best


class BackendError(RuntimeError):
    """A backend could not do what was asked; the message says what and how to fix it."""
