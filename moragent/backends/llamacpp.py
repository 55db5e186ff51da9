"""The llama.cpp backend: a quantized GGUF model, one GGUF LoRA per role, one KV cache.

Tokens are fed and sampled here, not through ``Llama.generate``: that call reuses the
longest matching token prefix without knowing which adapter produced it, and so would
break the segment rules. Each role's adapter is loaded once onto the one model
(``llama_adapter_lora_init``) and made active at a role change with
``llama_set_adapters_lora``, which replaces the active set. A switch touches only the
tokens evaluated after it, so the cache of earlier segments stays valid.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from moragent.backends.base import (
    BackendError,
    CacheStats,
    Constraint,
    Generation,
    TokenCallback,
    find_stop,
)
from moragent.backends.llamacpp_safe import load_llama
from moragent.backends.sampling import Sampler, control_tokens
from moragent.grammar import reasoner_gbnf
from moragent.models import resolve_model
from moragent.roles import Role, parse_role

logger = logging.getLogger(__name__)


def _import_llama_cpp():  # noqa: ANN202 - the module itself
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise BackendError(
            "the llama.cpp backend needs llama-cpp-python: `pip install llama-cpp-python`"
        ) from exc
    return llama_cpp


class LlamaCppBackend:
    """A GGUF model in llama.cpp with optional per-role LoRA adapters.

    Args:
        model: GGUF file; None takes the embedded SmolLM2-135M-Instruct.
        adapters: role name -> GGUF LoRA file. Roles without a file run the bare model.
        adapter_scale: user scale of every adapter (llama.cpp multiplies it by alpha/rank).
        n_ctx: context length in tokens (capped at what the model was trained for).
        n_threads: CPU threads; None reads ``MORAGENT_THREADS``, else uses every core.
        seed: sampling seed (sampling is greedy unless a temperature is given).
    """

    name = "llamacpp"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        adapters: Mapping[str | Role, str | Path] | None = None,
        adapter_scale: float = 1.0,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
    ) -> None:
        llama_cpp = _import_llama_cpp()
        self.model_path = resolve_model(model)
        started = time.perf_counter()
        try:
            self.llm = load_llama(self.model_path, n_ctx, n_threads, seed=seed)
        except ValueError as exc:
            raise BackendError(f"llama.cpp could not load {self.model_path}: {exc}") from exc
        n_ctx_train = self.llm._model.n_ctx_train()
        if n_ctx_train > 0 and self.llm.n_ctx() > n_ctx_train:
            logger.info("n_ctx %d exceeds the model's %d", self.llm.n_ctx(), n_ctx_train)
        self.load_seconds = time.perf_counter() - started
        self.seed = seed
        self._llama_cpp = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm._model.model)
        self._adapters: dict[Role, object] = {}
        self._adapter_scale = adapter_scale
        self._piece_buffer = ctypes.create_string_buffer(256)
        self._grammars: dict[str, object] = {}
        #: control tokens that do not end a turn: never sampled (see moragent.backends.sampling)
        self._banned = control_tokens(self._llama_cpp, self._vocab, self.llm.n_vocab())
        for role, path in (adapters or {}).items():
            self._load_adapter(parse_role(role), Path(path))
        self._active: Role | None = None
        self._applied: object | None = None
        self._stats = CacheStats()
        self._high_water = 0
        logger.info("loaded %s in %.2f s", self.model_path.name, self.load_seconds)

    # ------------------------------------------------------------ adapters

    def _load_adapter(self, role: Role, path: Path) -> None:
        if not path.is_file():
            raise BackendError(f"adapter file for role {role.value!r} not found: {path}")
        pointer = self._llama_cpp.llama_adapter_lora_init(self.llm._model.model, str(path).encode())
        if not pointer:
            raise BackendError(
                f"llama.cpp could not load {path} as a LoRA adapter for role {role.value!r} "
                "on this model: is it a GGUF LoRA made for this base model?"
            )
        self._adapters[role] = pointer

    @property
    def adapter_roles(self) -> tuple[Role, ...]:
        """The roles that have an adapter loaded."""
        return tuple(self._adapters)

    def _activate(self, role: Role) -> None:
        """Make ``role``'s adapter the active set (no adapter: the bare model)."""
        if role is self._active:
            return
        self._active = role
        self._stats.role_switches += 1
        wanted = self._adapters.get(role)
        if wanted is self._applied:
            return
        lib = self._llama_cpp
        if wanted is None:
            result = lib.llama_set_adapters_lora(self.llm._ctx.ctx, None, 0, None)
        else:
            pointers = (lib.llama_adapter_lora_p_ctypes * 1)(wanted)
            scales = (ctypes.c_float * 1)(self._adapter_scale)
            result = lib.llama_set_adapters_lora(self.llm._ctx.ctx, pointers, 1, scales)
        if result != 0:
            raise BackendError(f"llama.cpp refused to switch to the {role.value} adapter")
        self._applied = wanted

    # ------------------------------------------------------------ the session

    def reset(self) -> None:
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()
        self._stats = CacheStats()
        self._high_water = 0

    @property
    def stats(self) -> CacheStats:
        return self._stats

    @property
    def n_tokens(self) -> int:
        """Tokens in the session's cache."""
        return int(self.llm.n_tokens)

    def tokenize(self, text: str) -> list[int]:
        """Tokens of ``text`` as they are fed (special tokens parsed, BOS at the start)."""
        add_bos = self.llm.n_tokens == 0
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def feed(self, role: Role, text: str) -> int:
        tokens = self.tokenize(text)
        self._eval(role, tokens)
        return len(tokens)

    def _eval(self, role: Role, tokens: Sequence[int]) -> None:
        if not tokens:
            return
        start = self.llm.n_tokens
        if start + len(tokens) > self.llm.n_ctx():
            raise BackendError(
                f"the transcript is full: {start} + {len(tokens)} tokens exceed the context "
                f"of {self.llm.n_ctx()}; start a new conversation or raise n_ctx"
            )
        self._activate(role)
        began = time.perf_counter()
        self.llm.eval(tokens)
        self._stats.model_seconds += time.perf_counter() - began
        self._stats.evaluated += len(tokens)
        self._stats.reevaluated += max(0, min(self._high_water, start + len(tokens)) - start)
        self._high_water = max(self._high_water, start + len(tokens))

    def _grammar(self, constraint: Constraint) -> tuple[str, str] | None:
        """GBNF text and root rule of a constraint, converted once per distinct constraint."""
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        if constraint.json_schema is not None:
            key = json.dumps(constraint.json_schema, sort_keys=True)
        elif constraint.next_roles:
            key = reasoner_gbnf(constraint.next_roles, constraint.max_thought_chars)
        else:
            return None
        grammar = self._grammars.get(key)
        if grammar is None:
            if constraint.json_schema is not None:
                # the call's name before its arguments, as the templates show it, and the
                # arguments in the order the tool declares them (else they go alphabetical)
                try:
                    order = ["name", "arguments", *_property_names(constraint.json_schema)]
                    text = json_schema_to_gbnf(key, prop_order=order)
                except Exception as exc:
                    raise BackendError(f"no grammar for this JSON schema: {exc}") from exc
                text = _STRING_CHAR.sub(lambda _: _JSON_CHAR, text)
                text = text.replace("char*", f"char{{0,{MAX_STRING_CHARS}}}")
            else:
                text = key
            grammar = (text, "root")
            if len(self._grammars) >= 64:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = grammar
        return grammar

    def _sampler(self, constraint: Constraint | None, temperature: float) -> Sampler:
        grammar = self._grammar(constraint) if constraint is not None else None
        try:
            return Sampler(
                self._llama_cpp,
                self._vocab,
                self.llm.n_vocab(),
                grammar,
                temperature=temperature,
                seed=self.seed,
                banned=self._banned,
            )
        except ValueError as exc:
            raise BackendError(f"llama.cpp could not use the output constraint: {exc}") from exc

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
        began = time.perf_counter()
        prompt_tokens = self.tokenize(prompt) if prompt else []
        self._eval(role, prompt_tokens)
        sampler = self._sampler(constraint, temperature)
        try:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            text, ends, finish = "", [], "length"
            start = self.llm.n_tokens
            for _ in range(max_tokens):
                sampled = time.perf_counter()
                token = sampler.sample(self.llm._ctx.ctx)
                self._stats.model_seconds += time.perf_counter() - sampled
                if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    break
                piece = decoder.decode(self._piece(token))
                cut = find_stop(text + piece, stop, len(text))
                if cut is not None:
                    combined = text + piece
                    self._roll_back(role, start, ends, combined, cut)
                    if on_token and cut > len(text):
                        on_token(combined[len(text) : cut])
                    text, finish = combined[:cut], "stop"
                    break
                text += piece
                ends.append(len(text))
                if on_token and piece:
                    on_token(piece)
                if self.llm.n_tokens + 1 > self.llm.n_ctx():
                    break
                self._eval(role, [token])
        finally:
            sampler.close()
        self._stats.generated += len(ends)
        return Generation(
            text=text,
            prompt_tokens=len(prompt_tokens),
            completion_tokens=len(ends),
            finish_reason=finish,
            model_seconds=time.perf_counter() - began,
        )

    def _piece(self, token: int) -> bytes:
        """The bytes of one token (control tokens render as nothing)."""
        n = self._llama_cpp.llama_token_to_piece(
            self._vocab, token, self._piece_buffer, len(self._piece_buffer), 0, False
        )
        return bytes(self._piece_buffer[:n]) if n > 0 else b""

    def _roll_back(self, role: Role, start: int, ends: list[int], text: str, cut: int) -> None:
        """Drop cached tokens past a stop string; re-feed the text of a token it cut in two.

        ``text`` is the generated text including the sampled token that is not evaluated yet.
        """
        keep = sum(1 for end in ends if end <= cut)
        kept_chars = ends[keep - 1] if keep else 0
        self.llm.n_tokens = start + keep
        self.llm._ctx.kv_cache_seq_rm(-1, self.llm.n_tokens, -1)
        rest = text[kept_chars:cut]
        if rest:
            self._eval(role, self.llm.tokenize(rest.encode(), add_bos=False, special=False))

    def close(self) -> None:
        self.llm.close()


#: longest JSON string the executor may write: a small model that loses its way inside a
#: string would otherwise write until its token limit and leave the call unparseable
MAX_STRING_CHARS = 200

#: the converter bundled with llama-cpp-python lets raw control characters (a newline)
#: into JSON strings, which JSON forbids; this is the rule as JSON defines it
_STRING_CHAR = re.compile(r"^char ::= .*$", re.MULTILINE)
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def _property_names(schema: object) -> list[str]:
    """Every property name in ``schema``, in the order the schema declares them."""
    names: dict[str, None] = {}

    def visit(node: object) -> None:
        if isinstance(node, dict):
            properties = node.get("properties")
            if isinstance(properties, dict):
                names.update(dict.fromkeys(properties))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(schema)
    return list(names)
