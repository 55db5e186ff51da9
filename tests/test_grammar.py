"""Output constraints and the parsers of role output."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moragent.grammar import (
    MAX_PARALLEL_CALLS,
    executor_schema,
    parse_executor,
    parse_reasoner,
    reasoner_gbnf,
    reasoner_regex,
)
from moragent.roles import Role

ADD = {
    "name": "add",
    "description": "Add.",
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
}
ECHO = {
    "name": "echo",
    "description": "Echo anything.",
    "parameters": {"type": "object", "properties": {"value": {"description": "any value"}}},
}


def test_executor_schema_accepts_exactly_valid_calls():
    schema = executor_schema([ADD, ECHO], parallel=True)
    good_one = {"name": "add", "arguments": {"a": 1, "b": 2}}
    good_many = [good_one, {"name": "echo", "arguments": {"value": [1, "x"]}}]
    jsonschema.validate(good_one, schema)
    jsonschema.validate(good_many, schema)
    for bad in (
        {"name": "nope", "arguments": {}},
        {"name": "add", "arguments": {"a": 1}},  # missing b
        {"name": "add", "arguments": {"a": 1, "b": 2, "c": 3}},  # closed objects
        {"name": "add"},
        [],
        [good_one] * (MAX_PARALLEL_CALLS + 1),
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_single_call_schema_without_parallel_calls():
    schema = executor_schema([ADD], parallel=False)
    assert schema["properties"]["name"] == {"const": "add"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"name": "add", "arguments": {"a": 1, "b": 2}}], schema)


def test_a_parameter_without_a_type_accepts_scalars_and_flat_lists():
    schema = executor_schema([ECHO], parallel=False)
    value = schema["properties"]["arguments"]["properties"]["value"]
    assert {option["type"] for option in value["anyOf"]} == {
        "string", "number", "boolean", "null", "array",
    }  # fmt: skip
    for good in ("x", 1.5, None, [1, "a", True]):
        jsonschema.validate(good, value)
    for bad in ({"a": 1}, [[1]]):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, value)
    assert ECHO["parameters"]["properties"]["value"] == {"description": "any value"}  # not mutated


def test_executor_needs_a_tool():
    with pytest.raises(ValueError, match="at least one"):
        executor_schema([])


def test_reasoner_grammar_and_regex_describe_the_same_turn():
    assert "executor" in reasoner_gbnf(("executor", "summarizer"), 100)
    import re

    pattern = re.compile(reasoner_regex(("executor", "summarizer"), 20))
    assert pattern.fullmatch("Thought: fine\nNext: summarizer")
    assert not pattern.fullmatch("Thought: fine\nNext: reasoner")
    assert not pattern.fullmatch("Thought: " + "x" * 21 + "\nNext: executor")


@pytest.mark.parametrize(
    ("text", "thought", "role"),
    [
        ("Thought: add them\nNext: executor", "add them", Role.EXECUTOR),
        ("thought:  done \nnext: Summarizer", "done", Role.SUMMARIZER),
        ("I think so. Next role: executor", "I think so.", Role.EXECUTOR),
        ("Thought: hmm\nNext: reasoner", "hmm", None),
        ("no idea", "no idea", None),
    ],
)
def test_parse_reasoner(text, thought, role):
    parsed = parse_reasoner(text)
    assert (parsed.thought, parsed.next) == (thought, role)
    assert (parsed.problem is None) == (role is not None)


@pytest.mark.parametrize(
    ("text", "calls"),
    [
        ('{"name": "add", "arguments": {"a": 1, "b": 2}}', [("add", {"a": 1, "b": 2})]),
        ('[{"name": "a", "arguments": {}}, {"name": "b"}]', [("a", {}), ("b", {})]),
        ('{"function": {"name": "f", "arguments": "{\\"x\\": 1}"}}', [("f", {"x": 1})]),
        ('Sure! {"name": "f", "parameters": {"x": 2}} done', [("f", {"x": 2})]),
    ],
)
def test_parse_executor_reads_common_shapes(text, calls):
    parsed = parse_executor(text)
    assert parsed.problem is None
    assert [(c.name, c.arguments) for c in parsed.calls] == calls


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("no json here", "no JSON"),
        ('{"name": ', "does not parse"),
        ("[]", "empty list"),
        ('{"arguments": {}}', "no 'name'"),
        ('{"name": "f", "arguments": "not json"}', "not JSON"),
        ('{"name": "f", "arguments": [1]}', "must be a JSON object"),
        ("[1]", "must be a JSON object"),
    ],
)
def test_parse_executor_says_what_is_wrong(text, problem):
    parsed = parse_executor(text)
    assert problem in parsed.problem


@given(st.text(max_size=300))
def test_parsers_never_raise_on_garbage(text):
    reasoner = parse_reasoner(text)
    executor = parse_executor(text)
    assert isinstance(reasoner.thought, str)
    assert executor.problem is not None or executor.calls


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=10,
    )
)
def test_executor_parser_on_any_json_value(value):
    parsed = parse_executor(json.dumps(value))
    if parsed.problem is None:
        assert all(isinstance(call.arguments, dict) for call in parsed.calls)


def test_a_list_cut_mid_call_keeps_the_calls_written_whole():
    text = '[{"name": "a", "arguments": {"x": "q\\\\"}}, {"name": "b", "arguments": {"y": "unfini'
    parsed = parse_executor(text)
    assert parsed.problem is None and parsed.cut
    assert [(c.name, c.arguments) for c in parsed.calls] == [("a", {"x": "q\\"})]
    assert parse_executor('[{"name": "a", "argu').problem is not None  # nothing whole
    assert parse_executor('{"name": "a", "argu').problem is not None  # one call, cut
