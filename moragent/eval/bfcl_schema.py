"""BFCL function docs as JSON Schema tool schemas, and arguments read per declared type.

BFCL describes parameters with its own type names (``dict``, ``float``, ``tuple``,
``any``, ...). :func:`tool_schema` turns one function doc into the tool schema form
moragent uses everywhere (``{"name", "description", "parameters"}``), with proper
JSON Schema types, ``required`` and closed objects, so that a constrained decoder
(llama.cpp GBNF from a JSON schema) can enforce it.
"""

from __future__ import annotations

from typing import Any

#: BFCL type name -> JSON Schema fragment; "any" accepts every JSON value
_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "str": {"type": "string"},
    "integer": {"type": "integer"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "bool": {"type": "boolean"},
    "array": {"type": "array"},
    "list": {"type": "array"},
    "tuple": {"type": "array"},
    "dict": {"type": "object"},
    "object": {"type": "object"},
    "any": {},
}

#: keywords copied as they are (all standard JSON Schema); BFCL's own "optional" flag
#: is dropped, since "required" already says the same
_KEPT = ("description", "enum", "default", "format", "maximum", "minimum", "minItems", "maxItems")


def tool_schema(function_doc: dict[str, Any]) -> dict[str, Any]:
    """One BFCL function doc as a tool schema ``{"name", "description", "parameters"}``.

    The name is kept exactly, dots included (``math.factorial``).

    Raises:
        ValueError: a parameter has a type BFCL's Python categories do not use; the
            message names the function and the parameter path.
    """
    name = function_doc["name"]
    parameters = function_doc.get("parameters") or {"type": "dict", "properties": {}}
    return {
        "name": name,
        "description": function_doc.get("description", ""),
        "parameters": json_schema(parameters, where=name),
    }


def tool_schemas(function_docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every function doc of a question as a tool schema, in order."""
    return [tool_schema(doc) for doc in function_docs]


def json_schema(node: dict[str, Any], where: str = "parameters") -> dict[str, Any]:
    """One BFCL type node (and everything under it) as a JSON Schema.

    ``dict`` becomes ``object`` with ``required`` and ``additionalProperties: false``
    (a ``dict`` with no ``properties`` stays an open object: its keys are not known),
    ``float`` becomes ``number``, ``tuple`` an ``array``, ``any`` the empty schema.
    """
    kind = node.get("type", "any")
    if kind not in _TYPES:
        raise ValueError(
            f"{where}: BFCL type {kind!r} has no JSON Schema equivalent here "
            f"(known: {', '.join(sorted(_TYPES))})"
        )
    schema: dict[str, Any] = dict(_TYPES[kind])
    for key in _KEPT:
        if key in node:
            schema[key] = node[key]

    if "properties" in node and schema.get("type") == "object":
        properties = node["properties"] or {}
        schema["properties"] = {
            key: json_schema(child, where=f"{where}.{key}") for key, child in properties.items()
        }
        schema["required"] = [key for key in node.get("required", []) if key in properties]
        schema["additionalProperties"] = False
    if "items" in node and schema.get("type") == "array":
        items = dict(node["items"])
        if "enum" in schema and "enum" not in items:
            items["enum"] = schema.pop("enum")  # BFCL sometimes puts the items' enum on the array
        schema["items"] = json_schema(items, where=f"{where}[]")
    if "enum" in schema:
        _fit_enum(schema)
    return schema


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _fit_enum(schema: dict[str, Any]) -> None:
    """Keep only the enum values of the declared type (some live BFCL docs list strings
    such as "dontcare" for an integer); drop the enum when none is left."""
    accepted = _PYTHON_TYPES.get(schema.get("type", ""))
    if accepted is None:
        return
    values = [
        value
        for value in schema["enum"]
        if isinstance(value, accepted)
        and (schema["type"] == "boolean" or not isinstance(value, bool))
    ]
    if values:
        schema["enum"] = values
    else:
        del schema["enum"]


def as_declared(node: dict[str, Any], value: Any) -> Any:
    """``value`` read as the type BFCL declares for it: a JSON integer where ``float`` is
    declared becomes a Python float, at any depth (array items, object properties).

    JSON has one number type, so ``5`` is a valid float argument; a Python reader
    (``json.loads``) still makes it an ``int``. BFCL's checker converts int to float
    itself for a top-level ``float`` parameter ("allow python auto conversion from int
    to float") but its nested type check for ``array`` of ``float`` is exact, so the
    same conversion is applied here at every level. Nothing else changes: a float
    where ``integer`` is declared stays a float (and the checker rejects it), and
    ``bool`` is never a number.
    """
    kind = node.get("type")
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in ("array", "tuple", "list") and isinstance(value, list) and "items" in node:
        return [as_declared(node["items"], item) for item in value]
    if kind in ("dict", "object") and isinstance(value, dict) and "properties" in node:
        properties = node["properties"] or {}
        return {
            key: as_declared(properties[key], item) if key in properties else item
            for key, item in value.items()
        }
    return value
