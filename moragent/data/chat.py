"""Converters for chat-shaped sources: OpenAI messages and ShareGPT (the glaive form).

A conversation with several user turns becomes one trajectory per user turn; each
carries the earlier turns as ``history`` (query and final answer), so no call is lost
and no turn is seen twice. Assistant text right before a call becomes the reasoner's
thought; assistant text that ends a turn becomes the summarizer's answer.
"""

from __future__ import annotations

import json
from typing import Any

from moragent.data.io import DataError
from moragent.data.steps import MISSING, TurnBuilder, parse_arguments, result_from_content
from moragent.trajectory import ToolCall, Trajectory


class ChatAssembler:
    """Turns a stream of chat events into one trajectory per user turn."""

    def __init__(self, tools: list[dict[str, Any]], meta: dict[str, Any]) -> None:
        self.tools = tools
        self.meta = meta
        self.system: str | None = None
        self.history: list[dict[str, str]] = []
        self.out: list[Trajectory] = []
        self._query: str | None = None
        self._turn: TurnBuilder | None = None
        self._text: list[str] = []
        self._open_calls: list[str] = []

    def system_text(self, text: str) -> None:
        self.system = text if self.system is None else f"{self.system}\n{text}"

    def user(self, text: str) -> None:
        self._end_turn()
        self._query, self._turn = text, TurnBuilder()

    def assistant(self, text: str | None) -> None:
        if text and text.strip():
            self._text.append(text.strip())

    def calls(self, calls: list[ToolCall]) -> None:
        turn = self._need_turn("a call")
        turn.thought("\n".join(self._text))
        self._text = []
        turn.calls(calls)
        self._open_calls = [call.name for call in calls]

    def result(self, name: str | None, content: Any) -> None:
        turn = self._need_turn("a tool result")
        if name is None:
            name = self._open_calls.pop(0) if self._open_calls else "unknown"
        elif name in self._open_calls:
            self._open_calls.remove(name)
        try:
            turn.results([result_from_content(name, content)])
        except ValueError:
            raise DataError("a tool result comes before any call", field="messages") from None

    def finish(self) -> list[Trajectory]:
        self._end_turn()
        return self.out

    def _need_turn(self, what: str) -> TurnBuilder:
        if self._turn is None:
            raise DataError(f"{what} comes before the first user message", field="messages")
        return self._turn

    def _end_turn(self) -> None:
        if self._turn is None or self._query is None:
            return
        if self._text:
            self._turn.answer("\n".join(self._text))
            self._text = []
        steps = self._turn.finish()
        meta = dict(self.meta, turn=len(self.history))
        self.out.append(
            Trajectory(self._query, self.tools, steps, self.system, list(self.history), meta)
        )
        answer = steps[-1].answer if self._turn.has_answer else MISSING  # type: ignore[union-attr]
        self.history.append({"query": self._query, "answer": answer})
        self._turn, self._query, self._open_calls = None, None, []


def tool_schema(raw: Any, where: str) -> dict[str, Any]:
    """A candidate tool in the training form from an OpenAI or glaive tool entry."""
    if isinstance(raw, dict) and raw.get("type") == "function" and "function" in raw:
        raw = raw["function"]
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise DataError("a tool needs a string 'name'", field=where)
    tool = {
        "name": raw["name"],
        "description": str(raw.get("description", "")),
        "parameters": raw.get("parameters") or {"type": "object", "properties": {}},
    }
    for key, value in raw.items():
        if key not in tool and key != "type":
            tool[key] = value
    return tool


def _call(raw: Any, where: str) -> ToolCall:
    if isinstance(raw, dict) and "function" in raw and isinstance(raw["function"], dict):
        raw = raw["function"]
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise DataError("a call needs a string 'name'", field=where)
    return ToolCall(raw["name"], parse_arguments(raw.get("arguments")))  # type: ignore[arg-type]


