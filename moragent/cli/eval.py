"""``moragent eval``: benchmark runs (BFCL) on a backend, rendered with rich."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from moragent.cli.common import (
    AdaptersOption,
    BackendOption,
    MaxStepsOption,
    ModelOption,
    NoAdaptersOption,
    ToolsOption,
    load_agent,
    log_progress,
)
from moragent.eval.bfcl import (
    DEFAULT_CATEGORIES,
    SUPPORTED_CATEGORIES,
    BfclReport,
    BfclResult,
    data_dir,
    run_bfcl,
)

app = typer.Typer(
    help="Evaluate an agent: BFCL (bfcl) and whole agent episodes on a task file (tasks).",
    no_args_is_help=True,
)

#: who answers BFCL questions: moragent's agent, or llama-cpp-python's own tool calling
PREDICTORS = ("agent", "chatml-function-calling")


@app.callback()
def main() -> None:
    """Evaluate an agent: BFCL questions (bfcl) or whole episodes of a task file (tasks)."""


@app.command("bfcl")
def bfcl(
    categories: Annotated[
        str,
        typer.Option(
            help="Comma-separated BFCL categories to run, in this order; the live_* "
            "single-turn categories (live_simple, live_multiple, ...) work too."
        ),
    ] = ",".join(DEFAULT_CATEGORIES),
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Run only the first N questions of each category."),
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Run N questions of each category spread evenly over it (the same ones "
            "every run; a category's first questions are often its easiest).",
        ),
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json",
            dir_okay=False,
            help="Write the per-category summary and the per-question results to this file.",
        ),
    ] = None,
    backend: Annotated[str, typer.Option(help="Backend that runs the model.")] = "llamacpp",
    model: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Model file (.gguf) to use instead of the embedded default.",
        ),
    ] = None,
    adapters: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="Directory of role adapters to use instead of the shipped ones.",
        ),
    ] = None,
    no_adapters: NoAdaptersOption = False,
    think: Annotated[
        bool,
        typer.Option(
            "--think",
            help="The reasoner writes a thought before the executor's call in every "
            "category, as in an agent episode (default: only where calling nothing may "
            "be right).",
        ),
    ] = False,
    predictor: Annotated[
        str,
        typer.Option(
            help="Who answers: 'agent' (moragent's roles on --backend) or "
            "'chatml-function-calling' (llama-cpp-python's own tool calling on the same "
            "GGUF, no roles or adapters: a baseline)."
        ),
    ] = "agent",
) -> None:
    """Run BFCL non-live questions through the executor and score them with BFCL's checker."""
    err = Console(stderr=True)
    out = Console()

    chosen = [name.strip() for name in categories.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SUPPORTED_CATEGORIES]
    if not chosen or unknown:
        raise typer.BadParameter(
            f"unknown categories: {', '.join(unknown) or '(none given)'}; "
            f"choose from: {', '.join(SUPPORTED_CATEGORIES)}",
            param_hint="--categories",
        )
    if adapters is not None and no_adapters:
        raise typer.BadParameter(
            "give either --adapters DIR or --no-adapters, not both", param_hint="--adapters"
        )
    if predictor not in PREDICTORS:
        raise typer.BadParameter(
            f"unknown predictor {predictor!r}; choose from: {', '.join(PREDICTORS)}",
            param_hint="--predictor",
        )
    if predictor != "agent" and (adapters is not None or think or backend != "llamacpp"):
        raise typer.BadParameter(
            f"{predictor} runs llama-cpp-python on the bare model: it takes none of "
            "--adapters, --think or another --backend",
            param_hint="--predictor",
        )

    try:
        data_dir()
    except ImportError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None

    if predictor == "agent":
        predict = _predictor(err, backend, model, adapters, not no_adapters, think)
    else:
        predict = _baseline(err, model)

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as bar:
        task = bar.add_task("BFCL", total=None)
        started = time.perf_counter()

        def progress(done: int, total: int, result: BfclResult) -> None:
            bar.update(task, completed=done, total=total, description=result.category)
            log_progress(err, f"BFCL ({result.category})", done, total, started)

        report = run_bfcl(predict, chosen, limit=limit, progress=progress, sample=sample)

    out.print(_table(report))
    failures = sum(result.error_type == "predict_error" for result in report.results)
    if failures:
        err.print(
            f"[yellow]warning:[/] the predictor raised on {failures} question(s); "
            "they count as wrong (see error_type 'predict_error' in --json output)"
        )
    if json_path is not None:
        json_path.write_text(report.to_json(indent=2) + "\n", encoding="utf-8")
        err.print(f"wrote {json_path}")


