"""Converter for Seal-Tools: a query and its gold call sequence (``calling``).

Tool schemas are looked up by name in the set's ``tool.jsonl`` and turned into JSON
Schema. Each trajectory's candidate tools are the gold tools plus distractors sampled
from the same field (then the same domain), seeded by the record id, in a shuffled order.

Output links: Seal-Tools names each call's outputs ``API_call_N`` (its ``responses``,
one per field of the tool's responses, numbered across the query), and a later call
may pass ``API_call_N`` as an argument. Calls are laid out in waves: a call comes in
the first executor step after every call it depends on, and calls of one wave share
one executor step. The argument keeps the literal ``API_call_N`` and ``meta.links``
records the link::

    {"step": 4, "call": 0, "argument": "location", "ref": "API_call_1",
     "from_step": 1, "from_call": 0, "output": "crop_info"}

(``step``/``call``: the executor step index and call index that use the output;
``from_step``/``from_call``: the call that produced it; ``output``: its result field).
``complete`` writes a value for that field into the producing call's observation and
puts the same value into the later argument, adding ``"value"`` to the link.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from moragent.data.io import DataError, iter_jsonl
from moragent.data.steps import MISSING, TurnBuilder
from moragent.trajectory import ToolCall, Trajectory

REFERENCE = re.compile(r"^API_call_(\d+)(?: response)?$")
_TYPES = {
    "str": "string",
    "string": "string",
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "bool": "boolean",
    "boolean": "boolean",
    "list": "array",
    "array": "array",
    "dict": "object",
    "object": "object",
}


def property_schema(raw: dict[str, Any]) -> dict[str, Any]:
    """One Seal-Tools parameter (``type``: str/int/float/bool, ...) as JSON Schema."""
    prop: dict[str, Any] = {}
    kind = _TYPES.get(str(raw.get("type", "")).lower())
    if kind:
        prop["type"] = kind
    description = str(raw.get("description", ""))
    if raw.get("unit"):
        description += f" (unit: {raw['unit']})"
    if description:
        prop["description"] = description
    if "default" in raw:
        prop["default"] = raw["default"]
    if isinstance(raw.get("choices"), list):
        prop["enum"] = raw["choices"]
    examples = raw.get("examples", raw.get("example", raw.get("example_values")))
    if examples is not None:
        prop["examples"] = examples if isinstance(examples, list) else [examples]
    return prop


def object_schema(raw: Any, required: list[str] | None = None) -> dict[str, Any]:
    """A Seal-Tools parameter or response mapping as a JSON Schema object."""
    properties = {
        name: property_schema(value if isinstance(value, dict) else {})
        for name, value in (raw or {}).items()
    }
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


class ToolIndex:
    """The tools of ``tool.jsonl`` by name, field and domain (a lookup table held in memory)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tools: dict[str, dict[str, Any]] = {}
        self.by_field: dict[str, list[str]] = {}
        self.by_domain: dict[str, list[str]] = {}
        self.field_of: dict[str, str] = {}
        for line, raw in iter_jsonl(self.path):
            if not isinstance(raw, dict) or not isinstance(raw.get("api_name"), str):
                raise DataError("a tool needs a string 'api_name'", self.path, line, "api_name")
            name, field = raw["api_name"], str(raw.get("field", ""))
            self.tools[name] = {
                "name": name,
                "description": str(raw.get("api_description", "")),
                "parameters": object_schema(raw.get("parameters"), raw.get("required")),
                "responses": object_schema(raw.get("responses")),
            }
            self.field_of[name] = field
            self.by_field.setdefault(field, []).append(name)
            self.by_domain.setdefault(field.split("/")[0], []).append(name)
        self.names = sorted(self.tools)

    def distractors(self, gold: list[str], count: int, rng: random.Random) -> list[str]:
        """``count`` other tools: from the gold tools' fields first, then their domains."""
        chosen: list[str] = []
        taken = set(gold)
        fields = [self.field_of.get(name, "") for name in gold]
        pools = [self.by_field.get(f, []) for f in fields]
        pools += [self.by_domain.get(f.split("/")[0], []) for f in fields]
        pools.append(self.names)
        for pool in pools:
            options = sorted(set(pool) - taken)
            rng.shuffle(options)
            for name in options[: count - len(chosen)]:
                chosen.append(name)
                taken.add(name)
            if len(chosen) >= count:
                break
        return chosen


_INDEXES: dict[tuple[str, float], ToolIndex] = {}


def load_tool_index(path: Path) -> ToolIndex:
    """The index of ``path``, read once per process (and again if the file changes)."""
    key = (str(path.resolve()), path.stat().st_mtime)
    if key not in _INDEXES:
        _INDEXES.clear()
        _INDEXES[key] = ToolIndex(path)
    return _INDEXES[key]


