"""Token sampling for the llama.cpp backend, with a grammar checked lazily.

Applying a grammar to every candidate of a 49k-token vocabulary costs more than the
model's own decode step on a small model. Most of the time the model's first choice is
already legal, so (as llama.cpp's own common sampler does) the chosen token is checked
against the grammar alone first, and the grammar is applied to the whole vocabulary only
when that token is rejected. The result is the same as applying the grammar first.

Control tokens that do not end the turn (``<|im_start|>``, a model's file and repo
markers) are never sampled: llama.cpp's grammar checks a token by its text with special
tokens spelled out, so ``<|im_start|>`` passes as the characters of a JSON string, and
the model, once it has written one, writes a chat header into the argument (an
expression came out as ``"}}usersystemuser..."``, the control tokens themselves
rendering as nothing).
"""

from __future__ import annotations

import ctypes
import math

import numpy as np


def control_tokens(lib, vocab: object, n_vocab: int) -> np.ndarray:  # noqa: ANN001
    """Ids of the vocabulary's control tokens that do not end generation."""
    return np.array(
        [
            token
            for token in range(n_vocab)
            if lib.llama_vocab_is_control(vocab, token) and not lib.llama_vocab_is_eog(vocab, token)
        ],
        dtype=np.int64,
    )


class Sampler:
    """Greedy or temperature sampling from the context's last logits, optionally constrained.

    Args:
        lib: the ``llama_cpp`` module.
        vocab: the model's vocabulary pointer.
        n_vocab: vocabulary size.
        grammar: (GBNF text, root rule) or None.
        temperature: 0 for greedy.
        seed: RNG seed for temperature sampling.
        banned: token ids never to sample (see :func:`control_tokens`).
    """

    def __init__(
        self,
        lib,  # noqa: ANN001 - the llama_cpp module
        vocab: object,
        n_vocab: int,
        grammar: tuple[str, str] | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        top_k: int = 40,
        banned: np.ndarray | None = None,
    ) -> None:
        self.lib = lib
        self.banned = banned if banned is not None and len(banned) else None
        self.n_vocab = n_vocab
        self.temperature = temperature
        self.top_k = top_k
        self.rng = np.random.default_rng(seed)
        self.grammar = None
        self.full_checks = 0  # how often the whole vocabulary had to be checked
        if grammar is not None:
            text, root = grammar
            self.grammar = lib.llama_sampler_init_grammar(vocab, text.encode(), root.encode())
            if not self.grammar:
                raise ValueError("llama.cpp rejected the grammar")
            self._one = (lib.llama_token_data * 1)()
            self._one_array = lib.llama_token_data_array(self._one, 1, -1, False)
            self._all = (lib.llama_token_data * n_vocab)()
            self._all_array = lib.llama_token_data_array(self._all, n_vocab, -1, False)
            self._all_view = np.ctypeslib.as_array(self._all)
            self._ids = np.arange(n_vocab, dtype=np.int32)

    def sample(self, ctx: object) -> int:
        """Choose the next token from the logits of the last evaluated position."""
        pointer = self.lib.llama_get_logits_ith(ctx, -1)
        return self.pick(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)))

    def pick(self, logits: np.ndarray) -> int:
        """Choose the next token from ``logits`` (left unchanged) and advance the grammar."""
        if self.banned is not None:
            logits = logits.copy()
            logits[self.banned] = -np.inf
        token = self._choose(logits)
        if self.grammar is not None:
            if not self._allowed(token, float(logits[token])):
                self.full_checks += 1
                token = self._choose(self._constrained(logits))
            self.lib.llama_sampler_accept(self.grammar, token)
        return token

    def _choose(self, logits: np.ndarray) -> int:
        if self.temperature <= 0:
            return int(np.argmax(logits))
        k = min(self.top_k, int(np.isfinite(logits).sum()) or 1)
        top = np.argpartition(-logits, k - 1)[:k]
        scaled = logits[top] / self.temperature
        weights = np.exp(scaled - scaled.max())
        return int(top[self.rng.choice(k, p=weights / weights.sum())])

    def _allowed(self, token: int, logit: float) -> bool:
        self._one[0].id = token
        self._one[0].logit = logit
        self._one[0].p = 0.0
        self._one_array.size = 1
        self._one_array.selected = -1
        self.lib.llama_sampler_apply(self.grammar, ctypes.byref(self._one_array))
        return not math.isinf(self._one[0].logit)

    def _constrained(self, logits: np.ndarray) -> np.ndarray:
        view = self._all_view
        view["id"] = self._ids
        view["logit"] = logits
        view["p"] = 0.0
        self._all_array.size = self.n_vocab
        self._all_array.selected = -1
        self._all_array.sorted = False
        self.lib.llama_sampler_apply(self.grammar, ctypes.byref(self._all_array))
        masked = np.full(self.n_vocab, -np.inf, dtype=np.float32)
        masked[view["id"]] = view["logit"]
        if not np.isfinite(masked).any():
            raise ValueError("the grammar allows no next token")
        return masked

    def close(self) -> None:
        if self.grammar is not None:
            self.lib.llama_sampler_free(self.grammar)
            self.grammar = None

    def __del__(self) -> None:
        self.close()
