"""``Agent``: the object applications embed.

Example:
    >>> from moragent import Agent, tool
    >>> @tool
    ... def add(a: int, b: int) -> int:
    ...     '''Add two integers.'''
    ...     return a + b
    >>> agent = Agent(tools=[add])            # doctest: +SKIP
    >>> result = agent.run("What is 2 + 40?")  # doctest: +SKIP
    >>> result.answer, result.trajectory.calls  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moragent.backends.base import Backend
from moragent.controller import Controller, Limits
from moragent.events import AnswerEvent, ErrorEvent, Event
from moragent.prompts import DEFAULT_PROMPTS, Prompts
from moragent.tools import Toolbox, to_tools
from moragent.trajectory import Trajectory

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """The outcome of one episode: the answer (None if it failed) and the whole trajectory."""

    answer: str | None
    trajectory: Trajectory
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``answer``, ``error`` and ``trajectory`` (steps each naming its role)."""
        data = self.trajectory.to_dict()
        return {
            "answer": self.answer,
            "error": self.error,
            "trajectory": data["steps"],
            "query": data["query"],
            "meta": data.get("meta", {}),
        }


class Agent:
    """A tool-using agent: three roles on one model, driven by the ReAct controller.

    Args:
        tools: ``@tool`` functions, plain typed functions, or OpenAI-style schema dicts
            (with an optional ``"callable"``).
        backend: a ``Backend``; None loads llama.cpp with ``model`` (default: the embedded
            SmolLM2-135M-Instruct) and ``adapters``.
        model: GGUF file for the default backend.
        adapters: for the default backend, a folder made by ``moragent export`` or a role
            name -> GGUF LoRA file mapping; None takes the role adapters shipped for the
            default model (if this build has them); False runs the bare model.
        max_steps: executor turns per episode before the summarizer must answer.
        system: system text (None: the templates' default).
        tool_timeout: seconds a tool may run before its call fails.
        max_observation_chars: longer tool results are cut to this size.
        parallel_calls: allow several calls in one executor turn.
        temperature: 0 (default) decodes greedily.
    """

    def __init__(
        self,
        tools: Iterable[Any] = (),
        backend: Backend | None = None,
        *,
        model: str | Path | None = None,
        adapters: str | Path | dict[str, str | Path] | bool | None = None,
        max_steps: int = 6,
        system: str | None = None,
        tool_timeout: float = 10.0,
        max_observation_chars: int = 2000,
        parallel_calls: bool = True,
        temperature: float = 0.0,
        limits: Limits | None = None,
        prompts: Prompts = DEFAULT_PROMPTS,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        self.toolbox = Toolbox(
            to_tools(list(tools)), timeout=tool_timeout, max_observation_chars=max_observation_chars
        )
        if backend is None:
            from moragent.backends import make_backend

            backend = make_backend("llamacpp", model, adapters)
        self.backend = backend
        self.controller = Controller(
            backend=backend,
            toolbox=self.toolbox,
            prompts=prompts,
            max_steps=max_steps,
            parallel_calls=parallel_calls,
            system=system,
            temperature=temperature,
            limits=limits or Limits(),
        )
        #: earlier turns of the conversation held by ``chat``
        self.history: list[dict[str, str]] = []
        self._session_live = False

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The schemas of the agent's tools."""
        return self.toolbox.schemas

    def stream(self, query: str) -> Iterator[Event]:
        """Run a fresh episode (no conversation history) and yield its events."""
        self._session_live = False
        yield from self._play(query, history=[], resume=False)

    def run(self, query: str) -> RunResult:
        """Run a fresh episode and return its answer and trajectory."""
        return _collect(self.stream(query))

    def chat_stream(self, query: str) -> Iterator[Event]:
        """Continue the conversation with ``query``, yielding events; keeps the session cache."""
        answer: str | None = None
        for event in self._play(query, history=list(self.history), resume=self._session_live):
            if isinstance(event, AnswerEvent):
                answer = event.text
            yield event
        if answer is not None:
            self.history.append({"query": query, "answer": answer})

    def chat(self, query: str) -> RunResult:
        """Continue the conversation with ``query`` and return the episode's result."""
        return _collect(self.chat_stream(query))

    def reset(self) -> None:
        """Forget the conversation; the next turn starts a fresh session."""
        self.history.clear()
        self._session_live = False

    def _play(self, query: str, history: list[dict[str, str]], resume: bool) -> Iterator[Event]:
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"the query must be a non-empty string, got {query!r}")
        completed = False
        try:
            for event in self.controller.run(query, history, resume=resume):
                if isinstance(event, ErrorEvent) and event.fatal:
                    self._session_live = False
                    yield event
                    return
                yield event
            completed = True
        finally:
            # an interrupted episode (Ctrl-C, a consumer that stopped early) leaves the
            # backend mid-turn: the next turn must start a fresh session
            self._session_live = completed

    def close(self) -> None:
        """Free the backend's model."""
        self.backend.close()


def _collect(events: Iterator[Event]) -> RunResult:
    trajectory: Trajectory | None = None
    error: str | None = None
    answer: str | None = None
    for event in events:
        if isinstance(event, AnswerEvent):
            answer, trajectory = event.text, event.trajectory
        elif isinstance(event, ErrorEvent) and event.fatal:
            error, trajectory = event.message, event.trajectory
    if trajectory is None:  # pragma: no cover - every episode ends in one of the two
        raise RuntimeError("the episode ended without an answer or an error")
    return RunResult(answer, trajectory, error)
