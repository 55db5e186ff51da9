"""``moragent data`` through Typer's CliRunner: convert, complete, verify end to end."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moragent.cli.data import app

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIREACT = DATA / "fireact" / "multitask.jsonl"
runner = CliRunner()

OPENAI_LINE = json.dumps(
    {
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "add",
                    "description": "Add two numbers.",
                    "parameters": {
                        "type": "object",
                        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                        "required": ["a", "b"],
                    },
                },
            }
        ],
        "messages": [
            {"role": "user", "content": "What is 2 + 3?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "1",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "1", "content": "5"},
            {"role": "assistant", "content": "2 + 3 = 5."},
        ],
    }
)


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_convert_complete_verify_pipeline(tmp_path: Path) -> None:
    source = tmp_path / "chat.jsonl"
    source.write_text(OPENAI_LINE + "\n" + OPENAI_LINE + "\n")
    converted, completed = tmp_path / "conv.jsonl", tmp_path / "done.jsonl"
    accepted, rejected = tmp_path / "ok.jsonl", tmp_path / "bad.jsonl"

    code, out = _run("convert", str(source), "-o", str(converted), "-q")
    assert code == 0
    assert "detected format: openai" in out
    assert f"converted 2 records (openai) -> 2 trajectories -> {converted}" in out

    code, out = _run("verify", str(converted), "-a", str(accepted), "-r", str(rejected), "-q")
    assert code == 0
    assert "empty-turn" in out and "rejected lines by reason" in out
    assert "verified 2 lines: 0 accepted" in out

    code, out = _run("complete", str(converted), "-o", str(completed), "--teacher", "rules", "-q")
    assert code == 0
    assert "completed 2 trajectories (filled: 4 thoughts)" in out

    code, out = _run("verify", str(completed), "-a", str(accepted), "-r", str(rejected), "-q")
    assert code == 0
    assert "verified 2 lines: 2 accepted" in out
    first = json.loads(accepted.read_text().splitlines()[0])
    assert first["steps"][0]["synthetic"] is True
    assert first["steps"][-1] == {"role": "summarizer", "answer": "2 + 3 = 5."}
    assert rejected.read_text() == ""


def test_unknown_format_lists_the_formats(tmp_path: Path) -> None:
    source = tmp_path / "x.jsonl"
    source.write_text('{"text": "hi"}\n')
    code, out = _run("convert", str(source), "-o", str(tmp_path / "o.jsonl"), "--from", "csv")
    assert code == 1
    assert "unknown format 'csv': expected auto or one of seal-tools, sharegpt" in out
    code, out = _run("convert", str(source), "-o", str(tmp_path / "o.jsonl"))
    assert code == 1
    assert "unknown data format" in out and "react-text, openai" in out
    assert not (tmp_path / "o.jsonl").exists()


def test_empty_file_and_malformed_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, out = _run("convert", str(empty), "-o", str(tmp_path / "o.jsonl"))
    assert code == 1 and "the file is empty" in out
    code, out = _run("complete", str(empty), "-o", str(tmp_path / "o.jsonl"))
    assert code == 1 and f"{empty}: the file is empty" in out
    code, out = _run("verify", str(empty), "-a", str(tmp_path / "a"), "-r", str(tmp_path / "r"))
    assert code == 1 and "the file is empty" in out
    assert not (tmp_path / "a").exists()
    broken = tmp_path / "broken.jsonl"
    broken.write_text(OPENAI_LINE + "\n{oops\n")
    code, out = _run("convert", str(broken), "-o", str(tmp_path / "o.jsonl"), "--from", "openai")
    assert code == 1
    assert "broken.jsonl:2: not valid JSON" in out.replace("\n", "")
    assert not (tmp_path / "o.jsonl").exists()
    code, out = _run("complete", str(broken), "-o", str(tmp_path / "c.jsonl"), "--teacher", "x")
    assert code == 1 and "unknown teacher 'x'" in out


def test_verify_judge_needs_a_model(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(OPENAI_LINE + "\n")
    code, out = _run(
        "verify",
        str(source),
        "-a",
        str(tmp_path / "a"),
        "-r",
        str(tmp_path / "r"),
        "--judge",
        "rules",
    )
    assert code == 1 and "--judge needs a model teacher" in out


@pytest.mark.skipif(not FIREACT.is_file(), reason="../shared/data is not here")
def test_cli_on_real_react_lines(tmp_path: Path) -> None:
    source = tmp_path / "fireact.jsonl"
    with FIREACT.open() as handle:
        source.write_text("".join(islice(handle, 25)))
    converted, completed = tmp_path / "c.jsonl", tmp_path / "d.jsonl"
    assert _run("convert", str(source), "-o", str(converted))[0] == 0
    code, out = _run("complete", str(converted), "-o", str(completed))
    assert code == 0 and "completed 25 trajectories" in out
    code, out = _run(
        "verify", str(completed), "-a", str(tmp_path / "a.jsonl"), "-r", str(tmp_path / "r.jsonl")
    )
    assert code == 0 and "verified 25 lines: 25 accepted" in out


def test_verify_of_a_missing_file_says_no_such_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    result = runner.invoke(
        app,
        ["verify", str(missing), "-a", str(tmp_path / "a"), "-r", str(tmp_path / "r")],
    )
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "no such file" in text and "nope.jsonl" in text and "Errno" not in text
