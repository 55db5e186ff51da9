"""The MoR tuner: puts MoR layers into a model, as ``LoraModel`` does for LoRA."""

from __future__ import annotations

from typing import Any

from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn

from moragent.mor.config import DEFAULT_TARGET_MODULES, MoRConfig
from moragent.mor.hooks import RoleState, install_role_hook
from moragent.mor.layer import MoRLayer, MoRLinear


class MoRModel(BaseTuner):
    """Creates a Mixture-of-Roles model from a transformers model (use ``get_peft_model``).

    The wrapped model accepts ``role_ids=`` (batch x sequence role indices) in every call;
    see ``moragent.mor.hooks`` for the rules and ``role_context`` for ``generate``.
    """

    prefix: str = "mor_"
    tuner_layer_cls = MoRLayer
    target_module_mapping: dict[str, list[str]] = {}

    def __init__(self, model: nn.Module, config: Any, adapter_name: str, **kwargs: Any) -> None:
        first = config[adapter_name] if isinstance(config, dict) else config
        self.role_state = RoleState(roles=list(first.roles))
        super().__init__(model, config, adapter_name, **kwargs)

    def _prepare_adapter_config(self, peft_config: MoRConfig, model_config: dict) -> MoRConfig:
        if peft_config.target_modules is None:
            peft_config.target_modules = list(DEFAULT_TARGET_MODULES)
        return peft_config

    def _post_injection_hook(self, model: nn.Module, config: MoRConfig, adapter_name: str) -> None:
        if getattr(self, "_role_hook", None) is None:
            self._role_hook = install_role_hook(model, self.role_state)

    def _create_and_replace(
        self,
        peft_config: MoRConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **optional_kwargs: Any,
    ) -> None:
        if isinstance(target, MoRLinear):
            target.update_layer(adapter_name, peft_config)
            return
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        if not isinstance(base, nn.Linear):
            raise TypeError(
                f"MoR adapts torch.nn.Linear modules only; {current_key} is a "
                f"{type(base).__name__}: remove it from target_modules"
            )
        new_module = MoRLinear(target, adapter_name, peft_config, self.role_state)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _check_merge_allowed(self) -> None:
        raise ValueError(
            "MoR adapters cannot be merged into the base weights: a token's delta depends on its "
            "role. Use the adapted model as it is (or unload() to get the base model back)."
        )

    def _unload_and_optionally_merge(self, merge: bool = True, *args: Any, **kwargs: Any) -> Any:
        if merge:
            self._check_merge_allowed()
        if getattr(self, "_role_hook", None) is not None:
            self._role_hook.remove()
            self._role_hook = None
        return super()._unload_and_optionally_merge(False, *args, **kwargs)

    def layers(self) -> list[MoRLinear]:
        """All MoR layers of the model."""
        return [module for module in self.model.modules() if isinstance(module, MoRLinear)]

    def trainable_share(self) -> tuple[int, int, float]:
        """(trainable parameters, all parameters, trainable share) of the whole model."""
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        return trainable, total, trainable / max(total, 1)


def count_adapter_parameters(model: nn.Module) -> dict[str, int]:
    """Adapter parameters of a model with MoR layers, per role (all adapters together)."""
    counts: dict[str, int] = {}
    for module in model.modules():
        if not isinstance(module, MoRLayer):
            continue
        for name in MoRLayer.adapter_layer_names:
            for group in getattr(module, name).values():
                for role, param in group.items():
                    counts[role] = counts.get(role, 0) + param.numel()
    return counts
