"""``MoRTrainer``: transformers' Trainer plus the MoR losses and a per-role validation loss.

The training loss is ``CE + a1 * L_aux + a2 * L_orth`` (coefficients from the adapter's
``MoRConfig``; both extra terms are zero for the ``lora`` method). ``role_ids`` travel
from the collator to the model untouched (``remove_unused_columns=False``), so
``accelerate launch`` / ``torchrun`` give DDP, FSDP or DeepSpeed with no code here.

The cross-entropy is computed from the logits of the positions that predict a labelled
token only (``logits_to_keep`` with a boolean mask): the output projection onto the
vocabulary and the softmax cost about a fifth of SmolLM2-135M's forward per position, and
about three quarters of a trajectory's positions (system text, tool catalogue,
observations) carry no label. The loss is the same as the model's own.

``evaluate`` reports the validation loss over all trainable tokens (``eval_loss``) and per
role (``eval_loss_<role>``): the mean cross-entropy over the tokens that role generates.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

from moragent.mor import mor_losses
from moragent.mor.layer import MoRLayer
from moragent.train.tensors import IGNORE_INDEX

logger = logging.getLogger(__name__)


def _mor_config(model: torch.nn.Module) -> Any:
    for module in model.modules():
        if isinstance(module, MoRLayer):
            for config in module.mor_config.values():
                return config
    raise ValueError(
        "the model has no MoR adapter: wrap it with get_peft_model(model, MoRConfig())"
    )


def labelled_positions(labels: torch.Tensor) -> torch.Tensor:
    """Batch x sequence mask of the positions whose next token carries a label."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def kept_token_loss(
    outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Cross-entropy of logits kept at ``labelled_positions(labels)`` (flattened, row-major).

    Summed and divided by ``num_items_in_batch`` when the Trainer gives it (the tokens of
    the whole accumulated batch), else the mean: the two reductions of the model's own loss.
    """
    targets = labels[:, 1:]
    targets = targets[targets != IGNORE_INDEX]
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets, reduction="sum")
    if num_items_in_batch is not None:
        return loss / num_items_in_batch
    return loss / max(targets.numel(), 1)


def role_token_losses(
    logits: torch.Tensor, labels: torch.Tensor, role_ids: torch.Tensor, num_roles: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence and role: (summed cross-entropy, token count), each batch x roles.

    The token at position t is predicted from the logits at t - 1; its role is the role
    of token t (the role that generates it).
    """
    shifted = logits[:, :-1].float()
    targets = labels[:, 1:]
    roles = role_ids[:, 1:]
    losses = F.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).reshape(targets.shape)
    mask = targets != IGNORE_INDEX
    one_hot = F.one_hot(roles, num_roles).to(losses.dtype) * mask.unsqueeze(-1)
    sums = torch.einsum("bt,btr->br", losses, one_hot)
    return sums, one_hot.sum(dim=1)


class MoRTrainer(Trainer):
    """A Trainer for models with MoR adapters (either method).

    Args:
        roles: the role names, in role-id order (for the per-role metrics).
        *args, **kwargs: as for ``transformers.Trainer``.
    """

    def __init__(self, *args: Any, roles: list[str], **kwargs: Any) -> None:
        kwargs.setdefault("compute_loss_func", kept_token_loss)
        super().__init__(*args, **kwargs)
        self.roles = list(roles)
        config = _mor_config(self.model)
        self.aux_coef, self.orth_coef = config.aux_loss_coef, config.orth_loss_coef
        self._aux_sum = 0.0
        self._aux_count = 0

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        """The cross-entropy (of labelled positions) plus the MoR losses of the same forward."""
        if self.compute_loss_func is kept_token_loss and "labels" in inputs:
            inputs = {**inputs, "logits_to_keep": labelled_positions(inputs["labels"])}
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        aux, orth = mor_losses(model)
        extra = (self.aux_coef * aux + self.orth_coef * orth).to(loss.device)
        if model.training and self._ce_scaled_for_accumulation(num_items_in_batch):
            # the Trainer will not divide this loss by the accumulation steps: do it here
            extra = extra / self.current_gradient_accumulation_steps
        if model.training:
            self._aux_sum += float(aux.detach())
            self._aux_count += 1
        loss = loss + extra
        return (loss, outputs) if return_outputs else loss

    def _ce_scaled_for_accumulation(self, num_items_in_batch: Any) -> bool:
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is not None:
            return bool(scaled)
        return bool(self.model_accepts_loss_kwargs and num_items_in_batch is not None)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Adds the mean load-balancing loss since the last log to training logs."""
        if "loss" in logs and self._aux_count:
            logs["aux_loss"] = round(self._aux_sum / self._aux_count, 6)
            self._aux_sum, self._aux_count = 0.0, 0
        super().log(logs, *args, **kwargs)

    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Validation loss over all trainable tokens and per role."""
        metrics = self.role_losses(eval_dataset, metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics

    @torch.no_grad()
    def role_losses(self, eval_dataset: Any = None, prefix: str = "eval") -> dict[str, float]:
        """``{prefix}_loss`` and ``{prefix}_loss_<role>`` (NaN for a role with no tokens)."""
        dataloader = self.get_eval_dataloader(eval_dataset)
        model = self.model
        was_training = model.training
        model.eval()
        sums = torch.zeros(len(self.roles), dtype=torch.float64)
        counts = torch.zeros(len(self.roles), dtype=torch.float64)
        for batch in dataloader:
            batch = self._prepare_inputs(batch)
            labels = batch.pop("labels")
            with self.compute_loss_context_manager():
                logits = model(**batch).logits
            batch_sums, batch_counts = role_token_losses(
                logits, labels, batch["role_ids"], len(self.roles)
            )
            batch_sums, batch_counts = self.accelerator.gather_for_metrics(
                (batch_sums, batch_counts)
            )
            sums += batch_sums.sum(dim=0).double().cpu()
            counts += batch_counts.sum(dim=0).double().cpu()
        model.train(was_training)

        metrics = {f"{prefix}_loss": float(sums.sum() / counts.sum().clamp(min=1))}
        for index, role in enumerate(self.roles):
            value = float(sums[index] / counts[index]) if counts[index] else math.nan
            metrics[f"{prefix}_loss_{role}"] = value
            metrics[f"{prefix}_tokens_{role}"] = int(counts[index])
        return metrics


class LogCallback(TrainerCallback):
    """Sends the Trainer's logs to this module's logger (the library never prints)."""

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs and state.is_world_process_zero:
            logger.info("step %d: %s", state.global_step, logs)
