"""Backends: one protocol (``base.Backend``), three implementations.

- ``llamacpp`` (default): quantized GGUF, per-role GGUF LoRA switched at run time.
- ``torch``: transformers + peft, GPU or CPU, the MoR adapters themselves.
- ``openai``: any OpenAI-compatible server, one model name per role.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moragent.backends.base import Backend, BackendError, CacheStats, Constraint, Generation

BACKENDS = ("llamacpp", "torch", "openai")

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "CacheStats",
    "Constraint",
    "Generation",
    "make_backend",
]


def make_backend(
    name: str = "llamacpp",
    model: str | Path | None = None,
    adapters: str | Path | dict[str, str | Path] | bool | None = None,
    **options: Any,
) -> Backend:
    """Build a backend by name; unknown names and missing extras raise a clear error.

    Args:
        name: one of ``BACKENDS``.
        model: the model (a GGUF file, an HF model folder, or a served model name).
        adapters: a folder of role adapters, or a role name -> file mapping. ``None``
            takes the role adapters shipped for the default model (llama.cpp backend with
            the default model only; see ``moragent.models.shipped_adapters``); ``False``
            runs the bare model.
        options: passed to the backend's constructor.
    """
    if adapters is True:
        raise BackendError("adapters=True is not a folder: give the adapters' folder, or None")
    if name == "llamacpp":
        from moragent.backends.llamacpp import LlamaCppBackend
        from moragent.models import shipped_adapters

        if adapters is None:
            adapters = shipped_adapters(model)
        elif adapters is False:
            adapters = None

        return LlamaCppBackend(model, adapters=_adapter_files(adapters, model), **options)
    if name == "torch":
        try:
            from moragent.backends.torch import TorchBackend
        except ImportError as exc:
            raise BackendError(
                f"the torch backend needs the torch extra ({exc.name} is missing): "
                'pip install torch==2.13.0 && pip install "moragent[torch]"'
            ) from exc
        return TorchBackend(model, adapters=adapters or None, **options)
    if name == "openai":
        try:
            from moragent.backends.openai import OpenAIBackend
        except ImportError as exc:
            raise BackendError(
                f"the openai backend needs the openai extra ({exc.name} is missing): "
                'pip install "moragent[openai]"'
            ) from exc
        options.setdefault("check", True)  # a missing server or model shows up now
        return OpenAIBackend(str(model) if model is not None else None, **options)
    raise BackendError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")


def _adapter_files(
    adapters: str | Path | dict[str, str | Path] | None, model: str | Path | None = None
) -> dict[str, str | Path] | None:
    """A role -> GGUF file mapping, from a mapping or from a folder made by ``moragent export``.

    A folder is checked against the base model first (``moragent.export.check_export``):
    missing role files, corrupted files, another base model or template version are errors.
    """
    if adapters is None or isinstance(adapters, dict):
        return adapters
    folder = Path(adapters)
    if not folder.is_dir():
        raise BackendError(f"adapter folder not found: {folder}")
    from moragent.export.manifest import ExportCheckError, check_export
    from moragent.models import resolve_model
    from moragent.prompts import TEMPLATE_VERSION

    try:
        return dict(check_export(folder, resolve_model(model), TEMPLATE_VERSION))
    except ExportCheckError as exc:
        raise BackendError(str(exc)) from None
