"""Training: trajectories -> role-tagged tensors -> MoR or per-role LoRA adapters.

>>> from moragent.train import finetune
>>> result = finetune("runs/train.jsonl", method="mor", out="runs/adapters", max_steps=200)

``check_adapters(folder, base_path, template_version)`` refuses adapters trained on
another base model or template version; loaders call it before loading.
"""

from typing import Any

from moragent.train.metadata import (
    METADATA_FILE,
    AdapterMetadata,
    AdapterMismatchError,
    check_adapters,
    read_metadata,
)

__all__ = [
    "METADATA_FILE",
    "AdapterMetadata",
    "AdapterMismatchError",
    "FinetuneResult",
    "TrainConfig",
    "check_adapters",
    "finetune",
    "read_metadata",
]


def __getattr__(name: str) -> Any:
    """``finetune`` and its types load transformers: import them only when asked for, so
    that checking adapter metadata (done by every backend) stays cheap."""
    if name in ("FinetuneResult", "TrainConfig", "finetune"):
        import importlib

        return getattr(importlib.import_module("moragent.train.training"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
