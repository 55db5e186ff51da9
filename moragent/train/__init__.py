"""Training: trajectories -> role-tagged tensors -> MoR or per-role LoRA adapters.

>>> from moragent.train import finetune
>>> result = finetune("runs/train.jsonl", method="mor", out="runs/adapters", max_steps=200)

``check_adapters(folder, base_path, template_version)`` refuses adapters trained on
another base model or template version; loaders call it before loading.
"""

from moragent.train.finetune import FinetuneResult, TrainConfig, finetune
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
