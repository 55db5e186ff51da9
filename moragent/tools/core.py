"""The ``Tool`` object, the ``@tool`` decorator and ``to_tools`` for mixed tool lists."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from moragent.tools.schema import Converter, parameters_schema


@dataclass(eq=False)
class Tool:
    """A function the agent can call, with the JSON schema of its parameters.

    A ``Tool`` made by ``@tool`` stays callable like the function it wraps. ``fn`` is None
    for a schema-only tool (one read from a benchmark, say): calling it raises, and
    ``Toolbox.call`` turns that into an error result.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any] | None = None
    #: per-argument converters from JSON values to what ``fn`` expects (Enum members...)
    converters: dict[str, Converter] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.fn is not None:
            functools.update_wrapper(self, self.fn, updated=())

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI function form: ``{"name", "description", "parameters"}``."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            raise NotImplementedError(
                f"tool {self.name!r} has no implementation: it was given as a schema only; "
                "pass a callable (the key 'callable' of a schema dict) to run it"
            )
        return self.fn(*args, **kwargs)

    def convert(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Turn JSON arguments into the values ``fn`` expects (an Enum member for an Enum).

        Raises:
            ValueError: naming the argument whose value does not convert.
        """
        converted = dict(arguments)
        for name, convert in self.converters.items():
            if name not in converted:
                continue
            try:
                converted[name] = convert(converted[name])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"argument {name!r}: {exc}") from None
        return converted

    def invoke(self, arguments: Mapping[str, Any]) -> Any:
        """Call the tool with JSON arguments, converted first. Exceptions propagate."""
        return self(**self.convert(arguments))

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Tool:
        """Build a tool from a typed function; its schema comes from hints and docstring.

        Raises:
            TypeError: a parameter has no type hint, an unsupported one, or is ``*args``.
        """
        if not callable(fn):
            raise TypeError(f"a tool must be callable, got {type(fn).__name__}")
        parameters, converters, doc_description = parameters_schema(fn)
        tool_name = name or getattr(fn, "__name__", None)
        if not tool_name:
            raise TypeError(f"{fn!r} has no __name__: give the tool one with name=...")
        return cls(
            name=tool_name,
            description=doc_description if description is None else description,
            parameters=parameters,
            fn=fn,
            converters=converters,
        )

    @classmethod
    def from_schema(cls, schema: Mapping[str, Any], fn: Callable[..., Any] | None = None) -> Tool:
        """Build a tool from an OpenAI-style schema dict, with or without an implementation.

        Accepts ``{"type": "function", "function": {...}}`` or the inner ``{...}``; a
        callable may sit under the key ``"callable"`` of either.

        Raises:
            ValueError: the dict has no string ``name`` or its ``parameters`` is not an object.
        """
        fn = fn or schema.get("callable")
        inner = schema.get("function") if schema.get("type") == "function" else schema
        if not isinstance(inner, Mapping):
            raise ValueError("a tool schema of type 'function' needs a 'function' object")
        fn = fn or inner.get("callable")
        name = inner.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"a tool schema needs a string 'name'; got keys {sorted(inner)}")
        parameters = inner.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}, "required": []}
        if not isinstance(parameters, Mapping):
            raise ValueError(f"tool {name!r}: 'parameters' must be a JSON schema object")
        if fn is not None and not callable(fn):
            raise ValueError(f"tool {name!r}: 'callable' must be callable, got {type(fn).__name__}")
        return cls(
            name=name,
            description=str(inner.get("description") or ""),
            parameters=dict(parameters),
            fn=fn,
        )


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Mark a function as a tool: ``@tool`` or ``@tool(name=..., description=...)``.

    The parameters' JSON schema comes from the type hints, the descriptions from the
    docstring (Google, reST or numpy style).

    Example:
        >>> @tool
        ... def add(a: int, b: int = 1) -> int:
        ...     '''Add two numbers.
        ...
        ...     Args:
        ...         a: The first number.
        ...         b: The second number.
        ...     '''
        ...     return a + b
        >>> add(2, 3)
        5
        >>> add.parameters["required"]
        ['a']

    Raises:
        TypeError: a parameter has no type hint or an unsupported one, naming it.
    """
    if isinstance(fn, str):
        raise TypeError(f"use @tool(name={fn!r}) to name a tool, not @tool({fn!r})")

    def wrap(function: Callable[..., Any]) -> Tool:
        if isinstance(function, Tool):
            if name is None and description is None:
                return function
            function = function.fn or function
        return Tool.from_function(function, name=name, description=description)

    return wrap if fn is None else wrap(fn)


def to_tool(item: Tool | Callable[..., Any] | Mapping[str, Any]) -> Tool:
    """One ``Tool`` from a ``Tool``, a typed callable or an OpenAI-style schema dict."""
    if isinstance(item, Tool):
        return item
    if isinstance(item, Mapping):
        return Tool.from_schema(item)
    if callable(item):
        return Tool.from_function(item)
    raise TypeError(
        f"cannot make a tool from {type(item).__name__}: pass a Tool, a typed function or "
        "a schema dict {'name', 'description', 'parameters'}"
    )


def to_tools(items: Iterable[Tool | Callable[..., Any] | Mapping[str, Any]]) -> list[Tool]:
    """Tools from a mix of ``Tool``s, typed callables and OpenAI-style schema dicts.

    Raises:
        ValueError: two tools share a name (naming it), or a schema dict is malformed.
        TypeError: an item is none of the above, or a function cannot become a tool.
    """
    if isinstance(items, (Tool, Mapping)) or callable(items):
        items = [items]  # type: ignore[list-item]
    tools: list[Tool] = []
    seen: set[str] = set()
    for item in items:
        converted = to_tool(item)
        if converted.name in seen:
            raise ValueError(
                f"two tools are named {converted.name!r}; tool names must be unique: rename "
                "one with @tool(name=...)"
            )
        seen.add(converted.name)
        tools.append(converted)
    return tools
