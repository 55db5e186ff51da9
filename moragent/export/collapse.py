"""One static LoRA per role from a role's adapter group, for runtimes without routers.

A ``mor`` role group adds, for a token ``x`` of that role,
``s * (sum_e w_e(x) B_e A_e x + g(x) B_s A_s x)`` with router weights ``w_e(x)`` (top-k,
renormalised, zero for experts not chosen) and the shared expert's sigmoid gate ``g(x)``.
A static adapter cannot follow ``x``. The ``mean`` collapse replaces ``w_e(x)`` and
``g(x)`` by their means over the role's tokens of calibration trajectories and sums the
group into one delta ``W``. The ``fit`` collapse (the default with calibration data)
takes instead the ``W`` whose output is closest, in least squares over those tokens, to
the group's real output: with ``G = sum x x^T`` and ``P_e = sum w_e(x) A_e x x^T``,
``W = s * sum_e B_e (P_e + l * mean(w_e) A_e) (G + l I)^-1`` (and the same for the
shared expert), a ridge ``l`` that pulls directions the calibration tokens do not span
back to the mean collapse. A mean cannot tell apart inputs that the router sends to
different experts; the fit keeps as much of that as one linear map can. Either way ``W``
is a sum of a few rank-``r`` products, and its best rank-``R`` part (truncated SVD) is
computed on a small core matrix, never on ``d_out x d_in``.

The ``lora`` method needs none of this: its role adapters export exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)


@dataclass
class RoutingStats:
    """Sums of routing weights and gates over one role's tokens at one module."""

    weights: torch.Tensor | None = None
    gate: float = 0.0
    tokens: int = 0
    #: for the ``fit`` collapse: ``sum x x^T`` (d_in x d_in), ``sum w_e(x) A_e x x^T``
    #: (E x r x d_in) and ``sum g(x) A_s x x^T`` (r x d_in)
    gram: torch.Tensor | None = None
    cross: torch.Tensor | None = None
    shared_cross: torch.Tensor | None = None

    def mean_weights(self, experts: int) -> torch.Tensor:
        """Mean routing weight of each expert (uniform when no token was seen)."""
        if self.weights is None or self.tokens == 0:
            return torch.full((experts,), 1.0 / experts)
        return self.weights / self.tokens

    def mean_gate(self) -> float:
        """Mean shared-expert gate (0.5, the gate of a zero input, when no token was seen)."""
        return self.gate / self.tokens if self.tokens else 0.5


@dataclass
class CollapseReport:
    """How much of a role's expected delta the rank-``R`` LoRA keeps.

    Attributes:
        rank: the exported rank.
        method: how routing became static (module doc): ``fit``, ``mean`` or ``uniform``.
        relative_error: ``||W - W_R||_F / ||W||_F`` over all modules of the role together.
        worst_module_error: the largest per-module relative error.
        tokens: calibration tokens of the role (0: no calibration, uniform weights).
        mean_gate: mean shared-expert gate over modules (``None`` without shared expert).
    """

    rank: int
    #: "fit", "mean" or "uniform" (no calibration data)
    method: str = "mean"
    relative_error: float = 0.0
    worst_module_error: float = 0.0
    tokens: int = 0
    mean_gate: float | None = None
    _kept: float = field(default=0.0, repr=False)
    _total: float = field(default=0.0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "method": self.method,
            "relative_error": round(self.relative_error, 6),
            "worst_module_error": round(self.worst_module_error, 6),
            "calibration_tokens": self.tokens,
            "mean_gate": None if self.mean_gate is None else round(self.mean_gate, 4),
        }


