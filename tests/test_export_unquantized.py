"""Unquantized copies of GGUF models (``moragent.export.unquantized``), on a tiny llama GGUF.

The tiny model (two blocks, hidden 64, random weights, Q4_1 and Q8_0 tensors, a byte-level
SentencePiece-style vocabulary) is written here with the ``gguf`` package, so the tests
need no model package and take about a second.
"""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from moragent.export import ExportError  # noqa: E402
from moragent.export.gguf import read_base  # noqa: E402
from moragent.export.unquantized import write_unquantized  # noqa: E402

HIDDEN, FFN, HEADS, KV_HEADS, BLOCKS = 64, 128, 4, 2, 2
#: <unk>, <s>, </s>, the 256 byte tokens, and a few pieces
VOCAB = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), "▁a", "▁b", "ab"]


def tiny_llama_gguf(path, matrix_type=gguf.GGMLQuantizationType.Q4_1):
    """A loadable 2-block llama GGUF with random weights; matrices quantized to ``matrix_type``."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_type("model")
    writer.add_name("tiny test llama")
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(BLOCKS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(VOCAB)
    writer.add_token_scores([-float(i) for i in range(len(VOCAB))])
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * 3
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_array("general.tags", ["tiny", "test"])
    writer.add_bool("tokenizer.ggml.add_bos_token", True)

    def matrix(name, rows, cols, qtype=matrix_type, scale=0.2):
        values = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        data = gguf.quants.quantize(values, qtype)
        writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)

    def vector(name, size):
        writer.add_tensor(name, (1 + 0.1 * rng.standard_normal(size)).astype(np.float32))

    head_dim = HIDDEN // HEADS
    matrix("token_embd.weight", len(VOCAB), HIDDEN, gguf.GGMLQuantizationType.Q8_0, 1.0)
    for block in range(BLOCKS):
        vector(f"blk.{block}.attn_norm.weight", HIDDEN)
        matrix(f"blk.{block}.attn_q.weight", HIDDEN, HIDDEN)
        matrix(f"blk.{block}.attn_k.weight", KV_HEADS * head_dim, HIDDEN)
        matrix(f"blk.{block}.attn_v.weight", KV_HEADS * head_dim, HIDDEN)
        matrix(f"blk.{block}.attn_output.weight", HIDDEN, HIDDEN)
        vector(f"blk.{block}.ffn_norm.weight", HIDDEN)
        matrix(f"blk.{block}.ffn_gate.weight", FFN, HIDDEN)
        matrix(f"blk.{block}.ffn_up.weight", FFN, HIDDEN)
        matrix(f"blk.{block}.ffn_down.weight", HIDDEN, FFN)
    vector("output_norm.weight", HIDDEN)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("unquantized")
    source = tiny_llama_gguf(root / "tiny.Q4_1.gguf")
    return source, write_unquantized(source, root / "tiny.F32.gguf")


def fields(reader):
    return {
        name: (field.types, field.contents())
        for name, field in reader.fields.items()
        if not name.startswith("GGUF.")
    }


def test_the_copy_keeps_every_field_and_holds_the_dequantized_weights(tiny):
    source, copy = tiny
    original, unquantized = gguf.GGUFReader(source), gguf.GGUFReader(copy)
    before, after = fields(original), fields(unquantized)
    assert list(before) == list(after)  # same keys, same order
    assert after.pop("general.file_type")[1] == gguf.LlamaFileType.ALL_F32
    before.pop("general.file_type")
    assert before == after
    assert len(after["tokenizer.ggml.tokens"][1]) == len(VOCAB)

    copied = {tensor.name: tensor for tensor in unquantized.tensors}
    assert [t.name for t in original.tensors] == list(copied)
    for tensor in original.tensors:
        out = copied[tensor.name]
        assert out.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(out.shape) == list(tensor.shape)
        want = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        assert np.array_equal(out.data, want.reshape(out.data.shape)), tensor.name
    assert read_base(copy).shapes == read_base(source).shapes


def test_f16_copy_keeps_vectors_f32_and_rounds_the_matrices(tiny, tmp_path):
    source, copy = tiny
    half = write_unquantized(source, tmp_path / "tiny.F16.gguf", dtype="f16")
    reader = gguf.GGUFReader(half)
    assert reader.get_field("general.file_type").contents() == gguf.LlamaFileType.MOSTLY_F16
    exact = {tensor.name: tensor.data for tensor in gguf.GGUFReader(copy).tensors}
    for tensor in reader.tensors:
        if len(tensor.shape) == 1:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
            assert np.array_equal(tensor.data, exact[tensor.name])
        else:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F16
            values = exact[tensor.name]
            assert np.allclose(tensor.data.astype(np.float32), values, rtol=1e-3, atol=1e-4)
    assert half.stat().st_size < 0.6 * copy.stat().st_size


def test_bad_inputs_are_clear_errors(tiny, tmp_path):
    source, _ = tiny
    with pytest.raises(ExportError, match="unknown tensor type 'q8'"):
        write_unquantized(source, tmp_path / "out.gguf", dtype="q8")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(ExportError, match="not a readable GGUF"):
        write_unquantized(junk, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
    assert not list(tmp_path.glob(".out.gguf.*"))  # no staging file left behind


def llama_logits(path, ids):
    """llama.cpp's logits after every token of ``ids`` (F32 KV cache, one thread).

    Loaded through ``load_llama``, as moragent loads models: a bare ``llama_cpp.Llama``
    on a quantized file crashes in its first decode on AMX CPUs (see llamacpp_safe).
    """
    llama_cpp = pytest.importorskip("llama_cpp")
    from moragent.backends.llamacpp_safe import load_llama

    llm = load_llama(
        path,
        n_ctx=64,
        n_threads=1,
        logits_all=True,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
    )
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


IDS = [1, 259, 100, 260, 40, 261, 7, 200, 150, 259, 33, 90, 12, 260, 60, 250]


def test_llamacpp_runs_the_copy_as_transformers_runs_the_quantized_file(tiny):
    """The F32 copy in llama.cpp matches transformers on the dequantized Q4_1 file closely.

    Same weights, float arithmetic on both sides: what is left is rounding (about 1e-5
    here). The quantized file in llama.cpp differs more (its matmuls quantize the
    activations to 8 bits).
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    source, copy = tiny
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        want = model(input_ids=torch.tensor([IDS])).logits[0].numpy()
    exact = llama_logits(copy, IDS)
    quantized = llama_logits(source, IDS)
    spread = float(np.abs(want).max())
    assert np.abs(exact - want).max() < 1e-3 * spread
    assert (exact.argmax(-1) == want.argmax(-1)).all()
    assert np.abs(quantized - want).max() > np.abs(exact - want).max()
