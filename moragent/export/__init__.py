"""Export: role adapters -> one GGUF LoRA per role for llama.cpp (see ``moragent.export.api``).

>>> from moragent.export import export_adapters
>>> export_adapters("runs/adapters", "runs/gguf", calibration="runs/train.jsonl")

Names are imported on first use, so that the llama.cpp backend's folder check
(``moragent.export.manifest``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "ExportResult": "moragent.export.api",
    "export_adapters": "moragent.export.api",
    "ExportError": "moragent.export.gguf",
    "ExportCheckError": "moragent.export.manifest",
    "check_export": "moragent.export.manifest",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'moragent.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)
