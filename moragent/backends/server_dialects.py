"""What differs between OpenAI-compatible servers: constraint fields, tokenize endpoints,
token usage reports and error bodies.

The OpenAI completions API itself has no output constraint; every engine adds its own
field. A dialect names one engine family:

- ``llamacpp``: llama-cpp-python's ``llama_cpp.server`` and llama.cpp's ``llama-server``:
  a GBNF grammar in ``grammar`` (built here from the JSON schema, as the in-process
  llama.cpp backend does).
- ``vllm``: vLLM 0.10.2 and later: ``structured_outputs`` with ``json`` or ``regex``.
- ``vllm-guided``: older vLLM (and engines that copied it): ``guided_json`` / ``guided_regex``.
- ``response_format``: OpenAI's ``response_format`` with a JSON schema; JSON only, so the
  reasoner's turn goes unconstrained.
- ``none``: no constraint is sent; the controller's parsers and repair path still hold.
"""

from __future__ import annotations

import json
import re
from typing import Any

from moragent.backends.base import Constraint
from moragent.grammar import reasoner_gbnf, reasoner_regex

DIALECTS = ("auto", "llamacpp", "vllm", "vllm-guided", "response_format", "none")

#: ``owned_by`` of the models that a server lists, per dialect it speaks
_OWNERS = {"vllm": "vllm", "llamacpp": "llamacpp", "me": "llamacpp"}

#: longest JSON string the executor may write under a grammar (as the llama.cpp backend)
MAX_STRING_CHARS = 200

_CHAR_RULE = re.compile(r"^char ::= .*$", re.MULTILINE)
_JSON_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def detect_dialect(owners: list[str]) -> str:
    """The dialect of a server from the ``owned_by`` fields of its ``/v1/models`` list.

    vLLM says ``vllm``, llama.cpp's ``llama-server`` says ``llamacpp`` and
    ``llama_cpp.server`` says ``me``; anything else gets ``none``.
    """
    for owner in owners:
        dialect = _OWNERS.get(owner.lower())
        if dialect:
            return dialect
    return "none"


def constraint_fields(dialect: str, constraint: Constraint | None) -> dict[str, Any]:
    """The request fields that carry ``constraint`` in ``dialect`` (empty: none sent)."""
    if constraint is None or dialect == "none":
        return {}
    schema = constraint.json_schema
    regex = None
    if schema is None and constraint.next_roles:
        regex = reasoner_regex(constraint.next_roles, constraint.max_thought_chars)
    if schema is None and regex is None:
        return {}
    if dialect == "llamacpp":
        if schema is not None:
            return {"grammar": schema_gbnf(schema)}
        return {"grammar": reasoner_gbnf(constraint.next_roles or (), constraint.max_thought_chars)}
    if dialect == "vllm":
        return {"structured_outputs": {"json": schema} if schema is not None else {"regex": regex}}
    if dialect == "vllm-guided":
        return {"guided_json": schema} if schema is not None else {"guided_regex": regex}
    if dialect == "response_format":
        if schema is None:
            return {}
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "tool_call", "schema": schema},
            }
        }
    raise ValueError(f"unknown server dialect {dialect!r}: expected one of {', '.join(DIALECTS)}")


def schema_gbnf(schema: dict[str, Any]) -> str:
    """GBNF for a JSON schema: name before arguments, properties in declared order,
    JSON's own string characters, strings bounded to ``MAX_STRING_CHARS``."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    order = ["name", "arguments", *_property_names(schema)]
    text = json_schema_to_gbnf(json.dumps(schema), prop_order=list(dict.fromkeys(order)))
    text = _CHAR_RULE.sub(lambda _: _JSON_CHAR_RULE, text)
    return text.replace("char*", f"char{{0,{MAX_STRING_CHARS}}}")


def _property_names(node: object) -> list[str]:
    """Every property name in a schema, in declaration order, nested ones included."""
    found: list[str] = []
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            found.extend(properties)
        for value in node.values():
            found.extend(_property_names(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_property_names(item))
    return found


def tokenize_requests(dialect: str, model: str, text: str) -> list[tuple[str, dict[str, Any]]]:
    """(path below the server root, body) of the tokenize endpoints to try, best first."""
    llama_python = ("/extras/tokenize", {"model": model, "input": text})
    llama_server = ("/tokenize", {"content": text})
    vllm = ("/tokenize", {"model": model, "prompt": text, "add_special_tokens": False})
    if dialect == "llamacpp":
        return [llama_python, llama_server]
    if dialect.startswith("vllm"):
        return [vllm]
    return [vllm, llama_python, llama_server]


def estimate_tokens(text: str) -> int:
    """A rough token count: a ChatML marker is one token, other text about 4 characters each."""
    markers = re.findall(r"<\|[a-z_]+\|>", text)
    rest = len(text) - sum(len(marker) for marker in markers)
    return len(markers) + (rest + 3) // 4


def read_usage(chunk: Any) -> dict[str, Any]:
    """Token counts a stream chunk carries: OpenAI ``usage`` or llama-server ``timings``."""
    found: dict[str, Any] = {}
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        found["prompt_tokens"] = getattr(usage, "prompt_tokens", None)
        found["completion_tokens"] = getattr(usage, "completion_tokens", None)
        details = getattr(usage, "prompt_tokens_details", None)
        cached = getattr(details, "cached_tokens", None) if details is not None else None
        if isinstance(cached, int) and isinstance(found["prompt_tokens"], int):
            found["evaluated"] = found["prompt_tokens"] - cached
    timings = (getattr(chunk, "model_extra", None) or {}).get("timings")
    if isinstance(timings, dict) and isinstance(timings.get("prompt_n"), int):
        found["evaluated"] = timings["prompt_n"]
    return found


def error_detail(exc: Any) -> str:
    """The server's own words from an error response, shortened."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        body = body.get("message") or body.get("detail") or body
    text = str(body if body else getattr(exc, "message", exc))
    return text if len(text) <= 300 else text[:300] + "..."


def retry_after(exc: Any) -> float | None:
    """Seconds the server asked to wait (``Retry-After``), if it said."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
