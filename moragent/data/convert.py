"""``convert``: public tool-use data in its own shape -> role-explicit trajectories (JSONL).

Sources are read one record at a time (JSON Lines, or a top-level JSON array decoded
item by item), converted, and written through an atomic writer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from moragent.data.chat import OpenAIConverter, ShareGPTConverter
from moragent.data.io import DataError, ProgressFn, atomic_writer, check_outputs, iter_records
from moragent.data.react import ReactTextConverter
from moragent.data.seal import SealToolsConverter
from moragent.trajectory import Trajectory

logger = logging.getLogger(__name__)


class Converter(Protocol):
    """Turns one source record into trajectories; raises ``DataError`` naming the field."""

    name: str

    def convert(self, record: Any, line: int) -> list[Trajectory]: ...


#: format name -> converter class; detection tries them in this order
FORMATS: dict[str, Any] = {
    "seal-tools": SealToolsConverter,
    "sharegpt": ShareGPTConverter,
    "react-text": ReactTextConverter,
    "openai": OpenAIConverter,
}


def detect_record(record: Any) -> str | None:
    """The format one record is in, or None."""
    for name, converter in FORMATS.items():
        if converter.detect(record):
            return name
    return None


def detect_format(path: str | Path, sample: int = 5, skip_bad: bool = False) -> str:
    """The format of a file, from its first records; raises ``DataError`` if none fits.

    With ``skip_bad`` a line that is not JSON, or a record that fits no format, is
    passed over, as conversion will.
    """
    seen: list[str | None] = []
    for _, record in iter_records(path, on_bad=(lambda error: None) if skip_bad else None):
        seen.append(detect_record(record))
        if len(seen) >= sample:
            break
    if not seen:
        raise DataError("the file holds no records", path)
    found = {name for name in seen if name}
    if len(found) == 1 and (None not in seen or skip_bad):
        return found.pop()
    if not found:
        raise DataError(
            f"unknown data format: the first records fit none of {', '.join(FORMATS)}; "
            "pass --from FORMAT if the file is one of these",
            path,
            1,
        )
    if found == {"react-text", "openai"}:
        return "openai"
    raise DataError(
        f"the first records look like several formats ({', '.join(sorted(found))})"
        "; pass --from FORMAT",
        path,
    )


def make_converter(fmt: str, **options: Any) -> Converter:
    """A converter for ``fmt``; ``options`` go to converters that take them (seal-tools)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)} or auto")
    if fmt == "seal-tools":
        return SealToolsConverter(**{k: v for k, v in options.items() if v is not None})
    unused = {key for key, value in options.items() if value is not None}
    if unused:
        logger.warning("options %s apply to seal-tools only; ignored", ", ".join(sorted(unused)))
    return FORMATS[fmt]()


@dataclass
class ConvertStats:
    """What one ``convert`` run did."""

    format: str
    records: int = 0
    trajectories: int = 0
    skipped: list[str] = field(default_factory=list)


def iter_converted(
    path: str | Path,
    converter: Converter,
    stats: ConvertStats,
    on_progress: ProgressFn | None = None,
    skip_bad: bool = False,
) -> Iterator[Trajectory]:
    """Trajectories converted from ``path``, one record at a time.

    A bad record raises ``DataError`` with file, line and field, or with ``skip_bad`` is
    counted in ``stats.skipped`` and left out.
    """
    path = Path(path)
    if hasattr(converter, "bind"):
        converter.bind(path)

    def skip(error: DataError) -> None:
        stats.skipped.append(str(error))
        logger.warning("skipped: %s", error)

    for line, record in iter_records(path, on_progress, skip if skip_bad else None):
        stats.records += 1
        try:
            trajectories = converter.convert(record, line)
        except DataError as error:
            error = DataError(error.message, path, line, error.field)
            if not skip_bad:
                raise error from None
            skip(error)
            continue
        stats.trajectories += len(trajectories)
        yield from trajectories


def convert_file(
    source: str | Path,
    target: str | Path,
    fmt: str = "auto",
    on_progress: ProgressFn | None = None,
    skip_bad: bool = False,
    on_detect: Callable[[str], None] | None = None,
    **options: Any,
) -> ConvertStats:
    """Convert ``source`` in format ``fmt`` (or ``auto``) to trajectories in ``target`` (JSONL)."""
    source = Path(source)
    if not source.is_file():
        raise DataError("no such file", source)
    check_outputs(source, target)
    if fmt == "auto":
        fmt = detect_format(source, skip_bad=skip_bad)
        logger.info("%s: detected format %s", source, fmt)
        if on_detect is not None:
            on_detect(fmt)
    converter = make_converter(fmt, **options)
    stats = ConvertStats(fmt)
    with atomic_writer(target) as out:
        for trajectory in iter_converted(source, converter, stats, on_progress, skip_bad):
            out.write(trajectory.to_json())
            out.write("\n")
    return stats