@app.command("tasks")
def tasks(
    task_file: Annotated[
        Path,
        typer.Argument(
            metavar="TASKS.jsonl",
            help="Tasks, one JSON object per line: query, expect (exact, contains, regex, "
            "number + tolerance) and calls; see examples/tasks.jsonl.",
        ),
    ],
    tools: ToolsOption = None,
    backend: BackendOption = "llamacpp",
    model: ModelOption = None,
    adapters: AdaptersOption = None,
    no_adapters: NoAdaptersOption = False,
    max_steps: MaxStepsOption = 6,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Run only the first N tasks of the file.")
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json",
            dir_okay=False,
            help="Write the summary per task type and every episode's answer, calls and "
            "failed checks to this file.",
        ),
    ] = None,
) -> None:
    """Run whole agent episodes and check their answers and calls; a table per task type."""
    from moragent.eval.tasks import (
        TaskFileError,
        check_calls_against_tools,
        load_tasks,
        run_tasks,
    )

    err, out = Console(stderr=True), Console()
    try:
        chosen = load_tasks(task_file, limit)
    except TaskFileError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    if not tools:
        err.print(
            "[yellow]warning:[/] no --tools given: the agent has no tools to call", highlight=False
        )
    agent = load_agent(
        tools,
        backend,
        model,
        adapters,
        max_steps,
        tool_timeout=10.0,
        temperature=0.0,
        system=None,
        use_adapters=not no_adapters,
    )
    try:
        check_calls_against_tools(chosen, agent.tools, task_file)
    except TaskFileError as exc:
        agent.close()
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("solved {task.fields[solved]}"),
        TimeElapsedColumn(),
        console=err,
    ) as bar:
        progress = bar.add_task("tasks", total=len(chosen), solved=0)
        solved, done, started = 0, 0, time.perf_counter()

        def advance(outcome: Any) -> None:
            nonlocal solved, done
            solved += outcome.solved
            done += 1
            bar.update(progress, advance=1, solved=solved, description=outcome.task.type)
            log_progress(err, f"tasks (solved {solved})", done, len(chosen), started)

        try:
            report = run_tasks(agent.run, chosen, on_outcome=advance)
        finally:
            agent.close()

    table = Table(title=f"tasks: {task_file.name}")
    for column, justify in (
        ("type", "left"),
        ("n", "right"),
        ("solved", "right"),
        ("share", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    summary = report.summary()
    for kind, row in summary.items():
        if kind == "all":
            table.add_section()
        table.add_row(kind, str(row["n"]), str(row["solved"]), f"{row['share']:.0%}")
    out.print(table)
    for outcome in report.outcomes:
        if not outcome.solved:
            problems = escape("; ".join(outcome.problems))
            err.print(f"[dim]{escape(outcome.task.id)}: {problems}[/]", highlight=False)
    if json_path is not None:
        from moragent.data.io import atomic_writer

        with atomic_writer(json_path) as handle:
            handle.write(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
        err.print(f"wrote {json_path}")


def _predictor(
    err: Console,
    backend: str,
    model: Path | None,
    adapters: Path | None,
    use_adapters: bool,
    think: bool = False,
) -> Any:
    """The predictor from ``moragent.eval.predict.make_predictor``, or exit with the reason."""
    try:
        from moragent.eval.predict import make_predictor
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "moragent.eval.predict":
            reason = "the predictor module moragent.eval.predict is not part of this install"
        else:
            reason = f"cannot load moragent.eval.predict: {exc}"
        err.print(f"[red]error:[/] {reason}; BFCL cannot run without a predictor")
        raise typer.Exit(1) from None

    try:
        return make_predictor(backend, model, adapters, use_adapters, think=think)
    except (ValueError, OSError, ImportError, RuntimeError) as exc:
        err.print(f"[red]error:[/] cannot start backend {backend!r}: {exc}")
        raise typer.Exit(1) from None


def _baseline(err: Console, model: Path | None) -> Any:
    """llama-cpp-python's chatml-function-calling on ``model``, or exit with the reason."""
    from moragent.eval.baseline import ChatmlFunctionCallingPredictor

    try:
        return ChatmlFunctionCallingPredictor(model)
    except (ValueError, OSError, ImportError, RuntimeError) as exc:
        err.print(f"[red]error:[/] cannot start llama-cpp-python: {exc}")
        raise typer.Exit(1) from None


def _table(report: BfclReport) -> Table:
    summary = report.summary()
    table = Table(title="BFCL (scored by BFCL's AST checker)")
    table.add_column("category")
    table.add_column("n", justify="right")
    table.add_column("correct", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("schema-valid", justify="right")
    for category, row in summary.items():
        correct = sum(r.valid for r in report.results if r.category == category)
        table.add_row(
            category,
            str(row["n"]),
            str(correct),
            f"{row['accuracy']:.1%}",
            f"{row['schema_valid']}/{row['n']}",
        )
    if len(summary) > 1:
        mean = sum(row["accuracy"] for row in summary.values()) / len(summary)
        table.add_section()
        table.add_row("mean of categories", "", "", f"{mean:.1%}", "")
    return table
