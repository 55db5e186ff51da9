"""Tools: schemas from hints and docstrings, load_tools, and the Toolbox's safe calls."""

from __future__ import annotations

import enum
import json
import re
import textwrap
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moragent.tools import (
    Tool,
    Toolbox,
    ToolDefinitionError,
    ToolLoadError,
    load_tools,
    to_tools,
    tool,
)
from moragent.trajectory import ToolCall, ToolResult


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = 2


def _props(fn: Any) -> dict[str, Any]:
    return Tool.from_function(fn).parameters["properties"]


# --- schema generation ----------------------------------------------------------------


def test_scalar_types_give_exact_schema() -> None:
    def f(s: str, i: int, x: float, b: bool) -> None:
        pass

    assert Tool.from_function(f).parameters == {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "i": {"type": "integer"},
            "x": {"type": "number"},
            "b": {"type": "boolean"},
        },
        "required": ["s", "i", "x", "b"],
        "additionalProperties": False,
    }


def test_container_types() -> None:
    def f(
        a: list[int],
        b: list,
        c: dict,
        d: dict[str, float],
        e: list[list[str]],
        g: tuple[int, str],
        h: set[str],
        j: dict[str, Any],
    ) -> None:
        pass

    assert _props(f) == {
        "a": {"type": "array", "items": {"type": "integer"}},
        "b": {"type": "array"},
        "c": {"type": "object"},
        "d": {"type": "object", "additionalProperties": {"type": "number"}},
        "e": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
        "g": {
            "type": "array",
            "prefixItems": [{"type": "integer"}, {"type": "string"}],
            "minItems": 2,
            "maxItems": 2,
        },
        "h": {"type": "array", "uniqueItems": True, "items": {"type": "string"}},
        "j": {"type": "object"},
    }


def test_literal_enum_and_optional() -> None:
    def f(
        mode: Literal["fast", "slow"],
        level: Literal[1, 2, 3],
        color: Color,
        size: Size,
        maybe: Optional[int],  # noqa: UP045 - the old spelling must work too
        either: str | None,
        pick: Color | None,
    ) -> None:
        pass

    assert _props(f) == {
        "mode": {"type": "string", "enum": ["fast", "slow"]},
        "level": {"type": "integer", "enum": [1, 2, 3]},
        "color": {"type": "string", "enum": ["red", "green"]},
        "size": {"type": "integer", "enum": [1, 2]},
        "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "either": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "pick": {"anyOf": [{"type": "string", "enum": ["red", "green"]}, {"type": "null"}]},
    }


def test_a_default_that_does_not_fit_its_type_hint_is_refused() -> None:
    def f(count: int = "3") -> None:  # type: ignore[assignment]
        pass

    with pytest.raises(ToolDefinitionError, match=r"default of parameter 'count' \('3'\)"):
        Tool.from_function(f)

    def g(ratio: float = 1, tags: tuple[str, ...] = ()) -> None:  # an int is a float
        pass

    assert Tool.from_function(g).parameters["properties"]["ratio"]["default"] == 1


def test_defaults_make_parameters_optional() -> None:
    def f(
        a: int,
        b: str = "x",
        c: float = 1.5,
        d: list[int] | None = None,
        e: Color = Color.GREEN,
    ) -> None:
        pass

    def h(n: int = None, when: Any = threading.Lock()) -> None:  # type: ignore[assignment]  # noqa: B008
        pass

    parameters = Tool.from_function(f).parameters
    assert parameters["required"] == ["a"]
    assert parameters["properties"]["b"] == {"type": "string", "default": "x"}
    assert parameters["properties"]["c"] == {"type": "number", "default": 1.5}
    assert parameters["properties"]["d"] == {
        "anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}],
        "default": None,
    }
    assert parameters["properties"]["e"] == {
        "type": "string",
        "enum": ["red", "green"],
        "default": "green",
    }
    # a None default widens the type to accept null; a default JSON cannot hold is left out
    assert _props(h) == {
        "n": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        "when": {},
    }


def test_object_annotation_is_refused() -> None:
    def f(g: object) -> None:
        pass

    with pytest.raises(TypeError, match=r"'g' has type object, which has no JSON schema"):
        Tool.from_function(f)


