"""Options and set-up shared by the CLI commands."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

ToolsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--tools",
        "-t",
        help="A Python file of tools: functions marked @tool, or else every public function "
        "defined in it. Repeat for several files.",
        show_default=False,
    ),
]
ModelOption = Annotated[
    Path | None,
    typer.Option(
        "--model",
        "-m",
        help="Model to run: a GGUF file (llama.cpp backend) or an HF model folder (torch). "
        "Default: the embedded SmolLM2-135M-Instruct.",
        show_default=False,
    ),
]
AdaptersOption = Annotated[
    Path | None,
    typer.Option(
        "--adapters",
        "-a",
        help="Folder of trained role adapters (`moragent export` output for llama.cpp, "
        "`moragent finetune` output for torch).",
        show_default=False,
    ),
]
NoAdaptersOption = Annotated[
    bool,
    typer.Option(
        "--no-adapters",
        help="Run the bare model, without the role adapters shipped for the default model.",
    ),
]
BackendOption = Annotated[
    str,
    typer.Option(
        "--backend",
        "-b",
        help="Where the model runs: llamacpp (GGUF on CPU/GPU), torch (transformers + "
        "peft), or openai (an OpenAI-compatible server).",
    ),
]
MaxStepsOption = Annotated[
    int,
    typer.Option(
        "--max-steps", min=1, help="Tool-call turns per question before the agent must answer."
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option("--tool-timeout", min=0.01, help="Seconds a tool may run before its call fails."),
]
TemperatureOption = Annotated[
    float,
    typer.Option("--temperature", min=0.0, help="Sampling temperature; 0 decodes greedily."),
]
SystemOption = Annotated[
    str | None,
    typer.Option("--system", help="System text for the agent (default: a short built-in one)."),
]
RoleModelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--role-model",
        help="ROLE=NAME: the server's model name for one role (openai backend), e.g. "
        "reasoner=reasoner. Repeat per role; --model NAME serves the roles not named.",
        show_default=False,
    ),
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="The OpenAI-compatible server's API root, e.g. http://127.0.0.1:8000/v1 "
        "(openai backend; default: $OPENAI_BASE_URL, else that address).",
        show_default=False,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="API key for the server (openai backend; default: $OPENAI_API_KEY).",
        show_default=False,
    ),
]


def log_progress(console: Console, what: str, done: int, total: int, started: float) -> None:
    """A plain progress line where no live bar can be drawn (a log file or a pipe).

    Printed at every tenth item and at the last one, with the time so far and an estimate
    of the time left, so a long run written to a file still shows where it is.
    """
    if console.is_terminal or not (done % 10 == 0 or done == total):
        return
    elapsed = time.perf_counter() - started
    left = elapsed / max(done, 1) * (total - done)
    console.print(
        f"{what} {done}/{total}  elapsed {elapsed / 60:.1f} min  left {left / 60:.1f} min",
        highlight=False,
    )


def server_options(
    backend: str, role_model: list[str] | None, base_url: str | None, api_key: str | None
) -> dict[str, object]:
    """The openai backend's options from the CLI; ``ValueError`` when they do not fit."""
    if backend != "openai":
        if role_model or base_url or api_key:
            raise ValueError("--role-model, --base-url and --api-key need --backend openai")
        return {}
    from moragent.roles import parse_role

    role_models = {}
    for item in role_model or []:
        role, sep, name = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--role-model takes ROLE=NAME, got {item!r}")
        role_models[parse_role(role).value] = name.strip()
    return {"role_models": role_models, "base_url": base_url, "api_key": api_key}


def load_agent(
    tools: list[Path] | None,
    backend: str,
    model: Path | None,
    adapters: Path | None,
    max_steps: int,
    tool_timeout: float,
    temperature: float,
    system: str | None,
    role_model: list[str] | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    use_adapters: bool = True,
):  # noqa: ANN201 - returns moragent.Agent, imported lazily to keep start-up fast
    """Load tools and model, or print a clear error and exit with status 2."""
    from moragent.agent import Agent
    from moragent.backends import BackendError, make_backend
    from moragent.models import ModelNotFoundError
    from moragent.tools import ToolLoadError, load_tools

    if adapters is not None and not use_adapters:
        err_console.print(
            "[bold red]error:[/] give either --adapters DIR or --no-adapters, not both"
        )
        raise typer.Exit(2)
    loaded = []
    origin: dict[str, Path] = {}  # tool name -> the file it came from
    for path in tools or []:
        try:
            found = load_tools(path)
        except ToolLoadError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        for tool in found:
            if tool.name in origin:
                where = (
                    f"{path} is given twice"
                    if origin[tool.name].resolve() == path.resolve()
                    else f"{origin[tool.name]} and {path} both define it"
                )
                err_console.print(
                    f"[bold red]error:[/] two tools are named {tool.name!r}: {where}; "
                    "tool names must be unique (rename one with @tool(name=...))",
                    highlight=False,
                )
                raise typer.Exit(2)
            origin[tool.name] = path
        loaded.extend(found)
    try:
        with err_console.status("loading the model..."):
            options = server_options(backend, role_model, base_url, api_key)
            chosen = adapters if use_adapters else False
            model_backend = make_backend(backend, model, chosen, **options)
        return Agent(
            tools=loaded,
            backend=model_backend,
            max_steps=max_steps,
            tool_timeout=tool_timeout,
            temperature=temperature,
            system=system,
        )
    except (BackendError, ModelNotFoundError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
