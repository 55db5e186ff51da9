"""The JSON Schema of the training format: ``moragent/schemas/trajectory.schema.json``.

Validation uses ``jsonschema``. When ``fastjsonschema`` is installed, a valid trajectory
is accepted through the schema compiled to Python code (several times faster), and
``jsonschema`` is asked only about invalid ones, for its field paths and messages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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


@lru_cache(maxsize=1)
def _fast_check() -> Callable[[Any], bool] | None:
    """A compiled validity test from ``fastjsonschema``, or None when it is not installed."""
    try:
        import fastjsonschema
    except ImportError:
        return None
    compiled = fastjsonschema.compile(trajectory_schema())

    def check(data: Any) -> bool:
        try:
            compiled(data)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    return check


def is_valid_trajectory(data: Any) -> bool:
    """Whether ``data`` fits the trajectory schema."""
    fast = _fast_check()
    return fast(data) if fast is not None else trajectory_validator().is_valid(data)


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
    fast = _fast_check()
    if fast is not None and fast(data):
        return []
    errors = list(trajectory_validator().iter_errors(data))
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


_TOOL_VALIDATORS: dict[str, tuple[dict[str, Any], Draft202012Validator]] = {}


def tool_parameters_validator(parameters: dict[str, Any], name: str = "") -> Draft202012Validator:
    """A validator for the arguments of one tool (its ``parameters`` schema).

    Validators are kept per tool name and reused while the schema stays equal, so a tool
    seen on many lines is set up once.
    """
    cached = _TOOL_VALIDATORS.get(name)
    if cached is not None and cached[0] == parameters:
        return cached[1]
    if len(_TOOL_VALIDATORS) > 20000:
        _TOOL_VALIDATORS.clear()
    validator = Draft202012Validator(parameters)
    _TOOL_VALIDATORS[name] = (parameters, validator)
    return validator
