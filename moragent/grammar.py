"""Output constraints for the roles, and the parsers that read role output back.

The executor's output is constrained to valid calls of the candidate tools: a JSON
schema built from the tool schemas (one call, or a list where parallel calls are
allowed). The reasoner's output is ``Thought: <one line>`` then ``Next: <role>``.
Backends turn these into their own constraint form (GBNF for llama.cpp). The parsers
never raise on garbage: they return what they could read and say what went wrong, so
the controller can turn bad output into an observation instead of a crash.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from moragent.backends.base import Constraint
from moragent.roles import NEXT_ROLES, Role
from moragent.trajectory import ToolCall

MAX_ARRAY_ITEMS = 16

#: keys that say what a schema node accepts; a node with none of them accepts anything
_SCHEMA_KEYS = {
    "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "properties", "items", "not",
}  # fmt: skip
_SCALAR_TYPES = ("string", "number", "boolean", "null")
MAX_PARALLEL_CALLS = 8


def executor_schema(tools: list[dict[str, Any]], parallel: bool = True) -> dict[str, Any]:
    """The JSON schema of the executor's output for these candidate tools.

    Args:
        tools: tool schemas (``{"name", "description", "parameters"}``).
        parallel: also allow a list of calls.
    """
    if not tools:
        raise ValueError("the executor needs at least one candidate tool")
    one_call = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool["name"]},
                "arguments": _bounded(tool.get("parameters") or {"type": "object"}),
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    call = one_call[0] if len(one_call) == 1 else {"anyOf": one_call}
    if not parallel:
        return call
    many = {"type": "array", "items": call, "minItems": 1, "maxItems": MAX_PARALLEL_CALLS}
    return {"anyOf": [call, many]}


def _bounded(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` with array lengths bounded, and closed objects where nothing is said.

    String lengths are left alone: llama.cpp's converter expands a ``maxLength`` into
    one nested rule per character, which makes a grammar of tens of kilobytes.
    """
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        if not _SCHEMA_KEYS & node.keys():
            node.update(_any_value())
            return
        kind = node.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        if "array" in kinds:
            node.setdefault("maxItems", MAX_ARRAY_ITEMS)
        if "object" in kinds and "properties" in node:
            node.setdefault("additionalProperties", False)
        elif "object" in kinds and "additionalProperties" not in node:
            node["additionalProperties"] = _any_value()  # an open object: bounded values
        for key in ("properties", "$defs", "definitions"):
            for child in (node.get(key) or {}).values():
                visit(child)
        for key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
            if key in node:
                visit(node[key])

    visit(schema)
    return schema


def _any_value() -> dict[str, Any]:
    """ "Any value", bounded: a scalar or a flat list of them. Nested objects would let a
    small model nest without end and never close the call."""
    scalars = [{"type": kind} for kind in _SCALAR_TYPES]
    flat_list = {"type": "array", "items": {"anyOf": scalars}, "maxItems": MAX_ARRAY_ITEMS}
    return {"anyOf": [*scalars, flat_list]}


def executor_constraint(tools: list[dict[str, Any]], parallel: bool = True) -> Constraint:
    return Constraint(json_schema=executor_schema(tools, parallel))


def reasoner_constraint(
    next_roles: tuple[Role, ...] = NEXT_ROLES, max_thought_chars: int = 400
) -> Constraint:
    return Constraint(
        next_roles=tuple(role.value for role in next_roles), max_thought_chars=max_thought_chars
    )


def reasoner_gbnf(next_roles: tuple[str, ...], max_thought_chars: int = 400) -> str:
    """GBNF for the reasoner's turn: a one-line thought, then the next role."""
    choices = " | ".join(json.dumps(role) for role in next_roles)
    return (
        f'root ::= "Thought: " thought "\\nNext: " ( {choices} )\n'
        f"thought ::= [^\\n] [^\\n]{{0,{max_thought_chars - 1}}}\n"
    )


