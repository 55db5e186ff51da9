"""The CLI through Typer's CliRunner, on a scripted backend (no model) unless marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import moragent.backends
from moragent.backends.scripted import ScriptedBackend
from moragent.cli import app

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tools.py"


def script(monkeypatch, replies):
    """Make every backend the CLI builds a scripted one with these replies."""
    backend = ScriptedBackend(replies)
    monkeypatch.setattr(moragent.backends, "make_backend", lambda *args, **kwargs: backend)
    return backend


def calculate_episode(expression: str, result_text: str) -> list[str]:
    call = json.dumps({"name": "calculate", "arguments": {"expression": expression}})
    return [
        "Thought: compute it\nNext: executor",
        call,
        "Thought: done\nNext: summarizer",
        result_text,
    ]


@pytest.mark.parametrize("command", ["chat", "run", "models", "data", "eval"])
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_run_help_explains_the_options():
    result = runner.invoke(app, ["run", "--help"])
    for option in ("--tools", "--model", "--json", "--max-steps", "--backend", "--adapters"):
        assert option in result.output


def test_run_json_prints_answer_and_role_steps(monkeypatch):
    script(monkeypatch, calculate_episode("6*7", "It is 42."))
    result = runner.invoke(app, ["run", "What is 6*7?", "--tools", str(EXAMPLES), "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["answer"] == "It is 42."
    roles = [step["role"] for step in data["trajectory"]]
    assert roles == ["reasoner", "executor", "observation", "reasoner", "summarizer"]
    assert data["trajectory"][2]["results"][0]["content"] == "42"


def test_run_renders_calls_observations_and_answer(monkeypatch):
    script(monkeypatch, calculate_episode("2**10", "The result is **1024**."))
    result = runner.invoke(app, ["run", "2 to the 10th?", "--tools", str(EXAMPLES)])

    assert result.exit_code == 0, result.output
    # not a terminal: the answer alone on stdout, the episode on stderr
    assert result.stdout == "The result is **1024**.\n"
    assert "call: calculate" in result.stderr
    assert "result: calculate" in result.stderr
    assert "compute it" in result.stderr  # the thought is shown


def test_run_exits_nonzero_when_the_episode_fails(monkeypatch):
    script(monkeypatch, ["Thought: t\nNext: executor"])  # the script runs out mid-episode
    result = runner.invoke(app, ["run", "x", "--tools", str(EXAMPLES), "--json"])
    assert result.exit_code == 1
    assert "ran out" in json.loads(result.stdout)["error"]


def test_tools_file_with_a_syntax_error_names_file_and_line(tmp_path, monkeypatch):
    script(monkeypatch, [])
    bad = tmp_path / "tools.py"
    bad.write_text("def f(x: int) -> int:\n    return x +\n")
    result = runner.invoke(app, ["run", "x", "--tools", str(bad)])
    assert result.exit_code == 2
    assert "tools.py" in result.output and "2" in result.output
    assert "Traceback" not in result.output


def test_missing_tools_file_is_a_clear_error(tmp_path, monkeypatch):
    script(monkeypatch, [])
    result = runner.invoke(app, ["run", "x", "--tools", str(tmp_path / "nope.py")])
    assert result.exit_code == 2
    assert "nope.py" in result.output


def test_tool_without_type_hints_names_the_parameter(tmp_path, monkeypatch):
    script(monkeypatch, [])
    bad = tmp_path / "tools.py"
    bad.write_text('def greet(name):\n    """Say hello."""\n    return "hi " + name\n')
    result = runner.invoke(app, ["chat", "--tools", str(bad)], input="/exit\n")
    assert result.exit_code == 2
    assert "name" in result.output and "greet" in result.output


def test_missing_model_file_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["run", "x", "--model", str(tmp_path / "missing.gguf")])
    assert result.exit_code == 2
    assert "missing.gguf" in result.output


def test_unknown_backend_is_a_clear_error():
    result = runner.invoke(app, ["run", "x", "--backend", "nope"])
    assert result.exit_code == 2
    assert "unknown backend" in result.output and "llamacpp" in result.output


def test_chat_session_commands_and_turns(monkeypatch):
    backend = script(
        monkeypatch,
        calculate_episode("1+1", "Two.") + ["Thought: chat\nNext: summarizer", "You are welcome."],
    )
    typed = "/tools\nwhat is 1+1?\n/trace\nthanks\n/bogus\n/reset\n/exit\n"
    result = runner.invoke(app, ["chat", "--tools", str(EXAMPLES)], input=typed)

    assert result.exit_code == 0, result.output
    out = result.output
    assert "convert_units" in out and "lookup_country" in out  # /tools
    assert "Two." in out and "You are welcome." in out
    assert '"role": "summarizer"' in out  # /trace printed the first episode as JSON
    assert "unknown command /bogus" in out
    assert "conversation cleared" in out
    # piped: each answer ends its line, the next prompt starts a new one
    assert any(line.startswith("you> ") for line in out.splitlines()[1:])
    assert not any("Two." in line and "you>" in line for line in out.splitlines())
    # the second question continued the same session: one frame only
    assert sum("<|im_start|>system" in text for _, text in backend.segments) == 1


def test_chat_survives_a_tool_that_raises(tmp_path, monkeypatch):
    tools = tmp_path / "tools.py"
    tools.write_text(
        'def explode(n: int) -> int:\n    """Blow up."""\n    raise RuntimeError("boom")\n'
    )
    call = json.dumps({"name": "explode", "arguments": {"n": 1}})
    script(
        monkeypatch, ["Thought: t\nNext: executor", call, "Thought: t\nNext: summarizer", "Sorry."]
    )
    result = runner.invoke(app, ["chat", "--tools", str(tools)], input="go\n/exit\n")
    assert result.exit_code == 0, result.output
    assert "error: explode" in result.output and "boom" in result.output
    assert "Sorry." in result.output


def test_models_lists_the_embedded_model():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "SmolLM2-135M-Instruct" in result.output
    assert "llama-cpp-python" in result.output


@pytest.mark.slow
def test_run_json_on_the_real_model():
    result = runner.invoke(
        app, ["run", "What is 12 times 7?", "--tools", str(EXAMPLES), "--json", "--max-steps", "2"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data["answer"], str) and data["answer"]
    assert data["trajectory"][-1]["role"] == "summarizer"
    assert data["meta"]["reevaluated_tokens"] == 0


def test_adapters_and_no_adapters_together_are_refused(tmp_path):
    result = runner.invoke(app, ["run", "x", "--adapters", str(tmp_path), "--no-adapters"])
    assert result.exit_code == 2
    assert "either --adapters DIR or --no-adapters" in " ".join(result.output.split())


def test_log_progress_prints_every_tenth_item_and_the_last_off_a_terminal() -> None:
    import io
    import time

    from rich.console import Console

    from moragent.cli.common import log_progress

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    started = time.perf_counter()
    for done in range(1, 24):
        log_progress(console, "BFCL (simple_python)", done, 23, started)
    lines = buffer.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines] == [
        "BFCL (simple_python) 10/23",
        "BFCL (simple_python) 20/23",
        "BFCL (simple_python) 23/23",
    ]
    assert lines[-1].endswith("left 0.0 min")

    on_terminal = io.StringIO()
    log_progress(Console(file=on_terminal, force_terminal=True), "x", 10, 20, started)
    assert on_terminal.getvalue() == ""  # the live bar shows progress there


def test_a_tool_name_in_two_files_names_both_files(tmp_path, monkeypatch):
    script(monkeypatch, [])
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    for path in (first, second):
        path.write_text('def add(x: int, y: int) -> int:\n    """Add."""\n    return x + y\n')
    result = runner.invoke(app, ["run", "x", "--tools", str(first), "--tools", str(second)])
    assert result.exit_code == 2
    assert "'add'" in result.output and "a.py" in result.output and "b.py" in result.output
    again = runner.invoke(app, ["run", "x", "--tools", str(first), "--tools", str(first)])
    assert again.exit_code == 2 and "a.py is given twice" in again.output.replace("\n", "")


def test_an_empty_query_is_refused_before_the_model_loads(monkeypatch):
    def no_backend(*args, **kwargs):
        raise AssertionError("the model should not load for an empty query")

    monkeypatch.setattr(moragent.backends, "make_backend", no_backend)
    result = runner.invoke(app, ["run", "  ", "--tools", str(EXAMPLES)])
    assert result.exit_code == 2 and "the query is empty" in result.output
