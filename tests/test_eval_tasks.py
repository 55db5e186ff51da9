"""`moragent eval tasks`: task files, checks, and whole runs on a scripted backend."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import moragent.backends
from moragent.agent import Agent
from moragent.backends.scripted import ScriptedBackend
from moragent.cli import app
from moragent.eval.tasks import (
    CallCheck,
    TaskFileError,
    check_outcome,
    load_tasks,
    numbers_in,
    run_tasks,
)
from moragent.trajectory import ToolCall

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def episode(name: str, arguments: dict, answer: str) -> list[str]:
    return [
        "Thought: use the tool\nNext: executor",
        json.dumps({"name": name, "arguments": arguments}),
        "Thought: done\nNext: summarizer",
        answer,
    ]


def test_numbers_in_reads_separators_signs_and_decimals():
    assert numbers_in("about 1,234.5 km, or -3 and 2e3") == [1234.5, -3.0, 2000.0]


@pytest.mark.parametrize(
    ("expect", "answer", "problem"),
    [
        ({"number": 42}, "It is 42.", None),
        ({"number": 42}, "It is 41.", "no number within"),
        ({"number": 42.16, "tolerance": 0.01}, "about 42.1648 km", None),
        ({"contains": ["tokyo", "japan"]}, "Tokyo is the capital of Japan.", None),
        ({"contains": ["tokyo", "kyoto"]}, "Tokyo.", "lacks 'kyoto'"),
        ({"exact": "yes"}, "  YES ", None),
        ({"exact": "yes"}, "yes!", "not exactly"),
        ({"regex": r"38[.,]8"}, "38.8 million", None),
        ({"regex": r"^\d+$"}, "forty", "does not match"),
    ],
)
def test_answer_checks(expect, answer, problem):
    from moragent.eval.tasks import Task

    problems = check_outcome(Task("t", "x", "q", expect), answer, [], None)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0]


def test_call_checks_match_name_and_the_given_arguments_only():
    check = CallCheck("convert_units", {"value": 26.2, "to_unit": "KM"})
    assert check.matches(
        ToolCall("convert_units", {"value": 26.2, "from_unit": "mi", "to_unit": "km"})
    )
    assert check.matches(ToolCall("convert_units", {"value": "26.2", "to_unit": "km"}))
    assert not check.matches(ToolCall("convert_units", {"value": 26.0, "to_unit": "km"}))
    assert not check.matches(ToolCall("calculate", {"value": 26.2, "to_unit": "km"}))


def test_no_call_task_fails_when_a_tool_is_called():
    from moragent.eval.tasks import Task

    task = Task("t", "no-tool", "Say hi", {}, [])
    assert check_outcome(task, "hi", [], None) == []
    problems = check_outcome(task, "hi", [ToolCall("calculate", {"expression": "1"})], None)
    assert problems == ["called calculate where no call was wanted"]


def test_episode_error_and_missing_answer_are_failures():
    from moragent.eval.tasks import Task

    task = Task("t", "x", "q", {"number": 1}, [CallCheck("calculate")])
    problems = check_outcome(task, None, [], "the backend died")
    assert problems == [
        "episode error: the backend died",
        "no final answer",
        "missing call calculate",
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "tasks.jsonl:2: not JSON"),
        ('["a list"]', "tasks.jsonl:2: a task is a JSON object"),
        ('{"query": ""}', "tasks.jsonl:2: field 'query' must be a non-empty string"),
        ('{"query": "q"}', "tasks.jsonl:2: the task checks nothing"),
        ('{"query": "q", "expect": {"numbr": 3}}', "tasks.jsonl:2: expect.numbr: unknown check"),
        ('{"query": "q", "expect": {"regex": "("}}', "expect.regex is not a valid regular"),
        ('{"query": "q", "expect": {"tolerance": 1}}', "expect.tolerance goes with expect.number"),
        ('{"query": "q", "calls": [{"nme": "x"}]}', "tasks.jsonl:2: calls[0] must be an object"),
        ('{"query": "q", "calls": [], "answer": 3}', "tasks.jsonl:2: unknown field 'answer'"),
        ('{"id": "a", "query": "q", "calls": []}', "id 'a' is already used on line 1"),
    ],
)
def test_bad_task_files_name_file_line_and_field(tmp_path, line, message):
    path = write(tmp_path, '{"id": "a", "query": "first", "calls": []}', line)
    with pytest.raises(TaskFileError, match=re.escape(message)):
        load_tasks(path)


def test_empty_and_missing_task_files(tmp_path):
    with pytest.raises(TaskFileError, match="no tasks"):
        load_tasks(write(tmp_path, ""))
    with pytest.raises(TaskFileError, match="not found"):
        load_tasks(tmp_path / "nope.jsonl")


def test_run_tasks_runs_fresh_episodes_and_summarises_per_type(tmp_path):
    tools = _example_tools()
    path = write(
        tmp_path,
        '{"id": "m", "type": "math", "query": "6*7?", "expect": {"number": 42}, '
        '"calls": [{"name": "calculate"}]}',
        '{"id": "w", "type": "dates", "query": "2000-01-01?", "expect": {"contains": "saturday"}, '
        '"calls": [{"name": "weekday", "arguments": {"date": "2000-01-01"}}]}',
        '{"id": "n", "type": "dates", "query": "hi", "calls": []}',
    )
    replies = (
        episode("calculate", {"expression": "6*7"}, "It is 42.")
        + episode("weekday", {"date": "2000-01-02"}, "It was a Sunday.")
        + ["Thought: just answer\nNext: summarizer", "Hello."]
    )
    agent = Agent(tools=tools, backend=ScriptedBackend(replies))
    report = run_tasks(agent.run, load_tasks(path))

    solved = {outcome.task.id: outcome.solved for outcome in report.outcomes}
    assert solved == {"m": True, "w": False, "n": True}
    wrong = report.outcomes[1]
    assert "missing call weekday(date='2000-01-01')" in wrong.problems
    assert any("lacks 'saturday'" in problem for problem in wrong.problems)
    assert report.summary() == {
        "math": {"solved": 1, "n": 1, "share": 1.0},
        "dates": {"solved": 1, "n": 2, "share": 0.5},
        "all": {"solved": 2, "n": 3, "share": 2 / 3},
    }


def test_cli_tasks_prints_a_table_and_writes_json(tmp_path, monkeypatch):
    replies = episode("calculate", {"expression": "6*7"}, "It is 42.") + [
        "Thought: answer\nNext: summarizer",
        "no idea",
    ]
    backend = ScriptedBackend(replies)
    monkeypatch.setattr(moragent.backends, "make_backend", lambda *args, **kwargs: backend)
    path = write(
        tmp_path,
        '{"id": "m", "type": "math", "query": "6*7?", "expect": {"number": 42}, '
        '"calls": [{"name": "calculate"}]}',
        '{"id": "r[1]", "type": "math", "query": "q", "expect": {"regex": "[0-9]+x"}}',
    )
    out = tmp_path / "out.json"
    result = runner.invoke(
        app,
        ["eval", "tasks", str(path), "--tools", str(EXAMPLES / "tools.py"), "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "math" in result.stdout and "50%" in result.stdout
    # the failed check is printed as written (rich markup is escaped)
    assert "r[1]: answer does not match /[0-9]+x/" in result.output
    # not a terminal: a plain progress line at the last task
    assert "tasks (solved 1) 2/2  elapsed" in result.output
    data = json.loads(out.read_text())
    assert data["summary"]["all"] == {"solved": 1, "n": 2, "share": 0.5}
    assert data["results"][0]["calls"] == [
        {"name": "calculate", "arguments": {"expression": "6*7"}}
    ]


def test_cli_tasks_bad_file_is_a_clear_error(tmp_path):
    path = write(tmp_path, '{"query": "q", "expect": {"number": "x"}}')
    result = runner.invoke(app, ["eval", "tasks", str(path)])
    assert result.exit_code == 2
    assert "tasks.jsonl:1: expect.number must be a number" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("call", "tools", "message"),
    [
        ('{"name": "nonexistent_tool"}', True, "calls[0].name: no tool 'nonexistent_tool'"),
        (
            '{"name": "calculate", "arguments": {"bogus": 1}}',
            True,
            "calls[0].arguments.bogus: calculate takes no 'bogus' (it takes expression)",
        ),
        (
            '{"name": "calculate"}',
            False,
            "calls[0].name: no tool 'calculate' is loaded (loaded: none: give --tools)",
        ),
    ],
)
def test_cli_tasks_refuses_call_checks_no_tool_could_meet(
    tmp_path, monkeypatch, call, tools, message
):
    backend = ScriptedBackend([])
    monkeypatch.setattr(moragent.backends, "make_backend", lambda *args, **kwargs: backend)
    path = write(
        tmp_path, '{"query": "q", "expect": {"number": 1}}', f'{{"query": "q", "calls": [{call}]}}'
    )
    options = ["--tools", str(EXAMPLES / "tools.py")] if tools else []
    result = runner.invoke(app, ["eval", "tasks", str(path), *options])
    assert result.exit_code == 2
    assert f"tasks.jsonl:2: {message}" in " ".join(result.output.split())
    assert backend.segments == []  # refused before any episode ran


def test_shipped_task_file_fits_the_example_tools():
    tasks = load_tasks(EXAMPLES / "tasks.jsonl")
    names = {tool.name for tool in _example_tools()}
    assert len(tasks) >= 20
    assert {"arithmetic", "units", "dates", "countries", "multi-step", "no-tool"} <= {
        task.type for task in tasks
    }
    for task in tasks:
        for check in task.calls or []:
            assert check.name in names, (task.id, check.name)


def test_shipped_task_answers_are_what_the_tools_return():
    # the gold call of each single-call task, run through the tool, must pass the answer check
    tools = {tool.name: tool for tool in _example_tools()}
    checked = 0
    for task in load_tasks(EXAMPLES / "tasks.jsonl"):
        if not task.calls or len(task.calls) != 1 or not task.expect:
            continue
        check = task.calls[0]
        arguments = _gold_arguments(task.id) or check.arguments
        output = str(tools[check.name].invoke(arguments))
        assert check_outcome(task, output, [ToolCall(check.name, arguments)], None) == [], task.id
        checked += 1
    assert checked >= 15


def _gold_arguments(task_id: str) -> dict | None:
    gold = {
        "math-1": {"expression": "17 * 23"},
        "math-2": {"expression": "(125 + 375) / 4"},
        "math-3": {"expression": "sqrt(2) * 10"},
        "math-4": {"expression": "15 / 100 * 240"},
        "math-5": {"expression": "2 ** 10 - 24"},
        "units-1": {"value": 26.2, "from_unit": "mi", "to_unit": "km"},
        "units-2": {"value": 100, "from_unit": "F", "to_unit": "C"},
        "units-3": {"value": 5, "from_unit": "kg", "to_unit": "lb"},
        "units-4": {"value": 3, "from_unit": "gal", "to_unit": "l"},
        "units-5": {"value": 90, "from_unit": "min", "to_unit": "h"},
        "dates-1": {"start": "2026-01-01", "end": "2026-12-25"},
        "dates-2": {"date": "2026-03-01", "days": 100},
        "dates-5": {"start": "1969-07-20", "end": "2026-07-20"},
        "text-1": {"text": "The quick brown fox jumps over the lazy dog. The dog sleeps."},
        "text-2": {"text": "It rained. We stayed in. Then the sun came out!"},
        "country-3": {"name": "Canada", "field": "population"},
        "multi-2": {"date": "2026-12-03", "days": 30},
    }
    return gold.get(task_id)


def _example_tools():
    from moragent.tools import load_tools

    return load_tools(EXAMPLES / "tools.py")
