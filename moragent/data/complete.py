"""``complete``: fill what a source lacks, with a teacher, marking what was filled.

Missing parts are the empty strings the converters leave (a reasoner thought, a tool
result's content, the summarizer's answer). The structure is repaired first: a
reasoner step goes before every executor or summarizer step that lacks one, an
observation after every executor step, and a summarizer step at the end. Then the
teacher fills observations (and resolves Seal-Tools output links, see
``moragent.data.seal``), thoughts, and the answer; every step it touched gets
``synthetic: true``. A part the teacher fails on stays empty and the failure is kept in
``meta.teacher_errors``; ``verify`` rejects such a trajectory with that reason.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moragent.data.io import (
    DataError,
    ProgressFn,
    atomic_writer,
    check_outputs,
    first_char,
    iter_jsonl,
)
from moragent.data.rules import linked_value
from moragent.data.schema import schema_errors
from moragent.data.steps import MISSING
from moragent.data.teacher import Teacher, TeacherError
from moragent.roles import Role
from moragent.trajectory import (
    ExecutorStep,
    ObservationStep,
    ReasonerStep,
    Step,
    SummarizerStep,
    ToolResult,
    Trajectory,
)

logger = logging.getLogger(__name__)

_PYTHON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
}


@dataclass
class CompleteStats:
    """What one ``complete`` run did."""

    trajectories: int = 0
    filled: Counter[str] = field(default_factory=Counter)
    inserted_steps: int = 0
    with_teacher_errors: int = 0
    skipped: list[str] = field(default_factory=list)


def repair(trajectory: Trajectory) -> int:
    """Lay out the full role sequence, adding placeholder steps; returns how many were added.

    Step indices in ``meta.links`` are moved along with their steps.
    """
    steps: list[Step] = []
    moved: dict[int, int] = {}
    for old, step in enumerate(trajectory.steps):
        last = steps[-1] if steps else None
        if isinstance(last, ExecutorStep) and not isinstance(step, ObservationStep):
            steps.append(ObservationStep([ToolResult(c.name, MISSING) for c in last.calls]))
        wanted = Role.EXECUTOR if isinstance(step, ExecutorStep) else Role.SUMMARIZER
        if isinstance(step, ExecutorStep | SummarizerStep) and not (
            isinstance(steps[-1] if steps else None, ReasonerStep)
        ):
            steps.append(ReasonerStep(MISSING, wanted))
        moved[old] = len(steps)
        steps.append(step)
    if steps and isinstance(steps[-1], ExecutorStep):
        steps.append(ObservationStep([ToolResult(c.name, MISSING) for c in steps[-1].calls]))
    if not steps or not isinstance(steps[-1], SummarizerStep):
        if not isinstance(steps[-1] if steps else None, ReasonerStep):
            steps.append(ReasonerStep(MISSING, Role.SUMMARIZER))
        steps.append(SummarizerStep(MISSING))
    added = len(steps) - len(trajectory.steps)
    for link in trajectory.meta.get("links", []):
        for key in ("step", "from_step"):
            if isinstance(link.get(key), int) and link[key] in moved:
                link[key] = moved[link[key]]
    trajectory.steps = steps
    return added


def complete_trajectory(trajectory: Trajectory, teacher: Teacher, stats: CompleteStats) -> None:
    """Fill every missing part of ``trajectory`` in place."""
    stats.inserted_steps += repair(trajectory)
    errors: list[str] = []

    def fill(what: str, where: str, make: Any) -> str | None:
        try:
            text = make()
        except TeacherError as exc:
            errors.append(f"{where}: {exc}")
            return None
        stats.filled[what] += 1
        return text

    for i, step in enumerate(trajectory.steps):
        if isinstance(step, ObservationStep):
            for j, result in enumerate(step.results):
                if result.content == MISSING:
                    text = fill(
                        "observation",
                        f"steps[{i}].results[{j}].content",
                        lambda i=i, j=j: teacher.observation(trajectory, i, j),
                    )
                    if text is not None:
                        result.content, step.synthetic = text, True
            _resolve_links(trajectory, i, stats, use_observed=teacher.name != "rules")
    for i, step in enumerate(trajectory.steps):
        if isinstance(step, ReasonerStep) and step.thought == MISSING:
            text = fill(
                "thought", f"steps[{i}].thought", lambda i=i: teacher.thought(trajectory, i)
            )
            if text is not None:
                step.thought, step.synthetic = text, True
    for i, step in enumerate(trajectory.steps):
        if isinstance(step, SummarizerStep) and step.answer == MISSING:
            text = fill("answer", f"steps[{i}].answer", lambda i=i: teacher.answer(trajectory, i))
            if text is not None:
                step.answer, step.synthetic = text, True

    if errors:
        trajectory.meta["teacher_errors"] = errors
        stats.with_teacher_errors += 1
    trajectory.meta.setdefault("teacher", getattr(teacher, "name", "teacher"))


def _resolve_links(
    trajectory: Trajectory, index: int, stats: CompleteStats, use_observed: bool
) -> None:
    """Give outputs that later calls use a value, in the observation and in the later call.

    With ``use_observed`` (a model teacher) a fitting value the teacher already wrote in
    the observation is taken; otherwise a value typed for the later argument is made.
    """
    links = trajectory.meta.get("links", [])
    observation = trajectory.steps[index]
    assert isinstance(observation, ObservationStep)
    for link in links:
        if link.get("from_step") != index - 1 or "value" in link:
            continue
        target = trajectory.steps[link["step"]]
        if not isinstance(target, ExecutorStep) or link["from_call"] >= len(observation.results):
            continue
        call = target.calls[link["call"]]
        if call.arguments.get(link["argument"]) != link["ref"]:
            continue
        tool = next((t for t in trajectory.tools if t.get("name") == call.name), {})
        parameter = (tool.get("parameters") or {}).get("properties", {}).get(link["argument"], {})
        result = observation.results[link["from_call"]]
        value = _value_in(result.content, link["output"], parameter) if use_observed else None
        if value is None:
            rng = random.Random(f"{trajectory.query}\x00{link['ref']}")
            value = linked_value(parameter, link["output"], rng)
            result.content = _with_field(result.content, link["output"], value)
            observation.synthetic = True
        call.arguments[link["argument"]] = value
        target.synthetic = True
        link["value"] = value
        stats.filled["link"] += 1


def _value_in(content: str, key: str, parameter: dict[str, Any]) -> Any:
    """The value of ``key`` in a JSON observation if it fits the parameter's type."""
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or key not in data or data[key] in (None, "", [], {}):
        return None
    wanted = _PYTHON_TYPES.get(str(parameter.get("type")))
    return data[key] if wanted is None or isinstance(data[key], wanted) else None


