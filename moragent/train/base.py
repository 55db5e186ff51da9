"""The base model to train on: resolve it, identify it, load it (GGUF through a cache).

``--base`` is a GGUF file (dequantized by transformers on first use, then kept as a
transformers folder in the cache so later loads take a second), a transformers model
folder, or ``None`` for the embedded SmolLM2-135M-Instruct GGUF.

The torch backend has no shared cached loader yet, so training keeps this small one;
the cache folder is ``$MORAGENT_CACHE`` or ``~/.cache/moragent``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moragent.models import ModelNotFoundError, default_gguf

logger = logging.getLogger(__name__)

#: files of a transformers folder that make up the model's identity
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


@dataclass(frozen=True)
class BaseModel:
    """Where a base model is and what it is.

    Attributes:
        path: the GGUF file or transformers folder.
        name: a readable name (the file or folder name).
        sha256: hash of the GGUF file, or of a folder's config and weight files.
        kind: ``"gguf"`` or ``"transformers"``.
    """

    path: Path
    name: str
    sha256: str
    kind: str

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "name": self.name, "sha256": self.sha256, "kind": self.kind}


def cache_dir() -> Path:
    """Where converted models are kept."""
    root = os.environ.get("MORAGENT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "moragent"


def resolve_base(base: str | Path | None) -> BaseModel:
    """Check that ``base`` exists and identify it; raises ``ModelNotFoundError`` if not."""
    path = default_gguf() if base is None else Path(base).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelNotFoundError(
                f"base model {path} is a file but not a .gguf: pass a GGUF file or a "
                "transformers model folder (with config.json)"
            )
        return BaseModel(path.resolve(), path.name, file_hash(path), "gguf")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"base model folder {path} has no config.json: pass a transformers model "
                "folder (save_pretrained output) or a GGUF file"
            )
        return BaseModel(path.resolve(), path.name, folder_hash(path), "transformers")
    raise ModelNotFoundError(
        f"base model not found: {path} does not exist; pass a GGUF file, a transformers "
        "model folder, or leave --base out for the embedded SmolLM2-135M"
    )


#: the on-disk memo of file hashes, in the cache folder
HASH_MEMO = "hashes.json"


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file, memoised by path, size and modification time.

    The memo lives in this process and in ``hashes.json`` of the cache folder, so a
    98 MB base model is hashed once, not at every start of ``moragent chat`` with
    adapters. A file changed in place gets a new modification time, hence a new hash.
    """
    stat = Path(path).stat()
    return _file_hash(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    key = f"{path}|{size}|{mtime_ns}"
    memo_path = cache_dir() / HASH_MEMO
    memo = _read_memo(memo_path)
    if key in memo:
        return memo[key]

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()

    # only large files are worth remembering; a memo that cannot be written is no error
    if size >= 1 << 20:
        memo = {k: v for k, v in memo.items() if not k.startswith(f"{path}|")}
        memo[key] = value
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=memo_path.parent, suffix=".tmp", delete=False
            ) as out:
                json.dump(memo, out)
            os.replace(out.name, memo_path)
        except OSError as exc:
            logger.debug("cannot write the hash memo %s: %s", memo_path, exc)
    return value


def _read_memo(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def folder_hash(path: str | Path) -> str:
    """SHA-256 over a model folder's config.json and weight files (names and contents)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path / "config.json"] + sorted(
        file for file in path.iterdir() if file.is_file() and file.suffix in _WEIGHT_SUFFIXES
    )
    for file in files:
        digest.update(file.name.encode())
        digest.update(file_hash(file).encode())
    return digest.hexdigest()


def base_hash(path: str | Path) -> str:
    """The identity hash of a base model path, as ``resolve_base`` computes it."""
    return resolve_base(path).sha256


def load_base(base: BaseModel, dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) of a resolved base model, float32 unless ``dtype`` says otherwise."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = base.path if base.kind == "transformers" else _converted(base)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _converted(base: BaseModel) -> Path:
    """A transformers folder holding the dequantized GGUF, converted once and cached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "gguf" / f"{base.path.stem}-{base.sha256[:16]}"
    if (target / "config.json").is_file():
        return target
    logger.info("converting %s to a transformers model (once; cached in %s)", base.path, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        folder, name = str(base.path.parent), base.path.name
        AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(staging)
        _save_plain(AutoModelForCausalLM.from_pretrained(folder, gguf_file=name), staging)
        try:
            staging.rename(target)
        except OSError:  # another process converted it meanwhile
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _save_plain(model: Any, folder: Path) -> None:
    """Save a model loaded from GGUF as a plain float32 transformers model.

    transformers refuses to save a model it loaded from GGUF, so the dequantized weights
    move into a fresh model built from the same config.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(folder)
