"""Teachers: what fills a trajectory's missing parts, and what judges a trajectory.

A teacher is either the ``rules`` teacher (templates, no model) or a model on any
``Backend``: for each missing part the backend is reset, given a role-specific prompt
and asked to generate. ``resolve_teacher`` turns the CLI's ``--teacher`` text into one.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from typing import Any, Protocol

from moragent.backends.base import Backend
from moragent.data.rules import RulesTeacher, describe_arguments
from moragent.roles import Role
from moragent.trajectory import (
    ExecutorStep,
    ObservationStep,
    ReasonerStep,
    SummarizerStep,
    Trajectory,
)

logger = logging.getLogger(__name__)

TEACHER_HELP = "rules (templates, no model), llamacpp[:MODEL.gguf] or openai:MODEL"


class TeacherError(RuntimeError):
    """A teacher failed on one part (timeout, backend error, unusable output)."""


class Teacher(Protocol):
    """Fills one missing part of a trajectory; raises ``TeacherError`` when it cannot."""

    name: str

    def thought(self, trajectory: Trajectory, index: int) -> str: ...

    def observation(self, trajectory: Trajectory, index: int, position: int) -> str: ...

    def answer(self, trajectory: Trajectory, index: int) -> str: ...


def render_plain(trajectory: Trajectory, upto: int | None = None) -> str:
    """A plain-text view of a trajectory (tools, query, steps) for a teacher prompt."""
    lines = ["Tools:"]
    for tool in trajectory.tools:
        lines.append(
            f"- {tool.get('name')}: {tool.get('description', '')} "
            f"Parameters: {json.dumps(tool.get('parameters', {}))}"
        )
    if not trajectory.tools:
        lines.append("(none)")
    for turn in trajectory.history:
        lines += [f"User: {turn.get('query', '')}", f"Assistant: {turn.get('answer', '')}"]
    lines.append(f"User: {trajectory.query}")
    for step in trajectory.steps[:upto]:
        if isinstance(step, ReasonerStep):
            lines.append(f"Thought: {step.thought}\nNext: {step.next.value}")
        elif isinstance(step, ExecutorStep):
            lines.append("Call: " + json.dumps([c.to_dict() for c in step.calls]))
        elif isinstance(step, ObservationStep):
            lines += [f"Result of {r.name}: {r.content}" for r in step.results]
        elif isinstance(step, SummarizerStep):
            lines.append(f"Answer: {step.answer}")
    return "\n".join(lines)


_THOUGHT_TASK = (
    "You write the reasoning of a tool-using assistant. Below is the task so far.\n\n"
    "{context}\n\n{next}\nWrite the assistant's thought that leads to this: one or two short "
    "sentences in the first person. Write only the thought."
)
_OBSERVATION_TASK = (
    "You simulate a tool. Tool {name}: {description}\nIt was called with: {arguments}\n"
    "{fields}Write only what the tool returns, as one JSON object."
)
_ANSWER_TASK = (
    "You write the final answer of a tool-using assistant for the user, using the tool "
    "results below.\n\n{context}\n\nWrite only the answer."
)
_JUDGE_TASK = (
    "Rate this tool-using assistant trajectory from 0 (wrong or useless) to 10 (correct calls, "
    "sound reasoning, a right and helpful answer).\n\n{context}\n\nReply with the number only."
)
_ENDS = ("<|im_end|>", "<|eot_id|>", "</s>", "<end_of_turn>")


class BackendTeacher:
    """A model teacher on any ``Backend`` (OpenAI-compatible server, llama.cpp, ...)."""

    def __init__(
        self,
        backend: Backend,
        max_tokens: int = 256,
        name: str | None = None,
        chat_wrap: bool = False,
    ) -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self.name = name or getattr(backend, "name", "model")
        #: wrap each prompt as one ChatML user turn (for a raw-text backend such as llamacpp)
        self.chat_wrap = chat_wrap

    def ask(self, role: Role, prompt: str, max_tokens: int | None = None) -> str:
        """One fresh generation; backend failures become ``TeacherError``."""
        if self.chat_wrap:
            prompt = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
        try:
            self.backend.reset()
            generation = self.backend.generate(
                role, prompt, max_tokens=max_tokens or self.max_tokens
            )
        except TimeoutError as exc:
            raise TeacherError(f"teacher timed out ({exc or 'no reply in time'})") from None
        except Exception as exc:  # any backend failure costs one trajectory, not the run
            raise TeacherError(f"teacher failed: {type(exc).__name__}: {exc}") from None
        text = str(generation.text)
        for end in _ENDS:
            text = text.split(end)[0]
        return text.strip()

    def thought(self, trajectory: Trajectory, index: int) -> str:
        following = trajectory.steps[index + 1] if index + 1 < len(trajectory.steps) else None
        if isinstance(following, ExecutorStep):
            action = "Next the assistant makes this call: " + json.dumps(
                [call.to_dict() for call in following.calls], ensure_ascii=False
            )
        else:
            action = "Next the assistant gives its final answer."
        prompt = _THOUGHT_TASK.format(context=render_plain(trajectory, index), next=action)
        text = re.sub(r"^\s*Thought:\s*", "", self.ask(Role.REASONER, prompt))
        text = text.split("\nNext:")[0].strip()
        return _not_echo(_usable(text, "thought", limit=800), _THOUGHT_TASK, "thought")

    def observation(self, trajectory: Trajectory, index: int, position: int) -> str:
        previous = trajectory.steps[index - 1]
        call = previous.calls[position] if isinstance(previous, ExecutorStep) else None
        if call is None:
            raise TeacherError("an observation without a call before it")
        tool = next((t for t in trajectory.tools if t.get("name") == call.name), {})
        fields = (tool.get("responses") or {}).get("properties")
        prompt = _OBSERVATION_TASK.format(
            name=call.name,
            description=tool.get("description", ""),
            arguments=describe_arguments(call.arguments, limit=400),
            fields=f"Its result has the fields: {json.dumps(fields)}\n" if fields else "",
        )
        text = _usable(self.ask(Role.EXECUTOR, prompt), "observation", limit=4000)
        return _json_object(text) if fields else text

    def answer(self, trajectory: Trajectory, index: int) -> str:
        prompt = _ANSWER_TASK.format(context=render_plain(trajectory, index))
        text = _usable(self.ask(Role.SUMMARIZER, prompt, self.max_tokens * 2), "answer", 8000)
        return _not_echo(_not_echo(text, _ANSWER_TASK, "answer"), _THOUGHT_TASK, "answer")

    def judge(self, trajectory: Trajectory) -> float:
        """A score in [0, 1] for the whole trajectory."""
        text = self.ask(Role.REASONER, _JUDGE_TASK.format(context=render_plain(trajectory)), 8)
        match = re.match(r"\s*(\d+(?:\.\d+)?)", text)
        if match is None or float(match.group(1)) > 10:
            raise TeacherError(f"judge gave no score from 0 to 10: {text[:60]!r}")
        return float(match.group(1)) / 10


def _usable(text: str, what: str, limit: int) -> str:
    if not text:
        raise TeacherError(f"teacher returned an empty {what}")
    if len(text) > limit:
        raise TeacherError(f"teacher returned garbage: a {what} of {len(text)} characters")
    return text


def _shingles(text: str, size: int = 5) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z']+", text.lower())
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def _not_echo(text: str, task: str, what: str) -> str:
    """Reject output that repeats the teacher's own instructions (a small model's habit)."""
    instructions = task.replace("{context}", " ").replace("{next}", " ")
    if _shingles(text) & _shingles(instructions):
        raise TeacherError(f"teacher returned garbage: the {what} repeats the instructions")
    return text


def _json_object(text: str) -> str:
    """The first JSON object in a teacher's output (code fences allowed), compact."""
    start = text.find("{")
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start) if start >= 0 else (None, 0)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise TeacherError(f"teacher returned garbage: no JSON object in {text[:60]!r}")
    return json.dumps(value, ensure_ascii=False)


def load_backend(kind: str, argument: str | None) -> Backend:
    """A backend for a teacher spec; imported lazily, with a clear error if it is missing."""
    modules = {
        "llamacpp": ("moragent.backends.llamacpp", "LlamaCppBackend"),
        "openai": ("moragent.backends.openai", "OpenAIBackend"),
    }
    module_name, class_name = modules[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"the {kind} backend is not available ({exc}); use --teacher rules "
            f"or install what it needs"
        ) from None
    backend_class: Any = getattr(module, class_name)
    if kind == "openai":
        if not argument:
            raise ValueError("--teacher openai needs a model name: openai:MODEL")
        return backend_class(model=argument)
    return backend_class(argument) if argument else backend_class()


def resolve_teacher(spec: str, seed: int = 0) -> RulesTeacher | BackendTeacher:
    """``rules``, ``llamacpp[:PATH.gguf]`` or ``openai:MODEL`` -> a teacher."""
    kind, _, argument = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "rules":
        return RulesTeacher(seed)
    if kind in ("llamacpp", "openai"):
        backend = load_backend(kind, argument or None)
        return BackendTeacher(backend, name=spec, chat_wrap=True)
    raise ValueError(f"unknown teacher {spec!r}: expected {TEACHER_HELP}")
