"""Converters on real lines of the shared data sets, auto-detection and round trips."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest

from moragent.data.chat import OpenAIConverter, ShareGPTConverter
from moragent.data.convert import convert_file, detect_format
from moragent.data.io import DataError, iter_json_array, iter_jsonl
from moragent.data.react import REACT_TOOLS, ReactTextConverter
from moragent.data.schema import schema_errors
from moragent.data.seal import SealToolsConverter, ToolIndex, property_schema
from moragent.data.verify import verify_file
from moragent.trajectory import (
    ExecutorStep,
    ObservationStep,
    ReasonerStep,
    SummarizerStep,
    Trajectory,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SEAL = DATA / "seal-tools"
GLAIVE = DATA / "glaive-demo" / "glaive_toolcall_en_demo.json"
FIREACT = DATA / "fireact" / "multitask.jsonl"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not here")


def _seal_record(record_id: str) -> dict:
    for _, record in iter_jsonl(SEAL / "dev.jsonl"):
        if record["id"] == record_id:
            return record
    raise AssertionError(record_id)


def _roles(trajectory: Trajectory) -> list[str]:
    return [step.role for step in trajectory.steps]


def _round_trip(trajectory: Trajectory) -> None:
    data = json.loads(trajectory.to_json())
    assert schema_errors(data) == []
    assert Trajectory.from_dict(data).to_dict() == data


@needs_data
def test_seal_tools_single_call() -> None:
    converter = SealToolsConverter(SEAL / "tool.jsonl", distractors=4, seed=0)
    [trajectory] = converter.convert(_seal_record("dev-easy-0"), 1)
    assert trajectory.query.startswith("Retrieve information about the number of nurses")
    assert _roles(trajectory) == ["reasoner", "executor", "observation", "reasoner", "summarizer"]
    executor = trajectory.steps[1]
    assert isinstance(executor, ExecutorStep)
    assert executor.calls[0].to_dict() == {
        "name": "getHealthWorkforce",
        "arguments": {"location": "country", "occupation": "nurses"},
    }
    names = [tool["name"] for tool in trajectory.tools]
    assert len(names) == 5 and "getHealthWorkforce" in names
    index = converter.index
    gold_field = index.field_of["getHealthWorkforce"]
    domain = gold_field.split("/")[0]
    assert all(index.field_of[name].split("/")[0] == domain for name in names)
    gold = next(t for t in trajectory.tools if t["name"] == "getHealthWorkforce")
    assert gold["parameters"]["properties"]["location"]["type"] == "string"
    assert gold["parameters"]["required"] == ["location"]
    # missing parts are left empty, to be completed
    assert trajectory.steps[0].thought == ""  # type: ignore[union-attr]
    assert trajectory.steps[2].results[0].content == ""  # type: ignore[union-attr]
    assert trajectory.answer == ""
    assert trajectory.meta == {"source": "seal-tools", "source_id": "dev-easy-0"}
    _round_trip(trajectory)


@needs_data
def test_seal_tools_distractors_are_seeded() -> None:
    record = _seal_record("dev-easy-3")
    first = SealToolsConverter(SEAL / "tool.jsonl", seed=1).convert(record, 4)[0]
    again = SealToolsConverter(SEAL / "tool.jsonl", seed=1).convert(record, 4)[0]
    other = SealToolsConverter(SEAL / "tool.jsonl", seed=2).convert(record, 4)[0]
    names = [t["name"] for t in first.tools]
    assert names == [t["name"] for t in again.tools]
    assert names != [t["name"] for t in other.tools]


@needs_data
def test_seal_tools_output_links_are_kept() -> None:
    converter = SealToolsConverter(SEAL / "tool.jsonl")
    [trajectory] = converter.convert(_seal_record("dev-difficult-200"), 1)
    assert _roles(trajectory) == [
        "reasoner",
        "executor",
        "observation",
        "reasoner",
        "executor",
        "observation",
        "reasoner",
        "summarizer",
    ]
    first, second = trajectory.steps[1], trajectory.steps[4]
    assert [c.name for c in first.calls] == ["getPlantingInstructions", "searchCrop"]  # type: ignore[union-attr]
    assert second.calls[0].arguments == {"location": "API_call_1", "resource_type": "timber"}  # type: ignore[union-attr]
    assert trajectory.meta["links"] == [
        {
            "step": 4,
            "call": 0,
            "argument": "location",
            "ref": "API_call_1",
            "from_step": 1,
            "from_call": 1,
            "output": "crop_info",
        }
    ]
    _round_trip(trajectory)


def test_seal_parameter_format_to_json_schema() -> None:
    assert property_schema({"type": "int", "description": "Age", "default": 3}) == {
        "type": "integer",
        "description": "Age",
        "default": 3,
    }
    assert property_schema(
        {
            "type": "str",
            "description": "Kind",
            "choices": ["a", "b"],
            "examples": "a, b",
            "unit": "m",
        }
    ) == {
        "type": "string",
        "description": "Kind (unit: m)",
        "enum": ["a", "b"],
        "examples": ["a, b"],
    }
    assert property_schema({"type": "float"})["type"] == "number"
    assert property_schema({"type": "bool"})["type"] == "boolean"


def test_seal_unresolved_reference_is_left_literal(tmp_path: Path) -> None:
    tools = tmp_path / "tool.jsonl"
    tools.write_text(
        json.dumps(
            {
                "api_name": "f",
                "api_description": "Do f",
                "field": "A/B",
                "parameters": {"x": {"type": "str", "description": "x"}},
                "required": ["x"],
                "responses": {"out": {"type": "str", "description": "o"}},
            }
        )
        + "\n"
    )
    record = {
        "id": "r",
        "query": "q",
        "calling": [
            {"api": "f", "parameters": {"x": "API_call_5"}, "responses": ["API_call_0"]},
        ],
    }
    [trajectory] = SealToolsConverter(tools, distractors=3).convert(record, 1)
    assert trajectory.calls[0].arguments == {"x": "API_call_5"}
    assert "links" not in trajectory.meta
    assert [t["name"] for t in trajectory.tools] == ["f"]  # no other tool to sample
    assert isinstance(ToolIndex(tools).tools["f"]["responses"], dict)


@needs_data
def test_sharegpt_glaive_turns_become_trajectories() -> None:
    record = next(iter_json_array(GLAIVE))[1]
    trajectories = ShareGPTConverter().convert(record, 2)
    assert len(trajectories) == 3
    first, second, third = trajectories
    assert _roles(first) == ["reasoner", "summarizer"]
    assert first.answer.startswith("Of course! I can help you with that.")
    assert second.query == "I have chicken, bell peppers, and rice."
    assert second.history == [{"query": first.query, "answer": first.answer}]
    assert _roles(second) == ["reasoner", "executor", "observation", "reasoner", "summarizer"]
    assert second.calls[0].to_dict() == {
        "name": "search_recipes",
        "arguments": {"ingredients": ["chicken", "bell peppers", "rice"]},
    }
    observation = second.steps[2]
    assert isinstance(observation, ObservationStep)
    assert observation.results[0].name == "search_recipes"
    assert json.loads(observation.results[0].content)["recipes"][0]["name"] == (
        "Chicken and Bell Pepper Stir Fry"
    )
    assert second.steps[0].thought == ""  # type: ignore[union-attr]
    assert len(third.history) == 2
    assert second.tools[0]["parameters"]["required"] == ["ingredients"]
    for trajectory in trajectories:
        _round_trip(trajectory)


@needs_data
def test_react_text_fireact_line() -> None:
    record = next(iter_jsonl(FIREACT))[1]
    [trajectory] = ReactTextConverter().convert(record, 1)
    assert trajectory.query == "Are Pam Veasey and Jon Jost both American?"
    assert _roles(trajectory) == [
        "reasoner",
        "executor",
        "observation",
        "reasoner",
        "executor",
        "observation",
        "reasoner",
        "summarizer",
    ]
    assert trajectory.steps[0].thought == (  # type: ignore[union-attr]
        "I need to search the nationalities of Pam Veasey and Jon Jost."
    )
    assert trajectory.calls[1].to_dict() == {
        "name": "search",
        "arguments": {"query": "Jon Jost nationality"},
    }
    assert trajectory.steps[2].results[0].content == "American"  # type: ignore[union-attr]
    assert trajectory.answer == "Yes"
    assert trajectory.tools == [REACT_TOOLS["search"]]
    assert trajectory.meta["reward"] == "True"
    _round_trip(trajectory)


def test_react_text_without_action_names_field() -> None:
    record = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "Thought: hmm"},
        ]
    }
    with pytest.raises(DataError) as caught:
        ReactTextConverter().convert(record, 1)
    assert caught.value.field == "messages[1].content"
    assert "Action" in caught.value.message


OPENAI_RECORD = {
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ],
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "I should look it up.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 18}'},
        {"role": "assistant", "content": "It is 18 degrees."},
    ],
}


def test_openai_messages() -> None:
    [trajectory] = OpenAIConverter().convert(OPENAI_RECORD, 7)
    assert trajectory.system == "Be brief."
    assert trajectory.tools[0]["name"] == "get_weather"
    reasoner, executor, observation, final, summarizer = trajectory.steps
    assert isinstance(reasoner, ReasonerStep) and reasoner.thought == "I should look it up."
    assert isinstance(executor, ExecutorStep)
    assert executor.calls[0].arguments == {"city": "Paris"}
    assert isinstance(observation, ObservationStep)
    assert observation.results[0].to_dict() == {"name": "get_weather", "content": '{"temp": 18}'}
    assert isinstance(final, ReasonerStep) and final.thought == ""
    assert isinstance(summarizer, SummarizerStep) and summarizer.answer == "It is 18 degrees."
    assert trajectory.meta == {"source": "openai", "source_id": 7, "turn": 0}
    _round_trip(trajectory)


def test_openai_unparsable_arguments_are_kept_for_verify() -> None:
    record = json.loads(json.dumps(OPENAI_RECORD))
    record["messages"][2]["tool_calls"][0]["function"]["arguments"] = "{city: Paris"
    [trajectory] = OpenAIConverter().convert(record, 1)
    assert trajectory.calls[0].arguments == "{city: Paris"


def test_sharegpt_bad_function_call_names_field(tmp_path: Path) -> None:
    record = {
        "conversations": [
            {"from": "human", "value": "hi"},
            {"from": "function_call", "value": "{not json"},
        ],
        "tools": "[]",
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(DataError) as caught:
        convert_file(path, tmp_path / "out.jsonl", "sharegpt")
    assert str(caught.value).startswith(f"{path}:1: field conversations[1].value: the function")
    assert not (tmp_path / "out.jsonl").exists()


@needs_data
@pytest.mark.parametrize(
    ("path", "expected"),
    [(SEAL / "dev.jsonl", "seal-tools"), (GLAIVE, "sharegpt"), (FIREACT, "react-text")],
)
def test_auto_detection_on_real_files(path: Path, expected: str) -> None:
    assert detect_format(path) == expected


def test_auto_detection_of_openai_and_unknown(tmp_path: Path) -> None:
    openai = tmp_path / "o.jsonl"
    openai.write_text(json.dumps(OPENAI_RECORD) + "\n")
    assert detect_format(openai) == "openai"
    other = tmp_path / "x.jsonl"
    other.write_text('{"text": "hello"}\n')
    with pytest.raises(DataError) as caught:
        detect_format(other)
    assert "seal-tools, sharegpt, react-text, openai" in str(caught.value)
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        detect_format(empty)


def test_convert_skip_bad_counts_lines(tmp_path: Path) -> None:
    source = tmp_path / "o.jsonl"
    source.write_text(json.dumps(OPENAI_RECORD) + "\n{bad\n" + json.dumps({"messages": 3}) + "\n")
    stats = convert_file(source, tmp_path / "out.jsonl", "openai", skip_bad=True)
    assert (stats.records, stats.trajectories, len(stats.skipped)) == (2, 1, 2)
    assert ":2: not valid JSON" in stats.skipped[0]
    assert ":3: field messages:" in stats.skipped[1]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1
    # with the format detected, a bad line among the first records is passed over too
    stats = convert_file(source, tmp_path / "auto.jsonl", skip_bad=True)
    assert (stats.format, stats.trajectories) == ("openai", 1)
    with pytest.raises(DataError, match=":2: not valid JSON"):
        convert_file(source, tmp_path / "auto.jsonl")


def test_an_output_that_is_the_input_or_another_output_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "o.jsonl"
    text = json.dumps(OPENAI_RECORD) + "\n"
    source.write_text(text)
    with pytest.raises(DataError, match="same file as the input"):
        convert_file(source, tmp_path / "." / "o.jsonl", "openai")
    assert source.read_text() == text
    with pytest.raises(DataError, match="same file as the output"):
        verify_file(source, tmp_path / "x.jsonl", tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


@needs_data
@pytest.mark.parametrize("path", [SEAL / "dev.jsonl", GLAIVE, FIREACT])
def test_real_files_convert_to_valid_trajectories(path: Path, tmp_path: Path) -> None:
    source = tmp_path / "sample" / path.name
    source.parent.mkdir()
    if path.suffix == ".json":
        items = [item for _, item in islice(iter_json_array(path), 40)]
        source.write_text(json.dumps(items))
    else:
        with path.open() as handle:
            source.write_text("".join(islice(handle, 40)))
        if path.parent == SEAL:
            (source.parent / "tool.jsonl").symlink_to(SEAL / "tool.jsonl")
    out = tmp_path / "out.jsonl"
    stats = convert_file(source, out)
    lines = out.read_text().splitlines()
    assert stats.records == 40 and stats.trajectories == len(lines) >= 40
    for text in lines:
        assert schema_errors(json.loads(text)) == []


@needs_data
def test_seal_tools_numeric_strings_kept_or_coerced() -> None:
    record = _seal_record("dev-easy-14")
    [kept] = SealToolsConverter(SEAL / "tool.jsonl").convert(record, 15)
    assert kept.calls[0].arguments["age"] == "63"
    assert "coerced" not in kept.meta
    [fixed] = SealToolsConverter(SEAL / "tool.jsonl", coerce_numbers=True).convert(record, 15)
    assert fixed.calls[0].arguments["age"] == 63
    assert fixed.calls[0].arguments["program_id"] == "Y4MkKoaGP"
    assert fixed.meta["coerced"] == ["calling[0].parameters.age"]


def test_openai_content_parts_are_joined() -> None:
    record = json.loads(json.dumps(OPENAI_RECORD))
    record["messages"][1]["content"] = [
        {"type": "text", "text": "Weather "},
        {"type": "text", "text": "in Paris?"},
    ]
    [trajectory] = OpenAIConverter().convert(record, 1)
    assert trajectory.query == "Weather in Paris?"


def _without_answer_thought(data: dict) -> dict:
    """A trajectory dict as the OpenAI form can hold it (see moragent.data.export)."""
    data = json.loads(json.dumps(data))
    data.pop("meta", None)
    for i, step in enumerate(data["steps"]):
        step.pop("synthetic", None)
        if step["role"] == "reasoner" and step["next"] == "summarizer":
            data["steps"][i]["thought"] = ""
        for result in step.get("results", []):
            result.pop("error", None)
    return data


def test_openai_round_trip_keeps_every_field() -> None:
    from moragent.data.export import to_openai

    [trajectory] = OpenAIConverter().convert(OPENAI_RECORD, 1)
    record = to_openai(trajectory)
    assert record["tools"] == OPENAI_RECORD["tools"]
    assert [(m["role"], m.get("content")) for m in record["messages"]] == [
        (m["role"], m.get("content")) for m in OPENAI_RECORD["messages"]
    ]
    assert record["messages"][2]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    [again] = OpenAIConverter().convert(record, 1)
    assert again.to_dict() == trajectory.to_dict()


@needs_data
def test_glaive_round_trip_through_openai_form() -> None:
    from moragent.data.export import to_openai

    for _, record in islice(iter_json_array(GLAIVE), 30):
        for trajectory in ShareGPTConverter().convert(record, 1):
            again = OpenAIConverter().convert(to_openai(trajectory), 1)[-1]
            assert _without_answer_thought(again.to_dict()) == _without_answer_thought(
                trajectory.to_dict()
            )


def test_seal_tools_without_tool_file_says_what_to_do(tmp_path: Path) -> None:
    source = tmp_path / "dev.jsonl"
    source.write_text(json.dumps({"id": "a", "query": "q", "calling": []}) + "\n")
    with pytest.raises(ValueError) as caught:
        convert_file(source, tmp_path / "out.jsonl")
    assert str(caught.value) == (
        f"Seal-Tools needs its tool.jsonl (not found: {tmp_path / 'tool.jsonl'}): put it next "
        "to the input or pass --tools PATH"
    )
