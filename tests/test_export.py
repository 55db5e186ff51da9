"""Export of role adapters to GGUF LoRA, loaded by llama.cpp and compared with transformers.

The adapters are random (``init_weights=False``, B scaled down) on the real SmolLM2-135M
GGUF, so the test needs no training; the transformers side loads the dequantized GGUF
from the conversion cache shared with training and the torch backend.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from test_export_support import ROLES, make_adapters  # noqa: E402

from moragent.backends import BackendError, make_backend  # noqa: E402
from moragent.backends.llamacpp import LlamaCppBackend  # noqa: E402
from moragent.export import ExportError, export_adapters  # noqa: E402
from moragent.export.collapse import low_rank  # noqa: E402
from moragent.export.gguf import read_base, rotary_permute  # noqa: E402
from moragent.models import default_gguf  # noqa: E402
from moragent.roles import Role  # noqa: E402

os.environ.setdefault("MORAGENT_THREADS", "1")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """On a busy two-core machine one torch thread is about ten times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TEXT = (
    "<|im_start|>system\nYou call tools to answer questions.<|im_end|>\n"
    "<|im_start|>user\nWhat is the weather in Paris and in Rome tomorrow?<|im_end|>\n"
    '<|im_start|>assistant\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
)


@pytest.fixture(scope="module")
def lora_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model, tokenizer = make_adapters(root / "adapters")
    result = export_adapters(root / "adapters", root / "gguf")
    return root, model, tokenizer, result


def torch_top1(model, ids, rows=None):
    """Top-1 after each token: the base model (``rows`` None) or one row per role-id list."""
    with torch.no_grad():
        if rows is None:
            with model.disable_adapter():
                return model(input_ids=torch.tensor([ids])).logits[0].argmax(-1).tolist()
        batch = torch.tensor([ids] * len(rows))
        logits = model(input_ids=batch, role_ids=torch.tensor(rows)).logits
    return logits.argmax(-1).tolist()


def llama_top1(backend, segments):
    """Top-1 after each token of (role, tokens) segments, the adapter switched per segment."""
    backend.reset()
    llm, n_vocab, top = backend.llm, backend.llm.n_vocab(), []
    for role, tokens in segments:
        backend._activate(role)
        llm._batch.set_batch(batch=tokens, n_past=llm.n_tokens, logits_all=True)
        llm._ctx.decode(llm._batch)
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(tokens) * n_vocab,))
        top += logits.reshape(len(tokens), n_vocab).argmax(-1).tolist()
        llm.n_tokens += len(tokens)
    return top


def agreement(a, b):
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def test_export_writes_one_adapter_per_role_with_base_tensor_names(lora_export):
    from gguf import GGUFReader

    root, _, _, result = lora_export
    assert sorted(result.files) == sorted(ROLES)
    assert result.rank is None and result.reports == {}
    reader = GGUFReader(result.files["executor"])
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("adapter.type").contents() == "lora"
    assert reader.get_field("adapter.lora.alpha").contents() == pytest.approx(8.0)
    assert reader.get_field("general.architecture").contents() == "llama"
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    assert len(shapes) == 30 * 7 * 2
    assert shapes["blk.0.attn_q.weight.lora_a"] == (576, 4)
    assert shapes["blk.0.attn_q.weight.lora_b"] == (4, 576)
    assert shapes["blk.29.ffn_down.weight.lora_a"] == (1536, 4)
    assert shapes["blk.29.attn_k.weight.lora_b"] == (4, 192)
    meta = json.loads((root / "gguf" / "moragent.json").read_text())
    assert meta["base"]["name"] == default_gguf().name
    assert meta["base"]["size"] == default_gguf().stat().st_size
    assert set(meta["results"]["export"]["files"]) == set(ROLES)


def test_llamacpp_with_exported_adapters_agrees_with_transformers(lora_export):
    root, model, tokenizer, _ = lora_export
    ids = tokenizer(TEXT)["input_ids"][:40]
    n = len(ids)
    mixed = [0] * 12 + [1] * 12 + [2] * (n - 24)
    want = torch_top1(model, ids, [[0] * n, [1] * n, [2] * n, mixed])
    base_torch = torch_top1(model, ids)

    plain = LlamaCppBackend(n_ctx=128)
    try:
        assert agreement(llama_top1(plain, [(Role.REASONER, ids)]), base_torch) >= 0.9
    finally:
        plain.close()
    backend = make_backend("llamacpp", adapters=root / "gguf", n_ctx=128)
    try:
        assert set(backend.adapter_roles) == set(Role)
        for index, role in enumerate(ROLES):
            got = llama_top1(backend, [(Role(role), ids)])
            assert agreement(got, want[index]) >= 0.9, role
            assert agreement(want[index], base_torch) < 0.85, f"the {role} adapter changes little"
        # one sequence in three segments: the cache of earlier segments keeps their role
        segments = [
            (Role.REASONER, ids[:12]),
            (Role.EXECUTOR, ids[12:24]),
            (Role.SUMMARIZER, ids[24:]),
        ]
        assert agreement(llama_top1(backend, segments), want[3]) >= 0.9
    finally:
        backend.close()


