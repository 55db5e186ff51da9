"""The ReAct controller on a scripted backend: no model needed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moragent import Agent, tool
from moragent.backends.scripted import ScriptedBackend
from moragent.events import (
    AnswerEvent,
    ErrorEvent,
    ObservationEvent,
    RoleStarted,
    ThoughtEvent,
    ToolCallEvent,
)
from moragent.prompts import BUDGET_NOTE, DEFAULT_PROMPTS
from moragent.roles import Role


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: first number.
        b: second number.
    """
    return a + b


@tool
def shout(text: str) -> str:
    """Upper-case a text.

    Args:
        text: the text.
    """
    return text.upper()


@tool
def broken(x: int) -> int:
    """Always fails.

    Args:
        x: anything.
    """
    raise RuntimeError("disk on fire")


def agent_with(replies, tools=(add, shout), **kwargs) -> tuple[Agent, ScriptedBackend]:
    backend = ScriptedBackend(replies)
    return Agent(tools=list(tools), backend=backend, **kwargs), backend


CALL_ADD = json.dumps({"name": "add", "arguments": {"a": 2, "b": 40}})


def test_full_episode_steps_events_and_answer():
    agent, _ = agent_with(
        [
            "Thought: I should add the numbers.\nNext: executor",
            CALL_ADD,
            "Thought: I have the sum.\nNext: summarizer",
            "The sum is 42.",
        ]
    )
    events = list(agent.stream("What is 2 + 40?"))

    kinds = [type(e).__name__ for e in events if not type(e).__name__ == "TokenEvent"]
    assert kinds == [
        "RoleStarted", "ThoughtEvent", "RoleStarted", "ToolCallEvent", "ObservationEvent",
        "RoleStarted", "ThoughtEvent", "RoleStarted", "AnswerEvent",
    ]  # fmt: skip
    started = [e.role for e in events if isinstance(e, RoleStarted)]
    assert started == [Role.REASONER, Role.EXECUTOR, Role.REASONER, Role.SUMMARIZER]
    observation = next(e for e in events if isinstance(e, ObservationEvent))
    assert (observation.result.name, observation.result.content) == ("add", "42")
    answer = events[-1]
    assert isinstance(answer, AnswerEvent) and answer.text == "The sum is 42."
    steps = [step["role"] for step in answer.trajectory.to_dict()["steps"]]
    assert steps == ["reasoner", "executor", "observation", "reasoner", "summarizer"]
    assert answer.trajectory.calls[0].arguments == {"a": 2, "b": 40}


def test_inference_transcript_equals_training_render_segment_by_segment():
    """The controller feeds exactly the segments that training renders from the trajectory."""
    agent, backend = agent_with(
        [
            "Thought: add them\nNext: executor",
            CALL_ADD,
            "Thought: done\nNext: summarizer",
            "42",
        ]
    )
    result = agent.run("What is 2 + 40?")

    rendered = DEFAULT_PROMPTS.segments(result.trajectory)
    assert backend.transcript == "".join(s.text for s in rendered)

    def role_of_each_char(pairs):
        return [role for role, text in pairs for _ in text]

    assert role_of_each_char(backend.segments) == role_of_each_char(
        [(s.role, s.text) for s in rendered]
    )
    # the observation is read under the reasoner, the call JSON under the executor
    observation_text = DEFAULT_PROMPTS.observation(result.trajectory.steps[2].results)
    assert any(r is Role.REASONER and observation_text in t for r, t in backend.segments)
    assert (Role.EXECUTOR, CALL_ADD) in backend.segments


def test_step_budget_forces_the_summarizer_with_a_note():
    replies = ["Thought: again\nNext: executor", CALL_ADD] * 2 + ["I could not finish."]
    agent, backend = agent_with(replies, max_steps=2)
    result = agent.run("loop forever")

    assert result.answer == "I could not finish."
    assert result.trajectory.meta["budget_exhausted"] is True
    assert [s.role for s in result.trajectory.steps].count("executor") == 2
    assert BUDGET_NOTE in backend.transcript
    assert DEFAULT_PROMPTS.render(result.trajectory) == backend.transcript


