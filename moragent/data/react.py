"""Converter for ReAct text trajectories (FireAct style) in OpenAI-messages form.

Assistant turns read ``Thought: ...`` then ``Action: tool[argument]``; the next user
turn reads ``Observation: ...``. ``finish[answer]`` ends the episode: its thought goes
to the reasoner (next: summarizer) and its argument becomes the summarizer's answer.
The closing ``Observation: Episode finished, reward = ...`` is kept in ``meta.reward``.
Actions are turned into calls of tools with JSON schemas (``REACT_TOOLS``).
"""

from __future__ import annotations

import re
from typing import Any

from moragent.data.io import DataError
from moragent.data.steps import TurnBuilder, result_from_content
from moragent.trajectory import ToolCall, Trajectory

#: the ReAct tools with proper JSON schemas; each takes its bracket text as one argument
REACT_TOOLS: dict[str, dict[str, Any]] = {
    "search": {
        "name": "search",
        "description": "Search Wikipedia (or the web) for an entity or a question and return "
        "the first paragraph of the best match, or similar titles when there is none.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What to search for."}},
            "required": ["query"],
        },
    },
    "lookup": {
        "name": "lookup",
        "description": "Return the next sentence that contains a keyword in the page "
        "found by the last search.",
        "parameters": {
            "type": "object",
            "properties": {
                "keyword": {"type": "string", "description": "The word or phrase to find."}
            },
            "required": ["keyword"],
        },
    },
}

_ARGUMENT_NAMES = {"search": "query", "lookup": "keyword"}
_ACTION = re.compile(r"Action(?: \d+)?:\s*(\w+)\s*\[(.*)\]\s*$", re.DOTALL)
_THOUGHT = re.compile(r"^\s*Thought(?: \d+)?:\s*", re.IGNORECASE)
_OBSERVATION = re.compile(r"^\s*Observation(?: \d+)?:\s*", re.IGNORECASE)
_REWARD = re.compile(r"Episode finished, reward = (\S+)")


def react_tool(name: str) -> dict[str, Any]:
    """The schema of a ReAct tool; an unknown one takes a single string ``input``."""
    if name in REACT_TOOLS:
        return REACT_TOOLS[name]
    return {
        "name": name,
        "description": f"The ReAct tool {name}[...] of the source data.",
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "string"}},
            "required": ["input"],
        },
    }


class ReactTextConverter:
    """ReAct records: ``messages`` whose assistant turns are Thought/Action text."""

    name = "react-text"

    @staticmethod
    def detect(record: Any) -> bool:
        if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            return False
        assistant = [
            m for m in record["messages"] if isinstance(m, dict) and m.get("role") == "assistant"
        ]
        return bool(assistant) and all(
            not m.get("tool_calls") and "Action" in str(m.get("content", "")) for m in assistant
        )

    def convert(self, record: Any, line: int) -> list[Trajectory]:
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list) or not messages:
            raise DataError("a ReAct record needs a non-empty 'messages' list", field="messages")
        system, query, start = None, None, 0
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise DataError("a message must be an object", field=f"messages[{i}]")
        if messages[0].get("role") == "system":
            system, start = str(messages[0].get("content", "")), 1
        if start >= len(messages) or messages[start].get("role") != "user":
            raise DataError(
                "the first message (after any system one) must be the user's question",
                field=f"messages[{start}]",
            )
        query = str(messages[start].get("content", ""))

        turn, used, meta = TurnBuilder(), ["search"], {"source": self.name, "source_id": line}
        pending: str | None = None
        for i in range(start + 1, len(messages)):
            role, content = messages[i].get("role"), str(messages[i].get("content", ""))
            where = f"messages[{i}].content"
            if role == "assistant":
                pending = self._action(turn, content, where, used)
            elif role == "user":
                reward = _REWARD.search(content)
                if turn.has_answer and reward:
                    meta["reward"] = reward.group(1)
                    continue
                if pending is None:
                    raise DataError("an observation comes before any action", field=where)
                turn.results([result_from_content(pending, _OBSERVATION.sub("", content, 1))])
                pending = None
            else:
                raise DataError(f"unexpected message role {role!r}", field=f"messages[{i}].role")
        tools = [react_tool(name) for name in used]
        return [Trajectory(query, tools, turn.finish(), system, [], meta)]

    @staticmethod
    def _action(turn: TurnBuilder, content: str, where: str, used: list[str]) -> str | None:
        """Record one Thought/Action turn; returns the tool name awaiting an observation."""
        action = _ACTION.search(content)
        if action is None:
            raise DataError("no 'Action: tool[argument]' line in the assistant turn", field=where)
        thought = _THOUGHT.sub("", content[: action.start()], 1).strip()
        turn.thought(thought)
        name, argument = action.group(1), action.group(2).strip()
        if name.lower() == "finish":
            turn.answer(argument)
            return None
        if name not in used:
            used.append(name)
        turn.calls([ToolCall(name, {_ARGUMENT_NAMES.get(name, "input"): argument})])
        return name