def test_f16_export_is_half_the_size_and_predicts_as_f32(lora_export):
    from gguf import GGUFReader

    root, _, tokenizer, result = lora_export
    half = export_adapters(root / "adapters", root / "gguf16", dtype="f16")
    for role in ROLES:
        ratio = half.files[role].stat().st_size / result.files[role].stat().st_size
        assert 0.45 < ratio < 0.55, (role, ratio)
    types = {t.tensor_type.name for t in GGUFReader(half.files["executor"]).tensors}
    assert types == {"F16"}
    ids = tokenizer(TEXT)["input_ids"][:40]
    tops = []
    for folder in (root / "gguf", root / "gguf16"):
        backend = make_backend("llamacpp", adapters=folder, n_ctx=128)
        try:
            tops.append(llama_top1(backend, [(Role.EXECUTOR, ids)]))
        finally:
            backend.close()
    assert agreement(tops[0], tops[1]) >= 0.95
    with pytest.raises(ExportError, match="unknown tensor type 'q4'"):
        export_adapters(root / "adapters", root / "bad", dtype="q4")
    assert not (root / "bad").exists()


def test_rotary_permutation_interleaves_the_halves_of_each_head():
    rows = torch.arange(8).float().unsqueeze(1)
    assert rotary_permute(rows, 2).squeeze(1).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_low_rank_is_exact_at_full_rank_and_reports_the_loss():
    torch.manual_seed(0)
    factors = [(torch.randn(12, 2), torch.randn(2, 10)), (torch.randn(12, 3), torch.randn(3, 10))]
    dense = sum(b @ a for b, a in factors)
    a, b, lost, total = low_rank(factors, 5)
    assert torch.allclose(b @ a, dense, atol=1e-4) and lost == pytest.approx(0, abs=1e-6)
    a, b, lost, total = low_rank(factors, 2)
    error = torch.linalg.norm(b @ a - dense) ** 2
    assert float(error) == pytest.approx(lost, rel=1e-3) and 0 < lost < total
    a, _, _, _ = low_rank(factors, 7)
    assert a.shape == (7, 10) and float(a[5:].abs().sum()) == 0.0


def test_bad_folders_are_clear_errors(lora_export, tmp_path):
    import shutil

    root, _, _, _ = lora_export
    good = root / "gguf"

    missing = tmp_path / "missing"
    shutil.copytree(good, missing)
    (missing / "summarizer.gguf").unlink()
    with pytest.raises(BackendError, match="summarizer.gguf"):
        make_backend("llamacpp", adapters=missing)

    corrupted = tmp_path / "corrupted"
    shutil.copytree(good, corrupted)
    data = bytearray((corrupted / "executor.gguf").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupted / "executor.gguf").write_bytes(bytes(data))
    with pytest.raises(BackendError, match="executor.gguf is corrupted"):
        make_backend("llamacpp", adapters=corrupted)

    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes((good / "reasoner.gguf").read_bytes()[:5000])
    with pytest.raises(BackendError, match="truncated.gguf"):
        LlamaCppBackend(adapters={"reasoner": truncated}, n_ctx=64)

    version = tmp_path / "version"
    shutil.copytree(good, version)
    meta = json.loads((version / "moragent.json").read_text())
    meta["template_version"] = "0-other"
    (version / "moragent.json").write_text(json.dumps(meta))
    with pytest.raises(BackendError, match="template version 0-other"):
        make_backend("llamacpp", adapters=version)

    other_base = tmp_path / "other.gguf"
    other_base.write_bytes(default_gguf().read_bytes()[:-16] + bytes(16))
    with pytest.raises(BackendError, match="not for .*other.gguf"):
        make_backend("llamacpp", model=other_base, adapters=good)


def test_export_refuses_adapters_for_another_base(lora_export, tmp_path):
    root, _, _, _ = lora_export
    with pytest.raises(ValueError, match="trained on base model"):
        export_adapters(root / "adapters", tmp_path / "out", model=_gemma_or_copy(tmp_path))


def _gemma_or_copy(tmp_path):
    """Another GGUF file: a copy of the default model with different bytes."""
    other = tmp_path / "another.gguf"
    other.write_bytes(default_gguf().read_bytes()[:-16] + bytes(16))
    return other


def test_tied_output_layer_is_refused(tmp_path):
    base = read_base(default_gguf())
    from moragent.export.gguf import gguf_tensor_name

    assert gguf_tensor_name(base, "model.layers.3.mlp.up_proj") == "blk.3.ffn_up.weight"
    with pytest.raises(ExportError, match="ties its output layer"):
        gguf_tensor_name(base, "lm_head")
