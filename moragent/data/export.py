"""Trajectories back to OpenAI chat records (the inverse of the ``openai`` converter).

Everything the OpenAI form can hold comes back: the system text, earlier turns, the
query, each thought (as the assistant content that carries the calls), the calls, the
tool results and the answer. What has no place in that form is implied by the message
order (a reasoner's ``next``) or dropped: the thought before the answer (the OpenAI form
reads assistant text at the end of a turn as the answer), a result's ``error`` flag,
``synthetic`` marks and ``meta``.
"""

from __future__ import annotations

import json
from typing import Any

from moragent.trajectory import (
    ExecutorStep,
    ObservationStep,
    ReasonerStep,
    SummarizerStep,
    Trajectory,
)


def to_openai(trajectory: Trajectory) -> dict[str, Any]:
    """An OpenAI chat record (``messages`` and ``tools``) for one trajectory."""
    messages: list[dict[str, Any]] = []
    if trajectory.system is not None:
        messages.append({"role": "system", "content": trajectory.system})
    for turn in trajectory.history:
        messages.append({"role": "user", "content": turn["query"]})
        messages.append({"role": "assistant", "content": turn["answer"]})
    messages.append({"role": "user", "content": trajectory.query})

    thought: str | None = None
    ids: list[str] = []
    count = 0
    for step in trajectory.steps:
        if isinstance(step, ReasonerStep):
            thought = step.thought or None
        elif isinstance(step, ExecutorStep):
            ids = [f"call_{count + i}" for i in range(len(step.calls))]
            count += len(step.calls)
            calls = [
                {
                    "id": ids[i],
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": json.dumps(call.arguments, ensure_ascii=False),
                    },
                }
                for i, call in enumerate(step.calls)
            ]
            messages.append({"role": "assistant", "content": thought, "tool_calls": calls})
            thought = None
        elif isinstance(step, ObservationStep):
            for i, result in enumerate(step.results):
                call_id = ids[i] if i < len(ids) else f"call_{count + i}"
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call_id,
                        "name": result.name,
                        "content": result.content,
                    }
                )
        elif isinstance(step, SummarizerStep):
            messages.append({"role": "assistant", "content": step.answer})
    tools = [{"type": "function", "function": tool} for tool in trajectory.tools]
    return {"messages": messages, "tools": tools}
