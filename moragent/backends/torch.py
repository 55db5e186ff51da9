"""The torch backend: a transformers model with MoR role adapters, one growing KV cache.

A session is one token sequence and its ``DynamicCache``. ``feed`` runs new tokens
through the model once, each with the role id of the role it was fed under (the role's
index in the adapter config's roles), and appends them to the cache. ``generate`` feeds
the prompt the same way, then decodes token by token, every sampled token evaluated
under the generating role. Earlier tokens are never run again: a role switch only
changes the role ids of the tokens that follow (DESIGN.md section 2).

Output constraints (a JSON schema for the executor, the reasoner's language) are
enforced by llguidance (``torch_constraints``).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from moragent.backends.base import (
    BackendError,
    CacheStats,
    Constraint,
    Generation,
    TokenCallback,
    find_stop,
)
from moragent.backends.torch_constraints import Constraints
from moragent.backends.torch_load import (
    adapter_folder,
    load_adapters,
    load_model,
    model_folder,
    pick_device,
    pick_dtype,
)
from moragent.models import default_gguf
from moragent.roles import Role

logger = logging.getLogger(__name__)

#: the turn's end marker of the templates; generating it ends a turn
END_MARKER = "<|im_end|>"


class TorchBackend:
    """A transformers model, optionally with MoR role adapters, decoded with a KV cache.

    Args:
        model: a transformers model folder or a GGUF file (dequantized once, then loaded
            from the cache); None takes the embedded SmolLM2-135M-Instruct GGUF.
        adapters: a folder of MoR adapters saved by PEFT; None runs the bare model.
        device: "cuda", "mps", "cpu" or a ``torch.device``; None picks the first available.
        dtype: "float32", "bfloat16", "float16" or a ``torch.dtype``; None picks bfloat16
            on a GPU that has it and float32 on the CPU (faster there for decoding).
        cache_dir: where converted GGUF models are kept (default ``~/.cache/moragent``).
        seed: sampling seed (sampling is greedy unless a temperature is given).
    """

    name = "torch"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        adapters: str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        cache_dir: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        if isinstance(adapters, dict):
            raise BackendError(
                "the torch backend takes one folder of MoR adapters (saved by PEFT), not a "
                "role -> file mapping (that form is for llama.cpp GGUF adapters)"
            )
        if adapters is not None:
            adapter_folder(adapters)  # before the slow part: a wrong folder fails at once
        started = time.perf_counter()
        self.model_path = default_gguf() if model is None else Path(model).expanduser()
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        folder = model_folder(self.model_path, cache_dir)
        self.model, self.tokenizer = load_model(folder, self.device, self.dtype)
        self.roles: list[str] | None = None
        if adapters is not None:
            self.model, self.roles = load_adapters(self.model, adapters, self.model_path)
        self.load_seconds = time.perf_counter() - started
        logger.info(
            "loaded %s%s on %s as %s in %.2f s",
            self.model_path.name,
            f" with MoR adapters for {', '.join(self.roles)}" if self.roles else "",
            self.device,
            str(self.dtype).removeprefix("torch."),
            self.load_seconds,
        )

        config = self.model.config
        self.vocab_size = int(config.get_text_config().vocab_size)
        self.n_ctx = int(getattr(config.get_text_config(), "max_position_embeddings", 8192))
        self.end_tokens = self._end_tokens()
        self._end_token = self._token_id(END_MARKER)
        # a vocabulary without an <|im_end|> token writes it as text: stop there
        self._end_stop: tuple[str, ...] = () if self._end_token is not None else (END_MARKER,)
        if self._end_token is None:
            self._end_token = min(self.end_tokens)
        self._cache_arg = _cache_argument(self.model)
        self._constraints: Constraints | None = None
        self._generator = torch.Generator(device="cpu").manual_seed(seed)
        self.seed = seed
        self.reset()

    # ------------------------------------------------------------ tokens

    def _token_id(self, text: str) -> int | None:
        """The id of ``text`` when it is one token of the vocabulary."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    def _end_tokens(self) -> set[int]:
        """Tokens that end a turn: the model's end-of-sequence ids and ``<|im_end|>``."""
        ends: set[int] = set()
        for source in (self.tokenizer, getattr(self.model, "generation_config", None)):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                ends.add(value)
            elif isinstance(value, (list, tuple)):
                ends.update(int(v) for v in value)
        marker = self._token_id(END_MARKER)
        if marker is not None:
            ends.add(marker)
        if not ends:
            raise BackendError(
                "the tokenizer names no end-of-sequence token and has no <|im_end|> token: "
                "generation could never end a turn"
            )
        return ends

    def tokenize(self, text: str) -> list[int]:
        """Tokens of ``text`` as they are fed (special tokens parsed, BOS at session start)."""
        return list(self.tokenizer.encode(text, add_special_tokens=not self._ids))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    @property
    def token_ids(self) -> list[int]:
        """The session's tokens, as held in the cache."""
        return list(self._ids)

    @property
    def n_tokens(self) -> int:
        """Tokens in the session's cache."""
        return len(self._ids)

    # ------------------------------------------------------------ the session

    def reset(self) -> None:
        self._ids: list[int] = []
        self._roles: list[Role] = []
        self._cache: Any = None
        self._active: Role | None = None
        self._high_water = 0
        #: logits (float32, 1 x vocab) after the last evaluated token
        self.last_logits: torch.Tensor | None = None
        self._stats = CacheStats()

    @property
    def stats(self) -> CacheStats:
        return self._stats

    def role_index(self, role: Role) -> int | None:
        """The adapter's index of ``role`` (None for the bare model)."""
        if self.roles is None:
            return None
        if role.value not in self.roles:
            raise BackendError(
                f"the adapters have no role {role.value!r} (their roles: "
                f"{', '.join(self.roles)}): load adapters trained for the agent's roles"
            )
        return self.roles.index(role.value)

    def feed(self, role: Role, text: str) -> int:
        tokens = self.tokenize(text)
        self._eval(role, tokens)
        return len(tokens)

    def _eval(self, role: Role, tokens: Sequence[int]) -> None:
        """Run ``tokens`` through the model under ``role``, appending them to the cache."""
        if not tokens:
            return
        start = len(self._ids)
        if start + len(tokens) > self.n_ctx:
            raise BackendError(
                f"the transcript is full: {start} + {len(tokens)} tokens exceed the context "
                f"of {self.n_ctx}; start a new conversation"
            )
        if role is not self._active:
            self._active = role
            self._stats.role_switches += 1
        inputs: dict[str, Any] = {
            "input_ids": torch.tensor([list(tokens)], dtype=torch.long, device=self.device),
            self._cache_arg: self._cache,
            "use_cache": True,
            "logits_to_keep": 1,
        }
        index = self.role_index(role)
        if index is not None:
            inputs["role_ids"] = torch.full_like(inputs["input_ids"], index)
        began = time.perf_counter()
        with torch.inference_mode():
            output = self.model(**inputs)
        self._stats.model_seconds += time.perf_counter() - began
        self._cache = output[self._cache_arg]
        self.last_logits = output.logits[:, -1, :].float()
        self._ids.extend(tokens)
        self._roles.extend([role] * len(tokens))
        self._stats.evaluated += len(tokens)
        self._stats.reevaluated += max(0, min(self._high_water, start + len(tokens)) - start)
        self._high_water = max(self._high_water, start + len(tokens))

    def _truncate(self, length: int) -> None:
        """Drop every token past ``length`` from the session and its cache."""
        if length >= len(self._ids):
            return
        try:
            # a negative count removes that many tokens, in every transformers version
            self._cache.crop(length - len(self._ids))
        except (AttributeError, NotImplementedError, RuntimeError, ValueError) as exc:
            raise BackendError(
                f"this model's cache ({type(self._cache).__name__}) cannot drop tokens, so a "
                f"stop string inside generated text cannot be removed ({exc}); generate "
                "without stop strings"
            ) from exc
        del self._ids[length:]
        del self._roles[length:]
        self.last_logits = None

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
        began = time.perf_counter()
        prompt_tokens = self.tokenize(prompt) if prompt else []
        self._eval(role, prompt_tokens)
        if self.last_logits is None:
            raise BackendError("nothing to continue: feed text (or give a prompt) first")
        guide = self._guide(constraint)
        stop = (*stop, *self._end_stop)

        start, generated, ends = len(self._ids), [], []
        text, finish = "", "length"
        for _ in range(max_tokens):
            logits = self.last_logits.clone()
            if guide is not None:
                guide.mask(logits)
            token = self._pick(logits, temperature)
            if token in self.end_tokens:
                finish = "stop"
                break
            if guide is not None:
                guide.advance(token)
            generated.append(token)
            combined = self._decode(generated)
            cut = find_stop(combined, stop, len(text))
            if cut is not None:
                self._roll_back(role, start, ends, combined, cut)
                if on_token and cut > len(text):
                    on_token(combined[len(text) : cut])
                text, finish = combined[:cut], "stop"
                break
            piece, text = combined[len(text) :], combined
            ends.append(len(text))
            if on_token and piece:
                on_token(piece)
            if len(self._ids) + 1 > self.n_ctx:
                break
            self._eval(role, [token])

        self._stats.generated += len(ends)
        return Generation(
            text=text,
            prompt_tokens=len(prompt_tokens),
            completion_tokens=len(ends),
            finish_reason=finish,
            model_seconds=time.perf_counter() - began,
        )

    def _guide(self, constraint: Constraint | None) -> Any:
        if constraint is None:
            return None
        if self._constraints is None:
            self._constraints = Constraints(self.tokenizer, self.vocab_size, self._end_token)
        return self._constraints.guide(constraint)

    def _pick(self, logits: torch.Tensor, temperature: float) -> int:
        if temperature <= 0:
            return int(torch.argmax(logits, dim=-1))
        probs = torch.softmax(logits / temperature, dim=-1).cpu()
        return int(torch.multinomial(probs, 1, generator=self._generator))

    def _decode(self, tokens: list[int]) -> str:
        """Text of the generated tokens; an unfinished UTF-8 character is held back."""
        text = self.tokenizer.decode(
            tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return text.rstrip("\ufffd")

    def _roll_back(self, role: Role, start: int, ends: list[int], text: str, cut: int) -> None:
        """Drop cached tokens past a stop string; re-feed the text of a token it cut in two.

        ``text`` includes the last sampled token, which is not evaluated yet.
        """
        keep = sum(1 for end in ends if end <= cut)
        kept_chars = ends[keep - 1] if keep else 0
        self._truncate(start + keep)
        rest = text[kept_chars:cut]
        if rest:
            self._eval(role, self.tokenizer.encode(rest, add_special_tokens=False))
        elif self.last_logits is None and self._ids:
            # the logits of the new last token are gone with the cropped ones: run it again
            last, last_role = self._ids[-1], self._roles[-1]
            self._truncate(len(self._ids) - 1)
            self._eval(last_role, [last])

    def close(self) -> None:
        self._cache = None
        self.last_logits = None
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _cache_argument(model: Any) -> str:
    """The name of the KV cache in the model's forward: ``cache`` in newer transformers."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(inner.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"
