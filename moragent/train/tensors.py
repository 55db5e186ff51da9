"""Trajectories -> training tensors: token ids, per-token role ids, labels.

Each trajectory becomes one sequence (DESIGN.md section 2). Its segments are tokenized
one by one, exactly as the controller feeds them at inference: special tokens parsed,
the tokenizer's own BOS (if it adds one) on the first segment only. Every token of a
segment carries the segment's role id; labels are the token ids on trainable segments
(what a role generates) and ``-100`` everywhere else, so only those tokens carry a loss.

A sequence longer than ``max_length`` is cut at a segment boundary: whole segments are
kept from the start while they fit, and the cut ones are counted in ``EncodeStats``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from moragent.prompts import DEFAULT_PROMPTS, Prompts
from moragent.roles import ROLE_NAMES
from moragent.trajectory import Trajectory

logger = logging.getLogger(__name__)

#: the label of a token without a loss (PyTorch's cross-entropy ``ignore_index``)
IGNORE_INDEX = -100


@dataclass
class Encoded:
    """One trajectory as tensors' worth of lists, all of the same length."""

    input_ids: list[int]
    role_ids: list[int]
    labels: list[int]
    cut: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trainable_tokens(self) -> int:
        """Tokens that carry a loss."""
        return sum(label != IGNORE_INDEX for label in self.labels)


@dataclass
class EncodeStats:
    """What encoding a set of trajectories did.

    Attributes:
        sequences: trajectories encoded and kept.
        cut: sequences cut at a segment boundary to fit ``max_length``.
        dropped: trajectories left out because not even their first generated turn fits.
        tokens: tokens of the kept sequences.
        trainable: tokens with a loss, per role name.
    """

    sequences: int = 0
    cut: int = 0
    dropped: int = 0
    tokens: int = 0
    trainable: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLE_NAMES, 0))


def _tokenize(tokenizer: Any, text: str, first: bool) -> list[int]:
    """Token ids of one segment; special tokens in the text are parsed, BOS only when first."""
    return list(tokenizer(text, add_special_tokens=first)["input_ids"])


def encode_trajectory(
    trajectory: Trajectory,
    tokenizer: Any,
    max_length: int | None = None,
    prompts: Prompts = DEFAULT_PROMPTS,
    roles: Sequence[str] = ROLE_NAMES,
) -> Encoded | None:
    """Encode one trajectory; ``None`` when not even its first generated turn fits.

    Args:
        trajectory: the episode.
        tokenizer: a transformers tokenizer of the base model.
        max_length: the longest sequence to keep, in tokens (``None``: no limit).
        prompts: the templates that render the segments.
        roles: role names; a role id is the index of the segment's role here.
    """
    ids: list[int] = []
    role_ids: list[int] = []
    labels: list[int] = []
    cut = False
    for number, segment in enumerate(prompts.segments(trajectory)):
        tokens = _tokenize(tokenizer, segment.text, first=number == 0)
        if max_length is not None and len(ids) + len(tokens) > max_length:
            cut = True
            break
        role_id = list(roles).index(segment.role.value)
        ids += tokens
        role_ids += [role_id] * len(tokens)
        labels += tokens if segment.trainable else [IGNORE_INDEX] * len(tokens)
    if cut:
        # keep whole turns: drop a trailing header (or observation) whose body was cut
        while labels and labels[-1] == IGNORE_INDEX:
            ids.pop()
            role_ids.pop()
            labels.pop()
    if not any(label != IGNORE_INDEX for label in labels):
        return None
    return Encoded(ids, role_ids, labels, cut)


def encode_all(
    trajectories: Iterable[Trajectory],
    tokenizer: Any,
    max_length: int | None = None,
    prompts: Prompts = DEFAULT_PROMPTS,
    roles: Sequence[str] = ROLE_NAMES,
) -> tuple[list[Encoded], EncodeStats]:
    """Encode every trajectory; returns the kept sequences and what was cut or dropped."""
    stats = EncodeStats(trainable=dict.fromkeys(roles, 0))
    kept: list[Encoded] = []
    for trajectory in trajectories:
        encoded = encode_trajectory(trajectory, tokenizer, max_length, prompts, roles)
        if encoded is None:
            stats.dropped += 1
            continue
        kept.append(encoded)
        stats.sequences += 1
        stats.cut += int(encoded.cut)
        stats.tokens += len(encoded)
        for role_id, label in zip(encoded.role_ids, encoded.labels, strict=True):
            if label != IGNORE_INDEX:
                stats.trainable[roles[role_id]] += 1
    if stats.cut or stats.dropped:
        logger.info(
            "%d of %d sequences cut at a segment boundary to fit %s tokens; %d dropped",
            stats.cut,
            stats.sequences + stats.dropped,
            max_length,
            stats.dropped,
        )
    return kept, stats


class EncodedDataset(torch.utils.data.Dataset):
    """Encoded trajectories as a map-style dataset of dicts of lists (for ``RoleCollator``)."""

    def __init__(self, items: Sequence[Encoded]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        item = self.items[index]
        return {"input_ids": item.input_ids, "role_ids": item.role_ids, "labels": item.labels}


@dataclass
class RoleCollator:
    """Pads a batch on the right: ``input_ids``, ``attention_mask``, ``role_ids``, ``labels``.

    Padding tokens get role 0 (role ids must be valid indices; the attention mask hides
    them) and label ``-100``.
    """

    pad_token_id: int

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(feature["input_ids"]) for feature in features)
        batch: dict[str, list[list[int]]] = {
            "input_ids": [],
            "attention_mask": [],
            "role_ids": [],
            "labels": [],
        }
        for feature in features:
            pad = length - len(feature["input_ids"])
            batch["input_ids"].append(list(feature["input_ids"]) + [self.pad_token_id] * pad)
            batch["attention_mask"].append([1] * len(feature["input_ids"]) + [0] * pad)
            batch["role_ids"].append(list(feature["role_ids"]) + [0] * pad)
            batch["labels"].append(list(feature["labels"]) + [IGNORE_INDEX] * pad)
        return {key: torch.tensor(rows, dtype=torch.long) for key, rows in batch.items()}
