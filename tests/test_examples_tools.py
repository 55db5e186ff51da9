"""The example tools in examples/tools.py: values, refusals, and their schemas."""

from __future__ import annotations

import csv
import datetime
import functools
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moragent.tools import Tool, Toolbox, load_tools
from moragent.trajectory import ToolCall

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tools.py"


@functools.cache
def _examples() -> dict[str, Tool]:
    return {item.name: item for item in load_tools(EXAMPLES)}


@pytest.fixture
def tools() -> dict[str, Tool]:
    return _examples()


def test_the_file_offers_the_expected_tools(tools: dict[str, Tool]) -> None:
    assert list(tools) == [
        "calculate",
        "convert_units",
        "days_between",
        "add_days",
        "weekday",
        "text_stats",
        "lookup_country",
    ]
    for item in tools.values():
        assert item.description, item.name
        for name, schema in item.parameters["properties"].items():
            assert schema.get("description"), f"{item.name}.{name} has no description"


# --- calculate --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 * (3 + 4) ** 2", 98),
        ("0.1 + 0.2", 0.3),
        ("10 / 4", 2.5),
        ("7 // 2", 3),
        ("-3 % 5", 2),
        ("-(2 ** 3)", -8),
        ("2 ** -2", 0.25),
        ("sqrt(16) + abs(-2)", 6),
        ("log(8, 2)", 3),
        ("factorial(5)", 120),
        ("round(2 * pi, 3)", 6.283),
        ("2 ** 100", 2**100),
    ],
)
def test_calculate_values(tools: dict[str, Tool], expression: str, expected: float) -> None:
    assert tools["calculate"](expression) == expected


def test_calculate_functions_and_constants(tools: dict[str, Tool]) -> None:
    assert tools["calculate"]("sin(pi / 2)") == 1
    assert tools["calculate"]("e") == pytest.approx(math.e)
    assert tools["calculate"]("cos(1) ** 2 + sin(1) ** 2") == 1


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("9**9**9", "more than 1000 digits"),
        ("10 ** 1001", "more than 1000 digits"),
        ("1 / 0", "division by zero"),
        ("__import__('os').system('ls')", "only calls like sqrt(2) are allowed"),
        ("__import__('os')", "unknown function '__import__'"),
        ("sqrt(x=4)", "only calls like sqrt(2) are allowed"),
        ("open('secrets.txt')", "unknown function 'open'"),
        ("(1).__class__", "Attribute is not allowed"),
        ("x + 1", "unknown name 'x'"),
        ("'ab' * 3", "only numbers are allowed"),
        ("2 ^ 3", "write powers with '**'"),
        ("[1, 2]", "List is not allowed"),
        ("sqrt(-1)", "sqrt: math domain error"),
        ("10.0 ** 400", "too large"),
        ("factorial(1000)", "whole number from 0 to 500"),
        ("(-8) ** (1 / 3)", "complex number"),
        ("2 +", "not a valid expression"),
        ("1" * 501, "longer than 500 characters"),
    ],
)
def test_calculate_refuses(tools: dict[str, Tool], expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        tools["calculate"](expression)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.e+-*/%() ", max_size=30) | st.text(max_size=20))
def test_calculate_gives_a_number_or_a_value_error(expression: str) -> None:
    calculate = _examples()["calculate"]
    try:
        result = calculate(expression)
    except ValueError:
        return
    assert isinstance(result, int | float) and not isinstance(result, bool)
    assert math.isfinite(result)


def test_calculate_refuses_huge_rounding(tools: dict[str, Tool]) -> None:
    with pytest.raises(ValueError, match="digits from -100 to 100"):
        tools["calculate"]("round(5, -10 ** 8)")


# --- convert_units ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (10, "km", "miles", "10 km = 6.213711922 mi"),
        (100, "degrees Celsius", "F", "100 C = 212 F"),
        (0, "K", "C", "0 K = -273.15 C"),
        (2, "days", "hours", "2 day = 48 h"),
        (1, "lb", "g", "1 lb = 453.59237 g"),
        (1, "gallon", "l", "1 gal = 3.785411784 l"),
        (12, "in", "ft", "12 in = 1 ft"),
    ],
)
def test_convert_units_values(
    tools: dict[str, Tool], value: float, source: str, target: str, expected: str
) -> None:
    assert tools["convert_units"](value, source, target) == expected


