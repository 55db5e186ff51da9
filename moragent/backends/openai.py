"""The OpenAI-compatible backend: each role served as a model name by an existing engine.

vLLM (``--enable-lora --lora-modules reasoner=... executor=... summarizer=...``),
llama.cpp's servers, SGLang or LoRAX serve several role adapters on one base model; this
backend drives them over HTTP with the official ``openai`` client.

The session's transcript is kept here as one string: ``feed`` appends to it and sends
nothing; ``generate`` sends the whole transcript so far as a raw completion
(``/v1/completions`` with ``prompt``) under the role's model name, and the server's
prefix cache saves re-evaluating the part it has seen. The chat completions API does not
fit: the role-segmented transcript is raw text with its own ChatML markers and role
headers (DESIGN.md section 2), which a chat template would wrap a second time.

What differs from the in-process backends:

- A role switch changes the model name of the next request. Whether the server's cache
  survives the switch is the server's business: vLLM shares the base model's prefix cache
  across LoRA adapters only when the adapters match, so the prompt is evaluated again
  under each role's adapter; ``llama_cpp.server`` loads one model at a time and reloads at
  every switch.
- ``stats.evaluated`` counts the prompt tokens the server says it evaluated, where it
  says so (``usage.prompt_tokens_details.cached_tokens``, vLLM with
  ``--enable-prompt-tokens-details``; ``timings.prompt_n``, llama-server). Otherwise it
  counts the tokens each request adds to the transcript (what a perfect prefix cache
  would evaluate), and ``stats.extra["cache_reported"]`` is False.
- Token counts come from the server's usage report, else from an estimate
  (``stats.extra["token_counts"] == "estimate"``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from moragent.backends.base import (
    BackendError,
    CacheStats,
    Constraint,
    Generation,
    TokenCallback,
)
from moragent.backends.server_dialects import (
    DIALECTS,
    constraint_fields,
    detect_dialect,
    error_detail,
    estimate_tokens,
    read_usage,
    retry_after,
    tokenize_requests,
)
from moragent.roles import ROLES, Role, parse_role

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
END_MARKER = "<|im_end|>"


class _Retryable(Exception):
    """A failure worth another try (429, 5xx, refused connection), with its message."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class OpenAIBackend:
    """Roles served by an OpenAI-compatible server, one model name per role.

    Args:
        model: the model name for every role without its own in ``role_models``.
        role_models: role name -> model name on the server.
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``; default
            ``OPENAI_BASE_URL``, else ``http://127.0.0.1:8000/v1``.
        api_key: default ``OPENAI_API_KEY``, else none (local servers need no key).
        timeout: seconds to wait for the server at each step (connect, each streamed piece).
        retries: further tries after a 429, a 5xx or a refused connection.
        backoff: seconds before the first retry; doubled each time, at most 8 s.
        constraints: how output constraints are sent: ``auto`` (detected from the
            server's model list) or a dialect of ``server_dialects.DIALECTS``.
        check: contact the server now (models present?) instead of at first use.
        end_marker: the end-of-turn text, sent as a stop string.
        role_fields: role name -> extra request fields for that role's requests, e.g.
            llama-server's per-request adapter scales ``{"lora": [{"id": 0, "scale": 1}]}``.
    """

    name = "openai"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        role_models: Mapping[str | Role, str] | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        constraints: str = "auto",
        check: bool = False,
        end_marker: str = END_MARKER,
        role_fields: Mapping[str | Role, Mapping[str, Any]] | None = None,
    ) -> None:
        try:
            import openai
        except ImportError as exc:
            raise BackendError(
                'the openai backend needs the openai client: pip install "moragent[openai]"'
            ) from exc
        if constraints not in DIALECTS:
            raise BackendError(
                f"unknown constraints {constraints!r}: expected one of {', '.join(DIALECTS)}"
            )
        if retries < 0 or timeout <= 0:
            raise BackendError("retries must be >= 0 and timeout > 0")
        self.role_models = _role_models(model, role_models)
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.dialect = constraints
        self.end_marker = end_marker
        self.role_fields = {parse_role(r): dict(f) for r, f in (role_fields or {}).items()}
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
            timeout=timeout,
            max_retries=0,  # retried here, with the backoff and messages of this backend
        )
        self._served: list[str] | None = None
        self._tokenize_path: str | None = None
        self._checked = False
        self.reset()
        if check:
            self.check()

    # ------------------------------------------------------------ the server

    @property
    def server_root(self) -> str:
        """The server's root URL (the base URL without its ``/v1``)."""
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    def served_models(self) -> list[str]:
        """The model names the server lists at ``/v1/models``."""
        self._list_models()
        return list(self._served or [])

    def _list_models(self) -> list[str]:
        def fetch() -> list[Any]:
            return list(self._client.models.list())

        try:
            models = self._retrying("listing the models", fetch)
        except BackendError as exc:
            if "404" not in str(exc):
                raise
            logger.info("the server has no /v1/models; role models are not checked")
            return []
        self._served = [str(item.id) for item in models]
        return [str(getattr(item, "owned_by", "") or "") for item in models]

    def check(self) -> None:
        """Contact the server: every role's model must be served; detect the dialect."""
        owners = self._list_models()
        if self.dialect == "auto":
            self.dialect = detect_dialect(owners)
            logger.info("server dialect: %s", self.dialect)
        self._stats.extra["dialect"] = self.dialect
        if self._served:
            for role, name in self.role_models.items():
                if name not in self._served:
                    raise BackendError(self._missing_model(role, name))
        self._checked = True

    def _missing_model(self, role: Role, name: str) -> str:
        served = ", ".join(self._served or []) or "none listed"
        return (
            f"the server at {self.base_url} serves no model {name!r} for the {role.value}; "
            f"it serves: {served}. Pass --role-model {role.value}=NAME with one of these, or "
            "serve it (vLLM: --lora-modules ROLE=PATH; llama_cpp.server: model_alias)"
        )

    # ------------------------------------------------------------ the session

    def reset(self) -> None:
        self.transcript = ""
        self._stats = CacheStats(extra=self._extra())
        self._server_len = 0  # the server's token count of the transcript, if it reported one
        self._role: Role | None = None
        self._sent_chars = 0  # transcript characters the server has seen

    def _extra(self) -> dict[str, Any]:
        return {
            "requests": 0,
            "retries": 0,
            "server_prompt_tokens": 0,
            "cache_reported": False,
            "token_counts": "estimate",
            "dialect": self.dialect,
        }

    @property
    def stats(self) -> CacheStats:
        return self._stats

    def _switch(self, role: Role) -> None:
        if role is not self._role:
            self._role = role
            self._stats.role_switches += 1

    def feed(self, role: Role, text: str) -> int:
        """Append ``text`` to the transcript. Nothing is sent: the server evaluates it with
        the next ``generate``, so this returns 0."""
        self._switch(role)
        self.transcript += text
        return 0

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` from the server's tokenize endpoint, else an estimate."""
        if not self._checked:
            self.check()
        candidates = tokenize_requests(self.dialect, self.role_models[Role.REASONER], text)
        if self._tokenize_path is not None:  # known: that endpoint, or "" for none
            candidates = [c for c in candidates if c[0] == self._tokenize_path]
        for path, body in candidates:
            try:
                reply = self._client.post(self.server_root + path, cast_to=object, body=body)
            except self._openai.APIStatusError:
                continue
            except self._openai.APIConnectionError as exc:
                raise BackendError(self._unreachable(exc)) from exc
            tokens = reply.get("tokens") if isinstance(reply, dict) else None
            if isinstance(tokens, list):
                self._tokenize_path = path
                return len(tokens)
        self._tokenize_path = ""  # none: estimate from now on
        return estimate_tokens(text)

    # ------------------------------------------------------------ generation

    def generate(
        self,
        role: Role,
        prompt: str,
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        constraint: Constraint | None = None,
        on_token: TokenCallback | None = None,
        temperature: float = 0.0,
    ) -> Generation:
        if not self._checked:
            self.check()
        role = parse_role(role)
        self._switch(role)
        began = time.perf_counter()
        sent = self.transcript + prompt
        new_text = sent[self._sent_chars :]  # what the server has not seen yet
        body: dict[str, Any] = {**self.role_fields.get(role, {})}
        body.update(constraint_fields(self.dialect, constraint))
        if self.dialect == "llamacpp":
            body["repeat_penalty"] = 1.0  # as the in-process backend: no penalty
        stops = list(dict.fromkeys([*stop, self.end_marker]))
        request = {
            "model": self.role_models[role],
            "prompt": sent,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stop": stops,
            "stream": True,
            "stream_options": {"include_usage": True},
            "extra_body": body,
        }
        pieces: list[str] = []
        result = self._retrying(
            f"the {role.value}'s completion", lambda: self._stream(role, request, pieces, on_token)
        )
        text, finish, usage = result
        seconds = time.perf_counter() - began
        self.transcript = sent + text
        completion_tokens, new_tokens = self._count(usage, new_text, text, len(pieces))
        self._sent_chars = len(self.transcript)
        self._stats.generated += completion_tokens
        self._stats.model_seconds += seconds
        return Generation(
            text=text,
            prompt_tokens=new_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish,
            model_seconds=seconds,
        )

    def _stream(
        self,
        role: Role,
        request: dict[str, Any],
        pieces: list[str],
        on_token: TokenCallback | None,
    ) -> tuple[str, str, dict[str, Any]]:
        """One streamed request: (text, finish reason, usage and timings the server sent)."""
        stream = self._open(role, request)
        finish: str | None = None
        usage: dict[str, Any] = {}
        chunks = 0
        iterator = iter(stream)
        try:
            while True:
                try:
                    chunk = next(iterator)
                except StopIteration:
                    break
                except (json.JSONDecodeError, self._openai.APIStatusError) as exc:
                    message = f"the server's answer is not a completion stream: {exc}"
                    raise BackendError(message) from exc
                except Exception as exc:  # the connection broke (openai's or httpx's error)
                    cause = exc.__cause__ or exc
                    message = f"the server stopped answering mid-generation ({cause!r})"
                    if pieces:
                        raise BackendError(message) from exc
                    raise _Retryable(message) from exc
                chunks += 1
                usage.update(read_usage(chunk))
                for choice in getattr(chunk, "choices", None) or []:
                    piece = getattr(choice, "text", None) or ""
                    if piece:
                        pieces.append(piece)
                        if on_token is not None:
                            on_token(piece)
                    finish = getattr(choice, "finish_reason", None) or finish
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if chunks == 0:
            raise BackendError(
                f"the server at {self.base_url} answered the {role.value}'s request with no "
                "completion (not an event stream of JSON chunks): is it an OpenAI-compatible "
                "server, and does the base URL end in /v1?"
            )
        if finish is None:
            raise BackendError(
                f"the server's stream for the {role.value} ended before the completion did "
                "(no finish_reason): did the server stop? Check its log"
            )
        return "".join(pieces), "length" if finish == "length" else "stop", usage

    def _open(self, role: Role, request: dict[str, Any]) -> Any:
        """Start the streamed request; map HTTP failures to retries or clear errors."""
        openai = self._openai
        self._stats.extra["requests"] += 1
        try:
            return self._client.completions.create(**request)
        except openai.APITimeoutError as exc:
            raise BackendError(
                f"the server at {self.base_url} did not answer within {self.timeout:g} s: "
                "is it overloaded or stuck? Raise the timeout or check the server"
            ) from exc
        except openai.APIConnectionError as exc:
            raise _Retryable(self._unreachable(exc)) from exc
        except openai.NotFoundError as exc:
            name = request["model"]
            if self._served is not None and name not in self._served:
                raise BackendError(self._missing_model(role, name)) from exc
            raise BackendError(f"the server answered 404 for model {name!r}: {exc}") from exc
        except openai.AuthenticationError as exc:
            raise BackendError(
                f"the server at {self.base_url} refused the API key (401): pass --api-key "
                "or set OPENAI_API_KEY"
            ) from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            detail = error_detail(exc)
            if status == 429 or status >= 500:
                message = f"the server answered {status}: {detail}"
                raise _Retryable(message, retry_after(exc)) from exc
            raise BackendError(f"the server refused the request ({status}): {detail}") from exc

    def _unreachable(self, exc: Exception) -> str:
        cause = exc.__cause__ or exc
        return (
            f"no OpenAI-compatible server answers at {self.base_url} ({cause}): start the server "
            "or pass --base-url (or set OPENAI_BASE_URL)"
        )

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """Run ``call``; on a retryable failure wait (exponential backoff) and try again."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return call()
            except self._openai.APIConnectionError as exc:  # outside _open: listing models
                if isinstance(exc, self._openai.APITimeoutError):
                    raise BackendError(
                        f"the server at {self.base_url} did not answer within {self.timeout:g} s"
                    ) from exc
                failure = _Retryable(self._unreachable(exc))
            except self._openai.APIStatusError as exc:
                if exc.status_code != 429 and exc.status_code < 500:
                    message = f"{what} failed ({exc.status_code}): {error_detail(exc)}"
                    raise BackendError(message) from exc
                failure = _Retryable(f"the server answered {exc.status_code}", retry_after(exc))
            except _Retryable as exc:
                failure = exc
            if attempt == self.retries:
                tries = f"{self.retries + 1} tries" if self.retries else "one try"
                raise BackendError(f"{what} failed after {tries}: {failure}") from None
            wait = min(8.0, failure.wait if failure.wait is not None else delay)
            logger.info("%s: %s; retrying in %.2f s", what, failure, wait)
            self._stats.extra["retries"] += 1
            time.sleep(wait * (1 + 0.1 * random.random()))
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _count(
        self, usage: dict[str, Any], new_text: str, text: str, chunks: int
    ) -> tuple[int, int]:
        """(completion tokens, new prompt tokens) of one request; updates the counters."""
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        if isinstance(prompt_tokens, int) and isinstance(completion_tokens, int):
            self._stats.extra["token_counts"] = "server"
            self._stats.extra["server_prompt_tokens"] += prompt_tokens
            new = max(0, prompt_tokens - self._server_len)
            self._server_len = prompt_tokens + completion_tokens
        else:
            completion_tokens = chunks if chunks else estimate_tokens(text)
            new = estimate_tokens(new_text)
        evaluated = usage.get("evaluated")
        if isinstance(evaluated, int):
            self._stats.extra["cache_reported"] = True
            self._stats.evaluated += evaluated
            self._stats.reevaluated += max(0, evaluated - new)
        else:
            self._stats.evaluated += new
        return completion_tokens, new

    def close(self) -> None:
        self._client.close()


def _role_models(
    model: str | Path | None, role_models: Mapping[str | Role, str] | None
) -> dict[Role, str]:
    """Role -> model name; every role needs one."""
    names = {parse_role(role): str(name) for role, name in (role_models or {}).items() if name}
    for role in ROLES:
        if role not in names and model:
            names[role] = str(model)
    missing = [role.value for role in ROLES if role not in names]
    if missing:
        raise BackendError(
            f"no model name for the {', '.join(missing)}: pass --model NAME for every role, "
            "or --role-model ROLE=NAME for each"
        )
    return names
