"""Role adapters -> GGUF LoRA files that stock llama.cpp loads, one file per role.

A file holds, for every adapted module, ``<base tensor>.lora_a`` (PEFT's A, ``r x d_in``;
GGUF dimensions ``[d_in, r]``) and ``<base tensor>.lora_b`` (PEFT's B, ``d_out x r``;
GGUF ``[r, d_out]``), named after the base model's GGUF tensors through the ``gguf``
package's own name map. llama.cpp scales an adapter by ``scale * alpha / rank``.

What llama.cpp's converter did to the base weights is done to the adapter too: for the
``llama`` architecture the rows of q and k are reordered for rotary embeddings, so the
output side of those LoRAs (B's rows) gets the same reordering. A base GGUF that ties
the output layer to the token embeddings has no ``output.weight`` to adapt: an adapter
on ``lm_head`` is refused with a clear error.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: key prefix of PEFT's saved adapter tensors
PEFT_PREFIX = "base_model.model."

#: architectures whose converter reorders the rows of q and k (rotary, as in Meta's layout)
ROTARY_PERMUTED = ("llama",)


class ExportError(ValueError):
    """The adapters cannot be exported for this base model; the message says why."""


@dataclass(frozen=True)
class BaseGGUF:
    """What export needs to know of a base model's GGUF file.

    Attributes:
        path: the GGUF file.
        arch: ``general.architecture`` (``llama``, ``gemma3``, ...).
        n_blocks: transformer blocks.
        n_head: attention heads.
        n_head_kv: key/value heads.
        shapes: tensor name -> GGUF dimensions (``ne``, innermost first).
    """

    path: Path
    arch: str
    n_blocks: int
    n_head: int
    n_head_kv: int
    shapes: dict[str, tuple[int, ...]]


def read_base(path: str | Path) -> BaseGGUF:
    """Read the architecture, head counts and tensor shapes of a base model's GGUF.

    Parsing a GGUF's vocabulary takes seconds, so the result is kept per file (path, size,
    modification time) for the life of the process.
    """
    path = Path(path).resolve()
    stat = path.stat()
    return _read_base(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_base(path: Path, size: int, mtime_ns: int) -> BaseGGUF:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError, struct and numpy errors alike
        raise ExportError(
            f"{path} is not a readable GGUF file ({exc}): pass the base GGUF"
        ) from exc

    def field(key: str, default: object = None) -> object:
        value = reader.get_field(key)
        return default if value is None else value.contents()

    arch = str(field("general.architecture", ""))
    if not arch:
        raise ExportError(f"{path} has no general.architecture: pass the base model's GGUF")
    if str(field("general.type", "model")) != "model":
        raise ExportError(f"{path} is not a base model GGUF (general.type is not 'model')")
    n_head = field(f"{arch}.attention.head_count", 0)
    n_head_kv = field(f"{arch}.attention.head_count_kv", n_head)
    shapes = {tensor.name: tuple(int(n) for n in tensor.shape) for tensor in reader.tensors}
    return BaseGGUF(
        path=path,
        arch=arch,
        n_blocks=int(field(f"{arch}.block_count", 0)),
        n_head=int(n_head if not isinstance(n_head, list) else n_head[0]),
        n_head_kv=int(n_head_kv if not isinstance(n_head_kv, list) else n_head_kv[0]),
        shapes=shapes,
    )


def gguf_tensor_name(base: BaseGGUF, module: str) -> str:
    """The base GGUF weight tensor (``blk.0.attn_q.weight``) of a transformers module name.

    Raises:
        ExportError: the name map does not know the module, or the base GGUF lacks it.
    """
    name = _name_map(base.arch, base.n_blocks).get_name(
        f"{module}.weight", try_suffixes=(".weight",)
    )
    if name is None:
        raise ExportError(
            f"no {base.arch} GGUF tensor corresponds to module {module}: adapt only the "
            "attention and MLP projections (target_modules) to export for llama.cpp"
        )
    if name not in base.shapes:
        if name == "output.weight" and "token_embd.weight" in base.shapes:
            raise ExportError(
                f"{base.path.name} ties its output layer to the token embeddings, so "
                f"llama.cpp has no output.weight for the adapter on {module}: train "
                "without lm_head in target_modules"
            )
        raise ExportError(f"{base.path.name} has no tensor {name} (module {module})")
    return name


@functools.lru_cache(maxsize=8)
def _name_map(arch: str, n_blocks: int) -> Any:
    """The ``gguf`` package's transformers -> GGUF tensor-name map of an architecture."""
    import gguf

    arches = {name: value for value, name in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in arches:
        raise ExportError(f"the gguf package does not know architecture {arch!r}")
    return gguf.get_tensor_name_map(arches[arch], n_blocks)


def rotary_permute(rows: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder output rows as llama.cpp's converter does for q/k of llama models.

    Within each head, rows ``(half, pair)`` become ``(pair, half)``: the two halves of a
    head's rotary dimensions are interleaved.
    """
    d_out = rows.shape[0]
    head_dim = d_out // n_head
    if head_dim * n_head != d_out or head_dim % 2:
        raise ExportError(f"cannot reorder {d_out} rows into {n_head} heads for rotary")
    shaped = rows.reshape(n_head, 2, head_dim // 2, *rows.shape[1:])
    return shaped.transpose(1, 2).reshape(rows.shape)


def to_gguf_pair(
    base: BaseGGUF, module: str, a: torch.Tensor, b: torch.Tensor
) -> tuple[str, np.ndarray, np.ndarray]:
    """(base tensor name, lora_a, lora_b) of one module's LoRA, checked and reordered.

    Args:
        base: the base GGUF.
        module: the transformers module name (``model.layers.0.self_attn.q_proj``).
        a: PEFT's A, ``r x d_in``.
        b: PEFT's B, ``d_out x r``.
    """
    name = gguf_tensor_name(base, module)
    d_in, d_out = base.shapes[name][0], base.shapes[name][1]
    if a.shape[1] != d_in or b.shape[0] != d_out or a.shape[0] != b.shape[1]:
        raise ExportError(
            f"the adapter of {module} maps {a.shape[1]} -> {b.shape[0]} features but "
            f"{base.path.name}'s {name} is {d_in} -> {d_out}: the adapter was made for another "
            "base model"
        )
    if base.arch in ROTARY_PERMUTED:
        leaf = module.rsplit(".", 1)[-1]
        if leaf == "q_proj":
            b = rotary_permute(b, base.n_head)
        elif leaf == "k_proj":
            b = rotary_permute(b, base.n_head_kv)
    a_np = a.detach().to(torch.float32).contiguous().numpy()
    b_np = b.detach().to(torch.float32).contiguous().numpy()
    return name.removesuffix(".weight"), a_np, b_np


#: tensor types of written adapters -> their numpy dtype
TENSOR_DTYPES = {"f32": np.float32, "f16": np.float16}


def write_lora_gguf(
    path: str | Path,
    base: BaseGGUF,
    tensors: list[tuple[str, np.ndarray, np.ndarray]],
    alpha: float,
    name: str | None = None,
    dtype: str = "f32",
) -> Path:
    """Write one GGUF LoRA adapter file.

    Args:
        path: the file to write.
        base: the base GGUF (its architecture goes into the file).
        tensors: (base tensor name without ``.weight``, A ``r x d_in``, B ``d_out x r``).
        alpha: ``adapter.lora.alpha``; llama.cpp scales by ``alpha / rank``.
        name: ``general.name`` of the adapter.
        dtype: ``f32``, or ``f16`` for files half the size (llama.cpp reads both).
    """
    import gguf

    if dtype not in TENSOR_DTYPES:
        raise ExportError(f"unknown tensor type {dtype!r}: use {' or '.join(TENSOR_DTYPES)}")
    numpy_dtype = TENSOR_DTYPES[dtype]
    if not tensors:
        raise ExportError(f"no adapted module to write into {path}")
    path = Path(path)
    writer = gguf.GGUFWriter(path, base.arch)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        if name:
            writer.add_name(name)
        for tensor, a, b in tensors:
            writer.add_tensor(f"{tensor}.weight.lora_a", np.ascontiguousarray(a, numpy_dtype))
            writer.add_tensor(f"{tensor}.weight.lora_b", np.ascontiguousarray(b, numpy_dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    logger.info("wrote %s (%d adapted tensors)", path, len(tensors))
    return path


def module_of(key: str) -> tuple[str, str, str]:
    """(module, parameter kind, role) of a saved MoR tensor key.

    ``base_model.model.model.layers.0.self_attn.q_proj.mor_A.reasoner`` gives
    ``("model.layers.0.self_attn.q_proj", "mor_A", "reasoner")``.
    """
    stem, role = key.rsplit(".", 1)
    module, kind = stem.rsplit(".", 1)
    return module.removeprefix(PEFT_PREFIX), kind, role
