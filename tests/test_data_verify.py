"""``verify``: one small bad input per rule, with the exact reason expected."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moragent.data.teacher import TeacherError
from moragent.data.verify import REASONS, check_data, verify_file, verify_line
from moragent.trajectory import Trajectory

GOOD: dict[str, Any] = {
    "query": "Weather in Paris?",
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        }
    ],
    "system": None,
    "history": [],
    "steps": [
        {"role": "reasoner", "thought": "Look it up.", "next": "executor"},
        {"role": "executor", "calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"role": "observation", "results": [{"name": "get_weather", "content": "18 C"}]},
        {"role": "reasoner", "thought": "I know it now.", "next": "summarizer"},
        {"role": "summarizer", "answer": "It is 18 C."},
    ],
}


def bad(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    change(data)
    return data


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *head, last = path.split("/")
        node: Any = data
        for part in head:
            node = node[int(part) if part.isdigit() else part]
        node[int(last) if last.isdigit() else last] = value

    return change


CASES = [
    ("schema", _set("steps/0/thought", 5), ["schema: steps[0].thought: 5 is not of type 'string'"]),
    (
        "arguments-unparsable",
        _set("steps/1/calls/0/arguments", "{city"),
        ["arguments-unparsable: steps[1].calls[0].arguments: '{city'"],
    ),
    ("no-steps", _set("steps", []), ["no-steps: the trajectory has no steps"]),
    ("empty-turn", _set("steps/3/thought", " "), ["empty-turn: steps[3].thought is empty"]),
    ("empty-answer", _set("steps/4/answer", ""), ["empty-turn: steps[4].answer is empty"]),
    (
        "empty-result",
        _set("steps/2/results/0/content", ""),
        ["empty-turn: steps[2].results[0].content is empty"],
    ),
    (
        "illegal-next",
        _set("steps/3/next", "reasoner"),
        [
            "illegal-next: steps[3].next is 'reasoner'",
            "summarizer-without-reasoner: steps[4] follows reasoner",
        ],
    ),
    (
        "next-mismatch",
        _set("steps/0/next", "summarizer"),
        [
            "next-mismatch: steps[0].next is summarizer but executor follows",
            "executor-without-reasoner: steps[1] follows reasoner",
        ],
    ),
    (
        "executor-without-reasoner",
        lambda d: d["steps"].pop(0),
        ["executor-without-reasoner: steps[0] follows the query"],
    ),
    (
        "summarizer-without-reasoner",
        lambda d: d["steps"].pop(3),
        ["summarizer-without-reasoner: steps[3] follows observation"],
    ),
    (
        "missing-observation",
        lambda d: d["steps"].pop(2),
        ["missing-observation: no observation after steps[1]"],
    ),
    (
        "observation-without-call",
        lambda d: d["steps"].insert(3, d["steps"][2]),
        ["observation-without-call: steps[3] follows observation"],
    ),
    (
        "observation-mismatch",
        _set("steps/2/results/0/name", "other"),
        ["observation-mismatch: steps[2] has results for other, the calls were get_weather"],
    ),
    (
        "unknown-function",
        _set("steps/1/calls/0/name", "get_time"),
        [
            "observation-mismatch: steps[2] has results for get_weather, the calls were get_time",
            "unknown-function: steps[1].calls[0] calls 'get_time'; the candidates are: get_weather",
        ],
    ),
    (
        "bad-arguments",
        _set("steps/1/calls/0/arguments/days", "two"),
        ["bad-arguments: steps[1].calls[0].arguments.days: 'two' is not of type 'integer'"],
    ),
    (
        "missing-required",
        _set("steps/1/calls/0/arguments", {"days": 2}),
        ["missing-required: steps[1].calls[0]: 'city' is a required property"],
    ),
    (
        "unresolved-reference",
        _set("steps/1/calls/0/arguments/city", "API_call_0"),
        ["unresolved-reference: steps[1].calls[0].arguments.city is 'API_call_0'"],
    ),
    (
        "no-final-answer",
        lambda d: d["steps"].__delitem__(slice(3, 5)),
        ["no-final-answer: the last step is observation"],
    ),
    (
        "step-after-answer",
        lambda d: d["steps"].append(copy.deepcopy(d["steps"][3])),
        [
            "step-after-answer: 1 step(s) after the answer at steps[4]",
            "next-mismatch: steps[5].next is summarizer but the end follows",
        ],
    ),
    (
        "teacher-error",
        _set("meta", {"teacher_errors": ["steps[0].thought: teacher timed out"]}),
        ["teacher-error: steps[0].thought: teacher timed out"],
    ),
]


def test_good_trajectory_passes() -> None:
    assert check_data(copy.deepcopy(GOOD))[0] == []


@pytest.mark.parametrize(("name", "change", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_rejects_with_its_reason(
    name: str, change: Callable[[dict[str, Any]], Any], expected: list[str]
) -> None:
    reasons, _ = check_data(bad(change))
    assert reasons == expected
    assert all(reason.split(":")[0] in REASONS for reason in reasons)


def test_malformed_json_line() -> None:
    reasons, data = verify_line('{"query": ')
    assert reasons == ["malformed-json: Expecting value at column 11"]
    assert data is None


class FixedJudge:
    def __init__(self, result: float | Exception) -> None:
        self.result = result
        self.seen: list[str] = []

    def judge(self, trajectory: Trajectory) -> float:
        self.seen.append(trajectory.query)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


def test_judge_below_threshold_and_judge_error() -> None:
    text = json.dumps(GOOD)
    assert verify_line(text, FixedJudge(0.3), 0.5)[0] == [
        "judge-below-threshold: score 0.30 < 0.50"
    ]
    assert verify_line(text, FixedJudge(0.8), 0.5)[0] == []
    failing = FixedJudge(TeacherError("judge gave no score from 0 to 10: 'meh'"))
    assert verify_line(text, failing, 0.5)[0] == [
        "judge-error: judge gave no score from 0 to 10: 'meh'"
    ]


def test_judge_is_not_asked_about_rule_failures() -> None:
    judge = FixedJudge(1.0)
    reasons, _ = verify_line(json.dumps(bad(_set("steps/3/thought", ""))), judge)
    assert reasons == ["empty-turn: steps[3].thought is empty"]
    assert judge.seen == []


def test_every_line_lands_in_exactly_one_output(tmp_path: Path) -> None:
    lines = [
        json.dumps(GOOD),
        "{broken",
        json.dumps(bad(_set("steps/1/calls/0/name", "nope"))),
        json.dumps(GOOD),
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n\n")
    accepted, rejected = tmp_path / "a.jsonl", tmp_path / "r.jsonl"
    stats = verify_file(source, accepted, rejected)
    assert (stats.lines, stats.accepted, stats.rejected) == (4, 2, 2)
    assert stats.reasons == {"malformed-json": 1, "unknown-function": 1, "observation-mismatch": 1}
    assert accepted.read_text().splitlines() == [lines[0], lines[3]]
    records = [json.loads(t) for t in rejected.read_text().splitlines()]
    assert [r["line"] for r in records] == [2, 3]
    assert records[0]["raw"] == "{broken"
    assert records[1]["trajectory"]["steps"][1]["calls"][0]["name"] == "nope"
    assert records[1]["reasons"][1].startswith("unknown-function: steps[1].calls[0]")


def test_interrupted_verify_leaves_old_outputs(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text((json.dumps(GOOD) + "\n") * 3)
    accepted, rejected = tmp_path / "a.jsonl", tmp_path / "r.jsonl"
    accepted.write_text("old accepted\n")
    with pytest.raises(KeyboardInterrupt):
        verify_file(source, accepted, rejected, FixedJudge(KeyboardInterrupt()))  # type: ignore[arg-type]
    assert accepted.read_text() == "old accepted\n"
    assert not rejected.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "in.jsonl"]
