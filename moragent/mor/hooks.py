"""How per-token role ids reach every adapted layer without changing the model's code.

A forward pre-hook on the wrapped transformers model takes the ``role_ids`` keyword out of
the call (so the model never sees it), checks it, and prepares, once per forward, the
token positions of every role. All adapted layers of that model share one ``RoleState``
and read those positions from it.

Two ways to give role ids:

- per call: ``model(input_ids=ids, role_ids=roles)``, ``roles`` a LongTensor of the
  same batch x sequence shape as ``ids`` holding indices into ``MoRConfig.roles``. With
  a KV cache, pass role ids for the new tokens only.
- per block: ``with role_context(model, role="executor"): model.generate(...)`` gives
  every token of every forward in the block that role; ``role_context(model,
  role_ids=prompt_roles, role="executor")`` gives the first forward the last columns of
  ``prompt_roles`` (as many as it has tokens: a cached prefix is skipped) and every later
  forward (the generated tokens) ``role``.

A forward that needs role ids and gets none raises ``RoleIdsError``: there is no default
role, because a silently wrong role trains or runs the wrong adapters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


class RoleIdsError(ValueError):
    """Role ids are missing, malformed or out of range; the message says what to pass."""


@dataclass
class RoleBatch:
    """The roles of the tokens of one forward, prepared once for all adapted layers.

    Attributes:
        role_ids: role index of every token, flattened (batch x sequence,).
        positions: per role, the flat positions of its tokens (ascending).
        restore: where each token sits in the role-sorted order (the positions of all
            roles concatenated), to put per-role results back in token order.
        counts: number of tokens of each role.
    """

    role_ids: torch.Tensor
    positions: list[torch.Tensor]
    restore: torch.Tensor
    counts: tuple[int, ...] = field(init=False)
    #: tensors derived from the roles that every adapted layer of this forward shares
    _cache: dict[Any, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.counts = tuple(int(index.numel()) for index in self.positions)

    @property
    def num_tokens(self) -> int:
        """Number of tokens in the forward (batch x sequence)."""
        return self.role_ids.numel()

    def positions_on(self, device: torch.device) -> list[torch.Tensor]:
        """The per-role positions on ``device`` (layers of a model split over devices)."""
        return [index.to(device) for index in self.positions]

    def slot_mask(self, slot_roles: tuple[int, ...], scale: float, device: Any) -> torch.Tensor:
        """Tokens x slots float32: ``scale`` where the token's role is the slot's role, else 0.

        Computed once per forward (and per layout, scale and device), then shared by the
        layers: the role mask of the role-dense dispatch.
        """
        key = ("slot_mask", slot_roles, scale, str(device))
        mask = self._cache.get(key)
        if mask is None:
            ids = self.role_ids.to(device)
            wanted = torch.tensor(slot_roles, dtype=ids.dtype, device=device)
            mask = (ids.unsqueeze(1) == wanted).to(torch.float32) * scale
            self._cache[key] = mask
        return mask

    def ones(self, columns: int, device: Any) -> torch.Tensor:
        """Tokens x ``columns`` float32 ones (weights of experts that are not routed)."""
        key = ("ones", columns, str(device))
        ones = self._cache.get(key)
        if ones is None:
            ones = torch.ones(self.num_tokens, columns, device=device)
            self._cache[key] = ones
        return ones


@dataclass
class _Context:
    role: int | None
    role_ids: torch.Tensor | None
    consumed: bool = False


@dataclass
class RoleState:
    """Shared by a tuner and its layers: the roles of the current forward and its mode.

    Attributes:
        roles: the role names; a role id is an index into them.
        batch: the prepared roles of the latest forward (``None`` when it had none).
        dense_reference: when true, layers run the naive dense reference forward.
    """

    roles: list[str]
    batch: RoleBatch | None = None
    dense_reference: bool = False
    contexts: list[_Context] = field(default_factory=list)

    def role_index(self, role: int | str) -> int:
        """The index of ``role`` (a name or an index), checked against ``roles``."""
        if isinstance(role, str):
            if role not in self.roles:
                raise RoleIdsError(f"unknown role {role!r}: the adapter's roles are {self.roles}")
            return self.roles.index(role)
        if not 0 <= int(role) < len(self.roles):
            raise RoleIdsError(f"role index {role} out of range for roles {self.roles}")
        return int(role)

    def prepare(self, role_ids: torch.Tensor | None, shape: torch.Size, device: Any) -> None:
        """Check the role ids of a forward over ``shape`` tokens and store their positions."""
        if role_ids is None:
            role_ids = self._from_context(shape)
        if role_ids is None:
            self.batch = None
            return
        self.batch = make_role_batch(role_ids, shape, len(self.roles), device)

    def _from_context(self, shape: torch.Size) -> torch.Tensor | None:
        if not self.contexts:
            return None
        context = self.contexts[-1]
        if context.role_ids is not None and not context.consumed:
            context.consumed = True
            given = context.role_ids
            if given.dim() != 2 or given.shape[0] != shape[0] or given.shape[1] < shape[1]:
                raise RoleIdsError(
                    f"role_context role_ids of shape {tuple(given.shape)} cannot cover a forward "
                    f"over {tuple(shape)} tokens: pass batch x (at least) sequence role ids"
                )
            return given[:, given.shape[1] - shape[1] :]
        if context.role is None:
            raise RoleIdsError(
                "role_context gave role_ids for the first forward only: pass role=... for the "
                "tokens of later forwards (generated tokens)"
            )
        return torch.full(tuple(shape), context.role, dtype=torch.long)


def make_role_batch(
    role_ids: torch.Tensor, shape: Sequence[int], num_roles: int, device: Any = None
) -> RoleBatch:
    """Check ``role_ids`` against a forward over ``shape`` (batch, sequence); group by role."""
    if not isinstance(role_ids, torch.Tensor):
        role_ids = torch.as_tensor(role_ids)
    if role_ids.dtype.is_floating_point or role_ids.dtype == torch.bool:
        raise RoleIdsError(f"role_ids must hold integer role indices, got dtype {role_ids.dtype}")
    if tuple(role_ids.shape) != tuple(shape):
        raise RoleIdsError(
            f"role_ids has shape {tuple(role_ids.shape)} but the forward has {tuple(shape)} "
            "tokens: pass one role id per token (with a KV cache, for the new tokens only)"
        )
    flat = role_ids.reshape(-1).to(device=device, dtype=torch.long)
    if flat.numel() > 0:
        low, high = int(flat.min()), int(flat.max())
        if low < 0 or high >= num_roles:
            raise RoleIdsError(
                f"role ids must lie in [0, {num_roles}) (one per token, the index of its role), "
                f"got values in [{low}, {high}]; -1 or padding roles are not allowed: give padding "
                "tokens any role, the attention mask already hides them"
            )
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=num_roles).tolist()
    positions = list(torch.split(order, counts))
    restore = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=device))
    return RoleBatch(role_ids=flat, positions=positions, restore=restore)


def _token_shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Size | None:
    input_ids = kwargs.get("input_ids")
    if input_ids is None and args and isinstance(args[0], torch.Tensor):
        input_ids = args[0]
    if input_ids is not None:
        return input_ids.shape[:2]
    embeds = kwargs.get("inputs_embeds")
    if embeds is not None:
        return embeds.shape[:2]
    return None


def install_role_hook(model: nn.Module, state: RoleState) -> torch.utils.hooks.RemovableHandle:
    """Make ``model`` accept ``role_ids=`` and hand them to the layers through ``state``."""

    def pre_forward(
        module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        role_ids = kwargs.pop("role_ids", None)
        shape = _token_shape(args, kwargs)
        if shape is None:
            if role_ids is not None:
                raise RoleIdsError("role_ids given without input_ids or inputs_embeds")
            state.batch = None
            return args, kwargs
        device = next(module.parameters()).device
        state.prepare(role_ids, shape, device)
        return args, kwargs

    return model.register_forward_pre_hook(pre_forward, with_kwargs=True, prepend=True)


def find_role_state(model: nn.Module) -> RoleState:
    """The ``RoleState`` of a model with MoR layers (a PeftModel, tuner or bare model)."""
    for module in model.modules():
        state = getattr(module, "role_state", None)
        if isinstance(state, RoleState):
            return state
    raise ValueError(
        "the model has no MoR adapter: wrap it with get_peft_model(model, MoRConfig())"
    )


@contextlib.contextmanager
def role_context(
    model: nn.Module, role: int | str | None = None, role_ids: torch.Tensor | None = None
) -> Iterator[None]:
    """Give role ids to the forwards inside the block that get no ``role_ids=`` of their own.

    Args:
        model: the PEFT model (or anything holding MoR layers).
        role: role name or index for every token of a forward (after the first, when
            ``role_ids`` is given).
        role_ids: batch x sequence role ids for the first forward; it takes the last
            columns, as many as it has tokens (``generate`` with a cached prefix).

    Example:
        >>> with role_context(model, role_ids=prompt_roles, role="executor"):
        ...     out = model.generate(input_ids=prompt, max_new_tokens=32)
    """
    state = find_role_state(model)
    if role is None and role_ids is None:
        raise RoleIdsError("role_context needs role=..., role_ids=..., or both")
    index = None if role is None else state.role_index(role)
    if role_ids is not None and not isinstance(role_ids, torch.Tensor):
        role_ids = torch.as_tensor(role_ids)
    state.contexts.append(_Context(role=index, role_ids=role_ids))
    try:
        yield
    finally:
        state.contexts.pop()
