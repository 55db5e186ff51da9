"""The role-segmented transcript: Jinja2 templates rendered into role segments.

One episode is one token sequence cut into segments, each processed under one role
(DESIGN.md section 2):

====================================  =================
segment                               processed under
====================================  =================
system text, tool catalogue, query    reasoner
reasoner turn (header, thought, next) reasoner
executor turn (header, call JSON)     executor
observation (tool results)            reasoner
summarizer turn (header, answer)      summarizer
====================================  =================

The controller feeds these segments one by one at inference, and training renders the
same segments from a stored trajectory, so both see the same per-token role ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2

from moragent.roles import Role
from moragent.trajectory import (
    ExecutorStep,
    ObservationStep,
    ReasonerStep,
    SummarizerStep,
    ToolCall,
    ToolResult,
    Trajectory,
)

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_VERSION = (TEMPLATE_DIR / "VERSION").read_text().strip()

DEFAULT_SYSTEM = (
    "You are a helpful assistant. Solve the user's task step by step, calling the tools "
    "below when they help, and answer briefly."
)

BUDGET_NOTE = (
    "The step budget is used up: answer with what the results show, or say what is still missing."
)


@dataclass(frozen=True)
class Segment:
    """A piece of the transcript processed under one role.

    ``trainable`` marks text the role generates (its body and end marker): the only
    tokens that carry a training loss.
    """

    role: Role
    text: str
    trainable: bool = False


def calls_json(calls: list[ToolCall], as_list: bool | None = None) -> str:
    """The executor's output for ``calls``: one object, or a list when there are several."""
    items = [call.to_dict() for call in calls]
    if as_list is None:
        as_list = len(items) > 1
    return json.dumps(items if as_list else items[0], ensure_ascii=False)


class Prompts:
    """Renders the frame and role templates of one template directory."""

    def __init__(self, template_dir: Path | str = TEMPLATE_DIR) -> None:
        self.template_dir = Path(template_dir)
        self.version = (self.template_dir / "VERSION").read_text().strip()
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.template_dir),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,
        )

    @cached_property
    def _frame(self) -> Any:
        return self._env.get_template("frame.j2").module

    @cached_property
    def _roles(self) -> dict[Role, Any]:
        return {role: self._env.get_template(f"{role.value}.j2").module for role in Role}

    @property
    def end(self) -> str:
        """The marker that closes a role's turn; the role generates it."""
        return str(self._frame.end)

    def frame(
        self,
        tools: list[dict[str, Any]],
        query: str,
        system: str | None = None,
        history: list[dict[str, str]] | None = None,
    ) -> str:
        """The opening segment: system text, tool catalogue, earlier turns and the query."""
        return str(self._frame.frame(system or DEFAULT_SYSTEM, tools, history or [], query))

    def user(self, query: str) -> str:
        """A later user turn of a conversation (after an answer)."""
        return str(self._frame.user(query))

    def observation(self, results: list[ToolResult]) -> str:
        return str(self._frame.observation(results))

    def header(self, role: Role, note: str | None = None) -> str:
        """The fed opening of a role's turn: the role's own instruction."""
        if role is Role.SUMMARIZER:
            return str(self._roles[role].header(note or ""))
        return str(self._roles[role].header())

    def reasoner_body(self, thought: str, next_role: Role) -> str:
        return str(self._roles[Role.REASONER].body(thought, next_role.value))

    def executor_body(self, calls: list[ToolCall]) -> str:
        return str(self._roles[Role.EXECUTOR].body(calls_json(calls)))

    def summarizer_body(self, answer: str) -> str:
        return str(self._roles[Role.SUMMARIZER].body(answer))

    def segments(self, trajectory: Trajectory) -> list[Segment]:
        """The transcript of a stored trajectory, segment by segment, as the controller feeds it."""
        segments = [
            Segment(
                Role.REASONER,
                self.frame(
                    trajectory.tools, trajectory.query, trajectory.system, trajectory.history
                ),
            )
        ]
        for step in trajectory.steps:
            if isinstance(step, ObservationStep):
                segments.append(Segment(Role.REASONER, self.observation(step.results)))
                continue
            if isinstance(step, ReasonerStep):
                role, body = Role.REASONER, self.reasoner_body(step.thought, step.next)
            elif isinstance(step, ExecutorStep):
                role, body = Role.EXECUTOR, self.executor_body(step.calls)
            elif isinstance(step, SummarizerStep):
                role, body = Role.SUMMARIZER, self.summarizer_body(step.answer)
            else:  # pragma: no cover - Step is a closed union
                raise TypeError(f"unknown step {step!r}")
            segments.append(Segment(role, self.header(role, _note_for(trajectory, step))))
            segments.append(Segment(role, body + self.end, trainable=True))
        return segments

    def render(self, trajectory: Trajectory) -> str:
        """The whole transcript as one string."""
        return "".join(segment.text for segment in self.segments(trajectory))


def _note_for(trajectory: Trajectory, step: object) -> str | None:
    """The summarizer's note when the episode ran out of steps (kept in ``meta``)."""
    if isinstance(step, SummarizerStep) and trajectory.meta.get("budget_exhausted"):
        return BUDGET_NOTE
    return None


DEFAULT_PROMPTS = Prompts()
