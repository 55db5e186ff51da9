"""Tools: typed Python functions the agent can call, their JSON schemas, and a safe runner.

``@tool`` turns a function into a ``Tool`` whose schema comes from its type hints and
docstring; ``load_tools`` reads a ``tools.py`` by path; ``Toolbox`` validates and runs
calls, turning every failure into an error ``ToolResult`` instead of an exception.
"""

from moragent.tools.core import Tool, to_tool, to_tools, tool
from moragent.tools.loader import ToolLoadError, load_tools
from moragent.tools.schema import ToolDefinitionError
from moragent.tools.toolbox import Toolbox, render, truncate

__all__ = [
    "Tool",
    "ToolDefinitionError",
    "ToolLoadError",
    "Toolbox",
    "load_tools",
    "render",
    "to_tool",
    "to_tools",
    "tool",
    "truncate",
]