def test_parallel_calls_run_in_order():
    calls = json.dumps(
        [
            {"name": "add", "arguments": {"a": 1, "b": 2}},
            {"name": "shout", "arguments": {"text": "hi"}},
        ]
    )
    agent, _ = agent_with(
        ["Thought: two things\nNext: executor", calls, "Thought: ok\nNext: summarizer", "3 HI"]
    )
    events = list(agent.stream("do both"))

    results = [e.result.content for e in events if isinstance(e, ObservationEvent)]
    assert results == ["3", "HI"]
    assert [e.call.name for e in events if isinstance(e, ToolCallEvent)] == ["add", "shout"]


def test_repeated_identical_calls_run_once():
    calls = json.dumps([{"name": "add", "arguments": {"a": 1, "b": 2}}] * 5)
    agent, _ = agent_with(
        ["Thought: x\nNext: executor", calls, "Thought: y\nNext: summarizer", "3"]
    )
    events = list(agent.stream("add"))
    assert len([e for e in events if isinstance(e, ToolCallEvent)]) == 1


def test_garbage_executor_output_becomes_an_observation():
    agent, _ = agent_with(
        [
            "Thought: call\nNext: executor",
            "sorry I cannot do JSON",
            "Thought: give up\nNext: summarizer",
            "No result.",
        ]
    )
    events = list(agent.stream("x"))

    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and not errors[0].fatal and errors[0].where == "executor"
    observation = next(e for e in events if isinstance(e, ObservationEvent))
    assert observation.result.error and "could not be read" in observation.result.content
    assert isinstance(events[-1], AnswerEvent) and events[-1].text == "No result."


def test_unknown_tool_and_bad_arguments_become_error_observations():
    bad = json.dumps(
        [
            {"name": "nope", "arguments": {}},
            {"name": "add", "arguments": {"a": "two", "b": 1}},
        ]
    )
    agent, _ = agent_with(["Thought: t\nNext: executor", bad, "Thought: t\nNext: summarizer", "?"])
    results = [e.result for e in agent.stream("x") if isinstance(e, ObservationEvent)]

    assert [r.error for r in results] == [True, True]
    assert "nope" in results[0].content and "add" in results[0].content  # lists the known tools
    assert "a" in results[1].content


def test_a_raising_tool_becomes_an_observation():
    agent, _ = agent_with(
        [
            "Thought: t\nNext: executor",
            json.dumps({"name": "broken", "arguments": {"x": 1}}),
            "Thought: t\nNext: summarizer",
            "It failed.",
        ],
        tools=[broken],
    )
    result = agent.run("x")
    observation = result.trajectory.steps[2]
    assert observation.results[0].error
    assert "disk on fire" in observation.results[0].content
    assert result.answer == "It failed."


def test_unreadable_reasoner_output_goes_on_with_a_warning():
    agent, _ = agent_with(["blah blah", CALL_ADD, "more blah", "42"])
    events = list(agent.stream("x"))
    warnings = [e for e in events if isinstance(e, ErrorEvent)]
    assert [w.where for w in warnings] == ["reasoner", "reasoner"]
    assert not any(w.fatal for w in warnings)
    thoughts = [e.next for e in events if isinstance(e, ThoughtEvent)]
    assert thoughts == [Role.EXECUTOR, Role.SUMMARIZER]
    assert events[-1].text == "42"


def test_no_tools_goes_straight_to_the_summarizer():
    agent, backend = agent_with(["Paris."], tools=())
    result = agent.run("Capital of France?")
    assert result.answer == "Paris."
    assert [role for role, _ in backend.calls] == [Role.SUMMARIZER]
    assert "No tools are available" in backend.transcript


def test_backend_failure_ends_the_episode_with_a_clear_error():
    agent, _ = agent_with(["Thought: t\nNext: executor"])  # the script runs out
    result = agent.run("x")
    assert result.answer is None
    assert "ran out" in result.error
    assert [s.role for s in result.trajectory.steps] == ["reasoner"]


