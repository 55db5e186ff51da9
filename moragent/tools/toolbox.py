"""``Toolbox``: runs tool calls and turns every outcome into a ``ToolResult``.

Each call is checked against its tool's JSON schema, converted, then run in a daemon
thread that the toolbox waits on for at most ``timeout`` seconds. Python cannot kill a
thread: a tool that hangs past its timeout is abandoned, not stopped, and keeps its
thread (and whatever it holds) until it returns by itself. Tools that may hang for good
should enforce their own deadline (a socket timeout, a subprocess with ``timeout=``).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime
import enum
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from moragent.tools.core import Tool, to_tools
from moragent.trajectory import ToolCall, ToolResult

logger = logging.getLogger(__name__)

_MIN_OBSERVATION_CHARS = 80
_MAX_REPORTED_ERRORS = 5


@dataclass
class _Pending:
    """A call under way: either already answered (``result``) or running in ``thread``."""

    call: ToolCall
    result: ToolResult | None = None
    thread: threading.Thread | None = None
    deadline: float | None = None
    outcome: dict[str, Any] = field(default_factory=dict)


class Toolbox:
    """The tools of an agent, and a safe way to call them.

    Args:
        tools: ``Tool``s, typed functions or OpenAI-style schema dicts (see ``to_tools``).
        timeout: Seconds to wait for one call; None waits for ever. A call past its
            timeout is abandoned, not killed: Python cannot stop a thread.
        max_observation_chars: Longest result content; longer content is cut with a
            marker saying how many characters were dropped.

    ``call`` and ``call_many`` never raise: an unknown tool, invalid arguments, an
    exception in the tool or a timeout each become a ``ToolResult`` with ``error=True``
    whose content says what went wrong, for the reasoner to read.
    """

    def __init__(
        self,
        tools: Iterable[Tool | Callable[..., Any] | Mapping[str, Any]] = (),
        timeout: float | None = 10.0,
        max_observation_chars: int = 2000,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive seconds or None, got {timeout!r}")
        if max_observation_chars < _MIN_OBSERVATION_CHARS:
            raise ValueError(
                f"max_observation_chars must be at least {_MIN_OBSERVATION_CHARS}, "
                f"got {max_observation_chars}"
            )
        self.timeout = timeout
        self.max_observation_chars = max_observation_chars
        self._tools = {item.name: item for item in to_tools(tools)}
        self._validators = {name: _validator(item) for name, item in self._tools.items()}

    @property
    def schemas(self) -> list[dict[str, Any]]:
        """Every tool's schema, ``{"name", "description", "parameters"}``, in order."""
        return [item.schema for item in self._tools.values()]

    @property
    def names(self) -> list[str]:
        """The tool names, in order."""
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        """The tool called ``name``, or None."""
        return self._tools.get(name)

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def call(self, call: ToolCall) -> ToolResult:
        """Run one call; never raises (failures become error results)."""
        return self.call_many([call])[0]

    def call_many(self, calls: Iterable[ToolCall]) -> list[ToolResult]:
        """Run calls in parallel threads; the results come back in call order.

        Tools run at the same time, so a tool used in parallel calls must be thread-safe.
        """
        pending = [self._start(call) for call in calls]
        return [self._finish(item) for item in pending]

    def _start(self, call: ToolCall) -> _Pending:
        pending = _Pending(call)
        name = getattr(call, "name", None)
        try:
            tool = self._tools.get(name) if isinstance(name, str) else None
            if tool is None:
                available = ", ".join(self._tools) or "none"
                return self._answer(
                    pending, f"no tool named {name!r}; available tools: {available}"
                )

            arguments, problem = _arguments(call.arguments)
            if problem is None:
                problem = self._check(tool, arguments)
            if problem is not None:
                return self._answer(pending, problem)
            if tool.fn is None:
                return self._answer(
                    pending, f"tool {tool.name!r} has no implementation (it is a schema only)"
                )
            try:
                kwargs = tool.convert(arguments)
            except ValueError as exc:
                return self._answer(pending, f"invalid arguments for {tool.name}: {exc}")

            context = contextvars.copy_context()
            pending.thread = threading.Thread(
                target=context.run,
                args=(_run, tool, kwargs, pending.outcome),
                name=f"moragent-tool-{tool.name}",
                daemon=True,
            )
            if self.timeout is not None:
                pending.deadline = time.monotonic() + self.timeout
            logger.debug("calling %s(%s)", tool.name, arguments)
            pending.thread.start()
        except Exception as exc:  # the promise is: never raise
            logger.exception("starting tool call %r failed", name)
            return self._answer(pending, f"the call could not start: {type(exc).__name__}: {exc}")
        return pending

    def _finish(self, pending: _Pending) -> ToolResult:
        if pending.result is not None:
            return pending.result
        name = pending.call.name
        try:
            assert pending.thread is not None
            wait = (
                None if pending.deadline is None else max(0.0, pending.deadline - time.monotonic())
            )
            pending.thread.join(wait)
            if pending.thread.is_alive():
                logger.warning(
                    "tool %s timed out after %s s; its thread is abandoned", name, self.timeout
                )
                return self._result(
                    name,
                    f"timed out after {self.timeout:g} s and was abandoned (it may still be "
                    "running in the background); try simpler arguments or another tool",
                    error=True,
                )
            if "error" in pending.outcome:
                exc = pending.outcome["error"]
                logger.info("tool %s raised %s: %s", name, type(exc).__name__, exc)
                logger.debug("traceback of tool %s", name, exc_info=exc)
                text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                return self._result(name, text, error=True)
            return self._result(name, render(pending.outcome.get("value")))
        except Exception as exc:  # the promise is: never raise
            logger.exception("finishing tool call %r failed", name)
            return self._result(name, f"the result could not be read: {exc}", error=True)

    def _check(self, tool: Tool, arguments: dict[str, Any]) -> str | None:
        validator = self._validators.get(tool.name)
        if validator is None:
            return None
        errors = list(validator.iter_errors(arguments))
        if not errors:
            return None
        return (
            f"invalid arguments for {tool.name}: {explain(errors, arguments)}; "
            f"expected {signature(tool)}"
        )

    def _answer(self, pending: _Pending, message: str) -> _Pending:
        logger.info("tool call %r failed: %s", pending.call.name, message)
        pending.result = self._result(str(pending.call.name), message, error=True)
        return pending

    def _result(self, name: str, content: str, error: bool = False) -> ToolResult:
        return ToolResult(name, truncate(content, self.max_observation_chars), error=error)


