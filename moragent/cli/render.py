"""Rendering agent events in the terminal with rich: thoughts dimmed, calls and
observations as panels, the answer as markdown."""

from __future__ import annotations

import json
from collections.abc import Iterable

from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.table import Table

from moragent.events import (
    AnswerEvent,
    ErrorEvent,
    Event,
    ObservationEvent,
    RoleStarted,
    ThoughtEvent,
    TokenEvent,
    ToolCallEvent,
)
from moragent.roles import Role
from moragent.trajectory import Trajectory


class EventRenderer:
    """Shows one episode's events as they arrive."""

    def __init__(self, console: Console, show_answer: bool = True) -> None:
        self.console = console
        #: False: the answer is left to the caller (``moragent run`` prints it to stdout)
        self.show_answer = show_answer
        self._live: Live | None = None
        self._answer = ""
        self._role: Role | None = None

    def show(self, events: Iterable[Event]) -> Trajectory | None:
        """Render every event; returns the episode's trajectory when it produced one."""
        trajectory = None
        try:
            for event in events:
                trajectory = self._show(event) or trajectory
        finally:
            self._stop_live()
        return trajectory

    def _show(self, event: Event) -> Trajectory | None:
        if isinstance(event, RoleStarted):
            self._role = event.role
            if event.role is Role.REASONER:
                self.console.print("[dim italic]thinking: [/]", end="")
            elif event.role is Role.SUMMARIZER and self.show_answer:
                self._answer = ""
                self._live = Live(Markdown(""), console=self.console, auto_refresh=False)
                self._live.start()
        elif isinstance(event, TokenEvent):
            if event.role is Role.REASONER:
                self.console.print(event.text, style="dim", end="", markup=False, highlight=False)
            elif event.role is Role.SUMMARIZER and self._live is not None:
                self._answer += event.text
                self._live.update(Markdown(self._answer), refresh=True)
        elif isinstance(event, ThoughtEvent):
            self.console.print()
        elif isinstance(event, ToolCallEvent):
            arguments = json.dumps(event.call.arguments, ensure_ascii=False)
            self.console.print(
                Panel(
                    arguments, title=f"call: {event.call.name}", border_style="cyan", expand=False
                )
            )
        elif isinstance(event, ObservationEvent):
            result = event.result
            self.console.print(
                Panel(
                    result.content,
                    title=f"{'error' if result.error else 'result'}: {result.name}",
                    border_style="red" if result.error else "green",
                    expand=False,
                )
            )
        elif isinstance(event, AnswerEvent):
            if self._live is not None:
                self._live.update(Markdown(event.text), refresh=True)
                self._stop_live()
            elif self.show_answer:
                self.console.print(Markdown(event.text))
            return event.trajectory
        elif isinstance(event, ErrorEvent):
            self._stop_live()
            style = "bold red" if event.fatal else "yellow"
            self.console.print(f"[{style}]{event.where}: {event.message}[/]", highlight=False)
            return event.trajectory
        return None

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            if not self.console.is_terminal:
                self.console.print()  # Live ends its last frame without a newline there


def tools_table(schemas: list[dict]) -> Table:
    """The agent's tools, one row each."""
    table = Table(title="tools", show_lines=False)
    table.add_column("name", style="cyan")
    table.add_column("parameters")
    table.add_column("description")
    for schema in schemas:
        properties = schema.get("parameters", {}).get("properties", {})
        required = set(schema.get("parameters", {}).get("required", []))
        params = ", ".join(p if p in required else f"{p}?" for p in properties)
        table.add_row(schema["name"], params, schema.get("description", ""))
    return table
