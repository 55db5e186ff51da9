"""The agent side of BFCL: one question in, the executor's calls out.

Each question runs in a fresh session on the same transcript the agent uses: the frame
(system text, tool catalogue, question) under the reasoner, then the executor's turn,
constrained to valid calls of the candidate tools. For the relevance categories the
reasoner speaks first and may hand over to the summarizer: that is "no call". With
``think``, the reasoner writes its thought before the executor in every category, as
in an agent episode (where the category does not allow "no call", its choice of next
role is held to the executor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moragent.backends import make_backend
from moragent.backends.base import Backend
from moragent.controller import unique_calls
from moragent.eval.bfcl import BfclQuestion
from moragent.grammar import (
    executor_constraint,
    parse_executor,
    parse_reasoner,
    reasoner_constraint,
)
from moragent.prompts import DEFAULT_PROMPTS, Prompts
from moragent.roles import Role
from moragent.trajectory import ToolCall

#: categories where calling nothing can be the right answer: the reasoner decides there
REASONER_CATEGORIES = ("irrelevance", "live_irrelevance", "live_relevance")


class ExecutorPredictor:
    """Answers BFCL questions with the executor (and the reasoner where no call may be right).

    Args:
        backend: the model session.
        prompts: the role templates.
        max_tokens: the executor's token limit.
        parallel_calls: let the executor write a list of calls (every category gets the
            same constraint: the category is not revealed to the model).
        think: the reasoner's thought goes before the executor's call in every category.
    """

    def __init__(
        self,
        backend: Backend,
        prompts: Prompts = DEFAULT_PROMPTS,
        max_tokens: int = 1024,
        parallel_calls: bool = True,
        think: bool = False,
    ) -> None:
        self.backend = backend
        self.think = think
        self.prompts = prompts
        self.max_tokens = max_tokens
        self.parallel_calls = parallel_calls
        #: raw executor output of the last question, for inspection
        self.last_output = ""
        #: the reasoner's output of the last question ("" when it did not speak)
        self.last_thought = ""

    def __call__(
        self, question: BfclQuestion, tools: list[dict[str, Any]]
    ) -> list[ToolCall] | None:
        backend, prompts = self.backend, self.prompts
        backend.reset()
        frame = prompts.frame(tools, question.query, question.system)
        self.last_thought = ""
        may_skip = question.category in REASONER_CATEGORIES
        if may_skip or self.think:
            thought = backend.generate(
                Role.REASONER,
                frame + prompts.header(Role.REASONER),
                max_tokens=160,
                constraint=reasoner_constraint()
                if may_skip
                else reasoner_constraint((Role.EXECUTOR,)),
            )
            self.last_thought = thought.text
            if parse_reasoner(thought.text).next is not Role.EXECUTOR:
                return None
            backend.feed(Role.REASONER, prompts.end)
        else:
            backend.feed(Role.REASONER, frame)
        generation = backend.generate(
            Role.EXECUTOR,
            prompts.header(Role.EXECUTOR),
            max_tokens=self.max_tokens,
            constraint=executor_constraint(tools, self.parallel_calls),
        )
        self.last_output = generation.text
        parsed = parse_executor(generation.text)
        if parsed.problem:
            raise ValueError(f"executor output does not parse: {parsed.problem}")
        return unique_calls(parsed.calls)


def make_predictor(
    backend_name: str = "llamacpp",
    model: str | Path | None = None,
    adapters: str | Path | None = None,
    use_adapters: bool = True,
    think: bool = False,
) -> ExecutorPredictor:
    """An ``ExecutorPredictor`` on a backend built by name (see ``moragent.backends``)."""
    backend = make_backend(backend_name, model, adapters if use_adapters else False)
    return ExecutorPredictor(backend, think=think)
