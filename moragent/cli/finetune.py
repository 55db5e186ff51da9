"""``moragent finetune``: train role adapters on trajectories, with a rich progress bar."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

EPILOG = (
    "Examples: moragent finetune runs/train.jsonl --max-steps 200 ; "
    "moragent finetune mine.jsonl --from runs/adapters --out runs/mine ; "
    "accelerate launch --num_processes 2 $(which moragent) finetune runs/train.jsonl "
    "(one process per GPU, or gloo on CPU)"
)


def progress_callback(target: Console) -> Any:
    """A ``TrainerCallback`` that draws a rich progress bar: step, loss, tokens/s, time left.

    Built on first use, so that ``moragent --help`` does not import transformers.
    """
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        def __init__(self, target: Console) -> None:
            self.console = target
            self.progress: Progress | None = None
            self.task: Any = None
            self.started = 0.0
            self.tokens_at_start = 0
            self.step_at_start = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if not state.is_world_process_zero:
                return
            self.progress = Progress(
                TextColumn("[bold]training"),
                BarColumn(),
                TextColumn("step {task.completed}/{task.total}"),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[speed]} tok/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=state.max_steps, completed=state.global_step, loss="-", speed="-"
            )
            self.started = time.perf_counter()
            self.tokens_at_start = state.num_input_tokens_seen
            self.step_at_start = state.global_step

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                elapsed = max(time.perf_counter() - self.started, 1e-9)
                speed = (state.num_input_tokens_seen - self.tokens_at_start) / elapsed
                self.progress.update(self.task, completed=state.global_step, speed=f"{speed:.0f}")

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any):
            if self.progress is None or not logs or "loss" not in logs:
                return
            self.progress.update(self.task, loss=f"{float(logs['loss']):.3f}")
            if not self.console.is_terminal:
                # no live bar in a log file or pipe: a plain line at each logging step instead
                elapsed = time.perf_counter() - self.started
                done = state.global_step - self.step_at_start
                speed = (state.num_input_tokens_seen - self.tokens_at_start) / max(elapsed, 1e-9)
                left = elapsed / max(done, 1) * (state.max_steps - state.global_step)
                self.console.print(
                    f"step {state.global_step}/{state.max_steps}  loss {float(logs['loss']):.3f}"
                    f"  {speed:.0f} tok/s  elapsed {elapsed / 60:.1f} min"
                    f"  left {left / 60:.1f} min",
                    highlight=False,
                )

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    return _Callback(target)


def adapter_options(rank: int | None, alpha: float | None) -> dict[str, Any] | None:
    """``MoRConfig`` fields from --rank and --alpha (alpha follows the rank: 2 x rank)."""
    options: dict[str, Any] = {}
    if rank:
        options["r"] = rank
    if alpha is not None:
        options["lora_alpha"] = alpha
    elif rank:
        options["lora_alpha"] = 2.0 * rank
    return options or None


def finetune_command(
    data: Annotated[
        Path,
        typer.Argument(
            help="Trajectories, one JSON object per line (`moragent data` output). An "
            "OpenAI-messages file is accepted too: it is converted, and its thoughts filled "
            "by the rules teacher, on the way in.",
            show_default=False,
        ),
    ],
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="Base model: a GGUF file or a transformers folder. Default: the embedded "
            "SmolLM2-135M-Instruct (dequantized once, then cached).",
        ),
    ] = None,
    method: Annotated[
        str, typer.Option(help="mor: routed LoRA experts per role; lora: one LoRA per role.")
    ] = "mor",
    out: Annotated[
        Path, typer.Option(help="Folder for the adapters and moragent.json (replaced atomically).")
    ] = Path("runs/adapters"),
    epochs: Annotated[float, typer.Option(help="Passes over the training split.")] = 1.0,
    max_steps: Annotated[
        int, typer.Option(help="Optimizer steps to run; overrides --epochs when > 0.")
    ] = -1,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-4,
    batch_size: Annotated[int, typer.Option(help="Sequences per forward, per process.")] = 4,
    grad_accum: Annotated[int, typer.Option(help="Forwards per optimizer step.")] = 2,
    max_length: Annotated[
        int, typer.Option(help="Longest sequence in tokens; longer ones are cut between turns.")
    ] = 1024,
    val_split: Annotated[
        float, typer.Option(help="Share of trajectories held out for validation (at most 64).")
    ] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of split, data order, dropout, init.")] = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint of --out's run.")
    ] = False,
    init_from: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Start from the adapters of an earlier run (its --out folder) instead of "
            "fresh ones, e.g. to go on training on new data: their method and rank are kept; "
            "the learning-rate schedule starts anew.",
            show_default=False,
        ),
    ] = None,
    bf16: Annotated[
        bool | None,
        typer.Option("--bf16/--no-bf16", help="bf16 autocast. Default: where supported."),
    ] = None,
    save_steps: Annotated[int, typer.Option(help="A checkpoint every N steps.")] = 50,
    eval_steps: Annotated[
        int | None, typer.Option(help="Validate every N steps (default: before and after).")
    ] = None,
    rank: Annotated[int | None, typer.Option(min=1, help="Adapter rank (default 4).")] = None,
    alpha: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="LoRA alpha: expert outputs are scaled by alpha / rank. Default: twice the "
            "rank, so a change of rank keeps the scale.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train role adapters (MoR or one LoRA per role) on trajectories."""
    from moragent.data.io import DataError
    from moragent.models import ModelNotFoundError
    from moragent.train.training import finetune

    callbacks = [] if quiet else [progress_callback(console)]
    if not quiet:
        console.print(
            "[dim]reading the data, loading the base model, measuring the validation loss "
            "before training...[/]"
        )
    try:
        result = finetune(
            data,
            base=base,
            method=method,
            out=out,
            resume=resume,
            init_from=init_from,
            adapter_options=adapter_options(rank, alpha),
            callbacks=callbacks,
            epochs=epochs,
            max_steps=max_steps,
            lr=lr,
            batch_size=batch_size,
            grad_accum=grad_accum,
            max_length=max_length,
            val_split=val_split,
            seed=seed,
            bf16=bf16,
            save_steps=save_steps,
            eval_steps=eval_steps,
        )
    except (DataError, ModelNotFoundError, ValueError) as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None

    if result.main_process:  # one summary under accelerate launch / torchrun
        show_summary(result)


def show_summary(result: Any) -> None:
    """The figures of a finished run: steps, tokens, loss per role, where the adapters went."""
    if result.converted_from:
        console.print(f"converted the {result.converted_from} messages to trajectories")
    if result.resumed_from:
        console.print(f"resumed from {escape(str(result.resumed_from))}")
    encode = result.encode
    console.print(
        f"{encode.sequences} sequences, {encode.cut} cut between turns to fit, "
        f"{encode.dropped} dropped (not even one turn fits); {result.val_sequences} for validation"
    )
    console.print(
        f"{result.steps} steps, {result.tokens:,} tokens, {result.tokens_per_second:.0f} "
        f"tokens/s, {result.runtime_s:.0f} s; trainable "
        f"{result.trainable_parameters:,} of {result.total_parameters:,} parameters"
    )
    if result.loss_before:
        table = Table(title="validation loss")
        table.add_column("role")
        table.add_column("before", justify="right")
        table.add_column("after", justify="right")
        for role, before in result.loss_before.items():
            after = result.loss_after.get(role, math.nan)
            table.add_row(role, _fmt(before), _fmt(after))
        console.print(table)
    console.print(f"[bold green]adapters written to[/] {escape(str(result.out))}")


def _fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"