def low_rank(
    factors: Sequence[tuple[torch.Tensor, torch.Tensor]], rank: int
) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Best rank-``rank`` (A, B) of ``sum_i B_i @ A_i``, with the lost and total energy.

    Args:
        factors: (B ``d_out x r_i``, A ``r_i x d_in``) pairs, already weighted.
        rank: rank of the result; A and B are zero-padded when the sum has lower rank.

    Returns:
        (A ``rank x d_in``, B ``d_out x rank``, squared Frobenius norm dropped, total).
    """
    b_all = torch.cat([b.double() for b, _ in factors], dim=1)
    a_all = torch.cat([a.double() for _, a in factors], dim=0)
    q_b, r_b = torch.linalg.qr(b_all)
    q_a, r_a = torch.linalg.qr(a_all.t())
    u, s, vh = torch.linalg.svd(r_b @ r_a.t())
    keep = min(rank, s.numel())
    root = s[:keep].sqrt()
    b = (q_b @ u[:, :keep]) * root
    a = root.unsqueeze(1) * (vh[:keep] @ q_a.t())
    if keep < rank:
        b = torch.cat([b, b.new_zeros(b.shape[0], rank - keep)], dim=1)
        a = torch.cat([a, a.new_zeros(rank - keep, a.shape[1])], dim=0)
    energy = s.pow(2)
    return a.float(), b.float(), float(energy[keep:].sum()), float(energy.sum())


def group_factors(
    tensors: dict[str, torch.Tensor],
    scaling: float,
    stats: RoutingStats | None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The weighted (B, A) pairs of one role group at one module, whose sum is ``W``:
    the fit collapse when ``stats`` holds the fit's sums, the mean collapse otherwise.

    Args:
        tensors: the role's ``mor_A`` (E x r x d_in), ``mor_B`` (E x d_out x r) and, where
            present, ``mor_shared_A`` / ``mor_shared_B``.
        scaling: ``lora_alpha / r``.
        stats: measured routing of the role at this module (``None``: uniform weights, gate 0.5).
    """
    experts_a, experts_b = tensors["mor_A"].float(), tensors["mor_B"].float()
    experts = experts_a.shape[0]
    stats = stats or RoutingStats()
    weights = stats.mean_weights(experts) if experts > 1 else torch.ones(1)
    if stats.gram is not None and stats.tokens:
        return _fitted(tensors, scaling, stats, weights)
    pairs = [(experts_b[e] * (scaling * float(weights[e])), experts_a[e]) for e in range(experts)]
    if "mor_shared_A" in tensors:
        gate = stats.mean_gate()
        pairs.append((tensors["mor_shared_B"].float() * (scaling * gate), tensors["mor_shared_A"]))
    return pairs


#: ridge of the ``fit`` collapse, relative to the mean diagonal of ``sum x x^T``
FIT_RIDGE = 0.05


