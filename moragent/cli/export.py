"""``moragent export``: role adapters -> one GGUF LoRA per role for llama.cpp."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

EPILOG = (
    "Example: moragent export runs/adapters --to gguf -o runs/gguf --calibration "
    "runs/train.jsonl ; then moragent chat --adapters runs/gguf"
)


def export_command(
    adapter_dir: Annotated[
        Path, typer.Argument(help="Folder of trained role adapters (moragent finetune --out).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for <role>.gguf and moragent.json.")
    ],
    to: Annotated[
        str, typer.Option(help="Target format (gguf: LoRA files for llama.cpp).")
    ] = "gguf",
    model: Annotated[
        Path | None,
        typer.Option(
            help="Base GGUF to export for. Default: the one the adapters were trained on."
        ),
    ] = None,
    rank: Annotated[
        int | None,
        typer.Option(
            help="Rank of the written LoRAs (mor: truncated SVD; lora: exact without it)."
        ),
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(help="Trajectories (JSONL) on which mor routing weights are measured."),
    ] = None,
    max_sequences: Annotated[
        int, typer.Option(min=1, help="Calibration trajectories to run.")
    ] = 16,
    dtype: Annotated[
        str, typer.Option(help="Tensor type of the files: f32, or f16 for half the size.")
    ] = "f32",
    collapse: Annotated[
        str,
        typer.Option(
            help="How a mor group becomes one LoRA with --calibration: fit (least squares to "
            "the group's output on the calibration tokens) or mean (mean routing weights)."
        ),
    ] = "fit",
) -> None:
    """Export role adapters to one GGUF LoRA per role, for llama.cpp (--adapters)."""
    from moragent.export import export_adapters

    if to != "gguf":
        err_console.print(f"[red]error:[/] unknown format {escape(to)!r}: only gguf is supported")
        raise typer.Exit(2)
    try:
        result = export_adapters(
            adapter_dir,
            out,
            model=model,
            rank=rank,
            calibration=calibration,
            max_sequences=max_sequences,
            dtype=dtype,
            collapse=collapse,
        )
    except (OSError, ValueError) as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None

    kind = "exact" if result.rank is None else f"collapsed to rank {result.rank}"
    console.print(f"{result.method} adapters, {kind}")
    table = Table()
    table.add_column("role")
    table.add_column("file")
    table.add_column("size", justify="right")
    if result.reports:
        table.add_column("relative error", justify="right")
        table.add_column("calibration tokens", justify="right")
    for role, path in result.files.items():
        row = [role, escape(str(path)), f"{path.stat().st_size / 1e6:.1f} MB"]
        report = result.reports.get(role)
        if report is not None:
            row += [f"{report.relative_error:.4f}", str(report.tokens)]
        table.add_row(*row)
    console.print(table)
    console.print(f"[bold green]exported to[/] {escape(str(result.out))}")
