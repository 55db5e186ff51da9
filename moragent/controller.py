"""The ReAct controller: reasoner -> executor -> tools -> observation -> ... -> summarizer.

The reasoner decides which role goes next; the controller obeys, within a step budget
(the number of executor turns). Each turn is sent to the backend under its role, in the
segment order of ``moragent.prompts``, so the backend's cache is never re-evaluated.
Bad model output and failing tools become observations the reasoner reads; only a
backend failure ends an episode early, with an ``ErrorEvent``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from moragent.backends.base import Backend, BackendError
from moragent.events import (
    AnswerEvent,
    ErrorEvent,
    Event,
    ObservationEvent,
    RoleStarted,
    ThoughtEvent,
    TokenEvent,
    ToolCallEvent,
)
from moragent.grammar import (
    executor_constraint,
    parse_executor,
    parse_reasoner,
    reasoner_constraint,
)
from moragent.prompts import BUDGET_NOTE, DEFAULT_PROMPTS, Prompts
from moragent.roles import NEXT_ROLES, Role
from moragent.tools import Toolbox
from moragent.trajectory import (
    ExecutorStep,
    ObservationStep,
    ReasonerStep,
    SummarizerStep,
    ToolCall,
    ToolResult,
    Trajectory,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: a thought this long is about 60 tokens: it fits the reasoner's token limit with room
MAX_THOUGHT_CHARS = 240


@dataclass
class Limits:
    """Generation limits per role, in tokens."""

    reasoner: int = 128
    executor: int = 256
    summarizer: int = 256

    def for_role(self, role: Role) -> int:
        return int(getattr(self, role.value))


@dataclass
class Controller:
    """Runs episodes of one agent on one backend session.

    Args:
        backend: the model session.
        toolbox: the candidate tools.
        prompts: the role templates.
        max_steps: executor turns allowed per episode; then the summarizer must answer.
        parallel_calls: let the executor emit a list of calls in one turn.
        system: system text of the frame (None: the templates' default).
        temperature: 0 for greedy decoding.
    """

    backend: Backend
    toolbox: Toolbox
    prompts: Prompts = DEFAULT_PROMPTS
    max_steps: int = 6
    parallel_calls: bool = True
    system: str | None = None
    temperature: float = 0.0
    limits: Limits = field(default_factory=Limits)

    def run(
        self, query: str, history: list[dict[str, str]] | None = None, *, resume: bool = False
    ) -> Iterator[Event]:
        """Run one episode and yield its events; the last is an answer or a fatal error.

        Args:
            query: the user's request.
            history: earlier turns of the conversation (query and answer each).
            resume: continue the backend's session (a chat): feed only the new user turn.
                Otherwise the session is reset and the whole frame is fed.
        """
        trajectory = Trajectory(
            query=query, tools=self.toolbox.schemas, system=self.system, history=history or []
        )
        episode = _Episode(self, trajectory)
        started = time.perf_counter()
        try:
            yield from episode.play(resume)
        finally:
            trajectory.meta.update(episode.figures(time.perf_counter() - started))


class _Episode:
    """The state of one running episode."""

    def __init__(self, controller: Controller, trajectory: Trajectory) -> None:
        self.c = controller
        self.backend = controller.backend
        self.trajectory = trajectory
        self.pending = ""  # text to feed under the reasoner before the next turn
        self.backend_seconds = 0.0  # inside backend calls: model, sampling, grammar
        self.tool_seconds = 0.0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def play(self, resume: bool) -> Iterator[Event]:
        t = self.trajectory
        if resume:
            self.pending = self.c.prompts.user(t.query)
        else:
            self._timed(self.backend.reset)
            self.pending = self.c.prompts.frame(t.tools, t.query, t.system, t.history)
        steps_used = 0
        try:
            while True:
                if not t.tools:
                    next_role = Role.SUMMARIZER
                elif steps_used >= self.c.max_steps:
                    t.meta["budget_exhausted"] = True
                    next_role = Role.SUMMARIZER
                else:
                    next_role = yield from self._reasoner_turn(steps_used)
                if next_role is Role.SUMMARIZER:
                    yield from self._summarizer_turn()
                    return
                yield from self._executor_turn()
                steps_used += 1
        except BackendError as exc:
            logger.warning("episode ended by the backend: %s", exc)
            yield ErrorEvent(str(exc), self.backend.name, fatal=True, trajectory=t)

    # ------------------------------------------------------------ turns

    def _generate(self, role: Role, prompt: str, **kwargs: object) -> Iterator[Event]:
        """Run one generation, yielding its tokens as events; the result is ``self.last``."""
        tokens: list[str] = []
        self.last = self._timed(
            self.backend.generate,
            role,
            prompt,
            max_tokens=self.c.limits.for_role(role),
            on_token=tokens.append,
            temperature=self.c.temperature,
            **kwargs,  # type: ignore[arg-type]
        )
        for piece in tokens:
            yield TokenEvent(role, piece)
        self.prompt_tokens += self.last.prompt_tokens
        self.completion_tokens += self.last.completion_tokens
        self._timed(self.backend.feed, role, self.c.prompts.end)

    def _timed(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.backend_seconds += time.perf_counter() - began

    def _take_pending(self) -> str:
        text, self.pending = self.pending, ""
        return text

    def _reasoner_turn(self, steps_used: int) -> Iterator[Event]:
        yield RoleStarted(Role.REASONER)
        prompt = self._take_pending() + self.c.prompts.header(Role.REASONER)
        constraint = reasoner_constraint(NEXT_ROLES, max_thought_chars=MAX_THOUGHT_CHARS)
        yield from self._generate(Role.REASONER, prompt, constraint=constraint)
        parsed = parse_reasoner(self.last.text)
        next_role = parsed.next
        if next_role is None:
            # only reachable on a backend without constraints: decide and say so
            next_role = Role.EXECUTOR if steps_used == 0 else Role.SUMMARIZER
            yield ErrorEvent(f"{parsed.problem}; going on with the {next_role.value}", "reasoner")
        self.trajectory.steps.append(ReasonerStep(parsed.thought, next_role))
        yield ThoughtEvent(parsed.thought, next_role)
        return next_role

    def _executor_turn(self) -> Iterator[Event]:
        if self.pending:  # observations are read under the reasoner, even when it is skipped
            self._timed(self.backend.feed, Role.REASONER, self._take_pending())
        yield RoleStarted(Role.EXECUTOR)
        constraint = executor_constraint(self.trajectory.tools, self.c.parallel_calls)
        yield from self._generate(
            Role.EXECUTOR, self.c.prompts.header(Role.EXECUTOR), constraint=constraint
        )
        parsed = parse_executor(self.last.text)
        if parsed.problem:
            problem = parsed.problem
            if self.last.finish_reason == "length":
                problem += f" (the call was cut at {self.c.limits.executor} tokens)"
            yield ErrorEvent(problem, "executor")
            results = [ToolResult("executor", f"the call could not be read: {problem}", True)]
        else:
            if parsed.cut:
                yield ErrorEvent(
                    f"the executor's list of calls was cut at {self.c.limits.executor} tokens; "
                    f"running the {len(parsed.calls)} calls written whole",
                    "executor",
                )
            calls = unique_calls(parsed.calls)
            self.trajectory.steps.append(ExecutorStep(calls))
            for call in calls:
                yield ToolCallEvent(call)
            began = time.perf_counter()
            results = self.c.toolbox.call_many(calls)
            self.tool_seconds += time.perf_counter() - began
        self.trajectory.steps.append(ObservationStep(results))
        for result in results:
            yield ObservationEvent(result)
        self.pending = self.c.prompts.observation(results)

    def _summarizer_turn(self) -> Iterator[Event]:
        if self.pending:
            self._timed(self.backend.feed, Role.REASONER, self._take_pending())
        yield RoleStarted(Role.SUMMARIZER)
        note = BUDGET_NOTE if self.trajectory.meta.get("budget_exhausted") else None
        yield from self._generate(Role.SUMMARIZER, self.c.prompts.header(Role.SUMMARIZER, note))
        answer = self.last.text.strip()
        self.trajectory.steps.append(SummarizerStep(answer))
        yield AnswerEvent(answer, self.trajectory)

    def figures(self, wall_seconds: float) -> dict[str, object]:
        stats = self.backend.stats
        return {
            "wall_seconds": round(wall_seconds, 4),
            "backend_seconds": round(self.backend_seconds, 4),
            "tool_seconds": round(self.tool_seconds, 4),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reevaluated_tokens": stats.reevaluated,
        }


def unique_calls(calls: list[ToolCall]) -> list[ToolCall]:
    """The calls with exact repeats dropped (a small model may write one call many times)."""
    seen: set[str] = set()
    unique = []
    for call in calls:
        key = json.dumps(call.to_dict(), sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            unique.append(call)
    if len(unique) < len(calls):
        logger.info("dropped %d repeated calls", len(calls) - len(unique))
    return unique