def _fitted(
    tensors: dict[str, torch.Tensor],
    scaling: float,
    stats: RoutingStats,
    weights: torch.Tensor,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (B, A) pairs of the least-squares collapse (module doc): B as trained, times
    the scaling; A rows refitted to the calibration tokens."""
    assert stats.gram is not None and stats.cross is not None
    experts_a, experts_b = tensors["mor_A"].double(), tensors["mor_B"].float()
    rows = [stats.cross[e].double() for e in range(experts_a.shape[0])]
    targets = [experts_a[e] * float(weights[e]) for e in range(experts_a.shape[0])]
    columns = [experts_b[e] * scaling for e in range(experts_a.shape[0])]
    if "mor_shared_A" in tensors:
        assert stats.shared_cross is not None
        rows.append(stats.shared_cross.double())
        targets.append(tensors["mor_shared_A"].double() * stats.mean_gate())
        columns.append(tensors["mor_shared_B"].float() * scaling)
    gram = stats.gram.double()
    ridge = FIT_RIDGE * float(gram.diagonal().mean())
    stacked = torch.cat([row + ridge * target for row, target in zip(rows, targets, strict=True)])
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    fitted = torch.linalg.solve(gram + ridge * eye, stacked.t()).t().float()
    sizes = [row.shape[0] for row in rows]
    return list(zip(columns, torch.split(fitted, sizes), strict=True))


def measure_routing(
    model: Any,
    sequences: Sequence[tuple[list[int], list[int]]],
    roles: Sequence[str],
    fit: bool = False,
) -> dict[tuple[str, str], RoutingStats]:
    """Run the MoR model over calibration sequences; sum routing weights and gates.

    Args:
        model: a PEFT model with MoR layers (eval mode).
        sequences: (token ids, role ids) of each calibration trajectory.
        roles: the adapter's role names (role id = index).
        fit: also sum the moments the ``fit`` collapse needs (``d_in x d_in`` per module
            and role: about 1.6 GB for SmolLM2-135M's three roles).

    Returns:
        (module name, role) -> sums over the tokens processed under that role.
    """
    from moragent.export.gguf import PEFT_PREFIX
    from moragent.mor import MoRLinear
    from moragent.mor.layer import route

    stats: dict[tuple[str, str], RoutingStats] = {}
    handles = []

    def observer(name: str, layer: MoRLinear) -> Any:
        adapter = layer.active_adapters[0]
        config = layer.mor_config[adapter]

        def pre_forward(module: Any, args: tuple[Any, ...]) -> None:
            x2d = args[0].reshape(-1, args[0].shape[-1]).float()
            batch = layer.role_state.batch
            for role, positions in zip(roles, batch.positions_on(x2d.device), strict=True):
                if positions.numel() == 0:
                    continue
                x = x2d.index_select(0, positions)
                entry = stats.setdefault((name, role), RoutingStats())
                entry.tokens += x.shape[0]
                experts_a = layer.mor_A[adapter][role].float()
                if config.has_router(role):
                    logits = x @ layer.mor_router[adapter][role].float().t()
                    _, index, weights = route(logits, config.top_k_of(role))
                    dense = torch.zeros_like(logits).scatter_(1, index, weights)
                    total = dense.sum(dim=0)
                    entry.weights = total if entry.weights is None else entry.weights + total
                else:
                    dense = x.new_ones(x.shape[0], experts_a.shape[0])
                if fit:
                    projected = torch.einsum("erd,nd->ner", experts_a, x) * dense.unsqueeze(-1)
                    _add(entry, "gram", x.t() @ x)
                    _add(entry, "cross", torch.einsum("ner,nd->erd", projected, x))
                if config.has_shared_expert():
                    gate = torch.sigmoid(x @ layer.mor_gate[adapter][role].float().t())
                    entry.gate += float(gate.sum())
                    if fit:
                        shared = (x @ layer.mor_shared_A[adapter][role].float().t()) * gate
                        _add(entry, "shared_cross", shared.t() @ x)

        return pre_forward

    for name, module in model.named_modules():
        if isinstance(module, MoRLinear):
            module_name = name.removeprefix(PEFT_PREFIX)
            handles.append(module.register_forward_pre_hook(observer(module_name, module)))
    try:
        with torch.no_grad():
            for ids, role_ids in sequences:
                model(
                    input_ids=torch.tensor([ids]),
                    role_ids=torch.tensor([role_ids]),
                    use_cache=False,
                )
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _add(entry: RoutingStats, name: str, value: torch.Tensor) -> None:
    current = getattr(entry, name)
    setattr(entry, name, value if current is None else current + value)


def calibration_sequences(
    path: str | Path,
    tokenizer: Any,
    roles: Sequence[str],
    max_sequences: int = 16,
    max_length: int = 1024,
) -> list[tuple[list[int], list[int]]]:
    """(token ids, role ids) of ``max_sequences`` trajectories spread evenly over a
    calibration file (a file built set by set starts with one kind of trajectory only)."""
    from moragent.data.io import spread
    from moragent.train.dataset import load_training_data
    from moragent.train.tensors import encode_all

    data = load_training_data(path)
    picked = spread(data.trajectories, max_sequences)
    encoded, _ = encode_all(picked, tokenizer, max_length, roles=list(roles))
    if not encoded:
        raise ValueError(
            f"no calibration trajectory of {path} fits {max_length} tokens: pass another file"
        )
    return [(list(item.input_ids), list(item.role_ids)) for item in encoded]