def _with_field(content: str, key: str, value: Any) -> str:
    try:
        data = json.loads(content) if content else {}
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        data[key] = value
        return json.dumps(data, ensure_ascii=False)
    return f"{content}\n{key}: {json.dumps(value, ensure_ascii=False)}"


def read_trajectory(data: Any, path: str | Path, line: int) -> Trajectory:
    """Validate one parsed line against the schema and build the trajectory."""
    errors = schema_errors(data)
    if errors:
        where, message = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DataError(message + more, path, line, where)
    return Trajectory.from_dict(data)


def complete_file(
    source: str | Path,
    target: str | Path,
    teacher: Teacher,
    on_progress: ProgressFn | None = None,
    skip_bad: bool = False,
) -> CompleteStats:
    """Complete every trajectory of ``source`` into ``target`` (written atomically)."""
    stats = CompleteStats()
    first_char(source)  # an empty input is an error, not an empty output
    check_outputs(source, target)

    def skip(error: DataError) -> None:
        stats.skipped.append(str(error))
        logger.warning("skipped: %s", error)

    with atomic_writer(target) as out:
        for line, data in iter_jsonl(source, on_progress, skip if skip_bad else None):
            try:
                trajectory = read_trajectory(data, source, line)
            except DataError as error:
                if not skip_bad:
                    raise
                skip(error)
                continue
            complete_trajectory(trajectory, teacher, stats)
            stats.trajectories += 1
            out.write(trajectory.to_json())
            out.write("\n")
    return stats
