"""The JSON Schema of the training format: ``moragent/schemas/trajectory.schema.json``."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

SCHEMA_FILE = "trajectory.schema.json"


@lru_cache(maxsize=1)
def trajectory_schema() -> dict[str, Any]:
    """The trajectory schema as a dict."""
    text = resources.files("moragent").joinpath("schemas", SCHEMA_FILE).read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def trajectory_validator() -> Draft202012Validator:
    """A reusable validator for the trajectory schema."""
    return Draft202012Validator(trajectory_schema())


def field_path(parts: Any) -> str:
    """``steps[2].calls[0].name`` from a jsonschema path deque."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def schema_errors(data: Any) -> list[tuple[str, str]]:
    """Every place ``data`` breaks the trajectory schema, as ``(field path, message)``.

    Empty when the trajectory is valid. For a step with several errors the most relevant
    one is kept, so each field is named once.
    """
    validator = trajectory_validator()
    errors = list(validator.iter_errors(data))
    if not errors:
        return []
    by_path: dict[str, list[Any]] = {}
    for error in errors:
        by_path.setdefault(field_path(error.absolute_path), []).append(error)
    found = []
    for path, group in by_path.items():
        error = best_match(group)
        found.append((field_path(error.absolute_path) if error else path, _message(error)))
    return found


def _message(error: Any) -> str:
    if error is None:
        return "invalid"
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown field")
    return error.message


def tool_parameters_validator(parameters: dict[str, Any]) -> Draft202012Validator:
    """A validator for the arguments of one tool (its ``parameters`` schema)."""
    return _cached_validator(json.dumps(parameters, sort_keys=True))


@lru_cache(maxsize=8192)
def _cached_validator(schema_text: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_text))
