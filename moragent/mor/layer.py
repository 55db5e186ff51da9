"""The MoR layer: an ``nn.Linear`` with role-masked, routed LoRA experts.

State of one adapted module, per adapter name and then per role (``nn.ModuleDict`` of
``nn.ParameterDict``, peft's per-adapter pattern with the role as the inner key):

- ``mor_A[adapter][role]``: routed experts' A, ``(E, r, d_in)`` (expert ``e`` is PEFT's
  ``lora_A`` of shape ``r x d_in``); ``mor_B[adapter][role]``: their B, ``(E, d_out, r)``.
- ``mor_router[adapter][role]``: router weight ``(E, d_in)``, only where ``E > 1``.
- ``mor_shared_A`` / ``mor_shared_B`` ``[adapter][role]``: the shared expert,
  ``(r, d_in)`` and ``(d_out, r)``; ``mor_gate[adapter][role]``: its gate, ``(1, d_in)``.

The ``lora`` method is the special case ``E = 1`` with no router and no shared expert.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from moragent.mor.config import MoRConfig
from moragent.mor.hooks import RoleIdsError, RoleState

logger = logging.getLogger(__name__)

ROUTER_INIT_STD = 0.02


class _GatherLinear(torch.autograd.Function):
    """``x[index] @ weight.T`` in the weight's dtype, saving ``x`` rather than the gathered rows.

    Every expert sees a different subset of the tokens; saving each gathered copy for the
    backward pass would cost one copy of the activations per expert. The backward gathers
    again instead (a copy that lives only during the backward). The product runs in the
    weight's dtype with autocast off, so the caller picks it: the masked dispatch passes
    bf16 weights under bf16 autocast (measured 12% faster per training step on CPU than
    float32), the grouped one keeps float32 (bf16 products on CPU build a kernel for each
    new shape, and its number of tokens per expert changes with every batch).
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(x, index, weight)
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x.index_select(0, index).to(weight.dtype), weight)

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, torch.Tensor | None]:
        x, index, weight = ctx.saved_tensors
        grad_x = grad_weight = None
        with torch.autocast(x.device.type, enabled=False):
            grad = grad.to(weight.dtype)
            if ctx.needs_input_grad[0]:
                grad_x = torch.zeros_like(x)
                grad_x.index_add_(0, index, (grad @ weight).to(x.dtype))
            if ctx.needs_input_grad[2]:
                grad_weight = grad.t() @ x.index_select(0, index).to(weight.dtype)
        return grad_x, None, grad_weight


