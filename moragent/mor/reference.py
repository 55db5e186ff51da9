"""The naive dense reference forward, for tests and benchmarks only.

It does what the reference implementation of the method does: every expert of every
role runs on every token, and the role mask is applied afterwards. It gives the same
result as the efficient forward at a multiple of its cost; switch it on with
``dense_reference(model)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from moragent.mor.hooks import find_role_state


@contextlib.contextmanager
def dense_reference(model: nn.Module) -> Iterator[None]:
    """Run every MoR layer of ``model`` with the naive dense forward inside the block."""
    state = find_role_state(model)
    previous, state.dense_reference = state.dense_reference, True
    try:
        yield
    finally:
        state.dense_reference = previous


def dense_delta(
    layer: Any, adapter_name: str, x2d: torch.Tensor, role_ids: torch.Tensor
) -> torch.Tensor:
    """All experts of all roles on all tokens, then masked by role (same maths as the layer)."""
    from moragent.mor.layer import route

    config = layer.mor_config[adapter_name]
    scaling = layer.scaling(adapter_name)
    probs: dict[str, torch.Tensor] = {}
    layer.router_probs[adapter_name] = probs
    role_ids = role_ids.to(x2d.device)
    if not torch.is_autocast_enabled(x2d.device.type):
        x2d = x2d.to(layer.mor_A[adapter_name][config.roles[0]].dtype)
    out = torch.zeros(x2d.shape[0], layer.out_features, dtype=x2d.dtype, device=x2d.device)

    for index, role in enumerate(config.roles):
        mask = role_ids == index
        experts_a, experts_b = layer.mor_A[adapter_name][role], layer.mor_B[adapter_name][role]
        num_experts = experts_a.shape[0]

        if config.has_router(role):
            logits = x2d @ layer.mor_router[adapter_name][role].t()
            role_probs, top_index, weights = route(logits, config.top_k_of(role))
            dense_weights = torch.zeros_like(role_probs).scatter(1, top_index, weights)
            if bool(mask.any()):
                probs[role] = role_probs[mask]
        else:
            dense_weights = torch.ones(x2d.shape[0], 1, device=x2d.device)

        delta = torch.zeros_like(out)
        for expert in range(num_experts):
            # weighting the r-vector rather than the output keeps the reference's memory in
            # bounds (the reference weights the full output, saving one per expert)
            hidden = (x2d @ experts_a[expert].t()) * dense_weights[:, expert : expert + 1]
            delta = delta + hidden.to(x2d.dtype) @ experts_b[expert].t()
        if config.has_shared_expert():
            gate = torch.sigmoid(x2d @ layer.mor_gate[adapter_name][role].t())
            shared = (x2d @ layer.mor_shared_A[adapter_name][role].t()) * gate
            delta = delta + shared @ layer.mor_shared_B[adapter_name][role].t()
        out = out + delta * scaling * mask.unsqueeze(1).to(out.dtype)
    return out
