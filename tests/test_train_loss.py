"""The training loss from kept logits equals the model's own loss, in value and gradient."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from test_mor import adapted, random_inputs  # noqa: E402

from moragent.train.tensors import IGNORE_INDEX  # noqa: E402
from moragent.train.trainer import kept_token_loss, labelled_positions  # noqa: E402

pytestmark = pytest.mark.torch


def labels_for(ids: torch.Tensor) -> torch.Tensor:
    """Labels on about half of the tokens, none on the first (as for a system prompt)."""
    labels = ids.clone()
    labels[:, :3] = IGNORE_INDEX
    labels[:, 5:8] = IGNORE_INDEX
    labels[1, 9:] = IGNORE_INDEX
    return labels


def test_labelled_positions_are_the_ones_before_a_label() -> None:
    labels = torch.tensor([[IGNORE_INDEX, 4, IGNORE_INDEX, 7, 8]])
    assert labelled_positions(labels).tolist() == [[True, False, True, True, False]]


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
@pytest.mark.parametrize("num_items", [None, 11])
def test_kept_token_loss_equals_the_models_own_loss(kind: str, num_items: int | None) -> None:
    model = adapted(kind)
    ids, role_ids = random_inputs()
    labels = labels_for(ids)
    extra = {} if num_items is None else {"num_items_in_batch": num_items}

    full = model(input_ids=ids, role_ids=role_ids, labels=labels, **extra).loss
    full.backward()
    full_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    kept_outputs = model(
        input_ids=ids, role_ids=role_ids, logits_to_keep=labelled_positions(labels)
    )
    assert kept_outputs.logits.shape[0] == int((labels[:, 1:] != IGNORE_INDEX).sum())
    kept = kept_token_loss(kept_outputs, labels, **extra)
    kept.backward()

    torch.testing.assert_close(kept, full, rtol=1e-6, atol=1e-6)
    assert full_grads
    for name, grad in full_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad)