def gather_linear(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x[index] @ weight.T`` for 2-D ``x``, without keeping the gathered rows for backward."""
    return _GatherLinear.apply(x, index, weight)


def route(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax router: probabilities, top-k expert indices and renormalised top-k weights."""
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    top_probs, top_index = probs.topk(top_k, dim=-1)
    weights = top_probs / top_probs.sum(dim=-1, keepdim=True)
    return probs, top_index, weights


@dataclass(frozen=True)
class RoleDensePlan:
    """Where each piece of the role-dense dispatch sits, for one adapter and set of roles.

    The input meets one matrix whose rows are, for the roles present in the forward: the
    routers of the routed roles, then one gate row per role (with shared experts), then
    per role its shared A and its experts' A. The A-side columns of the product form
    ``slots`` blocks of ``r`` columns (per role: shared expert, then experts), each with
    one coefficient per token (gate or routing weight, times the role mask and scaling).

    Attributes:
        roles: the present roles' names, in role order.
        role_index: their indices.
        routed: per routed role: (name, first router column, experts, top-k).
        gate_start: first gate column, ``None`` without shared experts.
        hidden_start: first A-side column.
        slot_roles: the role index of every slot.
        coefficients: per slot group in slot order: ``("gate", j)`` (the gate of present
            role ``j``), ``("routed", i)`` (routing weights of ``routed[i]``) or
            ``("one", n)`` (``n`` experts without a router).
    """

    roles: tuple[str, ...]
    role_index: tuple[int, ...]
    routed: tuple[tuple[str, int, int, int], ...]
    gate_start: int | None
    hidden_start: int
    slot_roles: tuple[int, ...]
    coefficients: tuple[tuple[str, int], ...]


def make_role_dense_plan(config: MoRConfig, counts: tuple[int, ...]) -> RoleDensePlan:
    """The layout of the role-dense dispatch for the roles with tokens (``counts > 0``)."""
    present = [(index, role) for index, role in enumerate(config.roles) if counts[index] > 0]
    shared = config.has_shared_expert()
    routed, column = [], 0
    for _, role in present:
        if config.has_router(role):
            experts = config.experts_of(role)
            routed.append((role, column, experts, config.top_k_of(role)))
            column += experts
    gate_start = column if shared else None
    hidden_start = column + (len(present) if shared else 0)
    slot_roles: list[int] = []
    coefficients: list[tuple[str, int]] = []
    routed_names = [entry[0] for entry in routed]
    for j, (index, role) in enumerate(present):
        experts = config.experts_of(role)
        if shared:
            coefficients.append(("gate", j))
        if role in routed_names:
            coefficients.append(("routed", routed_names.index(role)))
        else:
            coefficients.append(("one", experts))
        slot_roles += [index] * (int(shared) + experts)
    return RoleDensePlan(
        roles=tuple(role for _, role in present),
        role_index=tuple(index for index, _ in present),
        routed=tuple(routed),
        gate_start=gate_start,
        hidden_start=hidden_start,
        slot_roles=tuple(slot_roles),
        coefficients=tuple(coefficients),
    )


class MoRLayer(BaseTunerLayer):
    """The adapter state and bookkeeping shared by MoR layers (see the module docstring)."""

    adapter_layer_names = (
        "mor_A",
        "mor_B",
        "mor_router",
        "mor_shared_A",
        "mor_shared_B",
        "mor_gate",
    )
    other_param_names = ("mor_dropout", "mor_config")

    def __init__(self, base_layer: nn.Module, role_state: RoleState) -> None:
        self.base_layer = base_layer
        self.role_state = role_state
        for name in self.adapter_layer_names:
            setattr(self, name, nn.ModuleDict())
        self.mor_dropout = nn.ModuleDict()
        self.mor_config: dict[str, MoRConfig] = {}
        self.router_probs: dict[str, dict[str, torch.Tensor]] = {}
        #: role-dense layouts, per (adapter, roles with tokens): plain Python, never saved
        self._role_dense_plans: dict[tuple[str, tuple[bool, ...]], RoleDensePlan] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []

        base = self.get_base_layer()
        if not isinstance(base, nn.Linear):
            raise TypeError(
                f"MoR adapts torch.nn.Linear modules only, not {type(base).__name__}: "
                "remove it from target_modules"
            )
        self.in_features, self.out_features = base.in_features, base.out_features

    def update_layer(self, adapter_name: str, config: MoRConfig) -> None:
        """Create the experts, routers and gates of every role for ``adapter_name``."""
        if self.role_state.roles != list(config.roles):
            raise ValueError(
                f"all MoR adapters of a model must share one role list; the model has "
                f"{self.role_state.roles}, the new adapter {list(config.roles)}"
            )
        r, d_in, d_out = config.r, self.in_features, self.out_features
        groups = {name: nn.ParameterDict() for name in self.adapter_layer_names}
        for role in config.roles:
            experts = config.experts_of(role)
            groups["mor_A"][role] = nn.Parameter(torch.empty(experts, r, d_in))
            groups["mor_B"][role] = nn.Parameter(torch.empty(experts, d_out, r))
            if config.has_router(role):
                groups["mor_router"][role] = nn.Parameter(torch.empty(experts, d_in))
            if config.has_shared_expert():
                groups["mor_shared_A"][role] = nn.Parameter(torch.empty(r, d_in))
                groups["mor_shared_B"][role] = nn.Parameter(torch.empty(d_out, r))
                groups["mor_gate"][role] = nn.Parameter(torch.empty(1, d_in))
        for name, group in groups.items():
            getattr(self, name)[adapter_name] = group
        dropout = nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        self.mor_dropout[adapter_name] = dropout
        self.mor_config[adapter_name] = config
        self._role_dense_plans.clear()

        self.reset_parameters(adapter_name, config.init_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    @torch.no_grad()
    def reset_parameters(self, adapter_name: str, init_weights: bool = True) -> None:
        """A as LoRA (Kaiming uniform), B zero (or random when ``init_weights`` is False)."""
        for role, a in self.mor_A[adapter_name].items():
            for expert in range(a.shape[0]):
                nn.init.kaiming_uniform_(a[expert], a=math.sqrt(5))
            b = self.mor_B[adapter_name][role]
            for expert in range(b.shape[0]):
                self._init_b(b[expert], init_weights)
        for a in self.mor_shared_A[adapter_name].values():
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        for b in self.mor_shared_B[adapter_name].values():
            self._init_b(b, init_weights)
        for router in self.mor_router[adapter_name].values():
            nn.init.normal_(router, std=ROUTER_INIT_STD if init_weights else 1.0)
        for gate in self.mor_gate[adapter_name].values():
            if init_weights:
                nn.init.zeros_(gate)
            else:
                nn.init.normal_(gate, std=1.0 / math.sqrt(gate.shape[1]))

    @staticmethod
    def _init_b(b: torch.Tensor, init_weights: bool) -> None:
        if init_weights:
            nn.init.zeros_(b)
        else:
            nn.init.kaiming_uniform_(b, a=math.sqrt(5))

    def scaling(self, adapter_name: str) -> float:
        """``lora_alpha / r`` of the adapter."""
        config = self.mor_config[adapter_name]
        return config.lora_alpha / config.r

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError(
            "MoR adapters cannot be merged into the base weights: the delta of a token depends "
            "on its role (and its routed experts). Keep the adapter separate, or export the "
            "'lora' method's role adapters one by one for llama.cpp."
        )

    def unmerge(self) -> None:
        """Nothing to undo: MoR adapters are never merged."""


class MoRLinear(nn.Module, MoRLayer):
    """An ``nn.Linear`` whose output gets the delta of each token's role group."""

    def __init__(
        self, base_layer: nn.Module, adapter_name: str, config: MoRConfig, role_state: RoleState
    ) -> None:
        super().__init__()
        MoRLayer.__init__(self, base_layer, role_state)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.router_probs = {}
        active = [] if self.disable_adapters else self.active_adapters
        active = [name for name in active if name in self.mor_A]
        if not active:
            return self.base_layer(x, *args, **kwargs)
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type) and x.is_floating_point():
            # cast the input once for the base layer (autocast would make its own copy) and
            # the adapters alike: the backward pass keeps this one copy for both
            x = x.to(torch.get_autocast_dtype(device_type))
        result = self.base_layer(x, *args, **kwargs)

        batch = self.role_state.batch
        x2d = x.reshape(-1, x.shape[-1])
        if batch is None:
            raise RoleIdsError(
                "this MoR model needs the role of every token: call model(..., role_ids=ids) with "
                "a batch x sequence LongTensor of role indices, or wrap the call (or generate) in "
                "moragent.mor.role_context(model, role=...)"
            )
        if batch.num_tokens != x2d.shape[0]:
            raise RoleIdsError(
                f"role ids cover {batch.num_tokens} tokens but this layer sees {x2d.shape[0]}: "
                "pass role ids of the same batch x sequence shape as input_ids"
            )

        delta = None
        for adapter_name in active:
            part = self._adapter_delta(adapter_name, x2d, batch)
            if part is not None:
                delta = part if delta is None else delta + part.to(delta.dtype)
        if delta is None:
            return result
        return result + delta.view(*result.shape[:-1], -1).to(result.dtype)

    def _adapter_delta(
        self, adapter_name: str, x2d: torch.Tensor, batch: Any
    ) -> torch.Tensor | None:
        device_type = x2d.device.type
        compute: torch.dtype | None = None
        if torch.is_autocast_enabled(device_type):
            # keep (and save for backward) the input in the autocast dtype, as LoRA does; the
            # masked dispatch's products run in it too (fixed shapes per role: fast on CPU)
            compute = torch.get_autocast_dtype(device_type)
            x2d = x2d.to(compute)
        x2d = self.mor_dropout[adapter_name](x2d)
        if self.role_state.dense_reference:
            from moragent.mor.reference import dense_delta

            return dense_delta(self, adapter_name, x2d, batch.role_ids)

        # autocast is off below: the role-dense and masked dispatches cast to ``compute``
        # themselves, the grouped one runs in the experts' own dtype (float32 by default;
        # see _GatherLinear)
        probs: dict[str, torch.Tensor] = {}
        self.router_probs[adapter_name] = probs
        dispatch = self.mor_config[adapter_name].dispatch
        if dispatch == "role_dense":
            with torch.autocast(device_type, enabled=False):
                return self._role_dense_delta(adapter_name, x2d, batch, probs, compute)
        grouped = dispatch == "grouped"
        out: torch.Tensor | None = None
        role_deltas = []
        with torch.autocast(device_type, enabled=False):
            for role, positions in zip(
                self.role_state.roles, batch.positions_on(x2d.device), strict=True
            ):
                if positions.numel() == 0:
                    continue
                if not grouped:
                    ((_, hidden, b),) = self._role_pieces_masked(
                        adapter_name, role, x2d, positions, probs, compute
                    )
                    role_deltas.append(hidden @ b.t())
                    continue
                for index, hidden, b in self._role_pieces(
                    adapter_name, role, x2d, positions, probs
                ):
                    piece = hidden @ b.t()
                    if out is None:
                        out = torch.zeros(
                            x2d.shape[0], piece.shape[1], dtype=piece.dtype, device=x2d.device
                        )
                    out.index_add_(0, index, piece)
            if not grouped:
                # every token belongs to one role: concatenate in role order, then restore the
                # token order (unlike index_add_, this saves no per-role output for backward)
                out = torch.cat(role_deltas).index_select(0, batch.restore.to(x2d.device))
        return out

    def _role_dense_delta(
        self,
        adapter_name: str,
        x2d: torch.Tensor,
        batch: Any,
        probs: dict[str, torch.Tensor],
        compute: torch.dtype | None = None,
    ) -> torch.Tensor | None:
        """The delta of every token in two products, without gathering tokens by role.

        The first product meets every token with the A-side rows of all present roles
        (routers, gates, shared and routed A: few rows next to the base layer's); each
        token then keeps only the hidden r-vectors of its own role (the others are
        multiplied by zero, so the role mask is exact) weighted by its gate and routing;
        the second product meets them with the B columns of all present roles. Roles
        without tokens take no part, so their parameters get no gradient.
        """
        config = self.mor_config[adapter_name]
        present = tuple(count > 0 for count in batch.counts)
        plan = self._role_dense_plans.get((adapter_name, present))
        if plan is None:
            plan = make_role_dense_plan(config, batch.counts)
            self._role_dense_plans[(adapter_name, present)] = plan
        if not plan.roles:
            return None

        shared = plan.gate_start is not None
        experts_a, experts_b = self.mor_A[adapter_name], self.mor_B[adapter_name]
        rows = [self.mor_router[adapter_name][role] for role, *_ in plan.routed]
        if shared:
            rows += [self.mor_gate[adapter_name][role] for role in plan.roles]
        columns = []
        for role in plan.roles:
            a, b = experts_a[role], experts_b[role]
            if shared:
                rows.append(self.mor_shared_A[adapter_name][role])
                columns.append(self.mor_shared_B[adapter_name][role].unsqueeze(1))
            rows.append(a.reshape(-1, a.shape[-1]))
            columns.append(b.permute(1, 0, 2))  # d_out x experts x r
        weight_a = torch.cat(rows) if len(rows) > 1 else rows[0]
        weight_b = torch.cat(columns, dim=1) if len(columns) > 1 else columns[0]
        weight_b = weight_b.reshape(weight_b.shape[0], -1)
        if compute is not None:
            weight_a, weight_b = weight_a.to(compute), weight_b.to(compute)
        if x2d.dtype != weight_a.dtype:
            x2d = x2d.to(weight_a.dtype)
        fused = F.linear(x2d, weight_a)

        num_tokens, slots = fused.shape[0], len(plan.slot_roles)
        device = x2d.device
        mask = batch.slot_mask(plan.slot_roles, self.scaling(adapter_name), device)
        if all(kind == "one" for kind, _ in plan.coefficients):
            coefficients = mask
        else:
            gates = None
            if shared:
                start = plan.gate_start
                gates = torch.sigmoid(fused[:, start : start + len(plan.roles)])
            routing = []
            positions = batch.positions_on(device) if plan.routed else []
            for role, start, experts, top_k in plan.routed:
                role_probs, top_index, weights = route(fused[:, start : start + experts], top_k)
                # the load-balancing loss sees the router probabilities of the role's own tokens
                probs[role] = role_probs.index_select(0, positions[config.roles.index(role)])
                routing.append(torch.zeros_like(role_probs).scatter(1, top_index, weights))
            pieces = []
            for kind, value in plan.coefficients:
                if kind == "gate":
                    pieces.append(gates[:, value : value + 1])
                elif kind == "routed":
                    pieces.append(routing[value])
                else:
                    pieces.append(batch.ones(value, device))
            coefficients = torch.cat(pieces, dim=1) * mask
        hidden = fused[:, plan.hidden_start :].view(num_tokens, slots, config.r)
        hidden = (hidden * coefficients.unsqueeze(2)).view(num_tokens, -1)
        return F.linear(hidden.to(weight_b.dtype), weight_b)

    def _role_pieces_masked(
        self,
        adapter_name: str,
        role: str,
        x2d: torch.Tensor,
        positions: torch.Tensor,
        probs: dict[str, torch.Tensor],
        compute: torch.dtype | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One role's delta as one piece: all of the role's experts on its tokens, weights
        zero outside each token's top-k (two matrix products per role in all)."""
        config = self.mor_config[adapter_name]
        scaling = self.scaling(adapter_name)
        experts_a, experts_b = self.mor_A[adapter_name][role], self.mor_B[adapter_name][role]
        num_experts, r = experts_a.shape[0], config.r
        routed, shared = config.has_router(role), config.has_shared_expert()

        rows = [self.mor_router[adapter_name][role]] if routed else []
        if shared:
            rows += [self.mor_gate[adapter_name][role], self.mor_shared_A[adapter_name][role]]
        rows.append(experts_a.reshape(num_experts * r, -1))
        weight = torch.cat(rows) if len(rows) > 1 else rows[0]
        fused = gather_linear(x2d, positions, weight if compute is None else weight.to(compute))

        start = num_experts if routed else 0
        hidden, b_columns = [], []
        if shared:
            gate = torch.sigmoid(fused[:, start])
            hidden.append(fused[:, start + 1 : start + 1 + r] * (gate * scaling).unsqueeze(1))
            b_columns.append(self.mor_shared_B[adapter_name][role])
            start += 1 + r
        expert_hidden = fused[:, start:].reshape(-1, num_experts, r)
        if routed:
            role_probs, top_index, weights = route(fused[:, :num_experts], config.top_k_of(role))
            probs[role] = role_probs
            dense = torch.zeros_like(role_probs).scatter(1, top_index, weights * scaling)
            expert_hidden = expert_hidden * dense.unsqueeze(2)
        else:
            expert_hidden = expert_hidden * scaling
        hidden.append(expert_hidden.reshape(-1, num_experts * r))
        b_columns.append(experts_b.permute(1, 0, 2).reshape(experts_b.shape[1], num_experts * r))
        hidden_all, b_all = torch.cat(hidden, dim=1), torch.cat(b_columns, dim=1)
        if compute is not None:
            hidden_all, b_all = hidden_all.to(compute), b_all.to(compute)
        return [(positions, hidden_all, b_all)]

    def _role_pieces(
        self,
        adapter_name: str,
        role: str,
        x2d: torch.Tensor,
        positions: torch.Tensor,
        probs: dict[str, torch.Tensor],
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The (token positions, scaled hidden r-vectors, B) pieces of one role's delta."""
        config = self.mor_config[adapter_name]
        scaling = self.scaling(adapter_name)
        experts_a, experts_b = self.mor_A[adapter_name][role], self.mor_B[adapter_name][role]
        routed = config.has_router(role)
        shared = config.has_shared_expert()

        # one gathered projection for everything every token of the role uses
        rows = []
        if routed:
            rows.append(self.mor_router[adapter_name][role])
        if shared:
            rows += [self.mor_gate[adapter_name][role], self.mor_shared_A[adapter_name][role]]
        if not routed:
            rows.append(experts_a[0])
        fused = gather_linear(x2d, positions, torch.cat(rows) if len(rows) > 1 else rows[0])

        num_experts, r = experts_a.shape[0], config.r
        start = num_experts if routed else 0
        hidden, b_rows = [], []
        if shared:
            gate = torch.sigmoid(fused[:, start])
            hidden.append(fused[:, start + 1 : start + 1 + r] * (gate * scaling).unsqueeze(1))
            b_rows.append(self.mor_shared_B[adapter_name][role])
        if not routed:
            hidden.append(fused[:, -r:] * scaling)
            b_rows.append(experts_b[0])
        pieces = []
        if hidden:
            pieces.append((positions, torch.cat(hidden, dim=1), torch.cat(b_rows, dim=1)))
        if not routed:
            return pieces

        role_probs, top_index, weights = route(fused[:, :num_experts], config.top_k_of(role))
        probs[role] = role_probs
        k = top_index.shape[1]
        flat_expert = top_index.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        counts = torch.bincount(flat_expert, minlength=num_experts).tolist()
        token_of = positions.repeat_interleave(k)
        flat_weight = weights.reshape(-1)
        for expert, chosen in enumerate(torch.split(order, counts)):
            if chosen.numel() == 0:
                continue
            index = token_of.index_select(0, chosen)
            h = gather_linear(x2d, index, experts_a[expert])
            w = flat_weight.index_select(0, chosen) * scaling
            pieces.append((index, h * w.unsqueeze(1), experts_b[expert]))
        return pieces

    def __repr__(self) -> str:
        return "mor." + super().__repr__()
