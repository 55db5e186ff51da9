"""End-to-end agent tasks: whole episodes, checked on the final answer and the calls made.

A task file is JSON Lines, one task per line::

    {"id": "units-1", "type": "units", "query": "How many km is 26.2 miles?",
     "expect": {"number": 42.16, "tolerance": 0.01},
     "calls": [{"name": "convert_units", "arguments": {"from_unit": "mi"}}]}

- ``id`` (optional, default ``line-N``) and ``type`` (optional, default ``task``): the
  type groups the results.
- ``query``: what the agent is asked.
- ``expect`` (optional): checks on the final answer, all of which must hold. ``exact``
  (equal after trimming, case-insensitive), ``contains`` (a string, or a list of strings
  that must all appear, case-insensitive), ``regex`` (``re.search``, case-insensitive),
  ``number`` (some number written in the answer is within ``tolerance``, default 1e-6,
  of it; "1,234.5" counts as 1234.5).
- ``calls`` (optional): calls the episode must make, each a tool ``name`` and, optionally,
  ``arguments`` that must be among the call's own (numbers compared within 1e-6, strings
  trimmed and case-insensitive). ``"calls": []`` says the agent must call nothing.

A task is solved when the episode ends with an answer, every answer check holds and
every call check holds.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moragent.trajectory import ToolCall

ANSWER_CHECKS = ("exact", "contains", "regex", "number")
_TASK_KEYS = {"id", "type", "query", "expect", "calls"}
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


class TaskFileError(ValueError):
    """A task file that cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class CallCheck:
    """A call the episode must make: the tool's name and some of its arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def matches(self, call: ToolCall) -> bool:
        if call.name != self.name:
            return False
        return all(
            key in call.arguments and _same_value(value, call.arguments[key])
            for key, value in self.arguments.items()
        )

    def describe(self) -> str:
        if not self.arguments:
            return self.name
        shown = ", ".join(f"{key}={value!r}" for key, value in self.arguments.items())
        return f"{self.name}({shown})"


@dataclass(frozen=True)
class Task:
    """One task of a task file (see the module docstring for the fields)."""

    id: str
    type: str
    query: str
    expect: dict[str, Any] = field(default_factory=dict)
    calls: list[CallCheck] | None = None
    line: int = 0


@dataclass
class TaskOutcome:
    """What one episode did, and which checks failed (``problems``; empty when solved)."""

    task: Task
    answer: str | None
    calls: list[ToolCall]
    error: str | None
    problems: list[str]
    seconds: float = 0.0

    @property
    def solved(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.task.id,
            "type": self.task.type,
            "query": self.task.query,
            "solved": self.solved,
            "answer": self.answer,
            "calls": [call.to_dict() for call in self.calls],
            "error": self.error,
            "problems": self.problems,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class TasksReport:
    """The outcomes of a task run, with a summary per task type."""

    outcomes: list[TaskOutcome] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, Any]]:
        """``{type: {"solved": int, "n": int, "share": float}}`` plus an ``all`` row."""
        rows: dict[str, dict[str, Any]] = {}
        for outcome in self.outcomes:
            for key in (outcome.task.type, "all"):
                row = rows.setdefault(key, {"solved": 0, "n": 0})
                row["n"] += 1
                row["solved"] += outcome.solved
        for row in rows.values():
            row["share"] = row["solved"] / row["n"]
        if "all" in rows:
            rows["all"] = rows.pop("all")  # last
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "results": [outcome.to_dict() for outcome in self.outcomes],
        }


def load_tasks(path: str | Path, limit: int | None = None) -> list[Task]:
    """Read a task file; ``TaskFileError`` names the file, line and field of a bad task."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskFileError(f"task file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError(f"cannot read the task file {path}: {exc}") from None
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskFileError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
        task = _task(data, number, where)
        if task.id in seen:
            raise TaskFileError(f"{where}: id {task.id!r} is already used on line {seen[task.id]}")
        seen[task.id] = number
        tasks.append(task)
        if limit is not None and len(tasks) >= limit:
            break
    if not tasks:
        raise TaskFileError(f"{path}: no tasks in the file")
    return tasks


def check_calls_against_tools(
    tasks: Iterable[Task], tools: Iterable[dict[str, Any]], path: str | Path
) -> None:
    """Refuse call checks that no episode could meet with these tools (schema dicts, as
    ``Agent.tools``): a tool name that is not loaded, an argument the tool does not take.
    ``TaskFileError`` names the file, line and field."""
    params = {
        tool["name"]: set((tool.get("parameters") or {}).get("properties") or {}) for tool in tools
    }
    names = ", ".join(sorted(params)) or "none: give --tools"
    for task in tasks:
        for i, check in enumerate(task.calls or []):
            where = f"{path}:{task.line}: calls[{i}]"
            if check.name not in params:
                raise TaskFileError(
                    f"{where}.name: no tool {check.name!r} is loaded (loaded: {names})"
                )
            for key in check.arguments:
                if key not in params[check.name]:
                    taken = ", ".join(sorted(params[check.name])) or "no arguments"
                    raise TaskFileError(
                        f"{where}.arguments.{key}: {check.name} takes no {key!r} (it takes {taken})"
                    )


