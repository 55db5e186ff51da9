"""``load_tools``: the tools of a ``tools.py`` file, imported by path."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import itertools
import logging
import sys
import traceback
from pathlib import Path
from types import ModuleType

from moragent.tools.core import Tool
from moragent.tools.schema import ToolDefinitionError

logger = logging.getLogger(__name__)

_counter = itertools.count()


class ToolLoadError(ValueError):
    """A tools file could not be loaded. The message names the file and, where known, the line."""

    def __init__(self, message: str, path: Path | str, line: int | None = None) -> None:
        super().__init__(message)
        self.path = str(path)
        self.line = line


def load_tools(path: str | Path) -> list[Tool]:
    """Import a Python file by path and return its tools.

    Functions marked with ``@tool`` (``Tool`` objects at the file's top level, imported
    ones included) are taken; where none is marked, every public function defined in
    the file itself (not imported, no leading underscore) becomes a tool.

    The file's folder is on ``sys.path`` only while the file is imported, so its
    top-level sibling imports work; an import made later, inside a tool, does not see it.

    Raises:
        ToolLoadError: the file is missing, has a syntax error, raises while imported,
            has a function without type hints, or defines no tools. The message names the
            file and line.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ToolLoadError(
            f"{path}: tools file {what}; pass the path of a Python file that defines tools", path
        )
    shown, path = path, path.resolve()  # messages name the path as the caller gave it
    module = _import(path, shown)

    marked = _marked_tools(module)
    if marked:
        tools = marked
    else:
        tools = [_from_function(fn, path, shown) for fn in _public_functions(module)]
    if not tools:
        raise ToolLoadError(
            f"{shown}: no tools found; mark functions with @tool (from moragent.tools import "
            "tool) or define public functions with type hints",
            path,
        )
    logger.info("loaded %d tools from %s: %s", len(tools), path, ", ".join(t.name for t in tools))
    return tools


def _import(path: Path, shown: Path) -> ModuleType:
    name = f"moragent_user_tools_{path.stem}_{next(_counter)}"
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None  # a SourceFileLoader always gives a spec
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)

    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, folder)
    try:
        loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        where = shown if not exc.filename or Path(exc.filename) == path else exc.filename
        text = f"\n    {exc.text.rstrip()}" if exc.text else ""
        message = f"{where}:{exc.lineno}: syntax error: {exc.msg}{text}"
        raise ToolLoadError(message, where, exc.lineno) from None
    except ToolDefinitionError as exc:
        sys.modules.pop(name, None)
        raise _definition_error(exc, path, shown) from None
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        line = _line_in(exc, path)
        where = f"{shown}:{line}" if line else str(shown)
        raise ToolLoadError(
            f"{where}: importing the tools file raised {type(exc).__name__}: {exc}", shown, line
        ) from exc
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            logger.warning("%s was removed from sys.path while %s was imported", folder, path)
    return module


def _line_in(exc: BaseException, path: Path) -> int | None:
    """The line of the deepest frame of ``exc``'s traceback that is in ``path``."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    return line


def _marked_tools(module: ModuleType) -> list[Tool]:
    tools: list[Tool] = []
    for value in vars(module).values():
        if isinstance(value, Tool) and all(value is not seen for seen in tools):
            tools.append(value)
    return tools


def _public_functions(module: ModuleType) -> list[object]:
    return [
        value
        for name, value in vars(module).items()
        if inspect.isfunction(value)
        and not name.startswith("_")
        and value.__module__ == module.__name__
    ]


def _from_function(fn: object, path: Path, shown: Path) -> Tool:
    try:
        return Tool.from_function(fn)  # type: ignore[arg-type]
    except ToolDefinitionError as exc:
        raise _definition_error(exc, path, shown, unmarked=True) from None


def _definition_error(
    exc: ToolDefinitionError, path: Path, shown: Path, unmarked: bool = False
) -> ToolLoadError:
    hint = (
        " (no function is marked @tool, so every public function is a tool: mark the tools "
        "with @tool, or prefix helpers with '_')"
        if unmarked
        else ""
    )
    same_file = exc.filename is None or Path(exc.filename) == path
    filename = str(shown) if same_file else exc.filename
    message = f"{filename}:{exc.lineno}: function {exc.function!r}: {exc.reason}{hint}"
    return ToolLoadError(message, filename, exc.lineno)
