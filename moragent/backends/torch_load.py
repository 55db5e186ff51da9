"""Loading a model for the torch backend: device, dtype, GGUF conversion cache, adapters.

A GGUF file is dequantized by transformers (slow: tens of seconds for SmolLM2-135M on
a busy CPU), then saved as a plain float32 transformers folder in the cache, so that
every later load reads safetensors in well under a second. The cache folder is keyed by
the GGUF's name and SHA-256, the same key ``moragent finetune`` uses, so training and
inference share one conversion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from moragent.backends.base import BackendError
from moragent.models import default_gguf

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def default_cache_dir() -> Path:
    """``$MORAGENT_CACHE`` or ``~/.cache/moragent``."""
    root = os.environ.get("MORAGENT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "moragent"


def pick_device(device: str | torch.device | None) -> torch.device:
    """The given device, else cuda, then mps, then cpu."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The given dtype, else bfloat16 on a GPU that has it, float16 on mps, float32 on cpu.

    On the CPU, float32: decoding SmolLM2-135M one token at a time measured 5.6-6.1
    tokens/s in float32 against 6.5-6.8 in bfloat16 on one thread, but 1.1-1.3 against
    0.3-0.4 on two busy threads; float32 never loses much, and it keeps the dequantized
    weights exact.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None:
        try:
            return _DTYPES[str(dtype).lower()]
        except KeyError:
            raise BackendError(
                f"unknown dtype {dtype!r}: use one of {', '.join(sorted(_DTYPES))}"
            ) from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def model_folder(model: str | Path | None, cache_dir: str | Path | None = None) -> Path:
    """A transformers folder for ``model``: itself, or the cached conversion of a GGUF file."""
    path = default_gguf() if model is None else Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackendError(
                f"{path} has no config.json: pass a transformers model folder "
                "(save_pretrained output) or a GGUF file"
            )
        logger.info("loading the transformers model in %s", path)
        return path
    if not path.is_file():
        raise BackendError(f"model not found: {path} is neither a GGUF file nor a model folder")
    if path.suffix != ".gguf":
        raise BackendError(f"{path} is not a .gguf file: pass a GGUF file or a model folder")
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = root / "gguf" / f"{path.stem}-{_sha256(path)[:16]}"
    if (target / "config.json").is_file():
        logger.info("loading %s from its cached conversion %s", path.name, target)
        return target
    logger.info("converting %s to a transformers model (once; cached in %s)", path, target)
    _convert_gguf(path, target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _convert_gguf(path: Path, target: Path) -> None:
    """Dequantize ``path`` with transformers and save model and tokenizer into ``target``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        folder, name = str(path.parent), path.name
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, dtype=torch.float32
            )
        except Exception as exc:  # transformers raises many kinds for unsupported files
            raise BackendError(
                f"transformers could not load {path} ({exc}); it dequantizes llama and gemma3 "
                "GGUFs and needs the gguf package (`pip install gguf`)"
            ) from exc
        # the weights are plain tensors once dequantized; transformers still refuses to
        # save a model it read from GGUF unless the quantizer is dropped
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished the same conversion first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_model(folder: Path, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) of a transformers folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return model.to(device).eval(), tokenizer


def adapter_folder(folder: str | Path) -> Path:
    """``folder`` when it holds adapters saved by PEFT; a ``BackendError`` otherwise."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BackendError(f"adapter folder not found: {folder}")
    if not (folder / "adapter_config.json").is_file():
        raise BackendError(
            f"{folder} has no adapter_config.json: pass a folder saved by PEFT "
            "(`moragent finetune --out`, or save_pretrained of a MoR model)"
        )
    return folder


def load_adapters(base: Any, folder: str | Path, base_path: Path | None) -> tuple[Any, list[str]]:
    """(PEFT model, role names) of MoR adapters saved in ``folder``, checked when possible."""
    folder = adapter_folder(folder)
    config_file = folder / "adapter_config.json"
    _check_metadata(folder, base_path)
    from peft import PeftModel

    import moragent.mor  # noqa: F401 - registers the MOR type with peft

    try:
        model = PeftModel.from_pretrained(base, folder)
    except Exception as exc:  # peft raises many kinds for a mismatched folder
        raise BackendError(
            f"peft could not load the adapters in {folder} on this model ({exc}): were they "
            "trained on this base model?"
        ) from exc
    roles = getattr(model.peft_config[model.active_adapter], "roles", None)
    if not roles:
        kind = json.loads(config_file.read_text()).get("peft_type")
        raise BackendError(
            f"the adapters in {folder} are {kind}, not MoR: the torch backend needs role "
            "adapters (a MoRConfig, method 'mor' or 'lora')"
        )
    return model.eval(), list(roles)


def _check_metadata(folder: Path, base_path: Path | None) -> None:
    """Refuse adapters whose moragent.json names another base model or template version."""
    if not (folder / "moragent.json").is_file():
        logger.info("%s has no moragent.json: loading the adapters unchecked", folder)
        return
    try:
        from moragent.train.metadata import AdapterMismatchError, check_adapters
    except ImportError:  # the training package is optional here
        logger.info("moragent.train is not available: adapters in %s unchecked", folder)
        return
    from moragent.prompts import TEMPLATE_VERSION

    try:
        check_adapters(folder, base_path, TEMPLATE_VERSION)
    except AdapterMismatchError as exc:
        raise BackendError(str(exc)) from exc
