"""An unquantized copy of a quantized GGUF model: the same weights, stored as F32 (or F16).

A quantized base model in llama.cpp differs from the same weights dequantized in
transformers in two ways: the weights (the same, once dequantized) and the arithmetic
(llama.cpp's CPU matmuls quantize the activations too, Q8 against Q4 weights). A copy of
the GGUF whose weights are the dequantized values, written F32, leaves only the
arithmetic of the two implementations to differ, so a parity measurement on it tells
activation quantization from a real mismatch (rotary, norm epsilon, attention).

>>> from moragent.export.unquantized import write_unquantized
>>> write_unquantized("SmolLM2-135M-Instruct.Q4_1.gguf", "/tmp/SmolLM2-135M-Instruct.F32.gguf")

Every metadata field (the tokenizer included) is copied as it is, except
``general.file_type``, which says the new tensor type. transformers dequantizes a GGUF
with the same ``gguf.quants`` code, so it loads identical weights from either file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from moragent.export.gguf import ExportError

logger = logging.getLogger(__name__)

#: target tensor type -> (numpy dtype of matrices, ``general.file_type``: ALL_F32, MOSTLY_F16)
UNQUANTIZED_TYPES = {"f32": (np.float32, 0), "f16": (np.float16, 1)}

#: fields of GGUFReader that describe the file itself rather than being stored keys
_READER_ONLY = ("GGUF.",)


def write_unquantized(source: str | Path, target: str | Path, dtype: str = "f32") -> Path:
    """Write ``target``: ``source`` with every tensor dequantized to ``dtype``.

    Args:
        source: a GGUF model file (any mix of quantized and float tensors).
        target: the file to write; written beside itself and renamed into place at the end.
        dtype: ``f32`` (exact: every quantized value is representable) or ``f16`` (half the
            size; the dequantized values are rounded to float16). One-dimensional tensors
            (norms) and tensors already F32 stay F32 either way, as llama.cpp's converter
            keeps them.

    Returns:
        ``target``.

    Raises:
        ExportError: ``source`` is not a readable GGUF, or ``dtype`` is unknown.
    """
    import gguf

    if dtype not in UNQUANTIZED_TYPES:
        raise ExportError(
            f"unknown tensor type {dtype!r} for an unquantized copy: use "
            f"{' or '.join(UNQUANTIZED_TYPES)}"
        )
    matrix_dtype, file_type = UNQUANTIZED_TYPES[dtype]
    source, target = Path(source), Path(target)
    try:
        reader = gguf.GGUFReader(source)
    except Exception as exc:  # gguf raises ValueError, struct and numpy errors alike
        raise ExportError(f"{source} is not a readable GGUF file ({exc})") from exc
    arch_field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    if arch_field is None:
        raise ExportError(f"{source} has no general.architecture")

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    writer = gguf.GGUFWriter(staging, arch_field.contents())
    try:
        for field in reader.fields.values():
            if field.name.startswith(_READER_ONLY) or field.name == arch_field.name:
                continue
            if field.name == gguf.Keys.General.FILE_TYPE:
                writer.add_file_type(file_type)
            elif field.name == gguf.Keys.General.ALIGNMENT:
                writer.add_custom_alignment(int(field.contents()))
            else:
                value, vtype, sub_type = _field_value(field)
                writer.add_key_value(field.name, value, vtype, sub_type)
        if reader.get_field(gguf.Keys.General.FILE_TYPE) is None:
            writer.add_file_type(file_type)

        plans = [(tensor, _output_dtype(tensor, matrix_dtype)) for tensor in reader.tensors]
        for tensor, out_dtype in plans:
            shape = tuple(int(n) for n in reversed(tensor.shape))  # numpy order, outermost first
            nbytes = int(np.prod(shape)) * np.dtype(out_dtype).itemsize
            writer.add_tensor_info(tensor.name, shape, np.dtype(out_dtype), nbytes)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor, out_dtype in plans:
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            shape = tuple(int(n) for n in reversed(tensor.shape))
            writer.write_tensor_data(np.ascontiguousarray(values.reshape(shape), out_dtype))
        writer.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o666 & ~umask)  # mkstemp made it private
        os.replace(staging, target)
    except BaseException:
        writer.close()
        Path(staging).unlink(missing_ok=True)
        raise
    logger.info("wrote %s (%d tensors, %s)", target, len(plans), dtype)
    return target


def _output_dtype(tensor: object, matrix_dtype: type) -> type:
    """F32 for vectors and tensors already F32; ``matrix_dtype`` for the others."""
    from gguf import GGMLQuantizationType

    if len(tensor.shape) < 2 or tensor.tensor_type == GGMLQuantizationType.F32:
        return np.float32
    return matrix_dtype


def _field_value(field: object) -> tuple[object, object, object]:
    """(value, value type, array item type) of a reader field, as the writer takes them.

    Strings are copied as their stored bytes, so a token that is not valid UTF-8 survives.
    """
    from gguf import GGUFValueType

    main = field.types[0]
    if main == GGUFValueType.STRING:
        return bytes(field.parts[-1]), main, None
    if main == GGUFValueType.ARRAY:
        item = field.types[-1]
        if len(field.types) > 2:
            raise ExportError(f"nested array field {field.name} cannot be copied")
        if item == GGUFValueType.STRING:
            values = [bytes(field.parts[index]) for index in field.data]
        else:
            values = [field.parts[index].tolist()[0] for index in field.data]
        return values, main, item
    return field.contents(), main, None