def _run(tool: Tool, kwargs: dict[str, Any], outcome: dict[str, Any]) -> None:
    try:
        value = tool(**kwargs)
        if inspect.iscoroutine(value):  # an async tool: run it on this thread's own loop
            value = asyncio.run(value)
        outcome["value"] = value
    except BaseException as exc:  # SystemExit in a tool must not end the agent either
        outcome["error"] = exc


def _arguments(raw: Any) -> tuple[dict[str, Any], str | None]:
    if raw is None:
        return {}, None
    if isinstance(raw, str):  # some parsers hand over the JSON text itself
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            return {}, f"the arguments are not valid JSON: {exc}"
    if not isinstance(raw, Mapping):
        return {}, f"the arguments must be a JSON object, got {type(raw).__name__}"
    return dict(raw), None


def _validator(tool: Tool) -> jsonschema.protocols.Validator | None:
    cls = jsonschema.validators.validator_for(
        tool.parameters, default=jsonschema.Draft202012Validator
    )
    try:
        cls.check_schema(tool.parameters)
    except jsonschema.SchemaError as exc:
        logger.warning(
            "tool %r: its parameters are not a valid JSON schema (%s); its arguments will "
            "not be validated",
            tool.name,
            exc.message,
        )
        return None
    return cls(tool.parameters)


def explain(errors: list[ValidationError], arguments: Mapping[str, Any]) -> str:
    """What is wrong with the arguments, one phrase per problem, naming each argument."""
    phrases: list[str] = []
    for error in sorted(errors, key=lambda e: [str(part) for part in e.absolute_path]):
        if error.validator == "required" and not error.absolute_path:
            missing = [name for name in error.validator_value if name not in arguments]
            phrase = "missing required argument " + ", ".join(repr(name) for name in missing)
        elif error.validator == "additionalProperties" and not error.absolute_path:
            known = error.schema.get("properties", {})
            extra = [name for name in arguments if name not in known]
            phrase = "unexpected argument " + ", ".join(repr(name) for name in extra)
        else:
            phrase = f"argument {_path(error)}: {error.message}"
            if error.context:
                details = "; ".join(sorted({sub.message for sub in error.context}))
                phrase += f" ({details})"
        if phrase not in phrases:
            phrases.append(phrase)
    dropped = len(phrases) - _MAX_REPORTED_ERRORS
    text = "; ".join(phrases[:_MAX_REPORTED_ERRORS])
    return text + (f"; and {dropped} more" if dropped > 0 else "")


def _path(error: ValidationError) -> str:
    parts = list(error.absolute_path)
    if not parts:
        return "(all)"
    text = repr(parts[0])
    for part in parts[1:]:
        text += f"[{part!r}]"
    return text


def signature(tool: Tool) -> str:
    """A short call signature from the schema, e.g. ``add(a: integer, b?: integer)``."""
    properties = tool.parameters.get("properties", {}) or {}
    required = set(tool.parameters.get("required", []) or [])
    params = [
        f"{name}{'' if name in required else '?'}: {_kind(schema)}"
        for name, schema in properties.items()
    ]
    return f"{tool.name}({', '.join(params)})"


def _kind(schema: Any) -> str:
    if not isinstance(schema, Mapping):
        return "any"
    if "enum" in schema:
        return " | ".join(json.dumps(value) for value in schema["enum"])
    if "anyOf" in schema:
        return " | ".join(_kind(member) for member in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array" and isinstance(schema.get("items"), Mapping):
        return f"array of {_kind(schema['items'])}"
    return kind if isinstance(kind, str) else " | ".join(map(str, kind))


def render(value: Any) -> str:
    """A tool's return value as text: strings as they are, the rest as JSON, else ``str``."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=_jsonable)
    except (TypeError, ValueError):
        return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, ending with how many were dropped."""
    if len(text) <= limit:
        return text
    marker = "\n[... truncated: {} characters dropped]"
    keep = max(0, limit - len(marker.format(len(text))))
    return text[:keep] + marker.format(len(text) - keep)
