"""A scripted backend: replies come from a list or a function, not a model.

For tests and examples: the controller, the CLI and the data pipeline run on it with no
model file. It records every segment fed, so a test can check roles and order. It
does not enforce output constraints, which makes it the way to feed the controller
garbage on purpose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from moragent.backends.base import BackendError, CacheStats, Constraint, Generation, TokenCallback
from moragent.roles import Role

Reply = str | Callable[[Role, str, Constraint | None], str]


class ScriptedBackend:
    """Answers each ``generate`` with the next scripted reply.

    Args:
        replies: strings, or functions ``(role, transcript_so_far, constraint) -> str``.
            A reply longer than ``max_tokens`` whitespace-separated pieces is cut there.
        repeat_last: keep answering with the last reply when the script runs out
            (otherwise running out raises ``BackendError``).
    """

    name = "scripted"

    def __init__(self, replies: Iterable[Reply], *, repeat_last: bool = False) -> None:
        self.replies = list(replies)
        self.repeat_last = repeat_last
        self.segments: list[tuple[Role, str]] = []
        self.calls: list[tuple[Role, Constraint | None]] = []
        self._next = 0
        self._stats = CacheStats()

    @property
    def transcript(self) -> str:
        return "".join(text for _, text in self.segments)

    def reset(self) -> None:
        self.segments.clear()
        self._stats = CacheStats()

    def feed(self, role: Role, text: str) -> int:
        if text:
            self.segments.append((role, text))
        n = self.count_tokens(text)
        self._stats.evaluated += n
        return n

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
        n_prompt = self.feed(role, prompt)
        reply = self._take()
        text = reply(role, self.transcript, constraint) if callable(reply) else reply
        finish = "stop"
        pieces = text.split(" ")
        if len(pieces) > max_tokens:
            text, finish = " ".join(pieces[:max_tokens]), "length"
        for s in stop:
            if s and s in text:
                text, finish = text[: text.index(s)], "stop"
        self.calls.append((role, constraint))
        if text:
            self.segments.append((role, text))
            if on_token:
                for i, piece in enumerate(text.split(" ")):
                    on_token(piece if i == 0 else " " + piece)
        n_out = self.count_tokens(text)
        self._stats.generated += n_out
        return Generation(text, n_prompt, n_out, finish)

    def _take(self) -> Reply:
        if self._next < len(self.replies):
            reply = self.replies[self._next]
            self._next += 1
            return reply
        if self.repeat_last and self.replies:
            return self.replies[-1]
        raise BackendError(f"the script ran out after {len(self.replies)} replies")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    @property
    def stats(self) -> CacheStats:
        return self._stats

    def close(self) -> None:
        """Nothing to free: there is no model."""
