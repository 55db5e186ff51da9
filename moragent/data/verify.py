"""``verify``: rule checks on every trajectory, plus an optional teacher judge.

Every non-blank input line goes to exactly one of two outputs: accepted (the line's
trajectory, unchanged) or rejected (``{"line": n, "reasons": [...], "trajectory": ...}``,
or ``"raw"`` for a line that is not JSON). Each reason reads ``code: detail``; the codes
are listed in ``REASONS``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from moragent.data.io import ProgressFn, atomic_writer, check_outputs, first_char, iter_lines
from moragent.data.schema import schema_errors, tool_parameters_validator
from moragent.data.seal import REFERENCE
from moragent.data.teacher import TeacherError
from moragent.roles import NEXT_ROLES, Role
from moragent.trajectory import (
    ExecutorStep,
    ObservationStep,
    ReasonerStep,
    SummarizerStep,
    ToolCall,
    Trajectory,
)

logger = logging.getLogger(__name__)

#: reason code -> what it means
REASONS: dict[str, str] = {
    "malformed-json": "the line is not valid JSON",
    "schema": "the line breaks the trajectory schema",
    "arguments-unparsable": "a call's arguments are a string that is not a JSON object",
    "no-steps": "the trajectory has no steps",
    "empty-turn": "a thought, result or answer is empty",
    "illegal-next": "a reasoner hands the turn to a role other than executor or summarizer",
    "next-mismatch": "the step after a reasoner is not the role it named",
    "executor-without-reasoner": "an executor step does not follow a reasoner (next: executor)",
    "summarizer-without-reasoner": "a summarizer step does not follow a reasoner "
    "(next: summarizer)",
    "missing-observation": "an executor step is not followed by an observation",
    "observation-without-call": "an observation does not follow an executor step",
    "observation-mismatch": "an observation's results do not match the calls",
    "unknown-function": "a called function is not among the candidate tools",
    "bad-arguments": "arguments do not validate against the tool's schema",
    "missing-required": "a required argument is missing",
    "unresolved-reference": "an argument still names an earlier output (API_call_N)",
    "no-final-answer": "the trajectory does not end with a summarizer answer",
    "step-after-answer": "steps follow the summarizer's answer",
    "teacher-error": "the teacher failed to fill a part during complete",
    "judge-error": "the judge gave no usable score",
    "judge-below-threshold": "the judge scored the trajectory under the threshold",
}


class Judge(Protocol):
    """Scores a trajectory in [0, 1]; raises ``TeacherError`` when it cannot."""

    def judge(self, trajectory: Trajectory) -> float: ...


def _reason(code: str, detail: str) -> str:
    return f"{code}: {detail}"


def check_structure(trajectory: Trajectory) -> list[str]:
    """The role-order and content rules."""
    reasons: list[str] = []
    steps = trajectory.steps
    if not steps:
        return [_reason("no-steps", "the trajectory has no steps")]
    for i, step in enumerate(steps):
        where = f"steps[{i}]"
        before = steps[i - 1] if i > 0 else None
        after = steps[i + 1] if i + 1 < len(steps) else None
        if isinstance(step, ReasonerStep):
            if not step.thought.strip():
                reasons.append(_reason("empty-turn", f"{where}.thought is empty"))
            if step.next not in NEXT_ROLES:
                reasons.append(_reason("illegal-next", f"{where}.next is {step.next.value!r}"))
            elif after is None or after.role != step.next.value:
                got = after.role if after is not None else "the end"
                reasons.append(
                    _reason("next-mismatch", f"{where}.next is {step.next.value} but {got} follows")
                )
        elif isinstance(step, ExecutorStep):
            if not (isinstance(before, ReasonerStep) and before.next is Role.EXECUTOR):
                reasons.append(
                    _reason(
                        "executor-without-reasoner",
                        f"{where} follows {before.role if before else 'the query'}",
                    )
                )
            if not isinstance(after, ObservationStep):
                reasons.append(_reason("missing-observation", f"no observation after {where}"))
        elif isinstance(step, ObservationStep):
            reasons += _check_observation(step, before, where)
        elif isinstance(step, SummarizerStep):
            if not step.answer.strip():
                reasons.append(_reason("empty-turn", f"{where}.answer is empty"))
            if not (isinstance(before, ReasonerStep) and before.next is Role.SUMMARIZER):
                reasons.append(
                    _reason(
                        "summarizer-without-reasoner",
                        f"{where} follows {before.role if before else 'the query'}",
                    )
                )
            if after is not None:
                reasons.append(
                    _reason(
                        "step-after-answer",
                        f"{len(steps) - i - 1} step(s) after the answer at {where}",
                    )
                )
    if not isinstance(steps[-1], SummarizerStep) and not any(
        isinstance(step, SummarizerStep) for step in steps
    ):
        reasons.append(_reason("no-final-answer", f"the last step is {steps[-1].role}"))
    return reasons


def _check_observation(step: ObservationStep, before: Any, where: str) -> list[str]:
    reasons = []
    if not isinstance(before, ExecutorStep):
        return [
            _reason(
                "observation-without-call",
                f"{where} follows {before.role if before else 'the query'}",
            )
        ]
    if not step.results:
        reasons.append(_reason("empty-turn", f"{where}.results is empty"))
    for j, result in enumerate(step.results):
        if not result.content.strip():
            reasons.append(_reason("empty-turn", f"{where}.results[{j}].content is empty"))
    names = [call.name for call in before.calls]
    if step.results and sorted(r.name for r in step.results) != sorted(names):
        got = ", ".join(r.name for r in step.results)
        reasons.append(
            _reason(
                "observation-mismatch",
                f"{where} has results for {got}, the calls were {', '.join(names)}",
            )
        )
    return reasons


def check_calls(trajectory: Trajectory) -> list[str]:
    """Each call: among the candidates, arguments valid under the tool's schema."""
    reasons: list[str] = []
    tools = {tool.get("name"): tool for tool in trajectory.tools}
    for i, step in enumerate(trajectory.steps):
        if not isinstance(step, ExecutorStep):
            continue
        for j, call in enumerate(step.calls):
            where = f"steps[{i}].calls[{j}]"
            tool = tools.get(call.name)
            if tool is None:
                known = ", ".join(sorted(str(name) for name in tools)) or "none"
                reasons.append(
                    _reason(
                        "unknown-function",
                        f"{where} calls {call.name!r}; the candidates are: {known}",
                    )
                )
                continue
            for argument, value in call.arguments.items():
                if isinstance(value, str) and REFERENCE.match(value):
                    reasons.append(
                        _reason(
                            "unresolved-reference", f"{where}.arguments.{argument} is {value!r}"
                        )
                    )
            reasons += _check_arguments(call, tool.get("parameters") or {}, where)
    return reasons


