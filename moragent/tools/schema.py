"""JSON schemas for tool parameters, built from a function's type hints and docstring.

Supported annotations: ``str``, ``int``, ``float``, ``bool``, ``list[X]``, ``set[X]``,
``tuple[X, ...]``, ``dict`` / ``dict[str, X]``, ``Literal[...]``, ``Enum`` subclasses,
``Optional[X]`` / ``X | None``, other unions, ``Annotated[X, "description"]`` and ``Any``.
Each parameter also gets a converter that turns the JSON value back into what the
annotation asks for (an ``Enum`` member, a tuple, a set) before the call.
"""

from __future__ import annotations

import enum
import inspect
import json
import logging
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import docstring_parser
import jsonschema

logger = logging.getLogger(__name__)

#: Turns one JSON argument value into the value the tool function expects.
Converter = Callable[[Any], Any]

SUPPORTED_TYPES = (
    "str, int, float, bool, list[...], set[...], tuple[...], dict[str, ...], Literal[...], "
    "an Enum subclass, Optional[...] or a union of these"
)

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_NONE = type(None)


class ToolDefinitionError(TypeError):
    """A function cannot become a tool. The message names the function, parameter and place."""

    def __init__(
        self,
        message: str,
        *,
        function: str,
        reason: str,
        parameter: str | None = None,
        filename: str | None = None,
        lineno: int | None = None,
    ) -> None:
        super().__init__(message)
        self.function = function
        self.reason = reason
        self.parameter = parameter
        self.filename = filename
        self.lineno = lineno


def function_location(fn: Callable[..., Any]) -> tuple[str | None, int | None]:
    """The file and first line where ``fn`` is defined, where Python knows them."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:
        return None, None
    return code.co_filename, code.co_firstlineno


def _fail(
    fn: Callable[..., Any], message: str, parameter: str | None = None
) -> ToolDefinitionError:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
    filename, lineno = function_location(fn)
    where = f" ({filename}:{lineno})" if filename else ""
    return ToolDefinitionError(
        f"tool function {name!r}{where}: {message}",
        function=name,
        reason=message,
        parameter=parameter,
        filename=filename,
        lineno=lineno,
    )


def _json_type(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for kind, name in ((int, "integer"), (float, "number"), (str, "string")):
        if isinstance(value, kind):
            return name
    return None


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    kinds = {_json_type(value) for value in values}
    if len(kinds) == 1 and None not in kinds:
        return {"type": kinds.pop(), "enum": values}
    return {"enum": values}


def _to_int(value: Any) -> Any:
    # JSON Schema counts 3.0 as an integer; hand the function a real int.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _each(convert: Converter | None, container: type) -> Converter | None:
    if convert is None and container is list:
        return None
    if convert is None:
        return lambda value: container(value)
    return lambda value: container(convert(item) for item in value)


def _optional(convert: Converter | None) -> Converter | None:
    if convert is None:
        return None
    return lambda value: None if value is None else convert(value)


def _by_matching_member(members: list[tuple[dict[str, Any], Converter | None]]) -> Converter:
    """Convert a union's value with the converter of the first member schema it matches."""
    checks = [(jsonschema.Draft202012Validator(schema), convert) for schema, convert in members]

    def convert(value: Any) -> Any:
        for validator, member_convert in checks:
            if validator.is_valid(value):
                return value if member_convert is None else member_convert(value)
        return value

    return convert


def annotation_schema(
    annotation: Any, fn: Callable[..., Any], parameter: str
) -> tuple[dict[str, Any], Converter | None]:
    """The JSON schema of one annotation and the converter for its values.

    Raises:
        ToolDefinitionError: the annotation has no JSON form; the message lists what does.
    """
    if annotation is Any:
        return {}, None
    if isinstance(annotation, type) and annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}, (_to_int if annotation is int else None)
    if annotation is None or annotation is _NONE:
        return {"type": "null"}, None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        members = annotation
        values = [member.value for member in members]
        if any(_json_type(value) is None for value in values):
            raise _fail(
                fn,
                f"parameter {parameter!r}: the values of {members.__name__} "
                "must be str, int, float or bool to appear in a JSON schema",
                parameter,
            )

        def to_member(value: Any) -> enum.Enum:
            return value if isinstance(value, members) else members(value)

        return _enum_schema(values), to_member

    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return annotation_schema(args[0], fn, parameter)
    if origin is Literal:
        values = list(args)
        if any(_json_type(value) is None for value in values):
            raise _fail(
                fn,
                f"parameter {parameter!r}: Literal values must be str, int, float, bool or None",
                parameter,
            )
        return _enum_schema(values), None
    if origin in (Union, types.UnionType):
        return _union_schema(args, fn, parameter)
    if annotation in (list, set, frozenset, tuple) or origin in (list, set, frozenset, tuple):
        return _array_schema(annotation, origin, args, fn, parameter)
    if annotation is dict or origin is dict or origin is Mapping or annotation is Mapping:
        return _object_schema(args, fn, parameter)

    raise _fail(
        fn,
        f"parameter {parameter!r} has type {_type_name(annotation)}, which has no JSON schema; "
        f"use {SUPPORTED_TYPES}",
        parameter,
    )


def _union_schema(
    args: tuple[Any, ...], fn: Callable[..., Any], parameter: str
) -> tuple[dict[str, Any], Converter | None]:
    members = [annotation_schema(arg, fn, parameter) for arg in args if arg is not _NONE]
    nullable = _NONE in args
    if len(members) == 1:
        schema, convert = members[0]
    else:
        schema = {"anyOf": [member for member, _ in members]}
        needed = any(convert is not None for _, convert in members)
        convert = _by_matching_member(members) if needed else None
    if nullable:
        return {"anyOf": [schema, {"type": "null"}]}, _optional(convert)
    return schema, convert