def reasoner_regex(next_roles: tuple[str, ...], max_thought_chars: int = 400) -> str:
    """The same language as ``reasoner_gbnf``, as a regular expression."""
    alternatives = "|".join(re.escape(role) for role in next_roles)
    return rf"Thought: [^\n]{{1,{max_thought_chars}}}\nNext: ({alternatives})"


# ---------------------------------------------------------------- parsers


@dataclass
class ReasonerOutput:
    thought: str
    next: Role | None
    problem: str | None = None


_NEXT_LINE = re.compile(r"next\s*(?:role)?\s*[:=]\s*\**\s*([a-z]+)", re.IGNORECASE)


def parse_reasoner(text: str, allowed: tuple[Role, ...] = NEXT_ROLES) -> ReasonerOutput:
    """Read ``Thought: ...`` / ``Next: ...``; ``next`` is None when no legal role is named."""
    match = _NEXT_LINE.search(text)
    body = text[: match.start()] if match else text
    thought = re.sub(r"^\s*thought\s*:\s*", "", body.strip(), flags=re.IGNORECASE).strip()
    if not match:
        return ReasonerOutput(thought, None, "the reasoner named no next role")
    name = match.group(1).lower()
    for role in allowed:
        if role.value == name:
            return ReasonerOutput(thought, role)
    legal = ", ".join(role.value for role in allowed)
    return ReasonerOutput(thought, None, f"the reasoner named {name!r}, expected one of {legal}")


@dataclass
class ExecutorOutput:
    calls: list[ToolCall] = field(default_factory=list)
    problem: str | None = None
    #: the output was a list cut off mid-call: ``calls`` holds the calls written whole
    cut: bool = False


def parse_executor(text: str) -> ExecutorOutput:
    """Read the executor's call JSON: one call object or a list of them.

    Accepts the common variants small models write (``{"function": ...}``,
    ``"parameters"`` for ``"arguments"``, arguments as a JSON string).
    """
    value, problem, cut = _first_json_value(text)
    if problem:
        return ExecutorOutput(problem=problem)
    items = value if isinstance(value, list) else [value]
    if not items:
        return ExecutorOutput(problem="the executor wrote an empty list of calls")
    calls = []
    for i, item in enumerate(items):
        call, problem = _read_call(item)
        if problem:
            where = f"call {i + 1}: " if len(items) > 1 else ""
            return ExecutorOutput(calls, f"{where}{problem}")
        calls.append(call)
    return ExecutorOutput(calls, cut=cut)


def _first_json_value(text: str) -> tuple[Any, str | None, bool]:
    """The first JSON value in ``text``, or why there is none, and whether it was cut."""
    decoder = json.JSONDecoder()
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return None, f"the executor wrote no JSON: {_clip(text)!r}", False
    text = text[min(starts) :]
    try:
        value, _ = decoder.raw_decode(text)
    except json.JSONDecodeError as exc:
        complete = _complete_items(text)
        if complete is not None:
            return complete, None, True
        return None, f"the executor's JSON does not parse ({exc.msg} at char {exc.pos})", False
    return value, None, False


def _complete_items(text: str) -> list[Any] | None:
    """The whole items of a list that was cut off (a token limit mid-call), or None.

    ``[{call 1}, {call 2}, {call 3 cut`` gives the first two calls: a call that was
    written completely is kept, the cut one is dropped.
    """
    if not text.startswith("["):
        return None
    depth, in_string, escaped, last_end = 0, False, False, -1
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 1:
                last_end = i
    if last_end < 0:
        return None
    try:
        items = json.loads(text[: last_end + 1] + "]")
    except json.JSONDecodeError:
        return None
    return items if isinstance(items, list) and items else None


def _read_call(item: Any) -> tuple[ToolCall | None, str | None]:
    if not isinstance(item, dict):
        return None, f"a call must be a JSON object, got {type(item).__name__}"
    if isinstance(item.get("function"), dict):
        item = item["function"]
    name = item.get("name")
    if not isinstance(name, str) or not name:
        return None, "a call has no 'name'"
    arguments = item.get("arguments", item.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return None, f"the arguments of {name!r} are not JSON"
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None, f"the arguments of {name!r} must be a JSON object"
    return ToolCall(name, arguments), None


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
