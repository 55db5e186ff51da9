"""Output constraints for the torch backend, enforced by llguidance.

llguidance (the grammar engine behind transformers' and llama.cpp's structured output)
computes, for every decoding step, the set of tokens that keep the output inside a
JSON schema or a regular expression. It has no dependencies of its own, builds its
token tables from the transformers tokenizer once, and costs well under a millisecond
per token on SmolLM2's 49k vocabulary (xgrammar measured about the same, but pulls
triton in as a dependency). Masking is llguidance's own; nothing here edits logits.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import torch

from moragent.backends.base import BackendError, Constraint
from moragent.grammar import reasoner_regex

logger = logging.getLogger(__name__)

#: longest JSON string the executor may write (as in the llama.cpp backend): a small model
#: lost inside a string would otherwise write until its token limit
MAX_STRING_CHARS = 200

#: the JSON layout of ``json.dumps``, which is how the templates render calls
_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _import_llguidance() -> Any:
    try:
        import llguidance
        import llguidance.hf
        import llguidance.numpy
        import llguidance.torch
    except ImportError as exc:
        raise BackendError(
            "output constraints on the torch backend need llguidance: `pip install llguidance`"
        ) from exc
    return llguidance


class Guide:
    """One constrained generation: masks the logits of each step, follows the chosen tokens."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        self._llg = _import_llguidance()
        self._matcher = matcher
        self._mask = self._llg.torch.allocate_token_bitmask(1, vocab_size)

    def mask(self, logits: torch.Tensor) -> None:
        """Set the logits of tokens the constraint forbids to -inf (``logits``: 1 x vocab)."""
        self._llg.torch.fill_next_token_bitmask(self._matcher, self._mask, 0)
        self._check()
        if logits.device.type == "cpu":
            # llguidance's torch kernel is torch.compile'd: seconds of compiling on the
            # first call of a process on a CPU, where its numpy kernel needs none
            self._llg.numpy.apply_token_bitmask_inplace(logits.numpy(), self._mask.numpy())
        else:
            self._llg.torch.apply_token_bitmask_inplace(logits, self._mask.to(logits.device))

    def advance(self, token: int) -> None:
        """Move the constraint past ``token``."""
        self._matcher.consume_token(token)
        self._check()

    def _check(self) -> None:
        if self._matcher.is_error():
            raise BackendError(f"the output constraint failed: {self._matcher.get_error()}")


class Constraints:
    """Builds ``Guide``s for one tokenizer; grammars are converted once per constraint.

    Args:
        tokenizer: the transformers (fast) tokenizer of the model.
        vocab_size: the model's logits width (may exceed the tokenizer's length).
        end_token: the token that ends a turn (allowed once the output is complete).
    """

    def __init__(self, tokenizer: Any, vocab_size: int, end_token: int) -> None:
        self._llg = _import_llguidance()
        self.vocab_size = vocab_size
        try:
            self._tokenizer = self._llg.hf.from_tokenizer(
                tokenizer, n_vocab=vocab_size, eos_token=end_token
            )
        except Exception as exc:  # llguidance raises plain errors for unusable tokenizers
            raise BackendError(
                f"llguidance cannot use this tokenizer ({exc}): output constraints need a "
                "fast (tokenizer.json) transformers tokenizer"
            ) from exc
        self._grammars: dict[str, str] = {}

    def guide(self, constraint: Constraint) -> Guide | None:
        """A fresh ``Guide`` for ``constraint``, or None when it constrains nothing."""
        grammar = self._grammar(constraint)
        if grammar is None:
            return None
        matcher = self._llg.LLMatcher(self._tokenizer, grammar)
        if matcher.is_error():
            raise BackendError(f"llguidance refused the output constraint: {matcher.get_error()}")
        return Guide(matcher, self.vocab_size)

    def _grammar(self, constraint: Constraint) -> str | None:
        if constraint.json_schema is not None:
            key = "json:" + json.dumps(constraint.json_schema, sort_keys=True)
        elif constraint.next_roles:
            key = f"reasoner:{constraint.next_roles}:{constraint.max_thought_chars}"
        else:
            return None
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = self._convert(constraint)
            if len(self._grammars) >= 64:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = grammar
        return grammar

    def _convert(self, constraint: Constraint) -> str:
        matcher_cls = self._llg.LLMatcher
        if constraint.json_schema is not None:
            schema = bounded_strings(constraint.json_schema)
            schema["x-guidance"] = dict(_LAYOUT)
            grammar = matcher_cls.grammar_from_json_schema(json.dumps(schema))
        else:
            regex = reasoner_regex(tuple(constraint.next_roles or ()), constraint.max_thought_chars)
            grammar = matcher_cls.grammar_from_regex(regex)
        problem = matcher_cls.validate_grammar(grammar, self._tokenizer)
        if problem:
            raise BackendError(f"llguidance cannot use this output constraint: {problem}")
        return grammar


def bounded_strings(schema: dict[str, Any], limit: int = MAX_STRING_CHARS) -> dict[str, Any]:
    """A copy of ``schema`` whose free strings (no length, pattern, enum or const) get ``limit``."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        free = not any(key in node for key in ("maxLength", "pattern", "enum", "const", "format"))
        if "string" in kinds and free:
            node["maxLength"] = limit
        for value in node.values():
            if isinstance(value, (dict, list)):
                visit(value)

    visit(schema)
    return schema