def _text(content: Any) -> Any:
    """Message content as text: a list of content parts is joined from its text parts."""
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content
        )
    return content


class OpenAIConverter:
    """OpenAI chat records: ``messages`` (with ``tool_calls`` and ``tool`` turns) and ``tools``."""

    name = "openai"

    @staticmethod
    def detect(record: Any) -> bool:
        return isinstance(record, dict) and isinstance(record.get("messages"), list)

    def convert(self, record: Any, line: int) -> list[Trajectory]:
        if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            raise DataError("an OpenAI record needs a 'messages' list", field="messages")
        raw_tools = record.get("tools") or record.get("functions") or []
        tools = [tool_schema(t, f"tools[{i}]") for i, t in enumerate(raw_tools)]
        meta = {"source": self.name, "source_id": record.get("id", line)}
        chat = ChatAssembler(tools, meta)
        names: dict[str, str] = {}
        for i, message in enumerate(record["messages"]):
            where = f"messages[{i}]"
            if not isinstance(message, dict):
                raise DataError("a message must be an object", field=where)
            role, content = message.get("role"), _text(message.get("content"))
            if role == "system":
                chat.system_text(str(content or ""))
            elif role == "user":
                chat.user(str(content or ""))
            elif role == "assistant":
                chat.assistant(content)
                raw_calls = message.get("tool_calls") or (
                    [message["function_call"]] if message.get("function_call") else []
                )
                if raw_calls:
                    calls = [_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(raw_calls)]
                    for raw, call in zip(raw_calls, calls, strict=True):
                        if isinstance(raw, dict) and "id" in raw:
                            names[raw["id"]] = call.name
                    chat.calls(calls)
            elif role in ("tool", "function"):
                name = message.get("name") or names.get(message.get("tool_call_id", ""))
                chat.result(name, content if content is not None else "")
            else:
                raise DataError(f"unknown message role {role!r}", field=f"{where}.role")
        return chat.finish()


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


class ShareGPTConverter:
    """ShareGPT records as glaive has them: ``conversations`` and a ``tools`` JSON string."""

    name = "sharegpt"

    @staticmethod
    def detect(record: Any) -> bool:
        return isinstance(record, dict) and isinstance(record.get("conversations"), list)

    def convert(self, record: Any, line: int) -> list[Trajectory]:
        if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
            raise DataError("a ShareGPT record needs a 'conversations' list", field="conversations")
        raw_tools = record.get("tools") or []
        if isinstance(raw_tools, str):
            try:
                raw_tools = json.loads(raw_tools) if raw_tools.strip() else []
            except json.JSONDecodeError as exc:
                raise DataError(f"'tools' is not valid JSON ({exc.msg})", field="tools") from None
        tools = [tool_schema(t, f"tools[{i}]") for i, t in enumerate(raw_tools)]
        meta = {"source": self.name, "source_id": record.get("id", line)}
        chat = ChatAssembler(tools, meta)
        if record.get("system"):
            chat.system_text(str(record["system"]))
        for i, turn in enumerate(record["conversations"]):
            where = f"conversations[{i}]"
            if not isinstance(turn, dict):
                raise DataError("a turn must be an object", field=where)
            kind, value = turn.get("from"), turn.get("value", "")
            role = _SHAREGPT_ROLES.get(str(kind))
            if kind == "system":
                chat.system_text(str(value))
            elif role == "user":
                chat.user(str(value))
            elif role == "assistant":
                chat.assistant(str(value))
            elif kind == "function_call":
                chat.calls(self._calls(value, f"{where}.value"))
            elif kind == "observation":
                chat.result(None, value)
            else:
                raise DataError(f"unknown turn kind {kind!r}", field=f"{where}.from")
        return chat.finish()

    @staticmethod
    def _calls(value: Any, where: str) -> list[ToolCall]:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise DataError(f"the function call is not JSON ({exc.msg})", field=where) from None
        items = value if isinstance(value, list) else [value]
        return [_call(item, where) for item in items]