def test_convert_units_refuses(tools: dict[str, Tool]) -> None:
    with pytest.raises(ValueError, match=r"cannot convert mass \(kg\) to length \(m\)"):
        tools["convert_units"](1, "kg", "m")
    with pytest.raises(ValueError, match="unknown unit 'parsec'; known units: m, km"):
        tools["convert_units"](1, "parsec", "m")
    with pytest.raises(ValueError, match="below absolute zero"):
        tools["convert_units"](-500, "C", "K")


# --- dates ------------------------------------------------------------------------------


def test_date_tools(tools: dict[str, Tool]) -> None:
    assert tools["days_between"]("2024-01-01", "2024-12-25") == 359
    assert tools["days_between"]("2024-03-01", "2024-02-01") == -29
    assert tools["add_days"]("2024-02-28", 1) == "2024-02-29 (Thursday)"
    assert tools["add_days"]("2024-01-10", -10) == "2023-12-31 (Sunday)"
    assert tools["weekday"]("2000-01-01") == "Saturday"
    assert tools["add_days"]("today", 0).startswith(datetime.date.today().isoformat())


def test_date_tools_refuse_bad_dates(tools: dict[str, Tool]) -> None:
    with pytest.raises(ValueError, match="'31/12/2024' is not a date; write it as YYYY-MM-DD"):
        tools["weekday"]("31/12/2024")
    with pytest.raises(ValueError, match="'2023-02-29' is not a date"):
        tools["days_between"]("2023-02-29", "2023-03-01")
    with pytest.raises(ValueError, match="outside the years 1 to 9999"):
        tools["add_days"]("9999-12-31", 1)


# --- text_stats -------------------------------------------------------------------------


def test_text_stats(tools: dict[str, Tool]) -> None:
    text = "The cat sat on the mat. The cat slept! Did the dog bark? No"
    assert tools["text_stats"](text, top=2) == {
        "words": 14,
        "characters": 59,
        "characters_without_spaces": 46,
        "sentences": 4,
        "most_common_words": [["cat", 2], ["sat", 1]],
    }
    assert tools["text_stats"]("")["sentences"] == 0
    assert tools["text_stats"]("Don't stop.")["words"] == 2


# --- lookup_country ---------------------------------------------------------------------


def test_lookup_country(tools: dict[str, Tool]) -> None:
    lookup = tools["lookup_country"]
    assert lookup("Japan") == {
        "name": "Japan",
        "iso3": "JPN",
        "capital": "Tokyo",
        "population": 123300000,
        "area_km2": 377975,
        "currency": "Japanese yen",
        "currency_code": "JPY",
        "continent": "Asia",
    }
    assert lookup("usa", "capital") == "Washington, D.C."
    assert lookup("  united   kingdom ", "currency_code") == "GBP"
    assert lookup("BRA", "continent") == "South America"
    assert lookup("Germany", "population") == 83300000


def test_lookup_country_unknown_suggests(tools: dict[str, Tool]) -> None:
    with pytest.raises(ValueError, match="'Frnace' is not in the table. Did you mean France?"):
        tools["lookup_country"]("Frnace")
    with pytest.raises(ValueError, match="'Atlantis' is not in the table. It has: Argentina"):
        tools["lookup_country"]("Atlantis")


def test_bundled_table_is_complete(tools: dict[str, Tool]) -> None:
    table = EXAMPLES.parent / "data" / "countries.csv"
    lines = table.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# 34 countries. Population: UN World Population Prospects 2022")
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert len(rows) == 34
    continents = {"Africa", "Asia", "Europe", "North America", "South America", "Oceania"}
    for row in rows:
        record = tools["lookup_country"](row["name"])
        assert record["iso3"] == row["iso3"] and len(row["iso3"]) == 3
        assert record["continent"] in continents
        assert record["population"] > 1_000_000 and record["area_km2"] > 1_000
        assert all(record[key] for key in ("capital", "currency", "currency_code"))


# --- through the Toolbox, as the agent calls them ---------------------------------------


def test_example_tools_through_toolbox(tools: dict[str, Tool]) -> None:
    box = Toolbox(tools.values())
    results = box.call_many(
        [
            ToolCall("calculate", {"expression": "9**9**9"}),
            ToolCall("lookup_country", {"name": "France", "field": "capital"}),
            ToolCall("lookup_country", {"name": "France", "field": "anthem"}),
            ToolCall("convert_units", {"value": "ten", "from_unit": "km", "to_unit": "m"}),
        ]
    )
    assert results[0].error and "more than 1000 digits" in results[0].content
    assert (results[1].content, results[1].error) == ("Paris", False)
    assert results[2].error and "argument 'field'" in results[2].content
    assert results[3].error and "argument 'value': 'ten' is not of type 'number'" in (
        results[3].content
    )
