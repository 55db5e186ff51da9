"""Example tools for moragent: offline, safe, and the kind of thing a person asks for.

Try them with ``moragent chat --tools examples/tools.py``. Every tool raises
``ValueError`` with a plain message on bad input; the agent reads that message as the
tool's observation.
"""

from __future__ import annotations

import ast
import csv
import datetime
import difflib
import math
import operator
import re
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Literal

from moragent.tools import tool

# --- calculate -------------------------------------------------------------------------

_MAX_EXPRESSION_CHARS = 500
_MAX_DIGITS = 1000  # integers longer than this are refused, so 9**9**9 cannot hang

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _factorial(n: float) -> int:
    if n != int(n) or not 0 <= n <= 500:
        raise ValueError("factorial takes a whole number from 0 to 500")
    return math.factorial(int(n))


def _round(x: float, ndigits: int = 0) -> float:
    if not isinstance(ndigits, int) or abs(ndigits) > 100:
        raise ValueError("round takes a whole number of digits from -100 to 100")
    return round(x, ndigits)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "exp": math.exp,
    "abs": abs,
    "round": _round,
    "floor": math.floor,
    "ceil": math.ceil,
    "factorial": _factorial,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _check_size(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() * math.log10(2) > _MAX_DIGITS:
        raise ValueError(f"the result has more than {_MAX_DIGITS} digits")
    return value


def _power(base: Any, exponent: Any) -> Any:
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        if exponent * math.log10(abs(base)) > _MAX_DIGITS:
            raise ValueError(f"the result would have more than {_MAX_DIGITS} digits")
    return base**exponent


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return node.value
        raise ValueError(f"only numbers are allowed, not {node.value!r}")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _check_size(_power(left, right))
        return _check_size(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ValueError(f"unknown name {node.id!r}; known constants: {', '.join(_CONSTANTS)}")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        function = _FUNCTIONS.get(node.func.id)
        if function is None:
            raise ValueError(
                f"unknown function {node.func.id!r}; known functions: {', '.join(_FUNCTIONS)}"
            )
        arguments = [_evaluate(arg) for arg in node.args]
        try:
            return _check_size(function(*arguments))
        except ValueError as exc:
            raise ValueError(f"{node.func.id}: {exc}") from None
    if isinstance(node, ast.Call):
        raise ValueError(f"only calls like sqrt(2) are allowed, to: {', '.join(_FUNCTIONS)}")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise ValueError("'^' is not allowed; write powers with '**', e.g. 2 ** 3")
    raise ValueError(f"{type(node).__name__} is not allowed in an arithmetic expression")


@tool
def calculate(expression: str) -> int | float:
    """Evaluate an arithmetic expression, such as "2 * (3 + 4) ** 2" or "sqrt(2) * pi".

    Supports numbers, + - * / // % ** (power), unary minus, parentheses, the constants
    pi, e and tau, and the functions sqrt, sin, cos, tan, asin, acos, atan, log (natural,
    or log(x, base)), log10, log2, exp, abs, round, floor, ceil and factorial. Angles
    are in radians.

    Args:
        expression: The expression to evaluate, in Python syntax ("^" is not a power:
            write "**").
    """
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise ValueError(f"the expression is longer than {_MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a valid expression: {exc.msg}") from None
    try:
        result = _evaluate(tree)
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    except OverflowError:
        raise ValueError("the result is too large") from None
    except TypeError as exc:
        raise ValueError(f"wrong use of a function: {exc}") from None
    if isinstance(result, complex):
        raise ValueError("the result is a complex number, which is not supported")
    if isinstance(result, float):
        if not math.isfinite(result):
            raise ValueError("the result is not a finite number")
        if result.is_integer() and abs(result) < 1e15:
            return int(result)
        return float(f"{result:.15g}")  # 0.1 + 0.2 -> 0.3
    return result


# --- convert_units ---------------------------------------------------------------------

# unit -> (dimension, size in the dimension's base unit, other names)
_UNITS: dict[str, tuple[str, float, tuple[str, ...]]] = {
    "m": ("length", 1.0, ("meter", "metre")),
    "km": ("length", 1000.0, ("kilometer", "kilometre")),
    "cm": ("length", 0.01, ("centimeter", "centimetre")),
    "mm": ("length", 0.001, ("millimeter", "millimetre")),
    "mi": ("length", 1609.344, ("mile",)),
    "yd": ("length", 0.9144, ("yard",)),
    "ft": ("length", 0.3048, ("foot", "feet")),
    "in": ("length", 0.0254, ("inch", "inches")),
    "nmi": ("length", 1852.0, ("nautical mile",)),
    "kg": ("mass", 1.0, ("kilogram", "kilo")),
    "g": ("mass", 0.001, ("gram",)),
    "mg": ("mass", 1e-6, ("milligram",)),
    "t": ("mass", 1000.0, ("tonne", "metric ton")),
    "lb": ("mass", 0.45359237, ("lbs", "pound")),
    "oz": ("mass", 0.028349523125, ("ounce",)),
    "st": ("mass", 6.35029318, ("stone",)),
    "l": ("volume", 1.0, ("liter", "litre")),
    "ml": ("volume", 0.001, ("milliliter", "millilitre")),
    "m3": ("volume", 1000.0, ("cubic meter", "cubic metre")),
    "gal": ("volume", 3.785411784, ("gallon", "us gallon")),
    "qt": ("volume", 0.946352946, ("quart",)),
    "pt": ("volume", 0.473176473, ("pint",)),
    "cup": ("volume", 0.2365882365, ()),
    "floz": ("volume", 0.0295735295625, ("fl oz", "fluid ounce")),
    "tbsp": ("volume", 0.01478676478125, ("tablespoon",)),
    "tsp": ("volume", 0.00492892159375, ("teaspoon",)),
    "s": ("time", 1.0, ("sec", "second")),
    "ms": ("time", 0.001, ("millisecond",)),
    "min": ("time", 60.0, ("minute",)),
    "h": ("time", 3600.0, ("hr", "hrs", "hour")),
    "day": ("time", 86400.0, ("d",)),
    "week": ("time", 604800.0, ("wk",)),
    "year": ("time", 31557600.0, ("yr", "yrs")),  # a Julian year: 365.25 days
    "C": ("temperature", 1.0, ("celsius", "°c", "degc")),
    "F": ("temperature", 1.0, ("fahrenheit", "°f", "degf")),
    "K": ("temperature", 1.0, ("kelvin",)),
}


def _unit_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for unit, (_, _, others) in _UNITS.items():
        for name in (unit, *others):
            names[name.lower()] = unit
            if len(name) >= 3 and not name.endswith("s"):
                names[name.lower() + "s"] = unit  # plurals: meters, pounds, hours
    return names


_UNIT_NAMES = _unit_names()


def _unit(name: str) -> str:
    words = re.sub(r"\bdegrees?\b", " ", name.lower()).split()
    unit = _UNIT_NAMES.get(" ".join(words))
    if unit is None:
        raise ValueError(f"unknown unit {name!r}; known units: {', '.join(_UNITS)}")
    return unit


def _to_kelvin(value: float, unit: str) -> float:
    if unit == "C":
        return value + 273.15
    if unit == "F":
        return (value - 32.0) * 5.0 / 9.0 + 273.15
    return value


def _from_kelvin(value: float, unit: str) -> float:
    if unit == "C":
        return value - 273.15
    if unit == "F":
        return (value - 273.15) * 9.0 / 5.0 + 32.0
    return value


@tool
def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a quantity between units of length, mass, volume, time or temperature.

    Units: m km cm mm mi yd ft in nmi; kg g mg t lb oz st; l ml m3 gal qt pt cup floz
    tbsp tsp (US measures); s ms min h day week year; C F K. Full names such as
    "miles" or "celsius" work too.

    Args:
        value: The amount to convert, in from_unit.
        from_unit: The unit of value, e.g. "km".
        to_unit: The unit to convert to, e.g. "mi".
    """
    source, target = _unit(from_unit), _unit(to_unit)
    source_kind, source_size, _ = _UNITS[source]
    target_kind, target_size, _ = _UNITS[target]
    if source_kind != target_kind:
        raise ValueError(
            f"cannot convert {source_kind} ({source}) to {target_kind} ({target}): "
            "both units must measure the same thing"
        )
    if source_kind == "temperature":
        kelvin = _to_kelvin(value, source)
        if kelvin < 0:
            raise ValueError(f"{value:.10g} {source} is below absolute zero")
        converted = _from_kelvin(kelvin, target)
    else:
        converted = value * source_size / target_size
    return f"{value:.10g} {source} = {converted:.10g} {target}"


# --- dates -----------------------------------------------------------------------------


def _date(text: str) -> datetime.date:
    if text.strip().lower() == "today":
        return datetime.date.today()
    try:
        return datetime.date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a date; write it as YYYY-MM-DD or 'today'") from None


@tool
def days_between(start: str, end: str) -> int:
    """Count the days from one date to another (negative when end is before start).

    Args:
        start: The first date, YYYY-MM-DD or "today".
        end: The second date, YYYY-MM-DD or "today".
    """
    return (_date(end) - _date(start)).days


@tool
def add_days(date: str, days: int) -> str:
    """Add a number of days to a date (subtract with a negative number).

    Args:
        date: The date to start from, YYYY-MM-DD or "today".
        days: How many days to add; negative to go back.

    Returns:
        The new date, YYYY-MM-DD, and its weekday.
    """
    try:
        result = _date(date) + datetime.timedelta(days=days)
    except OverflowError:
        raise ValueError("the resulting date is outside the years 1 to 9999") from None
    return f"{result.isoformat()} ({result.strftime('%A')})"


@tool
def weekday(date: str) -> str:
    """Tell which day of the week a date falls on.

    Args:
        date: The date, YYYY-MM-DD or "today".
    """
    return _date(date).strftime("%A")


# --- text_stats ------------------------------------------------------------------------

_WORD = re.compile(r"\w+(?:['’]\w+)*")
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
_COMMON_WORDS = frozenset(
    "a an and are as at be but by for from has have he her his i in is it its of on or "
    "she that the their they this to was were will with you your".split()
)


@tool
def text_stats(text: str, top: int = 5) -> dict[str, Any]:
    """Count the words, characters and sentences of a text and find its most common words.

    Args:
        text: The text to measure.
        top: How many of the most common words to list (common English words such as
            "the" and "and" are left out).
    """
    words = _WORD.findall(text)
    stripped = text.strip()
    sentences = len(_SENTENCE_END.findall(stripped))
    if stripped and not _SENTENCE_END.search(stripped[-1:] + " "):
        sentences += 1  # a last sentence without a full stop
    counts = Counter(word.lower() for word in words if word.lower() not in _COMMON_WORDS)
    return {
        "words": len(words),
        "characters": len(text),
        "characters_without_spaces": sum(not char.isspace() for char in text),
        "sentences": sentences,
        "most_common_words": [[word, count] for word, count in counts.most_common(max(top, 0))],
    }


# --- lookup_country --------------------------------------------------------------------

_COUNTRIES_FILE = Path(__file__).parent / "data" / "countries.csv"
CountryField = Literal[
    "capital", "population", "area_km2", "currency", "currency_code", "continent", "iso3"
]


@cache
def _countries() -> dict[str, dict[str, Any]]:
    """Country records keyed by every lower-case name, alias and ISO code."""
    with _COUNTRIES_FILE.open(encoding="utf-8") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        index: dict[str, dict[str, Any]] = {}
        for row in rows:
            aliases = [alias for alias in row.pop("aliases").split(";") if alias]
            record: dict[str, Any] = dict(row)
            record["population"] = int(row["population"])
            record["area_km2"] = int(row["area_km2"])
            for key in (row["name"], row["iso3"], *aliases):
                index[key.lower()] = record
    return index


@tool
def lookup_country(name: str, field: CountryField | None = None) -> dict[str, Any] | str | int:
    """Look up facts about a country in a small bundled table (34 countries, 2023 figures).

    Args:
        name: The country's name, a common alias ("USA", "UK") or its ISO 3166 alpha-3 code.
        field: The one fact to return; leave it out for the whole record. Population is
            the 2023 estimate (rounded to 0.1 million), area_km2 the total area in km2.
    """
    countries = _countries()
    record = countries.get(" ".join(name.lower().split()))
    if record is None:
        names = sorted({country["name"] for country in countries.values()})
        close = difflib.get_close_matches(name.title(), names, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"{name!r} is not in the table.{hint} It has: {', '.join(names)}")
    return dict(record) if field is None else record[field]
