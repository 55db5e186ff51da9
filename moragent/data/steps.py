"""Building role steps from what a source holds, marking what it lacks.

A source rarely has all three roles. ``TurnBuilder`` takes what one user turn has
(thoughts, calls, tool results, the answer) in order and lays out the full role
sequence: a reasoner step before every executor step and before the summarizer, an
observation after every executor step, and a summarizer step at the end. A part the
source lacks is left as an empty string (a thought, a result's content, the answer):
``moragent data complete`` fills exactly those.
"""

from __future__ import annotations

import json
from typing import Any

from moragent.roles import Role
from moragent.trajectory import (
    ExecutorStep,
    ObservationStep,
    ReasonerStep,
    Step,
    SummarizerStep,
    ToolCall,
    ToolResult,
)

#: the value that marks a part the source lacks
MISSING = ""


class TurnBuilder:
    """Collects one user turn's parts in source order and returns its role steps."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self._thought: str | None = None

    def thought(self, text: str) -> None:
        """A reasoning text for the next action (joined to one already pending)."""
        text = text.strip()
        if text:
            self._thought = f"{self._thought} {text}" if self._thought else text

    def calls(self, calls: list[ToolCall]) -> None:
        """The executor's calls; a reasoner step (next: executor) goes before them."""
        self._close_calls()
        self.steps.append(ReasonerStep(self._take_thought(), Role.EXECUTOR))
        self.steps.append(ExecutorStep(calls))

    def results(self, results: list[ToolResult]) -> None:
        """Tool results; they join the observation of the latest executor step."""
        last = self.steps[-1] if self.steps else None
        if isinstance(last, ObservationStep):
            last.results.extend(results)
        elif isinstance(last, ExecutorStep):
            self.steps.append(ObservationStep(list(results)))
        else:
            raise ValueError("a tool result comes before any call")

    def answer(self, text: str) -> None:
        """The final answer; a reasoner step (next: summarizer) goes before it."""
        self._close_calls()
        self.steps.append(ReasonerStep(self._take_thought(), Role.SUMMARIZER))
        self.steps.append(SummarizerStep(text.strip()))

    def finish(self) -> list[Step]:
        """The steps of the turn, with a missing observation or answer marked as missing."""
        if not self.steps or not isinstance(self.steps[-1], SummarizerStep):
            self.answer(MISSING)
        return self.steps

    @property
    def has_answer(self) -> bool:
        return bool(self.steps) and isinstance(self.steps[-1], SummarizerStep)

    def _take_thought(self) -> str:
        thought, self._thought = self._thought or MISSING, None
        return thought

    def _close_calls(self) -> None:
        """Give the latest executor step an observation (results to be completed) if it has none."""
        last = self.steps[-1] if self.steps else None
        if isinstance(last, ExecutorStep):
            self.steps.append(
                ObservationStep([ToolResult(call.name, MISSING) for call in last.calls])
            )


def parse_arguments(value: Any) -> dict[str, Any] | str:
    """Call arguments as a dict; a JSON string is decoded, an undecodable one is kept as is.

    A kept string breaks the trajectory schema on purpose: ``verify`` rejects it with
    the reason ``arguments-unparsable`` instead of the converter guessing.
    """
    if isinstance(value, dict):
        return value
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(decoded, dict):
            return decoded
    return value if isinstance(value, str) else json.dumps(value)


def result_from_content(name: str, content: Any) -> ToolResult:
    """A tool result; content that is JSON ``{"error": ...}`` alone is marked as an error."""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    error = False
    if text.startswith("{") and '"error"' in text:
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            decoded = None
        error = isinstance(decoded, dict) and set(decoded) == {"error"}
    return ToolResult(name, text, error)
