"""The ``moragent`` command line (Typer)."""

from moragent.cli.app import app, main

__all__ = ["app", "main"]