def test_google_docstring() -> None:
    def search(query: str, limit: int = 10) -> list[str]:
        """Search the notes.

        Matches whole words only,
        case-insensitively.

        Args:
            query: Words to look for.
            limit: Most results to return;
                fewer when fewer match.

        Returns:
            Matching note titles.
        """
        return []

    made = tool(search)
    assert made.description == "Search the notes.\n\nMatches whole words only,\ncase-insensitively."
    assert made.parameters["properties"] == {
        "query": {"type": "string", "description": "Words to look for."},
        "limit": {
            "type": "integer",
            "description": "Most results to return; fewer when fewer match.",
            "default": 10,
        },
    }


def test_rest_docstring() -> None:
    def area(width: float, height: float) -> float:
        """Area of a rectangle.

        :param width: The width in metres.
        :param height: The height in metres.
        :returns: The area.
        """
        return width * height

    made = tool(area)
    assert made.description == "Area of a rectangle."
    assert made.parameters["properties"]["width"]["description"] == "The width in metres."
    assert made.parameters["properties"]["height"]["description"] == "The height in metres."


def test_numpy_docstring() -> None:
    def scale(value: float, factor: float = 2.0) -> float:
        """Scale a value.

        Parameters
        ----------
        value : float
            The value to scale.
        factor : float
            The factor.
        """
        return value * factor

    props = tool(scale).parameters["properties"]
    assert props["value"]["description"] == "The value to scale."
    assert props["factor"] == {"type": "number", "description": "The factor.", "default": 2.0}


def test_annotated_description_and_no_docstring() -> None:
    def f(city: Annotated[str, "The city name"]) -> str:
        return city

    made = tool(f)
    assert made.description == ""
    assert made.parameters["properties"]["city"] == {
        "type": "string",
        "description": "The city name",
    }