def _array_schema(
    annotation: Any, origin: Any, args: tuple[Any, ...], fn: Callable[..., Any], parameter: str
) -> tuple[dict[str, Any], Converter | None]:
    container = origin or annotation
    schema: dict[str, Any] = {"type": "array"}
    if container in (set, frozenset):
        schema["uniqueItems"] = True
    if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        items = [annotation_schema(arg, fn, parameter) for arg in args]
        schema.update(
            prefixItems=[item for item, _ in items], minItems=len(items), maxItems=len(items)
        )
        converts = [convert for _, convert in items]

        def convert_fixed(value: Any) -> tuple[Any, ...]:
            return tuple(c(v) if c else v for c, v in zip(converts, value, strict=True))

        return schema, convert_fixed
    if not args:
        return schema, _each(None, container)
    item, convert = annotation_schema(args[0], fn, parameter)
    if item:
        schema["items"] = item
    return schema, _each(convert, container)


def _object_schema(
    args: tuple[Any, ...], fn: Callable[..., Any], parameter: str
) -> tuple[dict[str, Any], Converter | None]:
    schema: dict[str, Any] = {"type": "object"}
    if not args:
        return schema, None
    if args[0] is not str:
        raise _fail(
            fn,
            f"parameter {parameter!r}: dict keys must be str, as JSON object keys "
            f"are strings (got {_type_name(args[0])})",
            parameter,
        )
    value_schema, convert = annotation_schema(args[1], fn, parameter)
    if value_schema:
        schema["additionalProperties"] = value_schema
    if convert is None:
        return schema, None
    return schema, lambda value: {key: convert(item) for key, item in value.items()}


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def json_default(value: Any) -> tuple[bool, Any]:
    """``(True, value)`` when a parameter default can be written in JSON, else ``(False, None)``."""
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        return True, json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return False, None


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


def describe(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The tool description and per-parameter descriptions from ``fn``'s docstring.

    Google, reST and numpy docstrings are read (the style is detected).
    """
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    parts = [part.strip() for part in (doc.short_description, doc.long_description) if part]
    params = {param.arg_name: _clean(param.description) for param in doc.params}
    return "\n\n".join(parts), params


def parameters_schema(
    fn: Callable[..., Any],
) -> tuple[dict[str, Any], dict[str, Converter], str]:
    """The parameters schema of ``fn``, its argument converters and its description.

    Raises:
        ToolDefinitionError: a parameter has no type hint or an unsupported one, or the
            function takes ``*args`` / ``**kwargs`` or positional-only parameters.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise _fail(fn, f"its signature cannot be read ({exc})") from None
    hints = _parameter_hints(fn, signature)

    description, docs = describe(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    converters: dict[str, Converter] = {}

    for name, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise _fail(
                fn,
                f"'{star}{name}' is not supported: a model calls a tool with a JSON "
                "object, so every parameter needs a name and a type hint",
                name,
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise _fail(
                fn,
                f"parameter {name!r} is positional-only; remove the '/' so it can be "
                "passed by name",
                name,
            )
        if name not in hints:
            raise _fail(
                fn,
                f"parameter {name!r} has no type hint; annotate it (for example "
                f"'{name}: str') so its JSON schema can be built",
                name,
            )

        annotation = hints[name]
        schema, convert = annotation_schema(annotation, fn, name)
        has_default = param.default is not param.empty
        if has_default and param.default is None and not _allows_null(schema):
            schema, convert = {"anyOf": [schema, {"type": "null"}]}, _optional(convert)
        schema = dict(schema)
        text = docs.pop(name, "") or _annotated_text(annotation)
        if text:
            schema["description"] = text
        if has_default:
            ok, value = json_default(param.default)
            if ok and not jsonschema.Draft202012Validator(schema).is_valid(value):
                raise _fail(
                    fn,
                    f"the default of parameter {name!r} ({param.default!r}) does not fit its "
                    f"type hint {_type_name(annotation)}",
                    name,
                )
            if ok:
                schema["default"] = value
        else:
            required.append(name)
        properties[name] = schema
        if convert is not None:
            converters[name] = convert

    for name in docs:
        logger.warning(
            "%s: the docstring documents %r, which is not a parameter",
            getattr(fn, "__qualname__", fn),
            name,
        )
    parameters = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return parameters, converters, description


def _parameter_hints(fn: Callable[..., Any], signature: inspect.Signature) -> dict[str, Any]:
    """The evaluated hints of the parameters; the return annotation is not needed."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # a name that does not resolve, maybe only in the return annotation
        pass
    hints: dict[str, Any] = {}
    namespace = getattr(inspect.unwrap(fn), "__globals__", {})
    for name, param in signature.parameters.items():
        if param.annotation is param.empty:
            continue
        holder = types.SimpleNamespace(__annotations__={name: param.annotation})
        holder.__globals__ = namespace
        try:
            hints[name] = typing.get_type_hints(holder, include_extras=True)[name]
        except Exception as exc:
            raise _fail(
                fn,
                f"the type hint of parameter {name!r} cannot be evaluated "
                f"({type(exc).__name__}: {exc}); use a type defined at module level",
                name,
            ) from None
    return hints


def _allows_null(schema: dict[str, Any]) -> bool:
    if not schema or schema.get("type") == "null":
        return True
    if None in schema.get("enum", ()):
        return True
    return any(_allows_null(member) for member in schema.get("anyOf", ()))


def _annotated_text(annotation: Any) -> str:
    if get_origin(annotation) is Annotated:
        texts = [item for item in get_args(annotation)[1:] if isinstance(item, str)]
        return _clean(" ".join(texts))
    return ""
