"""The ``rules`` teacher: fills missing parts from templates, with no model.

Thoughts are built from the tool descriptions and the calls (some name the argument
values, some leave them to the executor), observations from the
tools' documented result fields, answers from the observations. Wording varies between
several templates, chosen by a random generator seeded from the seed, the query and the
step, so a run is deterministic and independent of the order of the input lines.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from typing import Any

from moragent.roles import Role
from moragent.trajectory import (
    ExecutorStep,
    ObservationStep,
    ReasonerStep,
    ToolCall,
    Trajectory,
)

#: One call. Every template names the tool and what it does before the verdict ("which
#: is what ..."), the same shape as the no-fit thoughts (``moragent.data.augment``:
#: "which is not what ..."): the model states the tool's purpose next to the question
#: before it decides, instead of deciding at the first word of the thought.
_ONE_CALL = (
    "{name} can {purpose}, which is what this question needs, so I will call it with {args}.",
    "{name} can {purpose}, which is what is asked here. Calling it with {args}.",
    "{name} can {purpose}, which is what I need for this: {name} with {args}.",
    "{name} can {purpose}, which is what this request is about. I'll use it ({args}).",
    # without the values: the executor then learns to take them from the context itself
    "{name} can {purpose}, which is what this question needs, so I will call it.",
    "{name} can {purpose}, which is what is asked: it is the tool for this.",
)
_MANY_CALLS = (
    "These calls do not depend on each other, so I'll make them together: {items}.",
    "I can handle several parts at once: {items}.",
    "Several things are needed here, in one go: {items}.",
)
_AFTER = (
    "{prev} has returned. ",
    "I have the result of {prev}. ",
    "{prev} gave me what I needed for this part. ",
)
_LINK = " The {argument} comes from the {output} that {source} returned."
_TO_ANSWER = (
    "The results of {tools} cover the question, so I can answer now.",
    "I have what I need from {tools}; time to give the answer.",
    "Nothing else to call: {tools} gave me the information to answer.",
    "That completes the calls ({tools}). I'll sum up the results for the user.",
)
#: Tools offered but none called (a chat turn): one tool's purpose, then the verdict.
_NO_TOOL = (
    "{name} can {purpose}, which is not what this question needs; I can answer directly.",
    "{name} can {purpose}, which is not what is asked here, so I'll answer it myself.",
    "{name} can {purpose}, which is not what this turn needs: I can reply from what I know "
    "and the conversation.",
)
_NO_TOOLS_AT_ALL = (
    "No tools are available, so I'll answer from what I know.",
    "There is no tool to call; I'll answer directly.",
)
_ANSWER = (
    "Here is what I found. {facts}",
    "{facts}",
    "Based on the results: {facts}",
    "I looked this up for you. {facts}",
)
_NO_RESULT_ANSWER = "I could not find the information needed to answer this."


def step_rng(seed: int, trajectory: Trajectory, index: int, kind: str) -> random.Random:
    """A generator for one step: fixed by the seed, the query and the step's position."""
    key = f"{seed}\x00{trajectory.query}\x00{index}\x00{kind}".encode()
    return random.Random(zlib.crc32(key))


#: first words that start a noun phrase, not a verb phrase ("A tool that ...")
_NOT_VERBS = frozenset(
    """a an the this these that its it all any some each current latest recent daily real-time
    detailed basic general historical random various""".split()
)
#: words after a third-person verb ("Returns the ...") that a plural noun rarely precedes
_AFTER_VERB = frozenset("a an the all any each information details data one".split())
#: "This tool gets ...", "A function that gets ...": the subject before the verb
_SUBJECT = re.compile(
    r"^(?:this|the|a|an)\s+(?:tool|function|api|endpoint|method|service)\s+(?:that\s+|which\s+)?",
    re.IGNORECASE,
)


