"""Trajectories: one episode of an agent, as role steps, serialisable to JSON.

The same structure is what ``Agent.run`` returns, what the data pipeline writes and
what training reads. Its JSON form (one object per line in a ``.jsonl`` file)::

    {"query": "...", "tools": [{"name": ..., "description": ..., "parameters": {...}}],
     "system": null, "history": [],
     "steps": [
        {"role": "reasoner", "thought": "...", "next": "executor"},
        {"role": "executor", "calls": [{"name": "f", "arguments": {"x": 1}}]},
        {"role": "observation", "results": [{"name": "f", "content": "2"}]},
        {"role": "reasoner", "thought": "...", "next": "summarizer"},
        {"role": "summarizer", "answer": "..."}]}

A step may carry ``"synthetic": true`` when its content was filled in by a rule or a
teacher model rather than taken from the source data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from moragent.roles import Role, parse_role


@dataclass
class ToolCall:
    """One function call: the tool's name and its JSON arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


@dataclass
class ToolResult:
    """What one call returned (``content``), or why it failed (``error`` is True)."""

    name: str
    content: str
    error: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "content": self.content}
        if self.error:
            data["error"] = True
        return data


@dataclass
class ReasonerStep:
    thought: str
    next: Role
    synthetic: bool = False
    role: str = field(default="reasoner", init=False)


@dataclass
class ExecutorStep:
    calls: list[ToolCall]
    synthetic: bool = False
    role: str = field(default="executor", init=False)


@dataclass
class ObservationStep:
    results: list[ToolResult]
    synthetic: bool = False
    role: str = field(default="observation", init=False)


@dataclass
class SummarizerStep:
    answer: str
    synthetic: bool = False
    role: str = field(default="summarizer", init=False)


Step = ReasonerStep | ExecutorStep | ObservationStep | SummarizerStep
STEP_KINDS: tuple[str, ...] = ("reasoner", "executor", "observation", "summarizer")


def step_to_dict(step: Step) -> dict[str, Any]:
    """The JSON form of one step."""
    data: dict[str, Any] = {"role": step.role}
    if isinstance(step, ReasonerStep):
        data.update(thought=step.thought, next=step.next.value)
    elif isinstance(step, ExecutorStep):
        data["calls"] = [call.to_dict() for call in step.calls]
    elif isinstance(step, ObservationStep):
        data["results"] = [result.to_dict() for result in step.results]
    else:
        data["answer"] = step.answer
    if step.synthetic:
        data["synthetic"] = True
    return data


def step_from_dict(data: dict[str, Any]) -> Step:
    """Parse one step; raises ``ValueError`` naming the field that is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"a step must be an object, got {type(data).__name__}")
    kind = data.get("role")
    synthetic = bool(data.get("synthetic", False))
    if kind == "reasoner":
        return ReasonerStep(
            thought=_str(data, "thought"), next=parse_role(_str(data, "next")), synthetic=synthetic
        )
    if kind == "executor":
        calls = data.get("calls")
        if not isinstance(calls, list) or not calls:
            raise ValueError("executor step: 'calls' must be a non-empty list")
        parsed = []
        for i, call in enumerate(calls):
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise ValueError(f"executor step: calls[{i}] needs a string 'name'")
            arguments = call.get("arguments", {})
            if not isinstance(arguments, dict):
                raise ValueError(f"executor step: calls[{i}].arguments must be an object")
            parsed.append(ToolCall(call["name"], arguments))
        return ExecutorStep(parsed, synthetic=synthetic)
    if kind == "observation":
        results = data.get("results")
        if not isinstance(results, list):
            raise ValueError("observation step: 'results' must be a list")
        return ObservationStep(
            [
                ToolResult(_str(r, "name"), _str(r, "content"), bool(r.get("error", False)))
                for r in results
            ],
            synthetic=synthetic,
        )
    if kind == "summarizer":
        return SummarizerStep(_str(data, "answer"), synthetic=synthetic)
    raise ValueError(f"unknown step role {kind!r}: expected one of {', '.join(STEP_KINDS)}")


def _str(data: Any, key: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


@dataclass
class Trajectory:
    """One episode: the query, the candidate tools' schemas, and the role steps."""

    query: str
    tools: list[dict[str, Any]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    system: str | None = None
    #: earlier turns of the same conversation, as {"query": ..., "answer": ...}
    history: list[dict[str, str]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str | None:
        """The summarizer's answer, or None if the episode has none."""
        for step in reversed(self.steps):
            if isinstance(step, SummarizerStep):
                return step.answer
        return None

    @property
    def calls(self) -> list[ToolCall]:
        """Every call the executor made, in order."""
        return [
            call for step in self.steps if isinstance(step, ExecutorStep) for call in step.calls
        ]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "query": self.query,
            "tools": self.tools,
            "system": self.system,
            "history": self.history,
            "steps": [step_to_dict(step) for step in self.steps],
        }
        if self.meta:
            data["meta"] = self.meta
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        """Parse a trajectory; raises ``ValueError`` naming the step and field that is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"a trajectory must be a JSON object, got {type(data).__name__}")
        query = data.get("query")
        if not isinstance(query, str):
            raise ValueError("field 'query' must be a string")
        tools = data.get("tools", [])
        if not isinstance(tools, list):
            raise ValueError("field 'tools' must be a list of tool schemas")
        steps = []
        for i, raw in enumerate(data.get("steps", [])):
            try:
                steps.append(step_from_dict(raw))
            except ValueError as exc:
                raise ValueError(f"steps[{i}]: {exc}") from None
        return cls(
            query=query,
            tools=tools,
            steps=steps,
            system=data.get("system"),
            history=list(data.get("history", [])),
            meta=dict(data.get("meta", {})),
        )
