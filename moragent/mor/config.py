"""The configuration of a Mixture-of-Roles adapter (a PEFT config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from peft.config import PeftConfig

from moragent.roles import ROLE_NAMES

#: Modules adapted by default: every attention and MLP projection of llama-like models.
DEFAULT_TARGET_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)

#: Routed experts and top-k of a role that ``num_experts`` / ``top_k`` do not name.
FALLBACK_NUM_EXPERTS = 2
FALLBACK_TOP_K = 1


def _default_num_experts() -> dict[str, int]:
    return {"reasoner": 3, "executor": 3, "summarizer": 2}


def _default_top_k() -> dict[str, int]:
    return {"reasoner": 2, "executor": 2, "summarizer": 1}


@dataclass
class MoRConfig(PeftConfig):
    """Configuration of a Mixture-of-Roles adapter.

    Every token carries one role (``role_ids``, an index into ``roles``); only that role's
    adapter group changes the token's activations. ``method="mor"`` gives each role a
    group of routed LoRA experts (token-level top-k router) plus one always-on shared
    expert scaled by a per-token sigmoid gate; ``method="lora"`` gives each role one
    plain LoRA.

    The defaults are sized for models of 100M-300M parameters: rank 4 and 3/3/2 routed
    experts (top-k 2/2/1) plus a shared expert per role add about 10% of SmolLM2-135M's
    parameters and 4% of Gemma 3 270M's (whose embeddings are most of its size). For a
    1B model, a rank of 8-16 matches the reference configuration.

    Args:
        method: ``"mor"`` (routed experts per role) or ``"lora"`` (one LoRA per role).
        roles: role names; a token's role id is the index of its role here.
        r: rank of every expert (routed and shared).
        lora_alpha: the expert outputs are scaled by ``lora_alpha / r``.
        lora_dropout: dropout on an adapted module's input before the experts.
        num_experts: routed experts per role, one number for all roles or a mapping
            (roles missing from it get ``FALLBACK_NUM_EXPERTS``). Ignored for ``lora``.
        top_k: experts each token is routed to, per role, as ``num_experts``.
        shared_expert: whether each role has the always-on, gated shared expert.
        dispatch: how tokens reach their role's experts. Every choice gives the same
            output (the role mask is exact) and no gradient to roles absent from the
            batch; they differ in the arithmetic done. ``"role_dense"`` (default) meets
            every token with the low-rank A and B sides of all roles present in the
            forward in two matrix products per module and multiplies the other roles'
            hidden values by zero: a token pays for the present roles' rank-r products
            (a few dozen columns next to the base layer's hundreds), in the fewest ops,
            fastest on CPU at training shapes. ``"masked"`` gathers each role's tokens and
            runs only that role's experts on them (two products per role, with zero
            weight outside each token's top-k): only the token's own role group is
            computed, at the cost of a gather, a scatter and ~25 small ops per role and
            module. ``"grouped"`` runs only each token's top-k experts, one gather and
            product per expert (fewest FLOPs, most ops; for many experts or large ranks).
        target_modules: names (suffixes) of the ``nn.Linear`` modules to adapt, or a regex.
        exclude_modules: names or a regex of modules not to adapt.
        init_weights: ``True`` starts every B at zero, so the adapted model equals the
            base model; ``False`` draws B at random too (for tests).
        aux_loss_coef: weight of the load-balancing loss (``a1``).
        orth_loss_coef: weight of the orthogonality loss (``a2``).
        template_version: version of the transcript templates the adapter was trained
            with, stored so that a mismatch can be refused at load time.
        modules_to_save: other modules to train and save in full (as in LoRA).
    """

    method: Literal["mor", "lora"] = field(default="mor")
    roles: list[str] = field(default_factory=lambda: list(ROLE_NAMES))
    r: int = field(default=4)
    lora_alpha: float = field(default=8.0)
    lora_dropout: float = field(default=0.05)
    num_experts: int | dict[str, int] = field(default_factory=_default_num_experts)
    top_k: int | dict[str, int] = field(default_factory=_default_top_k)
    shared_expert: bool = field(default=True)
    dispatch: Literal["role_dense", "masked", "grouped"] = field(default="role_dense")
    target_modules: list[str] | str | None = field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES)
    )
    exclude_modules: list[str] | str | None = field(default=None)
    init_weights: bool = field(default=True)
    aux_loss_coef: float = field(default=1e-3)
    orth_loss_coef: float = field(default=1e-4)
    template_version: str | None = field(default=None)
    modules_to_save: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        from moragent.mor import PEFT_TYPE

        self.peft_type = PEFT_TYPE
        self.roles = [str(role) for role in self.roles]
        if isinstance(self.target_modules, (list, tuple, set)):
            self.target_modules = list(self.target_modules)
        self._validate()

    # attributes that peft's module matching reads from every tuner config
    @property
    def target_parameters(self) -> None:
        """MoR adapts modules, never bare parameters."""
        return None

    def _validate(self) -> None:
        if self.method not in ("mor", "lora"):
            raise ValueError(f"unknown MoR method {self.method!r}: use 'mor' or 'lora'")
        if self.dispatch not in ("role_dense", "masked", "grouped"):
            raise ValueError(
                f"unknown dispatch {self.dispatch!r}: use 'role_dense', 'masked' or 'grouped'"
            )
        if not self.roles or len(set(self.roles)) != len(self.roles):
            raise ValueError(f"roles must be distinct names, at least one; got {self.roles}")
        bad = [role for role in self.roles if not role or "." in role]
        if bad:
            raise ValueError(f"role names must be non-empty and contain no '.', got {bad}")
        if self.r <= 0:
            raise ValueError(f"the rank r must be a positive integer, got {self.r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must lie in [0, 1), got {self.lora_dropout}")
        for name, value in (("num_experts", self.num_experts), ("top_k", self.top_k)):
            if isinstance(value, dict):
                unknown = sorted(set(value) - set(self.roles))
                if unknown:
                    raise ValueError(f"{name} names unknown roles {unknown}; roles: {self.roles}")
        if self.method == "mor":
            for role in self.roles:
                experts, k = self.experts_of(role), self.top_k_of(role)
                if experts < 1 or not 1 <= k <= experts:
                    raise ValueError(
                        f"role {role!r}: top_k={k} must lie between 1 and num_experts={experts}"
                    )

    def experts_of(self, role: str) -> int:
        """Number of routed experts of ``role`` (1 for the ``lora`` method)."""
        if self.method == "lora":
            return 1
        if isinstance(self.num_experts, dict):
            return int(self.num_experts.get(role, FALLBACK_NUM_EXPERTS))
        return int(self.num_experts)

    def top_k_of(self, role: str) -> int:
        """Number of routed experts each token of ``role`` uses (1 for ``lora``)."""
        if self.method == "lora":
            return 1
        if isinstance(self.top_k, dict):
            return min(int(self.top_k.get(role, FALLBACK_TOP_K)), self.experts_of(role))
        return int(self.top_k)

    def has_shared_expert(self) -> bool:
        """Whether the roles have a shared expert (never for ``lora``)."""
        return self.method == "mor" and self.shared_expert

    def has_router(self, role: str) -> bool:
        """Whether ``role`` routes its tokens (more than one routed expert)."""
        return self.method == "mor" and self.experts_of(role) > 1
