"""``complete``: structure repair, the rules teacher, a scripted model teacher, bad input."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from moragent.backends.base import CacheStats, Constraint, Generation
from moragent.data.complete import CompleteStats, complete_file, complete_trajectory, repair
from moragent.data.io import DataError
from moragent.data.rules import RulesTeacher, purpose
from moragent.data.teacher import BackendTeacher, TeacherError, resolve_teacher
from moragent.data.verify import check_data
from moragent.roles import Role
from moragent.trajectory import (
    ExecutorStep,
    ObservationStep,
    ReasonerStep,
    SummarizerStep,
    ToolCall,
    ToolResult,
    Trajectory,
)

TOOLS = [
    {
        "name": "find_crop",
        "description": "Search for information about a specific crop.",
        "parameters": {
            "type": "object",
            "properties": {"crop": {"type": "string"}},
            "required": ["crop"],
        },
        "responses": {
            "type": "object",
            "properties": {
                "region": {"type": "string", "description": "Where it grows"},
                "yield_t": {"type": "number", "description": "Yield in tonnes"},
            },
        },
    },
    {
        "name": "get_resources",
        "description": "Retrieve natural resources of a location.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "kind": {"type": "string"}},
            "required": ["location"],
        },
    },
]


def linked_trajectory() -> Trajectory:
    """Two calls where the second takes the first one's ``region`` (Seal-Tools style)."""
    return Trajectory(
        query="Where do tomatoes grow, and what timber is there?",
        tools=TOOLS,
        steps=[
            ReasonerStep("", Role.EXECUTOR),
            ExecutorStep([ToolCall("find_crop", {"crop": "tomato"})]),
            ObservationStep([ToolResult("find_crop", "")]),
            ReasonerStep("", Role.EXECUTOR),
            ExecutorStep([ToolCall("get_resources", {"location": "API_call_0", "kind": "timber"})]),
            ObservationStep([ToolResult("get_resources", "")]),
            ReasonerStep("", Role.SUMMARIZER),
            SummarizerStep(""),
        ],
        meta={
            "source": "seal-tools",
            "links": [
                {
                    "step": 4,
                    "call": 0,
                    "argument": "location",
                    "ref": "API_call_0",
                    "from_step": 1,
                    "from_call": 0,
                    "output": "region",
                }
            ],
        },
    )


def test_rules_fill_every_gap_and_mark_synthetic() -> None:
    trajectory = linked_trajectory()
    stats = CompleteStats()
    complete_trajectory(trajectory, RulesTeacher(seed=0), stats)
    assert stats.filled == {"observation": 2, "thought": 3, "answer": 1, "link": 1}
    steps = trajectory.steps
    assert all(
        step.synthetic for step in steps if not isinstance(step, ExecutorStep) or step is steps[4]
    )
    assert steps[1].synthetic is False  # the first call is the source's, untouched
    first = json.loads(steps[2].results[0].content)  # type: ignore[union-attr]
    value = steps[4].calls[0].arguments["location"]  # type: ignore[union-attr]
    assert value.startswith("region-") and first["region"] == value
    assert isinstance(first["yield_t"], float)
    assert trajectory.meta["links"][0]["value"] == value
    thought = steps[0].thought  # type: ignore[union-attr]
    assert "find_crop" in thought and 'crop="tomato"' in thought
    assert "search for information about a specific crop" in thought.lower()
    assert "The location comes from the region that find_crop returned." in steps[3].thought  # type: ignore[union-attr]
    assert "find_crop and get_resources" in steps[6].thought  # type: ignore[union-attr]
    assert "region: " + value in trajectory.answer  # type: ignore[operator]
    assert trajectory.meta["teacher"] == "rules"
    assert check_data(trajectory.to_dict())[0] == []


def test_rules_are_deterministic_and_seeded() -> None:
    outputs = {}
    for seed in (0, 0, 1, 2, 3):
        trajectory = linked_trajectory()
        complete_trajectory(trajectory, RulesTeacher(seed=seed), CompleteStats())
        outputs.setdefault(seed, []).append(trajectory.to_json())
    assert outputs[0][0] == outputs[0][1]
    assert len({outputs[s][0] for s in (0, 1, 2, 3)}) > 1


def test_rules_thought_without_any_call() -> None:
    trajectory = Trajectory("hi", TOOLS, [ReasonerStep("", Role.SUMMARIZER), SummarizerStep("Hi!")])
    complete_trajectory(trajectory, RulesTeacher(), CompleteStats())
    # one offered tool and what it does, then the verdict
    thought = trajectory.steps[0].thought  # type: ignore[union-attr]
    named = next(t for t in TOOLS if thought.startswith(t["name"] + " can "))
    assert thought.startswith(f"{named['name']} can {purpose(named, named['name'])}, which is not ")
    assert trajectory.steps[1].synthetic is False
    assert trajectory.answer == "Hi!"


