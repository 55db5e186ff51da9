"""The auxiliary losses of the method: load balancing and expert orthogonality.

Training loss: ``CE + aux_loss_coef * L_aux + orth_loss_coef * L_orth`` (``a1 = 1e-3``,
``a2 = 1e-4`` by default, from ``MoRConfig``). ``mor_losses(model)`` collects both
from the latest forward; ``auxiliary_loss(model)`` gives the weighted sum to add.
"""

from __future__ import annotations

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
    tokens, experts = router_probs.shape
    if tokens == 0:
        return router_probs.new_zeros(())
    chosen = router_probs.topk(top_k, dim=-1).indices.reshape(-1)
    fraction = torch.bincount(chosen, minlength=experts).to(router_probs.dtype) / (tokens * top_k)
    return experts * torch.sum(fraction * router_probs.mean(dim=0))


def orthogonality_loss(lora_a: torch.Tensor, lora_b: torch.Tensor) -> torch.Tensor:
    """``sum_{i<j} ||A_i A_j^T||_F^2 + ||B_i^T B_j||_F^2`` over the experts of one role.

    Args:
        lora_a: the experts' A stacked, experts x r x d_in (PEFT's ``lora_A`` shape each).
        lora_b: the experts' B stacked, experts x d_out x r.
    """
    experts, rank, _ = lora_a.shape
    a = lora_a.float().reshape(experts * rank, -1)
    b = lora_b.float().transpose(1, 2).reshape(experts * rank, -1)
    total = lora_a.new_zeros((), dtype=torch.float32)
    for flat in (a, b):
        gram = (flat @ flat.t()).reshape(experts, rank, experts, rank)
        squares = gram.pow(2).sum(dim=(1, 3))  # experts x experts block norms
        total = total + torch.triu(squares, diagonal=1).sum()
    return total


def mor_losses(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(load balancing, orthogonality) of the latest forward, each a mean over groups.

    A group is one role of one adapted module. Only groups whose role had tokens in the
    latest forward and that route (more than one expert) count, so no gradient reaches
    the experts of absent roles. Both are zero for the ``lora`` method.
    """
    aux_terms, orth_terms = [], []
    for module in model.modules():
        if not isinstance(module, MoRLayer):
            continue
        for adapter_name, groups in module.router_probs.items():
            config = module.mor_config[adapter_name]
            for role, probs in groups.items():
                aux_terms.append(load_balancing_loss(probs, config.top_k_of(role)))
                orth_terms.append(
                    orthogonality_loss(
                        module.mor_A[adapter_name][role], module.mor_B[adapter_name][role]
                    )
                )
    if not aux_terms:
        zero = torch.zeros(())
        return zero, zero
    return torch.stack(aux_terms).mean(), torch.stack(orth_terms).mean()


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