def _task(data: Any, number: int, where: str) -> Task:
    if not isinstance(data, dict):
        raise TaskFileError(f"{where}: a task is a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _TASK_KEYS)
    if unknown:
        raise TaskFileError(
            f"{where}: unknown field {unknown[0]!r} (a task has {', '.join(sorted(_TASK_KEYS))})"
        )
    query = data.get("query")
    if not isinstance(query, str) or not query.strip():
        raise TaskFileError(f"{where}: field 'query' must be a non-empty string")
    task_id = data.get("id", f"line-{number}")
    kind = data.get("type", "task")
    for name, value in (("id", task_id), ("type", kind)):
        if not isinstance(value, str) or not value.strip():
            raise TaskFileError(f"{where}: field {name!r} must be a non-empty string")
    expect = data.get("expect", {})
    if not isinstance(expect, dict):
        raise TaskFileError(f"{where}: field 'expect' must be an object of answer checks")
    _check_expect(expect, where)
    calls = data.get("calls")
    if calls is not None and not isinstance(calls, list):
        raise TaskFileError(f"{where}: field 'calls' must be a list of calls")
    if not expect and calls is None:
        raise TaskFileError(f"{where}: the task checks nothing: give 'expect', 'calls' or both")
    checks = (
        None
        if calls is None
        else [_call(item, f"{where}: calls[{i}]") for i, item in enumerate(calls)]
    )
    return Task(task_id, kind, query, expect, checks, number)


def _check_expect(expect: dict[str, Any], where: str) -> None:
    for key, value in expect.items():
        spot = f"{where}: expect.{key}"
        if key == "tolerance":
            if not _is_number(value) or value < 0:
                raise TaskFileError(f"{spot} must be a number >= 0")
            if "number" not in expect:
                raise TaskFileError(f"{spot} goes with expect.number")
        elif key in ("exact", "regex"):
            if not isinstance(value, str):
                raise TaskFileError(f"{spot} must be a string")
            if key == "regex":
                try:
                    re.compile(value)
                except re.error as exc:
                    raise TaskFileError(
                        f"{spot} is not a valid regular expression: {exc}"
                    ) from None
        elif key == "contains":
            items = [value] if isinstance(value, str) else value
            if (
                not isinstance(items, list)
                or not items
                or not all(isinstance(item, str) for item in items)
            ):
                raise TaskFileError(f"{spot} must be a string or a list of strings")
        elif key == "number":
            if not _is_number(value):
                raise TaskFileError(f"{spot} must be a number")
        else:
            raise TaskFileError(
                f"{spot}: unknown check (use {', '.join(ANSWER_CHECKS)}, and tolerance)"
            )


def _call(item: Any, where: str) -> CallCheck:
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise TaskFileError(f"{where} must be an object with a 'name' (and optional 'arguments')")
    unknown = sorted(set(item) - {"name", "arguments"})
    if unknown:
        raise TaskFileError(f"{where}: unknown field {unknown[0]!r}")
    arguments = item.get("arguments", {})
    if not isinstance(arguments, dict):
        raise TaskFileError(f"{where}.arguments must be an object")
    return CallCheck(item["name"], dict(arguments))


def check_outcome(
    task: Task, answer: str | None, calls: list[ToolCall], error: str | None
) -> list[str]:
    """The checks of ``task`` that the episode failed, each said in a few words."""
    problems: list[str] = []
    if error is not None:
        problems.append(f"episode error: {error}")
    if answer is None:
        if task.expect:
            problems.append("no final answer")
    else:
        problems += _answer_problems(task.expect, answer)
    if task.calls is not None:
        if not task.calls and calls:
            made = ", ".join(call.name for call in calls)
            problems.append(f"called {made} where no call was wanted")
        for check in task.calls:
            if not any(check.matches(call) for call in calls):
                problems.append(f"missing call {check.describe()}")
    return problems


def _answer_problems(expect: dict[str, Any], answer: str) -> list[str]:
    problems = []
    folded = answer.strip().casefold()
    if "exact" in expect and folded != expect["exact"].strip().casefold():
        problems.append(f"answer is not exactly {expect['exact']!r}")
    if "contains" in expect:
        wanted = [expect["contains"]] if isinstance(expect["contains"], str) else expect["contains"]
        missing = [item for item in wanted if item.casefold() not in folded]
        if missing:
            problems.append(f"answer lacks {', '.join(repr(item) for item in missing)}")
    if "regex" in expect and not re.search(expect["regex"], answer, re.IGNORECASE):
        problems.append(f"answer does not match /{expect['regex']}/")
    if "number" in expect:
        target, tolerance = float(expect["number"]), float(expect.get("tolerance", 1e-6))
        numbers = numbers_in(answer)
        if not any(abs(number - target) <= tolerance for number in numbers):
            problems.append(f"no number within {tolerance:g} of {target:g} in the answer")
    return problems


def numbers_in(text: str) -> list[float]:
    """The numbers written in ``text``, with thousands separators understood."""
    return [float(match.replace(",", "")) for match in _NUMBER.findall(text)]


def run_tasks(
    run: Callable[[str], Any],
    tasks: Iterable[Task],
    on_outcome: Callable[[TaskOutcome], None] | None = None,
) -> TasksReport:
    """Run each task as a fresh episode and check it.

    Args:
        run: ``Agent.run`` or any callable from a query to a result with ``answer``,
            ``error`` and ``trajectory`` (whose ``calls`` are the calls made).
        tasks: from ``load_tasks``.
        on_outcome: called after each task (progress display).
    """
    report = TasksReport()
    for task in tasks:
        started = time.perf_counter()
        result = run(task.query)
        calls = list(result.trajectory.calls) if result.trajectory is not None else []
        problems = check_outcome(task, result.answer, calls, result.error)
        outcome = TaskOutcome(
            task, result.answer, calls, result.error, problems, time.perf_counter() - started
        )
        report.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return report


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _same_value(wanted: Any, got: Any) -> bool:
    if _is_number(wanted):
        if isinstance(got, str):
            try:
                got = float(got)
            except ValueError:
                return False
        return _is_number(got) and abs(float(got) - float(wanted)) <= 1e-6
    if isinstance(wanted, str):
        return isinstance(got, str) and got.strip().casefold() == wanted.strip().casefold()
    return bool(wanted == got)