def _check_arguments(call: ToolCall, schema: dict[str, Any], where: str) -> list[str]:
    try:
        errors = list(tool_parameters_validator(schema, call.name).iter_errors(call.arguments))
    except Exception as exc:  # a broken tool schema in the source data
        return [_reason("bad-arguments", f"{where}: the tool's schema cannot be used ({exc})")]
    reasons = []
    for error in errors:
        if error.validator == "required":
            reasons.append(_reason("missing-required", f"{where}: {error.message}"))
        else:
            path = "".join(f".{part}" for part in error.absolute_path)
            reasons.append(_reason("bad-arguments", f"{where}.arguments{path}: {error.message}"))
    return reasons


def check_data(data: Any) -> tuple[list[str], Trajectory | None]:
    """All rule reasons for one parsed line, and its trajectory when the schema holds."""
    reasons = []
    steps = data.get("steps") if isinstance(data, dict) else None
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        calls = step.get("calls") if isinstance(step, dict) else None
        for j, call in enumerate(calls if isinstance(calls, list) else []):
            if isinstance(call, dict) and isinstance(call.get("arguments"), str):
                reasons.append(
                    _reason(
                        "arguments-unparsable",
                        f"steps[{i}].calls[{j}].arguments: {call['arguments']!r}",
                    )
                )
    if reasons:
        return reasons, None
    errors = schema_errors(data)
    if errors:
        return [_reason("schema", f"{path}: {message}") for path, message in errors], None
    trajectory = Trajectory.from_dict(data)
    reasons = check_structure(trajectory) + check_calls(trajectory)
    for error in trajectory.meta.get("teacher_errors", []):
        reasons.append(_reason("teacher-error", str(error)))
    return reasons, trajectory


@dataclass
class VerifyStats:
    """What one ``verify`` run found; ``reasons`` counts rejected lines per reason code."""

    lines: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def verify_line(
    text: str, judge: Judge | None = None, threshold: float = 0.5
) -> tuple[list[str], Any]:
    """The reasons to reject one line (empty: accept), and its parsed value (or None)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [_reason("malformed-json", f"{exc.msg} at column {exc.colno}")], None
    reasons, trajectory = check_data(data)
    if not reasons and judge is not None and trajectory is not None:
        try:
            score = judge.judge(trajectory)
        except TeacherError as exc:
            reasons.append(_reason("judge-error", str(exc)))
        else:
            if score < threshold:
                reasons.append(
                    _reason("judge-below-threshold", f"score {score:.2f} < {threshold:.2f}")
                )
    return reasons, data


def verify_file(
    source: str | Path,
    accepted: str | Path,
    rejected: str | Path,
    judge: Judge | None = None,
    threshold: float = 0.5,
    on_progress: ProgressFn | None = None,
) -> VerifyStats:
    """Sort every line of ``source`` into ``accepted`` or ``rejected`` (both atomic)."""
    stats = VerifyStats()
    first_char(source)  # an empty input is an error, not two empty outputs
    check_outputs(source, accepted, rejected)
    with atomic_writer(accepted) as good, atomic_writer(rejected) as bad:
        for line, text in iter_lines(source, on_progress):
            stats.lines += 1
            reasons, data = verify_line(text, judge, threshold)
            if not reasons:
                stats.accepted += 1
                good.write(text if text.endswith("\n") else text + "\n")
                continue
            stats.rejected += 1
            stats.reasons.update({reason.split(":", 1)[0] for reason in reasons})
            record: dict[str, Any] = {"line": line, "reasons": reasons}
            if data is None:
                record["raw"] = text.rstrip("\n")
            else:
                record["trajectory"] = data
            bad.write(json.dumps(record, ensure_ascii=False) + "\n")
    logger.info("%s: %d accepted, %d rejected", source, stats.accepted, stats.rejected)
    return stats
