"""The auxiliary losses of the method: load balancing and expert orthogonality.

Training loss: ``CE + aux_loss_coef * L_aux + orth_loss_coef * L_orth`` (``a1 = 1e-3``,
``a2 = 1e-4`` by default, from ``MoRConfig``). ``mor_losses(model)`` collects both
from the latest forward; ``auxiliary_loss(model)`` gives the weighted sum to add.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import nn

from moragent.mor.layer import MoRLayer


def load_balancing_loss(router_probs: torch.Tensor, top_k: int) -> torch.Tensor:
    """Switch-style load-balancing loss of one role group.

    ``E * sum_e f_e * P_e``, with ``f_e`` the share of the top-k slots of the group's
    tokens that go to expert ``e`` and ``P_e`` its mean router probability (before
    top-k). It is 1 when the load is perfectly balanced and up to ``E`` when not.

    Args:
        router_probs: router probabilities of the group's tokens, tokens x experts.
        top_k: experts per token.
    """
    if router_probs.shape[0] == 0:
        return router_probs.new_zeros(())
    return load_balancing_losses(router_probs.unsqueeze(0), top_k)[0]


def load_balancing_losses(router_probs: torch.Tensor, top_k: int) -> torch.Tensor:
    """:func:`load_balancing_loss` of each of ``groups`` at once.

    Args:
        router_probs: groups x tokens x experts (every group with the same, nonzero,
            number of tokens).
        top_k: experts per token, the same for every group.
    """
    groups, tokens, experts = router_probs.shape
    chosen = router_probs.topk(top_k, dim=-1).indices.reshape(groups, -1)
    counts = torch.zeros(groups, experts, dtype=router_probs.dtype, device=router_probs.device)
    counts.scatter_add_(1, chosen, torch.ones_like(chosen, dtype=router_probs.dtype))
    fraction = counts / (tokens * top_k)
    return experts * torch.sum(fraction * router_probs.mean(dim=1), dim=-1)


def orthogonality_loss(lora_a: torch.Tensor, lora_b: torch.Tensor) -> torch.Tensor:
    """``sum_{i<j} ||A_i A_j^T||_F^2 + ||B_i^T B_j||_F^2`` over the experts of one role.

    Args:
        lora_a: the experts' A stacked, experts x r x d_in (PEFT's ``lora_A`` shape each).
        lora_b: the experts' B stacked, experts x d_out x r.
    """
    return orthogonality_losses(lora_a.unsqueeze(0), lora_b.unsqueeze(0))[0]


def orthogonality_losses(lora_a: torch.Tensor, lora_b: torch.Tensor) -> torch.Tensor:
    """:func:`orthogonality_loss` of each of ``groups`` at once, in float32.

    Args:
        lora_a: groups x experts x r x d_in.
        lora_b: groups x experts x d_out x r.
    """
    groups, experts, rank, _ = lora_a.shape
    a = lora_a.float().reshape(groups, experts * rank, -1)
    b = lora_b.float().transpose(2, 3).reshape(groups, experts * rank, -1)
    total = lora_a.new_zeros(groups, dtype=torch.float32)
    upper = torch.ones(experts, experts, device=lora_a.device).triu(diagonal=1)
    for flat in (a, b):
        gram = (flat @ flat.transpose(1, 2)).reshape(groups, experts, rank, experts, rank)
        squares = gram.pow(2).sum(dim=(2, 4))  # groups x experts x experts block norms
        total = total + (squares * upper).sum(dim=(1, 2))
    return total


def mor_losses(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(load balancing, orthogonality) of the latest forward, each a mean over groups.

    A group is one role of one adapted module. Only groups whose role had tokens in the
    latest forward and that route (more than one expert) count, so no gradient reaches
    the experts of absent roles. Both are zero for the ``lora`` method.

    Groups of the same shape (the same role in modules of the same size) are computed
    together: a model has hundreds of groups, and one small loss each made the losses
    cost about a sixth of a CPU training step.
    """
    balance: dict[tuple[Any, ...], list[torch.Tensor]] = defaultdict(list)
    experts: dict[tuple[Any, ...], list[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)
    for module in model.modules():
        if not isinstance(module, MoRLayer):
            continue
        for adapter_name, groups in module.router_probs.items():
            config = module.mor_config[adapter_name]
            for role, probs in groups.items():
                if probs.shape[0] > 0:
                    key = (config.top_k_of(role), probs.shape, probs.dtype, probs.device)
                    balance[key].append(probs)
                a, b = module.mor_A[adapter_name][role], module.mor_B[adapter_name][role]
                experts[(a.shape, b.shape, a.device)].append((a, b))
    if not experts:
        zero = torch.zeros(())
        return zero, zero
    orth = torch.cat(
        [
            orthogonality_losses(
                torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])
            )
            for pairs in experts.values()
        ]
    )
    # a group with an empty slice of tokens stores no probabilities (or none to stack):
    # it counts as zero, as in load_balancing_loss, so divide by the number of groups
    aux = sum(
        (load_balancing_losses(torch.stack(probs), key[0]).sum() for key, probs in balance.items()),
        orth.new_zeros(()),
    )
    return aux / orth.numel(), orth.mean()


def auxiliary_loss(model: nn.Module) -> torch.Tensor:
    """``aux_loss_coef * L_aux + orth_loss_coef * L_orth`` of the latest forward."""
    aux, orth = mor_losses(model)
    config = next(
        (
            m.mor_config[name]
            for m in model.modules()
            if isinstance(m, MoRLayer)
            for name in m.mor_config
        ),
        None,
    )
    if config is None:
        raise ValueError("the model has no MoR adapter")
    return config.aux_loss_coef * aux + config.orth_loss_coef * orth