def _imperative(word: str) -> str:
    """'Returns' -> 'return', 'Identifies' -> 'identify', 'Searches' -> 'search'."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    return word[:-1]


def purpose(tool: dict[str, Any] | None, name: str) -> str:
    """A tool's description as a verb phrase to follow "can": 'Retrieve the X.' ->
    'retrieve the X', 'Returns the X' -> 'return the X', 'Current weather for a city'
    -> 'help with current weather for a city'."""
    text = str((tool or {}).get("description", "")).strip().rstrip(".")
    if not text:
        return f"use {name}"
    text = _SUBJECT.sub("", text.split(". ")[0]).strip() or f"use {name}"
    if not text[:2].isupper():
        text = text[0].lower() + text[1:]
    words = text.split(" ")
    first = words[0]
    if (
        len(words) > 1
        and first.endswith("s")
        and not first.endswith(("ss", "us", "is"))
        and words[1].lower() in _AFTER_VERB
    ):
        return " ".join([_imperative(first), *words[1:]])
    noun = (
        first.lower() in _NOT_VERBS
        or (len(first) > 5 and first.lower().endswith("ing"))
        or (len(first) > 5 and first.lower().endswith("ed") and not first.lower().endswith("eed"))
        or first[:2].isupper()  # an acronym: "API for ..."
        or (len(words) > 1 and words[1] == "of")  # "Status of an order"
    )
    if noun:
        return f"help with {text}"
    return text


def describe_arguments(arguments: Any, limit: int = 60) -> str:
    """``city="Paris", days=3`` (values cut to ``limit`` characters)."""
    if not isinstance(arguments, dict) or not arguments:
        return "no arguments"
    parts = []
    for key, value in arguments.items():
        text = json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}={text[:limit] + '...' if len(text) > limit else text}")
    return ", ".join(parts)


def sample_value(schema: dict[str, Any], name: str, rng: random.Random) -> Any:
    """A plausible value of a result field from its schema (type and description)."""
    kind = schema.get("type")
    if "enum" in schema and schema["enum"]:
        return rng.choice(schema["enum"])
    if kind == "integer":
        return rng.randint(1, 500)
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return rng.random() < 0.7
    if kind == "array":
        return []
    if kind == "object":
        return {}
    examples = schema.get("examples")
    if isinstance(examples, list) and examples and isinstance(examples[0], str):
        return examples[0]
    description = str(schema.get("description", "")).strip().rstrip(".")
    return description or name.replace("_", " ")


def linked_value(parameter: dict[str, Any], output: str, rng: random.Random) -> Any:
    """A value for an output that a later call takes as ``parameter``: typed for that use."""
    kind = parameter.get("type")
    if kind == "integer":
        return rng.randint(1, 9999)
    if kind == "number":
        return round(rng.uniform(1, 1000), 2)
    if kind == "boolean":
        return True
    if kind == "array":
        return [f"{output}-{rng.randrange(16**4):04x}"]
    return f"{output}-{rng.randrange(16**4):04x}"


class RulesTeacher:
    """Fills thoughts, observations and answers from templates (``--teacher rules``)."""

    name = "rules"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def thought(self, trajectory: Trajectory, index: int) -> str:
        """The thought of the reasoner step at ``index``, from what comes next."""
        step = trajectory.steps[index]
        assert isinstance(step, ReasonerStep)
        rng = step_rng(self.seed, trajectory, index, "thought")
        tools = {tool.get("name"): tool for tool in trajectory.tools}
        following = trajectory.steps[index + 1] if index + 1 < len(trajectory.steps) else None
        if step.next is Role.EXECUTOR and isinstance(following, ExecutorStep):
            text = self._call_thought(following.calls, tools, rng)
            previous = _previous_calls(trajectory, index)
            if previous:
                text = rng.choice(_AFTER).format(prev=previous[-1].name) + text
            return text + self._link_note(trajectory, index + 1, tools)
        called = list(dict.fromkeys(call.name for call in _previous_calls(trajectory, index)))
        if called:
            return rng.choice(_TO_ANSWER).format(tools=" and ".join(called))
        if not trajectory.tools:
            return rng.choice(_NO_TOOLS_AT_ALL)
        offered = rng.choice(trajectory.tools)  # any of them: see augment.no_fit_trajectory
        name = str(offered.get("name"))
        return rng.choice(_NO_TOOL).format(name=name, purpose=purpose(offered, name))

    def observation(self, trajectory: Trajectory, index: int, position: int) -> str:
        """What call ``position`` of the executor step before ``index`` returned (JSON)."""
        call = _call_for(trajectory, index, position)
        rng = step_rng(self.seed, trajectory, index, f"observation{position}")
        tool = next((t for t in trajectory.tools if t.get("name") == call.name), {})
        fields = (tool.get("responses") or {}).get("properties") or {}
        if fields:
            result = {key: sample_value(schema, key, rng) for key, schema in fields.items()}
        else:
            result = {
                "status": "ok",
                "result": f"{call.name} ran with {describe_arguments(call.arguments)}",
            }
        return json.dumps(result, ensure_ascii=False)

    def answer(self, trajectory: Trajectory, index: int) -> str:
        """The summarizer's answer at ``index``, from the observations before it."""
        rng = step_rng(self.seed, trajectory, index, "answer")
        facts = []
        for step in trajectory.steps[:index]:
            if isinstance(step, ObservationStep):
                facts.extend(
                    _fact(result.name, result.content, result.error)
                    for result in step.results
                    if result.content
                )
        if not facts:
            return _NO_RESULT_ANSWER
        return rng.choice(_ANSWER).format(facts=" ".join(facts))

    @staticmethod
    def _call_thought(
        calls: list[ToolCall], tools: dict[Any, dict[str, Any]], rng: random.Random
    ) -> str:
        if len(calls) == 1:
            call = calls[0]
            text = rng.choice(_ONE_CALL).format(
                purpose=purpose(tools.get(call.name), call.name),
                name=call.name,
                args=describe_arguments(call.arguments),
            )
            return text
        items = [
            f"{call.name} to {purpose(tools.get(call.name), call.name)} "
            f"({describe_arguments(call.arguments)})"
            for call in calls
        ]
        return rng.choice(_MANY_CALLS).format(items="; ".join(items))

    @staticmethod
    def _link_note(trajectory: Trajectory, executor: int, tools: dict[Any, Any]) -> str:
        notes = []
        for link in trajectory.meta.get("links", []):
            if link.get("step") != executor:
                continue
            source = trajectory.steps[link["from_step"]]
            name = source.calls[link["from_call"]].name if isinstance(source, ExecutorStep) else "?"
            notes.append(
                _LINK.format(argument=link["argument"], output=link["output"], source=name)
            )
        return "".join(notes)


def _previous_calls(trajectory: Trajectory, index: int) -> list[ToolCall]:
    return [
        call
        for step in trajectory.steps[:index]
        if isinstance(step, ExecutorStep)
        for call in step.calls
    ]


def _call_for(trajectory: Trajectory, index: int, position: int) -> ToolCall:
    """The call whose result is ``results[position]`` of the observation at ``index``."""
    previous = trajectory.steps[index - 1] if index > 0 else None
    if isinstance(previous, ExecutorStep) and position < len(previous.calls):
        return previous.calls[position]
    step = trajectory.steps[index]
    name = step.results[position].name if isinstance(step, ObservationStep) else "tool"
    return ToolCall(name, {})


def _fact(name: str, content: str, error: bool) -> str:
    """One sentence from one result: JSON fields read out, other text quoted (cut)."""
    if error:
        return f"{name} failed: {content[:200]}."
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict) and value:
        parts = [f"{key.replace('_', ' ')}: {_short(item)}" for key, item in value.items()]
        return f"From {name}: {'; '.join(parts)}."
    text = content.strip()
    return f"{name} returned: {text[:300] + '...' if len(text) > 300 else text}"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text[:120] + "..." if len(text) > 120 else text