def test_repair_lays_out_missing_steps() -> None:
    trajectory = Trajectory("q", TOOLS, [ExecutorStep([ToolCall("find_crop", {"crop": "x"})])])
    assert repair(trajectory) == 4
    assert [s.role for s in trajectory.steps] == [
        "reasoner",
        "executor",
        "observation",
        "reasoner",
        "summarizer",
    ]
    assert trajectory.steps[0].next is Role.EXECUTOR  # type: ignore[union-attr]
    assert trajectory.steps[3].next is Role.SUMMARIZER  # type: ignore[union-attr]


class ScriptedBackend:
    """A fake ``Backend`` answering from a list; an exception in the list is raised."""

    name = "scripted"

    def __init__(self, replies: Sequence[Any]) -> None:
        self.replies = list(replies)
        self.prompts: list[tuple[Role, str]] = []
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def feed(self, role: Role, text: str) -> int:
        return 0

    def generate(
        self,
        role: Role,
        prompt: str,
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        constraint: Constraint | None = None,
        on_token: Any = None,
        temperature: float = 0.0,
    ) -> Generation:
        self.prompts.append((role, prompt))
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return Generation(reply, len(prompt), len(reply), "stop")

    def count_tokens(self, text: str) -> int:
        return len(text)

    @property
    def stats(self) -> CacheStats:
        return CacheStats()

    def close(self) -> None:
        pass


def simple_trajectory() -> Trajectory:
    return Trajectory(
        "Weather in Paris?",
        TOOLS[:1],
        [
            ReasonerStep("", Role.EXECUTOR),
            ExecutorStep([ToolCall("find_crop", {"crop": "tomato"})]),
            ObservationStep([ToolResult("find_crop", '{"region": "south"}')]),
            ReasonerStep("", Role.SUMMARIZER),
            SummarizerStep(""),
        ],
    )


def test_model_teacher_fills_with_role_prompts() -> None:
    backend = ScriptedBackend(
        [
            "Thought: I should look up the crop.\nNext: executor",
            "The region is known now.<|im_end|>",
            "Tomatoes grow in the south.",
        ]
    )
    teacher = BackendTeacher(backend)
    trajectory = simple_trajectory()
    stats = CompleteStats()
    complete_trajectory(trajectory, teacher, stats)
    assert trajectory.steps[0].thought == "I should look up the crop."  # type: ignore[union-attr]
    assert trajectory.steps[3].thought == "The region is known now."  # type: ignore[union-attr]
    assert trajectory.answer == "Tomatoes grow in the south."
    assert [role for role, _ in backend.prompts] == [Role.REASONER, Role.REASONER, Role.SUMMARIZER]
    assert backend.resets == 3
    assert '"name": "find_crop"' in backend.prompts[0][1]
    assert "Result of find_crop:" in backend.prompts[2][1]
    assert stats.with_teacher_errors == 0


def test_model_teacher_timeout_and_garbage_reject_the_trajectory() -> None:
    backend = ScriptedBackend([TimeoutError("30 s"), "   ", "Answer."])
    trajectory = simple_trajectory()
    stats = CompleteStats()
    complete_trajectory(trajectory, BackendTeacher(backend), stats)
    assert trajectory.meta["teacher_errors"] == [
        "steps[0].thought: teacher timed out (30 s)",
        "steps[3].thought: teacher returned an empty thought",
    ]
    assert trajectory.answer == "Answer."
    assert stats.with_teacher_errors == 1
    reasons, _ = check_data(trajectory.to_dict())
    assert "teacher-error: steps[0].thought: teacher timed out (30 s)" in reasons
    assert "empty-turn: steps[0].thought is empty" in reasons


def test_model_teacher_observation_value_feeds_the_link() -> None:
    backend = ScriptedBackend(
        ['{"region": "Po valley", "yield_t": 3.5}', '{"timber": "oak"}'] + ["ok"] * 4
    )
    trajectory = linked_trajectory()
    stats = CompleteStats()
    complete_trajectory(trajectory, BackendTeacher(backend, name="openai:x"), stats)
    assert trajectory.steps[4].calls[0].arguments["location"] == "Po valley"  # type: ignore[union-attr]
    assert backend.prompts[0][0] is Role.EXECUTOR
    assert '"region"' in backend.prompts[0][1]
    assert stats.filled["link"] == 1


def test_resolve_teacher() -> None:
    assert isinstance(resolve_teacher("rules", seed=3), RulesTeacher)
    with pytest.raises(ValueError, match="unknown teacher 'gpt4'"):
        resolve_teacher("gpt4")


