"""Streaming readers, error messages and the atomic writer of the data pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moragent.data import io as data_io
from moragent.data.convert import ConvertStats, iter_converted
from moragent.data.io import (
    DataError,
    atomic_writer,
    first_char,
    iter_json_array,
    iter_jsonl,
    iter_records,
)
from moragent.data.react import ReactTextConverter
from moragent.data.schema import field_path, schema_errors


def test_jsonl_lines_are_numbered_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(DataError) as caught:
        list(iter_jsonl(path))
    assert str(caught.value).startswith(f"{path}:2: not valid JSON")
    assert caught.value.line == 2
    # the column counts from the start of the line, not from the line ending after it
    assert "column 7)" in str(caught.value)


def test_malformed_line_can_be_skipped(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\nnope\n{"a": 3}\n')
    bad: list[DataError] = []
    assert [v for _, v in iter_jsonl(path, on_bad=bad.append)] == [{"a": 1}, {"a": 3}]
    assert [error.line for error in bad] == [2]


def test_json_array_is_read_item_by_item_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data_io, "_CHUNK", 7)
    items = [{"text": "x" * n, "n": 12345 + n} for n in range(20)] + [3.25, "tail"]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(items, indent=2))
    got = list(iter_json_array(path))
    assert [item for _, item in got] == items
    assert got[0][0] == 2  # the first item opens on line 2
    assert got[1][0] == 6


def test_empty_json_array_and_truncated_array(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("[ ]")
    assert list(iter_json_array(empty)) == []
    broken = tmp_path / "broken.json"
    broken.write_text('[{"a": 1},\n {"a": ')
    reader = iter_json_array(broken)
    assert next(reader) == (1, {"a": 1})
    with pytest.raises(DataError, match=r"broken.json:2: not valid JSON"):
        next(reader)


def test_empty_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("  \n")
    with pytest.raises(DataError, match="the file is empty"):
        first_char(path)


def test_records_reader_picks_array_or_lines(tmp_path: Path) -> None:
    array, lines = tmp_path / "a.json", tmp_path / "b.jsonl"
    array.write_text('[{"x": 1}, {"x": 2}]')
    lines.write_text('{"x": 1}\n{"x": 2}\n')
    assert [v for _, v in iter_records(array)] == [{"x": 1}, {"x": 2}]
    assert [v for _, v in iter_records(lines)] == [{"x": 1}, {"x": 2}]


def test_atomic_writer_keeps_old_file_on_error(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_writer(path) as out:
            out.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_atomic_writer_keeps_old_file_on_ctrl_c(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_writer(path) as out:
            out.write("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old\n"
    assert len(list(tmp_path.iterdir())) == 1


def test_atomic_writer_replaces_on_success(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.jsonl"
    with atomic_writer(path) as out:
        out.write("new\n")
        assert not path.exists()
    assert path.read_text() == "new\n"


def _react_line(n: int) -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "user", "content": f"question {n}"},
                {"role": "assistant", "content": f"Thought: t{n}\nAction: finish[{n}]"},
            ]
        }
    )


def test_converter_streams_before_reading_the_whole_file(tmp_path: Path) -> None:
    # the third line is broken: a reader that loaded the whole file first would fail at once
    path = tmp_path / "react.jsonl"
    path.write_text(_react_line(1) + "\n" + _react_line(2) + "\n{broken\n" + _react_line(4))
    stats = ConvertStats("react-text")
    stream = iter_converted(path, ReactTextConverter(), stats)
    first = next(stream)
    assert first.query == "question 1"
    assert stats.records == 1
    assert next(stream).query == "question 2"
    with pytest.raises(DataError, match=r"react.jsonl:3: not valid JSON"):
        next(stream)


def test_array_source_streams_too(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text("[" + ",".join(['{"n": 1}'] * 3) + ", {oops")
    reader = iter_records(path)
    assert [next(reader)[1] for _ in range(3)] == [{"n": 1}] * 3
    with pytest.raises(DataError):
        next(reader)


def test_schema_errors_name_the_field() -> None:
    errors = schema_errors(
        {
            "query": "q",
            "steps": [{"role": "executor", "calls": [{"name": "f", "arguments": []}]}],
        }
    )
    assert errors == [("steps[0].calls[0].arguments", "[] is not of type 'object'")]
    assert field_path(["steps", 2, "thought"]) == "steps[2].thought"


def test_atomic_writer_gives_normal_permissions(tmp_path: Path) -> None:
    import os

    path = tmp_path / "out.jsonl"
    umask = os.umask(0o022)
    try:
        with atomic_writer(path) as out:
            out.write("x\n")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o600)
    with atomic_writer(path) as out:
        out.write("y\n")
    assert path.stat().st_mode & 0o777 == 0o600
