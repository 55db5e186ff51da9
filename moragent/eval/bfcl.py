"""BFCL (Berkeley Function Calling Leaderboard) non-live evaluation, scored by BFCL itself.

Questions and possible answers are read from the installed ``bfcl-eval`` package
(``bfcl_eval/data``); every answer is scored by BFCL's own AST checker (see
:mod:`moragent.eval._bfcl_shim` for how it is imported). The model side is a
``predict(question, tools)`` callable, so the same runner scores any backend.

Install the data and checker with ``pip install --no-deps bfcl-eval==2026.3.23``:
without ``--no-deps`` pip pulls every provider SDK and pins numpy 1.26.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from moragent.data.io import spread
from moragent.eval._bfcl_shim import load_checker
from moragent.eval.bfcl_schema import as_declared, tool_schemas
from moragent.trajectory import ToolCall

logger = logging.getLogger(__name__)

#: the default categories: BFCL's non-live Python ones
DEFAULT_CATEGORIES: tuple[str, ...] = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "irrelevance",
)
#: single-turn Python categories this module can load and score
SUPPORTED_CATEGORIES: tuple[str, ...] = DEFAULT_CATEGORIES + (
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
    "live_irrelevance",
    "live_relevance",
)
#: categories without possible answers: scored on whether a call was made at all
_RELEVANCE = ("irrelevance", "live_irrelevance", "live_relevance")

Predictor = Callable[["BfclQuestion", list[dict[str, Any]]], "list[ToolCall] | None"]
Progress = Callable[[int, int, "BfclResult"], None]


@dataclass
class BfclQuestion:
    """One BFCL question: the user's text, the candidate functions and what counts as right.

    ``functions`` are BFCL's own function docs (use :attr:`tools` for JSON Schema tool
    schemas); ``possible_answer`` is BFCL's ground truth (``None`` for the relevance
    categories); ``messages`` is the whole first turn as BFCL stores it, ``system`` the
    text of its system messages if any.
    """

    id: str
    category: str
    query: str
    functions: list[dict[str, Any]]
    possible_answer: list[dict[str, Any]] | None = None
    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The candidate functions as tool schemas (``{"name", "description", "parameters"}``)."""
        return tool_schemas(self.functions)


@dataclass
class BfclResult:
    """The outcome of one question: the calls made and BFCL's verdict on them."""

    id: str
    category: str
    calls: list[ToolCall] | None
    valid: bool
    errors: list[Any] = field(default_factory=list)
    error_type: str | None = None
    #: every call names a candidate tool and its arguments validate against the schema
    schema_valid: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "calls": None if self.calls is None else [call.to_dict() for call in self.calls],
            "valid": self.valid,
            "errors": self.errors,
            "error_type": self.error_type,
            "schema_valid": self.schema_valid,
        }


@dataclass
class BfclReport:
    """Per-question results of a run, with per-category figures."""

    results: list[BfclResult] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, Any]]:
        """``{category: {"accuracy": float, "n": int, "schema_valid": int}}``, in run order."""
        summary: dict[str, dict[str, Any]] = {}
        for category in dict.fromkeys(result.category for result in self.results):
            rows = [result for result in self.results if result.category == category]
            correct = sum(result.valid for result in rows)
            summary[category] = {
                "accuracy": correct / len(rows),
                "n": len(rows),
                "schema_valid": sum(result.schema_valid for result in rows),
            }
        return summary

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "results": [result.to_dict() for result in self.results],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)