def test_tool_decorator_with_options_and_call_through() -> None:
    @tool(name="plus", description="Add.")
    def add(a: int, b: int) -> int:
        return a + b

    assert isinstance(add, Tool)
    assert add.schema == {
        "name": "plus",
        "description": "Add.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    }
    assert add(2, 3) == 5
    assert add.__name__ == "add"
    assert tool(add) is add


def test_missing_hint_names_function_and_parameter() -> None:
    def greet(name, polite: bool = True):  # type: ignore[no-untyped-def]
        return name

    with pytest.raises(
        TypeError, match=r"'test_missing_hint.*greet'.*parameter 'name' has no type"
    ):
        tool(greet)


def test_star_args_and_kwargs_are_refused() -> None:
    def many(*numbers: int) -> int:
        return sum(numbers)

    def options(**extra: str) -> None:
        pass

    with pytest.raises(TypeError, match=r"'\*numbers' is not supported"):
        tool(many)
    with pytest.raises(TypeError, match=r"'\*\*extra' is not supported"):
        tool(options)


def test_dict_with_non_string_keys_is_refused() -> None:
    def f(table: dict[int, str]) -> None:
        pass

    with pytest.raises(TypeError, match="dict keys must be str"):
        tool(f)


# --- to_tools ---------------------------------------------------------------------------


def test_to_tools_mixes_tools_callables_and_schema_dicts() -> None:
    def double(x: int) -> int:
        return 2 * x

    schema = {"name": "halve", "description": "Halve.", "parameters": {"type": "object"}}
    openai_style = {
        "type": "function",
        "function": {
            "name": "triple",
            "description": "Triple.",
            "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
        },
        "callable": lambda x: 3 * x,
    }
    tools = to_tools([tool(double), schema, openai_style])

    assert [t.name for t in tools] == ["double", "halve", "triple"]
    assert tools[1].fn is None
    assert tools[1].schema == {
        "name": "halve",
        "description": "Halve.",
        "parameters": {"type": "object"},
    }
    assert tools[2](4) == 12
    with pytest.raises(NotImplementedError, match="'halve' has no implementation"):
        tools[1]()


def test_to_tools_duplicate_names() -> None:
    def echo(text: str) -> str:
        return text

    with pytest.raises(ValueError, match="two tools are named 'echo'"):
        to_tools([echo, {"name": "echo", "parameters": {"type": "object"}}])


def test_to_tools_rejects_malformed_items() -> None:
    with pytest.raises(ValueError, match="needs a string 'name'"):
        to_tools([{"description": "no name"}])
    with pytest.raises(TypeError, match="cannot make a tool from int"):
        to_tools([3])  # type: ignore[list-item]


# --- load_tools -------------------------------------------------------------------------


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_load_marked_tools_only(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "tools.py",
        """
        from moragent.tools import tool

        @tool
        def shout(text: str) -> str:
            '''Upper-case a text.'''
            return text.upper()

        def helper(text: str) -> str:
            return text
        """,
    )
    tools = load_tools(path)
    assert [t.name for t in tools] == ["shout"]
    assert tools[0]("hi") == "HI"
    assert tools[0].description == "Upper-case a text."


def test_load_unmarked_public_functions_defined_in_file(tmp_path: Path) -> None:
    _write(tmp_path, "helpers.py", "def imported_helper(x: int) -> int:\n    return x\n")
    path = _write(
        tmp_path,
        "tools.py",
        """
        from os.path import join
        from helpers import imported_helper

        LIMIT = 3

        def first(x: int) -> int:
            return imported_helper(x) + LIMIT

        def _private(x: int) -> int:
            return x

        def second(y: str = "a") -> str:
            return y

        class NotATool:
            pass
        """,
    )
    tools = load_tools(str(path))
    assert [t.name for t in tools] == ["first", "second"]
    assert tools[0](1) == 4  # the sibling import worked
    assert str(tmp_path) not in __import__("sys").path


def test_load_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    with pytest.raises(ToolLoadError, match=r"nope\.py: tools file does not exist") as info:
        load_tools(missing)
    assert isinstance(info.value, ValueError)


def test_load_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.py", "def ok(x: int) -> int:\n    return x\n\ndef bad(:\n")
    with pytest.raises(ToolLoadError) as info:
        load_tools(path)
    message = str(info.value)
    assert f"{path}:4: syntax error" in message
    assert info.value.line == 4


def test_load_syntax_error_in_a_sibling_names_the_sibling(tmp_path: Path) -> None:
    sibling = _write(tmp_path, "helpers_broken.py", "x = = 1\n")
    path = _write(tmp_path, "tools.py", "import helpers_broken\n")
    with pytest.raises(ToolLoadError, match=f"^{re.escape(str(sibling))}:1: syntax error"):
        load_tools(path)


def test_load_names_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.py").write_text("import os\n\nraise RuntimeError('no config')\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ToolLoadError) as info:
        load_tools("bad.py")
    assert str(info.value) == "bad.py:3: importing the tools file raised RuntimeError: no config"


def test_load_import_time_exception_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "raising.py", "import os\n\nCONFIG = {}\nKEY = CONFIG['key']\n")
    with pytest.raises(ToolLoadError) as info:
        load_tools(path)
    assert f"{path}:4: importing the tools file raised KeyError: 'key'" in str(info.value)
    assert info.value.line == 4


def test_load_missing_import_names_module(tmp_path: Path) -> None:
    path = _write(tmp_path, "needs.py", "import not_a_module_anywhere_xyz\n")
    with pytest.raises(ToolLoadError, match=r"needs\.py:1: .*ModuleNotFoundError.*xyz"):
        load_tools(path)


def test_load_function_without_hints(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "nohints.py",
        """
        def fine(a: int) -> int:
            return a

        def add(a: int, b):
            return a + b
        """,
    )
    with pytest.raises(ToolLoadError) as info:
        load_tools(path)
    message = str(info.value)
    assert f"{path}:4: function 'add': parameter 'b' has no type hint" in message
    assert "prefix helpers with '_'" in message


def test_load_marked_function_without_hints(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "marked.py",
        """
        from moragent.tools import tool

        @tool
        def add(a, b: int) -> int:
            return a + b
        """,
    )
    with pytest.raises(ToolLoadError, match=r"marked\.py:3: function 'add': parameter 'a'"):
        load_tools(path)


def test_load_file_without_tools(tmp_path: Path) -> None:
    path = _write(tmp_path, "empty.py", "from math import sqrt\n\nX = 1\n")
    with pytest.raises(ToolLoadError, match=r"empty\.py: no tools found"):
        load_tools(path)