def test_complete_file_reports_bad_line_with_field(tmp_path: Path) -> None:
    good = simple_trajectory().to_json()
    bad = json.dumps(
        {"query": "q", "steps": [{"role": "reasoner", "thought": 3, "next": "executor"}]}
    )
    source = tmp_path / "in.jsonl"
    source.write_text(good + "\n" + bad + "\n")
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    with pytest.raises(DataError) as caught:
        complete_file(source, out, RulesTeacher())
    assert str(caught.value) == (f"{source}:2: field steps[0].thought: 3 is not of type 'string'")
    assert out.read_text() == "old\n"
    stats = complete_file(source, out, RulesTeacher(), skip_bad=True)
    assert (stats.trajectories, len(stats.skipped)) == (1, 1)
    assert len(out.read_text().splitlines()) == 1


def test_run_goes_on_after_teacher_failures(tmp_path: Path) -> None:
    from moragent.data.verify import verify_file

    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(simple_trajectory().to_json() for _ in range(3)) + "\n")
    replies: list[Any] = ["First.", "Then answer.", "Done."]  # line 1: fine
    replies += [RuntimeError("connection reset"), "x", "y"]  # line 2: backend error
    replies += ["a" * 5000, "z", "Done."]  # line 3: garbage thought
    out = tmp_path / "out.jsonl"
    stats = complete_file(source, out, BackendTeacher(ScriptedBackend(replies)))
    assert (stats.trajectories, stats.with_teacher_errors) == (3, 2)
    lines = [json.loads(text) for text in out.read_text().splitlines()]
    assert lines[1]["meta"]["teacher_errors"] == [
        "steps[0].thought: teacher failed: RuntimeError: connection reset"
    ]
    assert lines[2]["meta"]["teacher_errors"] == [
        "steps[0].thought: teacher returned garbage: a thought of 5000 characters"
    ]
    checked = verify_file(out, tmp_path / "a.jsonl", tmp_path / "r.jsonl")
    assert (checked.accepted, checked.rejected) == (1, 2)
    assert checked.reasons["teacher-error"] == 2


def test_backend_judge_scores_and_rejects_garbage() -> None:
    teacher = BackendTeacher(ScriptedBackend(["7", "8.5/10", "great!", "42"]))
    trajectory = simple_trajectory()
    assert teacher.judge(trajectory) == 0.7
    assert teacher.judge(trajectory) == 0.85
    with pytest.raises(TeacherError, match="judge gave no score from 0 to 10: 'great!'"):
        teacher.judge(trajectory)
    with pytest.raises(TeacherError, match="'42'"):
        teacher.judge(trajectory)


@pytest.mark.slow
def test_llamacpp_teacher_completes_a_trajectory(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from moragent.data.teacher import load_backend

    backend = load_backend("llamacpp", None)
    teacher = BackendTeacher(backend, max_tokens=32, name="llamacpp", chat_wrap=True)
    trajectory = simple_trajectory()
    stats = CompleteStats()
    complete_trajectory(trajectory, teacher, stats)
    backend.close()
    errors = trajectory.meta.get("teacher_errors", [])
    assert stats.filled["thought"] + stats.filled["answer"] + len(errors) == 3
    for index in (0, 3):
        step = trajectory.steps[index]
        filled = step.thought != ""  # type: ignore[union-attr]
        assert filled == step.synthetic
        assert filled or any(e.startswith(f"steps[{index}].thought") for e in errors)
    assert trajectory.meta["teacher"] == "llamacpp"


def test_model_teacher_rejects_echoes_and_non_json_observations() -> None:
    backend = ScriptedBackend(
        [
            'Sure! ```json\n{"region": "Po valley", "yield_t": 2}\n```',  # documented fields: JSON
            "plain text result",  # no documented fields: any text
            "The assistant's thought that leads to this: one or two short sentences.",
            "I will look it up.",
            "Fine.",
            "All done.",
        ]
    )
    trajectory = linked_trajectory()
    complete_trajectory(trajectory, BackendTeacher(backend), CompleteStats())
    assert trajectory.meta["teacher_errors"] == [
        "steps[0].thought: teacher returned garbage: the thought repeats the instructions",
    ]
    steps = trajectory.steps
    assert steps[2].results[0].content == '{"region": "Po valley", "yield_t": 2}'  # type: ignore[union-attr]
    assert steps[4].calls[0].arguments["location"] == "Po valley"  # type: ignore[union-attr]
    assert steps[5].results[0].content == "plain text result"  # type: ignore[union-attr]
    assert steps[3].thought == "I will look it up."  # type: ignore[union-attr]
    no_json = BackendTeacher(ScriptedBackend(["no json here"]))
    with pytest.raises(TeacherError, match="no JSON object in 'no json here'"):
        no_json.observation(linked_trajectory(), 2, 0)