def data_dir() -> Path:
    """Where the installed bfcl-eval package keeps its questions.

    Raises:
        ImportError: bfcl-eval is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "BFCL needs the package bfcl-eval; "
            "install it with: pip install --no-deps bfcl-eval==2026.3.23"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_category(
    name: str, limit: int | None = None, sample: int | None = None
) -> list[BfclQuestion]:
    """The questions of one BFCL category, in BFCL's order, with their possible answers.

    Args:
        name: a category, e.g. ``simple_python`` (see ``SUPPORTED_CATEGORIES``).
        limit: keep only the first ``limit`` questions.
        sample: keep ``sample`` questions spread evenly over the category (the same ones
            on every run: question ``i * n // sample`` for ``i < sample``), applied after
            ``limit``. A category's first questions are often its easiest.

    Raises:
        ValueError: the category is not one this module scores.
        ImportError: bfcl-eval is not installed.
    """
    if name not in SUPPORTED_CATEGORIES:
        raise ValueError(
            f"unknown or unsupported BFCL category {name!r}; "
            f"choose from: {', '.join(SUPPORTED_CATEGORIES)}"
        )
    root = data_dir()
    entries = spread(_read_jsonl(_category_file(root, name), limit), sample)

    answers: dict[str, list[dict[str, Any]]] = {}
    if name not in _RELEVANCE:
        for entry in _read_jsonl(_category_file(root / "possible_answer", name), None):
            answers[entry["id"]] = entry["ground_truth"]

    questions = []
    for entry in entries:
        turns = entry["question"]
        if len(turns) != 1:
            raise ValueError(f"{entry['id']}: {len(turns)} turns; only single-turn is supported")
        messages = turns[0]
        users = [m["content"] for m in messages if m["role"] == "user"]
        systems = [m["content"] for m in messages if m["role"] == "system"]
        questions.append(
            BfclQuestion(
                id=entry["id"],
                category=name,
                query=users[-1] if users else "",
                functions=entry["function"],
                possible_answer=answers.get(entry["id"]) if name not in _RELEVANCE else None,
                system="\n\n".join(systems) or None,
                messages=messages,
            )
        )
    return questions


def _category_file(folder: Path, category: str) -> Path:
    pattern = re.compile(rf"BFCL_v\d+_{re.escape(category)}\.json")
    matches = sorted(path for path in folder.glob("BFCL_v*.json") if pattern.fullmatch(path.name))
    if not matches:
        raise FileNotFoundError(f"no BFCL file for category {category!r} in {folder}")
    return matches[-1]


def _read_jsonl(path: Path, limit: int | None) -> list[dict[str, Any]]:
    entries = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if limit is not None and len(entries) >= limit:
                break
            if line.strip():
                entries.append(json.loads(line))
    return entries


def score(question: BfclQuestion, calls: list[ToolCall] | None) -> tuple[bool, list[Any]]:
    """BFCL's verdict on ``calls`` (``None`` or ``[]``: no call) as an answer to ``question``.

    For ``irrelevance`` the right answer is to call nothing (``live_relevance``: to call
    something). Otherwise the calls go to BFCL's ``ast_checker`` in the form its decoders
    produce, ``[{name: {argument: value}}]``, after :func:`as_declared` (a JSON integer
    given for a ``float`` becomes a float).

    Returns:
        ``(valid, errors)``; errors are BFCL's own messages.
    """
    valid, errors, _ = _check(question, calls)
    return valid, errors


def _check(
    question: BfclQuestion, calls: list[ToolCall] | None
) -> tuple[bool, list[Any], str | None]:
    called = bool(calls) and any(call.name or call.arguments for call in calls or [])
    if question.category in ("irrelevance", "live_irrelevance"):
        if called:
            return False, ["Made a function call where none should be made."], "irrelevance_error"
        return True, [], None
    if question.category == "live_relevance":
        if not called:
            return False, ["Made no function call where one should be made."], "relevance_error"
        return True, [], None
    if question.possible_answer is None:
        raise ValueError(f"{question.id}: no possible answer to score against")
    if not called:
        return False, ["Made no function call."], "no_call"

    docs = {doc["name"]: doc for doc in question.functions}
    model_output = []
    for call in calls or []:
        doc = docs.get(call.name)
        arguments = as_declared(doc["parameters"], call.arguments) if doc else call.arguments
        model_output.append({call.name: arguments})

    checker = load_checker()
    try:
        verdict = checker.ast_checker(
            question.functions,
            model_output,
            question.possible_answer,
            checker.python,
            question.category,
            checker.model_name,
        )
    except Exception as exc:  # the checker assumes well-formed input; a crash is a wrong answer
        logger.warning("BFCL checker raised on %s: %r", question.id, exc)
        return False, [f"BFCL checker raised {type(exc).__name__}: {exc}"], "checker_error"
    if verdict["valid"]:
        return True, [], None  # BFCL leaves a placeholder error_type on some valid verdicts
    return False, list(verdict.get("error", [])), verdict.get("error_type")


def schema_valid(tools: list[dict[str, Any]], calls: list[ToolCall] | None) -> bool:
    """Every call names one of ``tools`` and its arguments validate against that schema."""
    by_name = {tool["name"]: tool for tool in tools}
    for call in calls or []:
        tool = by_name.get(call.name)
        if tool is None:
            return False
        validator = jsonschema.Draft202012Validator(tool["parameters"])
        if not validator.is_valid(call.arguments):
            return False
    return True


def run_bfcl(
    predict: Predictor,
    categories: list[str] | tuple[str, ...] = DEFAULT_CATEGORIES,
    limit: int | None = None,
    progress: Progress | None = None,
    sample: int | None = None,
) -> BfclReport:
    """Ask ``predict`` every question of ``categories`` and score each answer with BFCL.

    Args:
        predict: ``predict(question, tools) -> list[ToolCall] | None`` (``None``: no call).
            An exception it raises is recorded as a wrong answer for that question
            (``error_type`` ``"predict_error"``), not raised.
        categories: BFCL categories, run in this order.
        limit: the first ``limit`` questions of each category.
        progress: called after every question as ``progress(done, total, result)``.
        sample: ``sample`` questions of each category, spread evenly over it.
    """
    questions = [q for category in categories for q in load_category(category, limit, sample)]
    report = BfclReport()
    for done, question in enumerate(questions, start=1):
        tools = question.tools
        try:
            calls = predict(question, tools)
        except Exception as exc:
            logger.exception("predictor failed on %s", question.id)
            result = BfclResult(
                question.id,
                question.category,
                None,
                valid=False,
                errors=[f"predictor raised {type(exc).__name__}: {exc}"],
                error_type="predict_error",
                schema_valid=False,
            )
        else:
            valid, errors, error_type = _check(question, calls)
            result = BfclResult(
                question.id,
                question.category,
                calls,
                valid=valid,
                errors=errors,
                error_type=error_type,
                schema_valid=schema_valid(tools, calls),
            )
        report.results.append(result)
        if progress is not None:
            progress(done, len(questions), result)
    return report


def gold_calls(question: BfclQuestion) -> list[ToolCall]:
    """One correct answer built from BFCL's possible answer: an argument that may be left
    out ("" among its accepted values) and is not required is left out; any other takes
    its first accepted value.

    For tests and sanity checks of a pipeline; relevance categories give ``[]``.
    """
    if question.possible_answer is None:
        return []
    docs = {doc["name"]: doc for doc in question.functions}
    calls = []
    for entry in question.possible_answer:
        ((name, accepted),) = entry.items()
        calls.append(ToolCall(name, _pick(docs[name]["parameters"], accepted)))
    return calls


def _pick(node: dict[str, Any], accepted: dict[str, Any], top: bool = True) -> dict[str, Any]:
    """Arguments for an object node from possible-answer options (key -> accepted values).

    BFCL nests options one level only: a ``dict`` argument's own options hold plain values.
    """
    properties = node.get("properties") or {}
    required = node.get("required") or []
    arguments = {}
    for key, options in accepted.items():
        values = [option for option in options if option != ""]
        if not values or ("" in options and key not in required):
            continue
        arguments[key] = _resolve(properties.get(key) or {}, values[0]) if top else values[0]
    return arguments


def _resolve(node: dict[str, Any], option: Any) -> Any:
    """One accepted value of a top-level argument, with dict options resolved."""
    kind = node.get("type")
    if kind == "dict" and isinstance(option, dict):
        return _pick(node, option, top=False)
    items = node.get("items") or {}
    if kind == "array" and items.get("type") == "dict" and isinstance(option, list):
        return [_pick(items, element, top=False) for element in option]
    return option
