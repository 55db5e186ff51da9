"""``moragent data``: convert, complete and verify training trajectories, rendered with rich."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from moragent.data.complete import complete_file
from moragent.data.convert import FORMATS, convert_file
from moragent.data.io import DataError
from moragent.data.teacher import TEACHER_HELP, BackendTeacher, resolve_teacher
from moragent.data.verify import REASONS, VerifyStats, verify_file

app = typer.Typer(
    help="Turn public tool-use data into role-explicit training trajectories: convert, "
    "complete, verify.",
    no_args_is_help=True,
)

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

InputArgument = Annotated[
    Path, typer.Argument(help="Input file (JSON Lines, or one JSON array).", show_default=False)
]
TrajectoriesArgument = Annotated[
    Path, typer.Argument(help="Trajectories, one JSON object per line.", show_default=False)
]
SkipBadOption = Annotated[
    bool,
    typer.Option("--skip-bad", help="Skip (and count) bad lines instead of stopping at the first."),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


@app.callback()
def main() -> None:
    """Turn public tool-use data into role-explicit training trajectories."""


@contextmanager
def progress_bar(label: str, quiet: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar over the bytes read; yields the callback the library calls."""
    if quiet:
        yield lambda done, total: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def _fail(error: Exception) -> typer.Exit:
    if isinstance(error, FileNotFoundError) and error.filename:
        message = f"no such file: {error.filename}"
    else:
        message = str(error)
    err_console.print(f"[red]error:[/] {escape(message)}")
    return typer.Exit(1)


@app.command()
def convert(
    source: InputArgument,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output trajectories (JSONL).")],
    fmt: Annotated[
        str, typer.Option("--from", "-f", help=f"Source format: auto, {', '.join(FORMATS)}.")
    ] = "auto",
    tools: Annotated[
        Path | None,
        typer.Option("--tools", help="seal-tools: its tool.jsonl (default: next to the input)."),
    ] = None,
    distractors: Annotated[
        int | None, typer.Option(min=0, help="seal-tools: distractor tools per query [4].")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="seal-tools: seed of the distractors [0].")
    ] = None,
    coerce_numbers: Annotated[
        bool,
        typer.Option(
            "--coerce-numbers",
            help="seal-tools: turn numeric strings into numbers where the tool's schema "
            "wants a number (listed in meta.coerced).",
        ),
    ] = False,
    skip_bad: SkipBadOption = False,
    quiet: QuietOption = False,
) -> None:
    """Convert a public tool-use data file into trajectories."""
    if fmt != "auto" and fmt not in FORMATS:
        raise _fail(
            ValueError(f"unknown format {fmt!r}: expected auto or one of {', '.join(FORMATS)}")
        )
    try:
        with progress_bar(f"convert {source.name}", quiet) as update:
            stats = convert_file(
                source,
                output,
                fmt,
                on_progress=update,
                skip_bad=skip_bad,
                on_detect=lambda name: console.print(f"detected format: [bold]{name}[/]"),
                tools_path=tools,
                distractors=distractors,
                seed=seed,
                coerce_numbers=coerce_numbers or None,
            )
    except (DataError, ValueError, OSError) as error:
        raise _fail(error) from None
    skipped = f", {len(stats.skipped)} skipped" if stats.skipped else ""
    console.print(
        f"converted {stats.records} records ({stats.format}) -> "
        f"{stats.trajectories} trajectories{skipped} -> {output}"
    )


@app.command()
def complete(
    source: TrajectoriesArgument,
    output: Annotated[Path, typer.Option("--output", "-o", help="Completed trajectories.")],
    teacher: Annotated[str, typer.Option(help=f"Who fills the gaps: {TEACHER_HELP}.")] = "rules",
    seed: Annotated[int, typer.Option(help="Seed of the rules teacher's wording.")] = 0,
    skip_bad: SkipBadOption = False,
    quiet: QuietOption = False,
) -> None:
    """Fill missing thoughts, observations and answers; filled steps are marked synthetic."""
    try:
        filler = resolve_teacher(teacher, seed)
        with progress_bar(f"complete {source.name}", quiet) as update:
            stats = complete_file(source, output, filler, on_progress=update, skip_bad=skip_bad)
    except (DataError, ValueError, OSError) as error:
        raise _fail(error) from None
    filled = ", ".join(f"{count} {what}s" for what, count in sorted(stats.filled.items()))
    extra = (
        f", {stats.with_teacher_errors} with teacher errors" if stats.with_teacher_errors else ""
    )
    skipped = f", {len(stats.skipped)} skipped" if stats.skipped else ""
    console.print(
        f"completed {stats.trajectories} trajectories (filled: {filled or 'nothing'})"
        f"{extra}{skipped} -> {output}"
    )


@app.command()
def verify(
    source: TrajectoriesArgument,
    accepted: Annotated[Path, typer.Option("--accepted", "-a", help="Accepted trajectories.")],
    rejected: Annotated[
        Path, typer.Option("--rejected", "-r", help="Rejected lines with their reasons.")
    ],
    judge: Annotated[
        str | None,
        typer.Option(
            help="A teacher that also scores each trajectory: "
            "llamacpp[:MODEL.gguf] or openai:MODEL."
        ),
    ] = None,
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Judge score (0-1) needed to be accepted.")
    ] = 0.5,
    quiet: QuietOption = False,
) -> None:
    """Check every trajectory; sort lines into accepted and rejected, with reasons."""
    try:
        scorer = resolve_teacher(judge) if judge else None
        if scorer is not None and not isinstance(scorer, BackendTeacher):
            raise ValueError("--judge needs a model teacher (llamacpp or openai:MODEL)")
        with progress_bar(f"verify {source.name}", quiet) as update:
            stats = verify_file(source, accepted, rejected, scorer, threshold, update)
    except (DataError, ValueError, OSError) as error:
        raise _fail(error) from None
    if stats.rejected:
        console.print(reasons_table(stats))
    console.print(
        f"verified {stats.lines} lines: {stats.accepted} accepted -> {accepted}, "
        f"{stats.rejected} rejected -> {rejected}"
    )


def reasons_table(stats: VerifyStats) -> Table:
    """Rejected lines per reason (a line with several reasons counts under each)."""
    table = Table(title="rejected lines by reason")
    table.add_column("reason")
    table.add_column("lines", justify="right")
    table.add_column("meaning", style="dim")
    for code, count in stats.reasons.most_common():
        table.add_row(code, str(count), REASONS.get(code, ""))
    return table
