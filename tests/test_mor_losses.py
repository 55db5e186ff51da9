"""The MoR auxiliary losses on hand-computed cases."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from moragent.mor import load_balancing_loss, make_role_batch, orthogonality_loss  # noqa: E402

pytestmark = pytest.mark.torch


def test_load_balancing_top1_by_hand() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    # top-1: experts 0 and 1 -> f = [1/2, 1/2, 0]; P = [0.4, 0.4, 0.2]
    # 3 * (0.5 * 0.4 + 0.5 * 0.4 + 0) = 1.2
    assert load_balancing_loss(probs, top_k=1).item() == pytest.approx(1.2)


def test_load_balancing_top2_by_hand() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.6, 0.1, 0.3]])
    # top-2 picks {0,1}, {2,1}, {0,2}: counts [2, 2, 2] of 6 slots -> f = 1/3 each
    # P = [1.2/3, 0.7/3, 1.1/3]; 3 * (1/3) * (3.0/3) = 1.0
    assert load_balancing_loss(probs, top_k=2).item() == pytest.approx(1.0)


def test_load_balancing_collapsed_router_scores_the_number_of_experts() -> None:
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 5)
    assert load_balancing_loss(probs, top_k=1).item() == pytest.approx(4.0)


def test_load_balancing_has_gradient_through_the_mean_probabilities() -> None:
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0]], requires_grad=True)
    load_balancing_loss(torch.softmax(logits, -1), top_k=1).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_load_balancing_of_no_tokens_is_zero() -> None:
    assert load_balancing_loss(torch.zeros(0, 3), top_k=1).item() == 0.0


def test_orthogonality_rank1_three_experts_by_hand() -> None:
    a = torch.tensor([[[1.0, 0.0, 0.0]], [[1.0, 1.0, 0.0]], [[0.0, 1.0, 1.0]]])  # 3 x 1 x 3
    b = torch.tensor([[[1.0], [0.0]], [[2.0], [0.0]], [[0.0], [1.0]]])  # 3 x 2 x 1
    # A: a0.a1 = 1, a0.a2 = 0, a1.a2 = 1 -> 1 + 0 + 1 = 2
    # B: b0.b1 = 2, b0.b2 = 0, b1.b2 = 0 -> 4
    assert orthogonality_loss(a, b).item() == pytest.approx(6.0)


def test_orthogonality_rank2_uses_the_frobenius_norm_of_the_cross_gram() -> None:
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [3.0, 4.0]]])  # 2 x 2 x 2
    b = torch.zeros(2, 5, 2)
    # A_0 A_1^T = A_1^T = [[1, 3], [2, 4]] -> 1 + 9 + 4 + 16 = 30
    assert orthogonality_loss(a, b).item() == pytest.approx(30.0)


def test_orthogonality_ignores_each_experts_own_gram() -> None:
    a = torch.tensor([[[3.0, 0.0]], [[0.0, 5.0]]])
    b = torch.tensor([[[7.0], [0.0]], [[0.0], [2.0]]])
    assert orthogonality_loss(a, b).item() == 0.0


def test_role_batch_groups_positions_per_role() -> None:
    role_ids = torch.tensor([[0, 2, 2], [1, 0, 2]])
    batch = make_role_batch(role_ids, (2, 3), num_roles=3)
    assert [p.tolist() for p in batch.positions] == [[0, 4], [3], [1, 2, 5]]
    assert batch.num_tokens == 6
