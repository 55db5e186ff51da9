"""Typed events of an agent episode, in the order they happen.

The library emits these and never prints; the CLI renders them, and an application can
render them its own way (``Agent.stream``).
"""

from __future__ import annotations

from dataclasses import dataclass

from moragent.roles import Role
from moragent.trajectory import ToolCall, ToolResult, Trajectory


@dataclass(frozen=True)
class RoleStarted:
    """A role's turn begins."""

    role: Role


@dataclass(frozen=True)
class TokenEvent:
    """A piece of text the model generated under ``role``."""

    role: Role
    text: str


@dataclass(frozen=True)
class ThoughtEvent:
    """The reasoner's finished turn: its thought and the role it hands over to."""

    thought: str
    next: Role


@dataclass(frozen=True)
class ToolCallEvent:
    """The executor asked for this call; it runs next."""

    call: ToolCall


@dataclass(frozen=True)
class ObservationEvent:
    """What a call returned (or why it failed), as the reasoner will read it."""

    result: ToolResult


@dataclass(frozen=True)
class AnswerEvent:
    """The summarizer's final answer; ``trajectory`` is the whole episode."""

    text: str
    trajectory: Trajectory


@dataclass(frozen=True)
class ErrorEvent:
    """Something went wrong. ``fatal`` ends the episode (then ``trajectory`` holds what ran);
    otherwise the agent goes on."""

    message: str
    where: str
    fatal: bool = False
    trajectory: Trajectory | None = None


Event = (
    RoleStarted
    | TokenEvent
    | ThoughtEvent
    | ToolCallEvent
    | ObservationEvent
    | AnswerEvent
    | ErrorEvent
)
