"""BFCL evaluation: loading, tool schema conversion, scoring by BFCL's checker, the CLI."""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import jsonschema
import pytest
from typer.testing import CliRunner

from moragent.eval import bfcl
from moragent.eval._bfcl_shim import load_checker
from moragent.eval.bfcl import BfclQuestion
from moragent.eval.bfcl_schema import as_declared, json_schema, tool_schema
from moragent.roles import Role
from moragent.trajectory import ToolCall

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bfcl_eval") is None,
    reason="bfcl-eval not installed (pip install --no-deps bfcl-eval==2026.3.23)",
)

SIZES = {
    "simple_python": 400,
    "multiple": 200,
    "parallel": 200,
    "parallel_multiple": 200,
    "irrelevance": 240,
}


def _question(category: str, qid: str) -> bfcl.BfclQuestion:
    return next(q for q in bfcl.load_category(category) if q.id == qid)


# -- loading ------------------------------------------------------------------------------


@pytest.mark.parametrize("category", bfcl.DEFAULT_CATEGORIES)
def test_load_category_reads_questions_functions_and_answers(category: str) -> None:
    questions = bfcl.load_category(category)

    assert len(questions) == SIZES[category]
    assert [q.id for q in questions[:2]] == [f"{category}_0", f"{category}_1"]
    assert len({q.id for q in questions}) == len(questions)
    for question in questions:
        assert question.category == category
        assert isinstance(question.query, str) and question.query
        assert question.functions and all("name" in doc for doc in question.functions)
        if category == "irrelevance":
            assert question.possible_answer is None
        else:
            assert isinstance(question.possible_answer, list) and question.possible_answer