class SealToolsConverter:
    """Seal-Tools records (``id``, ``query``, ``calling``) with tools from ``tool.jsonl``."""

    name = "seal-tools"

    def __init__(
        self,
        tools_path: str | Path | None = None,
        distractors: int = 4,
        seed: int = 0,
        coerce_numbers: bool = False,
    ) -> None:
        self.tools_path = Path(tools_path) if tools_path else None
        self.distractors = distractors
        self.seed = seed
        self.coerce_numbers = coerce_numbers
        self._index: ToolIndex | None = None

    @staticmethod
    def detect(record: Any) -> bool:
        return isinstance(record, dict) and "query" in record and "calling" in record

    def bind(self, source: Path) -> None:
        """Find ``tool.jsonl`` next to the input file when no path was given."""
        if self.tools_path is None:
            self.tools_path = source.parent / "tool.jsonl"

    @property
    def index(self) -> ToolIndex:
        if self._index is None:
            if self.tools_path is None or not self.tools_path.is_file():
                raise ValueError(
                    f"Seal-Tools needs its tool.jsonl (not found: {self.tools_path}): put it "
                    "next to the input or pass --tools PATH"
                )
            self._index = load_tool_index(self.tools_path)
        return self._index

    def convert(self, record: Any, line: int) -> list[Trajectory]:
        if not self.detect(record) or not isinstance(record["calling"], list):
            raise DataError(
                "a Seal-Tools record needs 'query' and a 'calling' list", field="calling"
            )
        index = self.index
        source_id = record.get("id", line)
        calls, outputs = self._calls(record["calling"], index)
        waves, links = self._waves(record["calling"], outputs)

        turn = TurnBuilder()
        step_of: dict[int, tuple[int, int]] = {}
        for wave in waves:
            turn.calls([calls[i] for i in wave])
            executor = len(turn.steps) - 1
            step_of.update({i: (executor, j) for j, i in enumerate(wave)})
        turn.answer(MISSING)
        steps = turn.steps
        meta_links = [
            {
                "step": step_of[i][0],
                "call": step_of[i][1],
                "argument": argument,
                "ref": ref,
                "from_step": step_of[j][0],
                "from_call": step_of[j][1],
                "output": output,
            }
            for i, argument, ref, j, output in links
        ]

        gold = list(dict.fromkeys(call.name for call in calls))
        rng = random.Random(f"{self.seed}:{source_id}")
        names = gold + index.distractors(gold, self.distractors, rng)
        rng.shuffle(names)
        meta: dict[str, Any] = {"source": self.name, "source_id": source_id}
        coerced = _coerce_numbers(calls, index) if self.coerce_numbers else []
        if coerced:
            meta["coerced"] = coerced
        if meta_links:
            meta["links"] = meta_links
        tools = [index.tools[name] for name in names]
        return [Trajectory(str(record["query"]), tools, steps, None, [], meta)]

    @staticmethod
    def _calls(
        calling: list[Any], index: ToolIndex
    ) -> tuple[list[ToolCall], dict[int, tuple[int, str]]]:
        """The calls, and which call and result field produce each ``API_call_N``."""
        calls, outputs = [], {}
        for i, raw in enumerate(calling):
            where = f"calling[{i}]"
            if not isinstance(raw, dict) or not isinstance(raw.get("api"), str):
                raise DataError("a call needs a string 'api'", field=f"{where}.api")
            arguments = raw.get("parameters") or {}
            if not isinstance(arguments, dict):
                raise DataError("'parameters' must be an object", field=f"{where}.parameters")
            calls.append(ToolCall(raw["api"], dict(arguments)))
            tool = index.tools.get(raw["api"], {})
            fields = list(tool.get("responses", {}).get("properties", {}))
            for position, name in enumerate(raw.get("responses") or []):
                match = REFERENCE.match(str(name))
                if match:
                    output = fields[position] if position < len(fields) else f"output_{position}"
                    outputs[int(match.group(1))] = (i, output)
        return calls, outputs

    @staticmethod
    def _waves(
        calling: list[Any], outputs: dict[int, tuple[int, str]]
    ) -> tuple[list[list[int]], list[tuple[int, str, str, int, str]]]:
        """Group calls into executor steps so each comes after the calls it depends on."""
        wave_of: list[int] = []
        links = []
        for i, raw in enumerate(calling):
            wave = 0
            for argument, value in (raw.get("parameters") or {}).items():
                match = REFERENCE.match(value) if isinstance(value, str) else None
                if match is None:
                    continue
                source = outputs.get(int(match.group(1)))
                if source is None or source[0] >= i:
                    continue  # an unresolved reference: left as is, verify rejects it
                links.append((i, argument, value, source[0], source[1]))
                wave = max(wave, wave_of[source[0]] + 1)
            wave_of.append(wave)
        waves: list[list[int]] = [[] for _ in range(max(wave_of, default=-1) + 1)]
        for i, wave in enumerate(wave_of):
            waves[wave].append(i)
        return waves, links


_INTEGER = re.compile(r"^-?\d+(?:\.0+)?$")
_NUMBER = re.compile(r"^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


def _coerce_numbers(calls: list[ToolCall], index: ToolIndex) -> list[str]:
    """Turn numeric strings into numbers where the tool's schema wants a number.

    Seal-Tools writes some numbers as strings (``"age": "63"``); verify rejects those
    (``bad-arguments``) unless this fix is asked for. Returns the arguments it changed,
    as ``calling[i].parameters.NAME`` (kept in ``meta.coerced``).
    """
    changed = []
    for i, call in enumerate(calls):
        properties = index.tools.get(call.name, {}).get("parameters", {}).get("properties", {})
        for name, value in call.arguments.items():
            kind = properties.get(name, {}).get("type")
            if not isinstance(value, str) or kind not in ("integer", "number"):
                continue
            text = value.strip()
            if kind == "integer" and _INTEGER.match(text):
                call.arguments[name] = int(float(text))
            elif kind == "number" and _NUMBER.match(text):
                number = float(text)
                call.arguments[name] = int(number) if _INTEGER.match(text) else number
            else:
                continue
            changed.append(f"calling[{i}].parameters.{name}")
    return changed