def test_load_two_files_with_the_same_stem(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = _write(tmp_path / "a", "tools.py", "def one(x: int) -> int:\n    return 1\n")
    two = _write(tmp_path / "b", "tools.py", "def two(x: int) -> int:\n    return 2\n")
    assert [t.name for t in load_tools(one)] == ["one"]
    assert [t.name for t in load_tools(two)] == ["two"]


# --- Toolbox ----------------------------------------------------------------------------


@tool
def divide(a: float, b: float) -> float:
    """Divide a by b.

    Args:
        a: The dividend.
        b: The divisor.
    """
    return a / b


@tool
def paint(color: Color, sizes: list[Size] | None = None) -> str:
    """Paint something."""
    assert isinstance(color, Color)
    return f"{color.name} {[size.name for size in sizes or []]}"


@tool
def nap(seconds: float) -> str:
    """Sleep."""
    time.sleep(seconds)
    return "rested"


def test_toolbox_schemas_names_get() -> None:
    box = Toolbox([divide, paint])
    assert box.names == ["divide", "paint"]
    assert box.schemas == [divide.schema, paint.schema]
    assert box.get("divide") is divide
    assert box.get("nothing") is None
    assert "paint" in box and len(box) == 2


def test_call_returns_json_rendered_result() -> None:
    def info(name: str) -> dict[str, Any]:
        return {"name": name, "tags": ["a"], "color": Color.RED}

    box = Toolbox([divide, info])
    assert box.call(ToolCall("divide", {"a": 7, "b": 2})) == ToolResult("divide", "3.5")
    result = box.call(ToolCall("info", {"name": "x"}))
    assert json.loads(result.content) == {"name": "x", "tags": ["a"], "color": "red"}
    assert result.error is False


def test_unknown_tool_lists_available_names() -> None:
    result = Toolbox([divide, paint]).call(ToolCall("multiply", {"a": 1}))
    assert result.error is True
    assert result.content == "no tool named 'multiply'; available tools: divide, paint"


def test_invalid_arguments_say_which_and_why() -> None:
    box = Toolbox([divide])

    wrong_type = box.call(ToolCall("divide", {"a": "seven", "b": 2}))
    assert wrong_type.error is True
    assert "argument 'a': 'seven' is not of type 'number'" in wrong_type.content
    assert "expected divide(a: number, b: number)" in wrong_type.content

    missing = box.call(ToolCall("divide", {"a": 1}))
    assert "missing required argument 'b'" in missing.content

    extra = box.call(ToolCall("divide", {"a": 1, "b": 2, "c": 3}))
    assert "unexpected argument 'c'" in extra.content

    not_object = box.call(ToolCall("divide", [1, 2]))  # type: ignore[arg-type]
    assert not_object.content == "the arguments must be a JSON object, got list"


def test_enum_argument_errors_and_json_string_arguments() -> None:
    box = Toolbox([paint])
    bad = box.call(ToolCall("paint", {"color": "blue"}))
    assert bad.error is True
    assert "argument 'color': 'blue' is not one of ['red', 'green']" in bad.content
    as_text = box.call(ToolCall("paint", '{"color": "red"}'))  # type: ignore[arg-type]
    assert as_text == ToolResult("paint", "RED []")


def test_enum_round_trip() -> None:
    box = Toolbox([paint])
    result = box.call(ToolCall("paint", {"color": "green", "sizes": [2, 1]}))
    assert result == ToolResult("paint", "GREEN ['LARGE', 'SMALL']")
    assert paint.convert({"color": "red", "sizes": None}) == {"color": Color.RED, "sizes": None}


def test_union_converts_with_the_matching_member() -> None:
    def pick(choice: int | Color | list[Size]) -> str:
        return repr(choice)

    made = tool(pick)
    assert made.parameters["properties"]["choice"] == {
        "anyOf": [
            {"type": "integer"},
            {"type": "string", "enum": ["red", "green"]},
            {"type": "array", "items": {"type": "integer", "enum": [1, 2]}},
        ]
    }
    assert made.convert({"choice": "red"}) == {"choice": Color.RED}
    assert made.convert({"choice": 4.0}) == {"choice": 4}
    assert made.convert({"choice": [2]}) == {"choice": [Size.LARGE]}


def test_raising_tool_becomes_error_result() -> None:
    def fetch(key: str) -> str:
        raise LookupError(f"no entry {key!r}")

    result = Toolbox([fetch]).call(ToolCall("fetch", {"key": "k"}))
    assert result == ToolResult("fetch", "LookupError: no entry 'k'", error=True)


def test_system_exit_in_a_tool_is_contained() -> None:
    def quit_now() -> None:
        raise SystemExit(3)

    result = Toolbox([quit_now]).call(ToolCall("quit_now"))
    assert result == ToolResult("quit_now", "SystemExit: 3", error=True)


def test_hanging_tool_times_out() -> None:
    box = Toolbox([nap], timeout=0.2)
    result = box.call(ToolCall("nap", {"seconds": 3}))
    assert result.error is True
    assert result.content.startswith("timed out after 0.2 s and was abandoned")


def test_schema_only_tool_gives_error_result() -> None:
    box = Toolbox([{"name": "search", "parameters": {"type": "object", "properties": {}}}])
    result = box.call(ToolCall("search", {}))
    assert result == ToolResult(
        "search", "tool 'search' has no implementation (it is a schema only)", True
    )


def test_invalid_schema_skips_validation_but_still_calls() -> None:
    # BFCL writes "dict" for "object": not a JSON schema type, so validation is skipped
    box = Toolbox([{"name": "echo", "parameters": {"type": "dict"}, "callable": lambda text: text}])
    assert box.call(ToolCall("echo", {"text": "hi"})) == ToolResult("echo", "hi")


def test_long_content_is_truncated_with_marker() -> None:
    def spam(n: int) -> str:
        return "x" * n

    box = Toolbox([spam], max_observation_chars=100)
    result = box.call(ToolCall("spam", {"n": 1000}))
    assert len(result.content) <= 100
    kept = result.content.split("\n")[0]
    assert set(kept) == {"x"}
    assert result.content.endswith(f"[... truncated: {1000 - len(kept)} characters dropped]")
    assert box.call(ToolCall("spam", {"n": 100})).content == "x" * 100


def test_unserialisable_result_falls_back_to_str() -> None:
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    def make(color: Color) -> Thing:  # Thing is local: only the parameters' hints must resolve
        return Thing()

    def use(thing: Thing) -> None:
        pass

    assert Toolbox([make]).call(ToolCall("make", {"color": "red"})).content == "a thing"
    with pytest.raises(TypeError, match="type hint of parameter 'thing' cannot be evaluated"):
        tool(use)


def test_call_many_runs_in_parallel_and_keeps_order() -> None:
    barrier = threading.Barrier(3, timeout=5)

    def meet(tag: str) -> str:
        barrier.wait()  # passes only if all three calls run at the same time
        return tag

    box = Toolbox([meet, divide], timeout=5)
    calls = [
        ToolCall("meet", {"tag": "first"}),
        ToolCall("divide", {"a": 1}),
        ToolCall("meet", {"tag": "second"}),
        ToolCall("meet", {"tag": "third"}),
    ]
    results = box.call_many(calls)
    assert [r.content for r in results[:1] + results[2:]] == ["first", "second", "third"]
    assert [r.error for r in results] == [False, True, False, False]


def test_toolbox_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        Toolbox([divide], timeout=0)
    with pytest.raises(ValueError, match="max_observation_chars must be at least 80"):
        Toolbox([divide], max_observation_chars=10)


def test_async_tool_is_awaited() -> None:
    async def later(x: int) -> int:
        return x + 1

    assert Toolbox([later]).call(ToolCall("later", {"x": 1})) == ToolResult("later", "2")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_FUZZ_BOX = Toolbox([divide, paint], timeout=2, max_observation_chars=300)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(["divide", "paint", "missing"]) | st.text(max_size=5),
    arguments=st.dictionaries(st.sampled_from(["a", "b", "color", "sizes", "x"]), _JSON, max_size=4)
    | _JSON,
)
def test_call_never_raises_on_any_json(name: str, arguments: Any) -> None:
    result = _FUZZ_BOX.call(ToolCall(name, arguments))
    assert isinstance(result, ToolResult)
    assert result.name == name
    assert isinstance(result.content, str) and len(result.content) <= 300
    if name not in _FUZZ_BOX.names:
        assert result.error is True