def test_load_category_first_question_and_limit() -> None:
    questions = bfcl.load_category("simple_python", limit=3)

    assert [q.id for q in questions] == ["simple_python_0", "simple_python_1", "simple_python_2"]
    first = questions[0]
    assert first.query == (
        "Find the area of a triangle with a base of 10 units and height of 5 units."
    )
    assert first.messages == [{"role": "user", "content": first.query}]
    assert first.system is None
    assert first.functions[0]["name"] == "calculate_triangle_area"
    assert first.possible_answer == [
        {"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}
    ]


def test_load_category_sample_spreads_evenly_over_the_category() -> None:
    questions = bfcl.load_category("simple_python", sample=4)

    # 400 questions: every 100th, from the first
    assert [q.id for q in questions] == [f"simple_python_{i}" for i in (0, 100, 200, 300)]
    assert [q.id for q in bfcl.load_category("simple_python", limit=10, sample=5)] == [
        f"simple_python_{i}" for i in (0, 2, 4, 6, 8)
    ]
    assert len(bfcl.load_category("multiple", sample=10_000)) == 200


def test_spread_keeps_order_and_is_exact() -> None:
    assert bfcl.spread(list(range(10)), 3) == [0, 3, 6]
    assert bfcl.spread(list(range(5)), None) == [0, 1, 2, 3, 4]
    assert bfcl.spread(list(range(5)), 5) == [0, 1, 2, 3, 4]


def test_load_category_rejects_unknown_category() -> None:
    with pytest.raises(ValueError, match="simple_java"):
        bfcl.load_category("simple_java")


# -- tool schemas -------------------------------------------------------------------------


def test_tool_schema_keeps_dotted_name() -> None:
    doc = _question("simple_python", "simple_python_1").functions[0]

    assert tool_schema(doc) == {
        "name": "math.factorial",
        "description": "Calculate the factorial of a given number.",
        "parameters": {
            "type": "object",
            "properties": {
                "number": {
                    "type": "integer",
                    "description": "The number for which factorial needs to be calculated.",
                }
            },
            "required": ["number"],
            "additionalProperties": False,
        },
    }


def test_tool_schema_tuple_of_float() -> None:
    doc = _question("simple_python", "simple_python_83").functions[0]
    params = tool_schema(doc)["parameters"]

    assert params["properties"]["coord1"] == {
        "type": "array",
        "description": "The first coordinate as (latitude, longitude).",
        "items": {"type": "number"},
    }
    assert params["required"] == ["coord1", "coord2", "unit"]
    assert params["additionalProperties"] is False


def test_tool_schema_nested_dict_any_and_optional_flags() -> None:
    nested = tool_schema(_question("simple_python", "simple_python_89").functions[0])
    assert nested["parameters"]["properties"]["conditions"] == {
        "type": "object",
        "description": "The conditions based on which records are to be fetched.",
        "properties": {
            "department": {
                "type": "string",
                "description": "The name of the department of students.",
            },
            "school": {
                "type": "string",
                "description": "The name of the school students are enrolled in.",
            },
        },
        "required": [],
        "additionalProperties": False,
    }

    anything = tool_schema(_question("simple_python", "simple_python_109").functions[0])
    assert anything["parameters"]["properties"]["data"] == {
        "description": "The training data for the model."
    }

    flags = tool_schema(_question("multiple", "multiple_0").functions[0])
    assert flags["parameters"]["properties"]["get_area"] == {
        "type": "boolean",
        "description": "A flag to determine whether to calculate the area of triangle. "
        "Default is true.",
        "default": True,
    }
    assert flags["parameters"]["required"] == ["side1", "side2", "side3"]


def test_json_schema_enum_array_and_open_dict() -> None:
    assert json_schema(
        {"type": "array", "items": {"type": "string"}, "enum": ["a", "b"], "default": []}
    ) == {"type": "array", "default": [], "items": {"type": "string", "enum": ["a", "b"]}}
    assert json_schema({"type": "integer", "enum": ["1", 2, "dontcare"]}) == {
        "type": "integer",
        "enum": [2],
    }
    assert json_schema({"type": "dict", "description": "free"}) == {
        "type": "object",
        "description": "free",
    }
    with pytest.raises(ValueError, match=r"f\.x: BFCL type 'Hashtable'"):
        json_schema({"type": "Hashtable"}, where="f.x")


@pytest.mark.parametrize("category", bfcl.DEFAULT_CATEGORIES)
def test_every_converted_schema_is_valid_json_schema(category: str) -> None:
    count = 0
    for question in bfcl.load_category(category):
        for tool in question.tools:
            jsonschema.Draft202012Validator.check_schema(tool["parameters"])
            assert tool["parameters"]["type"] == "object"
            count += 1
    assert count >= SIZES[category]


def test_as_declared_turns_json_integers_into_declared_floats() -> None:
    node = {
        "type": "dict",
        "properties": {
            "xs": {"type": "array", "items": {"type": "float"}},
            "n": {"type": "integer"},
            "r": {"type": "float"},
            "flag": {"type": "boolean"},
        },
    }
    out = as_declared(node, {"xs": [1, 2.5], "n": 3, "r": 2, "flag": True, "extra": 1})

    assert out == {"xs": [1.0, 2.5], "n": 3, "r": 2.0, "flag": True, "extra": 1}
    assert [type(x) for x in out["xs"]] == [float, float]
    assert type(out["n"]) is int and type(out["r"]) is float and out["flag"] is True
    kept = as_declared({"type": "integer"}, 3.0)
    assert kept == 3.0 and type(kept) is float


# -- scoring ------------------------------------------------------------------------------


def test_checker_loads_without_the_model_registry() -> None:
    checker = load_checker()

    assert checker.model_name == "moragent"
    assert checker.python.value == "python"
    assert "bfcl_eval.constants.model_config" not in sys.modules
    assert "openai" not in sys.modules and "anthropic" not in sys.modules


@pytest.mark.parametrize("category", ["simple_python", "multiple", "parallel", "parallel_multiple"])
def test_gold_answers_score_correct(category: str) -> None:
    questions = bfcl.load_category(category)
    verdicts = [bfcl.score(q, bfcl.gold_calls(q)) for q in questions]

    assert [q.id for q, (valid, _) in zip(questions, verdicts, strict=True) if not valid] == []
    assert all(errors == [] for _, errors in verdicts)


def test_dotted_gold_answer_and_wrong_values() -> None:
    question = _question("simple_python", "simple_python_1")
    assert bfcl.gold_calls(question) == [ToolCall("math.factorial", {"number": 5})]
    assert bfcl.score(question, [ToolCall("math.factorial", {"number": 5})]) == (True, [])

    valid, errors = bfcl.score(question, [ToolCall("math.factorial", {"number": 6})])
    assert valid is False
    assert errors == ["Invalid value for parameter 'number': 6. Expected one of [5]."]

    valid, errors = bfcl.score(question, [ToolCall("math_factorial", {"number": 5})])
    assert valid is False
    assert errors == ["Function name 'math.factorial' not found in model output."]

    assert bfcl.score(question, None) == (False, ["Made no function call."])
    two = [ToolCall("math.factorial", {"number": 5})] * 2
    assert bfcl.score(question, two) == (False, ["Wrong number of functions."])


def test_irrelevance_is_correct_only_without_a_call() -> None:
    question = bfcl.load_category("irrelevance", limit=1)[0]
    name = question.functions[0]["name"]

    assert bfcl.score(question, None) == (True, [])
    assert bfcl.score(question, []) == (True, [])
    valid, errors = bfcl.score(question, [ToolCall(name, {"weight": 70.0, "height": 1.8})])
    assert valid is False and errors == ["Made a function call where none should be made."]


def test_integers_for_a_float_array_pass_only_through_as_declared() -> None:
    question = _question("simple_python", "simple_python_87")
    call = ToolCall("array_sort", {"list": [5, 3, 4, 1, 2], "order": "ascending"})

    checker = load_checker()
    raw = checker.ast_checker(
        question.functions,
        [{call.name: call.arguments}],
        question.possible_answer,
        checker.python,
        "simple_python",
        checker.model_name,
    )
    assert raw["valid"] is False and raw["error_type"] == "type_error:nested"
    assert bfcl.score(question, [call]) == (True, [])
    assert call.arguments["list"] == [5, 3, 4, 1, 2]  # the caller's call is not changed


def test_parallel_order_does_not_matter() -> None:
    question = bfcl.load_category("parallel", limit=1)[0]
    gold = bfcl.gold_calls(question)

    assert [call.arguments["artist"] for call in gold] == ["Taylor Swift", "Maroon 5"]
    assert bfcl.score(question, list(reversed(gold)))[0] is True
    assert bfcl.score(question, gold[:1])[0] is False


def test_schema_valid() -> None:
    tools = _question("simple_python", "simple_python_1").tools

    assert bfcl.schema_valid(tools, [ToolCall("math.factorial", {"number": 5})]) is True
    assert bfcl.schema_valid(tools, None) is True
    assert bfcl.schema_valid(tools, [ToolCall("math.factorial", {"number": "5"})]) is False
    assert bfcl.schema_valid(tools, [ToolCall("math.factorial", {"n": 5})]) is False
    assert bfcl.schema_valid(tools, [ToolCall("factorial", {"number": 5})]) is False


# -- run_bfcl -----------------------------------------------------------------------------


def _gold_predictor(question: bfcl.BfclQuestion, tools: list[dict]) -> list[ToolCall] | None:
    assert tools == question.tools
    return bfcl.gold_calls(question) or None


def test_run_bfcl_gold_predictor_scores_one() -> None:
    seen = []
    report = bfcl.run_bfcl(
        _gold_predictor,
        ["simple_python"],
        limit=20,
        progress=lambda done, total, result: seen.append((done, total, result.id)),
    )

    assert report.summary() == {"simple_python": {"accuracy": 1.0, "n": 20, "schema_valid": 20}}
    assert seen[0] == (1, 20, "simple_python_0") and seen[-1] == (20, 20, "simple_python_19")
    data = json.loads(report.to_json())
    assert data["summary"]["simple_python"]["accuracy"] == 1.0
    assert data["results"][1] == {
        "id": "simple_python_1",
        "category": "simple_python",
        "calls": [{"name": "math.factorial", "arguments": {"number": 5}}],
        "valid": True,
        "errors": [],
        "error_type": None,
        "schema_valid": True,
    }


def test_run_bfcl_no_calls_scores_zero_except_irrelevance() -> None:
    report = bfcl.run_bfcl(lambda q, tools: None, ["simple_python", "irrelevance"], limit=20)

    assert report.summary() == {
        "simple_python": {"accuracy": 0.0, "n": 20, "schema_valid": 20},
        "irrelevance": {"accuracy": 1.0, "n": 20, "schema_valid": 20},
    }
    assert report.results[0].errors == ["Made no function call."]
    assert report.results[0].error_type == "no_call"


def test_run_bfcl_records_a_predictor_crash() -> None:
    def broken(question: bfcl.BfclQuestion, tools: list[dict]) -> None:
        raise RuntimeError("backend died")

    report = bfcl.run_bfcl(broken, ["multiple"], limit=2)

    assert [r.valid for r in report.results] == [False, False]
    assert report.results[0].error_type == "predict_error"
    assert report.results[0].errors == ["predictor raised RuntimeError: backend died"]
    assert report.summary()["multiple"] == {"accuracy": 0.0, "n": 2, "schema_valid": 0}


# -- CLI ----------------------------------------------------------------------------------


@pytest.fixture
def fake_predict(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    calls: list[tuple] = []

    def make_predictor(backend, model, adapters, use_adapters, think=False):  # noqa: ANN001, ANN202
        calls.append((backend, model, adapters, use_adapters, think))
        return _gold_predictor

    module = types.ModuleType("moragent.eval.predict")
    module.make_predictor = make_predictor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "moragent.eval.predict", module)
    return calls


def test_cli_bfcl_runs_prints_table_and_writes_json(fake_predict: list[tuple], tmp_path) -> None:
    from moragent.cli.eval import app

    out = tmp_path / "bfcl.json"
    result = CliRunner().invoke(
        app,
        ["bfcl", "--categories", "simple_python,irrelevance", "--limit", "3", "--json", str(out)],
    )

    assert result.exit_code == 0, result.output
    assert fake_predict == [("llamacpp", None, None, True, False)]
    assert "simple_python" in result.stdout and "irrelevance" in result.stdout
    assert "100.0%" in result.stdout and "3/3" in result.stdout
    data = json.loads(out.read_text())
    assert data["summary"] == {
        "simple_python": {"accuracy": 1.0, "n": 3, "schema_valid": 3},
        "irrelevance": {"accuracy": 1.0, "n": 3, "schema_valid": 3},
    }
    assert [r["id"] for r in data["results"]][:2] == ["simple_python_0", "simple_python_1"]


def test_cli_bfcl_sample_runs_spread_questions(fake_predict: list[tuple], tmp_path) -> None:
    from moragent.cli.eval import app

    out = tmp_path / "bfcl.json"
    result = CliRunner().invoke(
        app, ["bfcl", "--categories", "multiple", "--sample", "4", "--json", str(out)]
    )

    assert result.exit_code == 0, result.output
    ids = [r["id"] for r in json.loads(out.read_text())["results"]]
    assert ids == [f"multiple_{i}" for i in (0, 50, 100, 150)]


def test_cli_bfcl_passes_model_and_no_adapters(fake_predict: list[tuple], tmp_path) -> None:
    from moragent.cli.eval import app

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    result = CliRunner().invoke(
        app,
        [
            "bfcl",
            "--categories",
            "multiple",
            "--limit",
            "1",
            "--model",
            str(model),
            "--backend",
            "torch",
            "--no-adapters",
        ],
    )

    assert result.exit_code == 0, result.output
    assert fake_predict == [("torch", model, None, False, False)]


def test_cli_bfcl_rejects_unknown_category(fake_predict: list[tuple]) -> None:
    from moragent.cli.eval import app

    result = CliRunner().invoke(app, ["bfcl", "--categories", "simple_python,nope"])

    assert result.exit_code == 2
    assert "nope" in result.output
    assert fake_predict == []


def test_cli_bfcl_without_predictor_module_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    from moragent.cli.eval import app

    monkeypatch.setitem(sys.modules, "moragent.eval.predict", None)
    result = CliRunner().invoke(app, ["bfcl", "--limit", "1"])

    assert result.exit_code == 1
    assert "moragent.eval.predict" in result.output
    assert "cannot run without a predictor" in result.output


# -- the predictor ------------------------------------------------------------------------


def _triangle_question(category: str) -> BfclQuestion:
    return BfclQuestion(
        id=f"{category}_0",
        category=category,
        query="Area of a triangle with base 10 and height 5?",
        functions=[
            {
                "name": "triangle_area",
                "description": "Area of a triangle.",
                "parameters": {
                    "type": "dict",
                    "properties": {"base": {"type": "integer"}, "height": {"type": "integer"}},
                    "required": ["base", "height"],
                },
            }
        ],
    )


CALL = '{"name": "triangle_area", "arguments": {"base": 10, "height": 5}}'


def test_predictor_calls_the_executor_straight_after_the_frame_by_default() -> None:
    from moragent.backends.scripted import ScriptedBackend
    from moragent.eval.predict import ExecutorPredictor

    backend = ScriptedBackend([CALL])
    question = _triangle_question("simple_python")
    calls = ExecutorPredictor(backend)(question, question.tools)

    assert [call.to_dict() for call in calls] == [json.loads(CALL)]
    assert [role for role, _ in backend.calls] == [Role.EXECUTOR]


def test_predictor_think_lets_the_reasoner_speak_first_held_to_the_executor() -> None:
    from moragent.backends.scripted import ScriptedBackend
    from moragent.eval.predict import ExecutorPredictor

    thought = "Thought: triangle_area with base=10, height=5.\nNext: executor"
    backend = ScriptedBackend([thought, CALL])
    predictor = ExecutorPredictor(backend, think=True)
    question = _triangle_question("simple_python")
    calls = predictor(question, question.tools)

    assert [call.to_dict() for call in calls] == [json.loads(CALL)]
    (reasoner, constraint), (executor, _) = backend.calls
    assert (reasoner, executor) == (Role.REASONER, Role.EXECUTOR)
    assert constraint.next_roles == ("executor",)
    assert predictor.last_thought == thought
    # the reasoner's turn is closed before the executor's header is fed
    assert backend.transcript.index("Next: executor") < backend.transcript.index("[executor]")


def test_predictor_irrelevance_may_call_nothing() -> None:
    from moragent.backends.scripted import ScriptedBackend
    from moragent.eval.predict import ExecutorPredictor

    backend = ScriptedBackend(["Thought: no tool fits.\nNext: summarizer"])
    question = _triangle_question("irrelevance")
    assert ExecutorPredictor(backend, think=True)(question, question.tools) is None
    assert backend.calls[0][1].next_roles == ("executor", "summarizer")


def test_cli_bfcl_baseline_refuses_adapters_and_unknown_predictors(
    fake_predict: list[tuple],
) -> None:
    from moragent.cli.eval import app

    result = CliRunner().invoke(
        app, ["bfcl", "--predictor", "chatml-function-calling", "--think", "--limit", "1"]
    )
    assert result.exit_code == 2 and "--think" in result.output
    result = CliRunner().invoke(app, ["bfcl", "--predictor", "gorilla", "--limit", "1"])
    assert result.exit_code == 2 and "chatml-function-calling" in result.output
    assert fake_predict == []


@pytest.mark.slow
def test_chatml_baseline_answers_with_calls_of_the_offered_tools_or_none() -> None:
    from moragent.eval.baseline import ChatmlFunctionCallingPredictor

    predict = ChatmlFunctionCallingPredictor(n_ctx=2048, max_tokens=96)
    for question in bfcl.load_category("simple_python", sample=3):
        calls = predict(question, question.tools)
        assert predict.last_message.get("role") == "assistant"
        offered = {tool["name"] for tool in question.tools}
        assert calls is None or all(
            isinstance(call, ToolCall) and call.name in offered for call in calls
        )