def test_constraints_are_sent_to_the_backend():
    agent, backend = agent_with(
        ["Thought: t\nNext: executor", CALL_ADD, "Thought: t\nNext: summarizer", "42"]
    )
    agent.run("x")
    reasoner, executor, _, summarizer = (constraint for _, constraint in backend.calls)
    assert reasoner.next_roles == ("executor", "summarizer")
    names = {
        option["properties"]["name"]["const"]
        for option in executor.json_schema["anyOf"][0]["anyOf"]
    }
    assert names == {"add", "shout"}
    assert summarizer is None


def test_chat_keeps_the_session_and_history():
    agent, backend = agent_with(
        ["Thought: t\nNext: summarizer", "Hello!", "Thought: t\nNext: summarizer", "Bye!"]
    )
    first = agent.chat("hi")
    fed_after_first = len(backend.segments)
    second = agent.chat("bye")

    assert (first.answer, second.answer) == ("Hello!", "Bye!")
    assert agent.history == [
        {"query": "hi", "answer": "Hello!"},
        {"query": "bye", "answer": "Bye!"},
    ]
    # the second turn appended to the same session: the first turn's text is still there
    assert backend.segments[0][1].startswith("<|im_start|>system")
    assert backend.segments[fed_after_first][1].startswith(DEFAULT_PROMPTS.user("bye"))
    assert not any("system" in text for _, text in backend.segments[1:])
    assert second.trajectory.history == [{"query": "hi", "answer": "Hello!"}]


def test_an_interrupted_turn_makes_the_next_turn_start_a_fresh_session():
    agent, backend = agent_with(
        ["Thought: t\nNext: summarizer", "Hello!", "Thought: t\nNext: summarizer", "Again"]
    )
    stream = agent.chat_stream("hi")
    next(stream)  # the user pressed Ctrl-C after the first event
    stream.close()
    assert agent.history == []
    result = agent.chat("hi again")
    assert result.answer == "Hello!"  # the script continues where it stopped
    assert backend.segments[0][1].startswith("<|im_start|>system")  # re-fed the frame


def test_max_steps_must_be_positive():
    with pytest.raises(ValueError, match="max_steps"):
        Agent(tools=[add], backend=ScriptedBackend([]), max_steps=0)


def test_run_result_json_names_the_role_of_each_step():
    agent, _ = agent_with(
        ["Thought: t\nNext: executor", CALL_ADD, "Thought: t\nNext: summarizer", "42"]
    )
    data = json.loads(json.dumps(agent.run("x").to_dict()))
    assert data["answer"] == "42"
    assert [s["role"] for s in data["trajectory"]] == [
        "reasoner", "executor", "observation", "reasoner", "summarizer",
    ]  # fmt: skip
    assert data["meta"]["reevaluated_tokens"] == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=120), min_size=1, max_size=12))
def test_garbage_model_output_never_crashes_the_agent(replies):
    agent = Agent(
        tools=[add, shout], backend=ScriptedBackend(replies, repeat_last=True), max_steps=3
    )
    result = agent.run("anything")
    assert result.error is None
    assert isinstance(result.answer, str)
    assert result.trajectory.steps[-1].role == "summarizer"


def test_a_cut_list_of_calls_runs_the_whole_ones_and_says_so():
    cut = '[{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "shout", "argum'
    agent, _ = agent_with(["Thought: t\nNext: executor", cut, "Thought: t\nNext: summarizer", "3"])
    events = list(agent.stream("x"))
    warnings = [e for e in events if isinstance(e, ErrorEvent)]
    assert len(warnings) == 1 and "cut" in warnings[0].message and not warnings[0].fatal
    assert [e.call.name for e in events if isinstance(e, ToolCallEvent)] == ["add"]


@pytest.mark.parametrize("query", ["", "   ", None])
def test_an_empty_query_is_a_clear_error(query):
    agent = Agent(tools=[], backend=ScriptedBackend([]))
    with pytest.raises(ValueError, match="non-empty string"):
        agent.run(query)
    with pytest.raises(ValueError, match="non-empty string"):
        agent.chat(query)
