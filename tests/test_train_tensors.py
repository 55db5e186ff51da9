"""Trajectories -> tensors: labels on generated tokens only, role ids per segment, cuts."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_train_support import tiny_base_dir, trajectory  # noqa: E402

from moragent.prompts import DEFAULT_PROMPTS  # noqa: E402
from moragent.roles import ROLE_NAMES, Role  # noqa: E402
from moragent.train.tensors import (  # noqa: E402
    IGNORE_INDEX,
    RoleCollator,
    encode_all,
    encode_trajectory,
)
from moragent.train.trainer import role_token_losses  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(tiny_base_dir())


def segment_tokens(tokenizer, episode):
    segments = DEFAULT_PROMPTS.segments(episode)
    return segments, [
        tokenizer(s.text, add_special_tokens=i == 0)["input_ids"] for i, s in enumerate(segments)
    ]


def test_tokens_are_the_segments_fed_one_by_one(tokenizer) -> None:
    episode = trajectory(3, 4)
    encoded = encode_trajectory(episode, tokenizer)
    _, pieces = segment_tokens(tokenizer, episode)
    assert encoded.input_ids == [token for piece in pieces for token in piece]
    # special tokens are parsed: the transcript opens with <|im_start|> as one token
    assert encoded.input_ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert not encoded.cut


def test_labels_only_on_generated_tokens(tokenizer) -> None:
    episode = trajectory(3, 4)
    encoded = encode_trajectory(episode, tokenizer)
    segments, pieces = segment_tokens(tokenizer, episode)
    expected = [
        token if segment.trainable else IGNORE_INDEX
        for segment, piece in zip(segments, pieces, strict=True)
        for token in piece
    ]
    assert encoded.labels == expected
    trained = tokenizer.decode([label for label in encoded.labels if label != IGNORE_INDEX])
    assert trained == "".join(s.text for s in segments if s.trainable)
    assert '{"name": "add", "arguments": {"a": 3, "b": 4}}<|im_end|>' in trained
    assert "Tools you can call" not in trained and "[executor]" not in trained


def test_role_ids_follow_the_segments(tokenizer) -> None:
    episode = trajectory(3, 4)
    encoded = encode_trajectory(episode, tokenizer)
    segments, pieces = segment_tokens(tokenizer, episode)
    expected = [
        ROLE_NAMES.index(s.role.value) for s, piece in zip(segments, pieces, strict=True)
        for _ in piece
    ]  # fmt: skip
    assert encoded.role_ids == expected
    roles = [s.role for s in segments]
    assert (
        roles
        == [Role.REASONER] * 3 + [Role.EXECUTOR] * 2 + [Role.REASONER] * 3 + [Role.SUMMARIZER] * 2
    )
    assert set(encoded.role_ids) == {0, 1, 2}


def test_long_sequences_are_cut_between_turns(tokenizer) -> None:
    episode = trajectory(3, 4)
    segments, pieces = segment_tokens(tokenizer, episode)
    full = sum(len(piece) for piece in pieces)
    # room for everything but the last summarizer body: the summarizer header goes too
    limit = full - len(pieces[-1]) + 1
    encoded = encode_trajectory(episode, tokenizer, max_length=limit)
    assert encoded.cut
    kept = sum(len(piece) for piece in pieces[:-2])
    assert len(encoded) == kept <= limit
    assert encoded.input_ids == [t for piece in pieces[:-2] for t in piece]
    # the sequence ends on the end marker of the second reasoner turn, not inside a turn
    assert encoded.labels[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(encoded.input_ids[-5:]).endswith("Next: summarizer<|im_end|>")


def test_encode_all_counts_cut_and_dropped(tokenizer) -> None:
    episodes = [trajectory(1, 2), trajectory(5, 6, system="x " * 400)]
    _, pieces = segment_tokens(tokenizer, episodes[0])
    limit = sum(len(piece) for piece in pieces) - 3
    items, stats = encode_all(episodes, tokenizer, max_length=limit)
    assert (stats.sequences, stats.cut, stats.dropped) == (1, 1, 1)
    assert len(items) == 1 and items[0].cut
    assert stats.tokens == len(items[0])
    assert stats.trainable["executor"] == sum(
        1 for r, lab in zip(items[0].role_ids, items[0].labels, strict=True)
        if r == 1 and lab != IGNORE_INDEX
    )  # fmt: skip
    assert stats.trainable["summarizer"] == 0  # the answer was cut


def test_collator_pads_on_the_right() -> None:
    collate = RoleCollator(pad_token_id=7)
    batch = collate(
        [
            {"input_ids": [1, 2, 3], "role_ids": [0, 1, 1], "labels": [-100, 2, 3]},
            {"input_ids": [4], "role_ids": [2], "labels": [4]},
        ]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 7, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["role_ids"].tolist() == [[0, 1, 1], [2, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]


def test_role_token_losses_by_hand() -> None:
    # vocabulary of 2; uniform logits give ln 2 per token, confident ones give ~0
    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [20.0, -20.0], [0.0, 0.0]]])
    labels = torch.tensor([[-100, 1, 1, 0]])
    roles = torch.tensor([[0, 1, 2, 1]])
    sums, counts = role_token_losses(logits, labels, roles, 3)
    ln2 = torch.log(torch.tensor(2.0)).item()
    # token 1 (role 1) from uniform logits: ln 2; token 2 (role 2) from uniform: ln 2;
    # token 3 (role 1) from logits favouring 0, label 0: ~0
    assert counts.tolist() == [[0.0, 2.0, 1.0]]
    assert sums[0, 1].item() == pytest.approx(ln2, abs=1e-6)
    assert sums[0, 2].item() == pytest.approx(ln2, abs=1e-6)
