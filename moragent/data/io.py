"""Streaming readers and atomic writers for the data pipeline.

Readers yield one record at a time with its line number, so memory stays flat on a
file of any length; they report progress in bytes through a callback. Writers write to
a temporary file in the destination folder and rename it into place only when the
whole run succeeded, so an error or Ctrl-C never leaves a half-written file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

logger = logging.getLogger(__name__)

#: progress callback: (bytes read so far, total bytes of the input)
ProgressFn = Callable[[int, int], None]
T = TypeVar("T")

_CHUNK = 1 << 16


class DataError(ValueError):
    """Bad input data; the message names the file, the line and the field."""

    def __init__(
        self,
        message: str,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or "<input>"
        if self.line is not None:
            where += f":{self.line}"
        if self.field:
            where += f": field {self.field}"
        return f"{where}: {self.message}"


def iter_lines(
    path: str | Path, on_progress: ProgressFn | None = None
) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each non-blank line of a UTF-8 file, one at a time
    (the text without its line ending)."""
    path = Path(path)
    total = path.stat().st_size
    done = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            done += len(raw)
            if on_progress is not None and (number % 512 == 0 or done == total):
                on_progress(done, total)
            if not raw.strip():
                continue
            try:  # without its line ending, so that error columns count from the line
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataError(f"not UTF-8 text ({exc.reason})", path, number) from None


def spread(items: list[T], count: int | None) -> list[T]:
    """``count`` items spread evenly over ``items`` in their order (all when ``None``)."""
    if count is None or count >= len(items):
        return items
    return [items[i * len(items) // count] for i in range(count)]


def check_outputs(source: str | Path, *outputs: str | Path) -> None:
    """Refuse an output path that is the input file or another output (it would be lost)."""
    seen = {Path(source).expanduser().resolve(): f"the input {source}"}
    for output in outputs:
        key = Path(output).expanduser().resolve()
        if key in seen:
            raise DataError(
                f"this output is the same file as {seen[key]}, whose content would be lost: "
                "give each output its own path",
                output,
            )
        seen[key] = f"the output {output}"


def iter_jsonl(
    path: str | Path,
    on_progress: ProgressFn | None = None,
    on_bad: Callable[[DataError], None] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each JSON line.

    A line that is not JSON raises ``DataError`` naming it, or, when ``on_bad`` is given,
    is passed to it and skipped.
    """
    for number, text in iter_lines(path, on_progress):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            error = DataError(f"not valid JSON ({exc.msg}, column {exc.colno})", path, number)
            if on_bad is None:
                raise error from None
            on_bad(error)
            continue
        yield number, value


def iter_json_array(
    path: str | Path, on_progress: ProgressFn | None = None
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, item)`` for each item of a top-level JSON array, incrementally.

    The file is read in chunks and each item is decoded as soon as it is complete, so
    only one item (not the whole array) is held in memory. ``line_number`` is the line
    where the item starts.
    """
    path = Path(path)
    total = path.stat().st_size
    decoder = json.JSONDecoder()
    with path.open("r", encoding="utf-8") as handle:
        reader = _ArrayReader(handle, path)
        reader.expect("[")
        if reader.peek() == "]":
            return
        while True:
            reader.peek()
            line = reader.line_here()
            yield line, reader.decode(decoder)
            if on_progress is not None:
                on_progress(min(reader.consumed, total), total)
            separator = reader.next_char()
            if separator == "]":
                return
            if separator != ",":
                raise DataError(
                    f"expected ',' or ']' after an array item, got {separator!r}",
                    path,
                    reader.line_here(),
                )


class _ArrayReader:
    """A growing text buffer over a file, for decoding one array item at a time."""

    def __init__(self, handle: IO[str], path: Path) -> None:
        self.handle, self.path = handle, path
        self.buffer, self.pos = "", 0
        self.lines_before = 0  # newlines in text already dropped from the buffer
        self.consumed = 0
        self.eof = False

    def _more(self) -> bool:
        chunk = self.handle.read(_CHUNK)
        if not chunk:
            self.eof = True
            return False
        dropped = self.buffer[: self.pos]
        self.lines_before += dropped.count("\n")
        self.consumed += len(dropped.encode("utf-8"))
        self.buffer = self.buffer[self.pos :] + chunk
        self.pos = 0
        return True

    def line_here(self) -> int:
        return self.lines_before + self.buffer.count("\n", 0, self.pos) + 1

    def peek(self) -> str:
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos].isspace():
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._more():
                raise DataError(
                    "the JSON array ends before its closing ']'", self.path, self.line_here()
                )

    def next_char(self) -> str:
        char = self.peek()
        self.pos += 1
        return char

    def expect(self, char: str) -> None:
        got = self.next_char()
        if got != char:
            raise DataError(f"expected {char!r}, got {got!r}", self.path, self.line_here())

    def decode(self, decoder: json.JSONDecoder) -> Any:
        self.peek()
        while True:
            try:
                value, end = decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                if self._more():
                    continue
                line = self.lines_before + exc.lineno
                raise DataError(f"not valid JSON ({exc.msg})", self.path, line) from None
            if end == len(self.buffer) and not self.eof and self._more():
                continue  # a number may go on in the next chunk
            self.pos = end
            return value


def first_char(path: str | Path) -> str:
    """The first non-blank character of a file; raises ``DataError`` if the file is empty."""
    with Path(path).open("r", encoding="utf-8") as handle:
        while True:
            chunk = handle.read(4096)
            if not chunk:
                raise DataError("the file is empty: nothing to read", path)
            stripped = chunk.lstrip()
            if stripped:
                return stripped[0]


def iter_records(
    path: str | Path,
    on_progress: ProgressFn | None = None,
    on_bad: Callable[[DataError], None] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Records of a JSON Lines file, or the items of a file holding one JSON array."""
    if first_char(path) == "[":
        yield from iter_json_array(path, on_progress)
    else:
        yield from iter_jsonl(path, on_progress, on_bad)


def _file_mode(path: Path) -> int:
    """The mode the output should get: an existing file's, else the default under umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[str]]:
    """Open ``path`` for writing through a temporary file renamed into place on success.

    On any exception, Ctrl-C included, the temporary file is removed and an existing
    file at ``path`` stays as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        "w",
        encoding="utf-8",
        dir=path.parent,
        prefix=f".{path.name}.",
        suffix=".tmp",
        delete=False,
    )
    try:
        os.chmod(handle.name, _file_mode(path))
        with handle:
            yield handle
        os.replace(handle.name, path)
    except BaseException:
        logger.info("removing the unfinished output %s", handle.name)
        Path(handle.name).unlink(missing_ok=True)
        raise
