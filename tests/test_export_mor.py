"""Export of ``mor`` role groups: calibrated routing, collapse to one LoRA per role, the CLI."""

from __future__ import annotations

import json
import os

import pytest
import torch

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from gguf import GGUFReader  # noqa: E402
from test_export_support import ROLES, make_adapters  # noqa: E402
from test_train_support import write_data  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from moragent.backends.llamacpp import LlamaCppBackend  # noqa: E402
from moragent.cli.app import app  # noqa: E402
from moragent.export.collapse import (  # noqa: E402
    calibration_sequences,
    group_factors,
    measure_routing,
)
from moragent.roles import Role  # noqa: E402

os.environ.setdefault("MORAGENT_THREADS", "1")

V_PROJ = "model.layers.2.self_attn.v_proj"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """On a busy two-core machine one torch thread is about ten times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mor_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("mor")
    model, tokenizer = make_adapters(root / "adapters", method="mor", b_scale=0.3)
    data = write_data(root / "calibration.jsonl", 2)
    result = CliRunner().invoke(
        app,
        [
            "export", str(root / "adapters"), "--to", "gguf", "-o", str(root / "gguf"),
            "--calibration", str(data), "--max-sequences", "2",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return root, model, tokenizer, data, result.output


@pytest.fixture(scope="module")
def routing(mor_export):
    _, model, tokenizer, data, _ = mor_export
    sequences = calibration_sequences(data, tokenizer, ROLES, max_sequences=2)
    return sequences, measure_routing(model, sequences, ROLES, fit=True)  # as the export does


def test_cli_reports_the_collapse_of_each_role(mor_export):
    root, _, _, _, output = mor_export
    assert "mor adapters, collapsed to rank 16" in output
    meta = json.loads((root / "gguf" / "moragent.json").read_text())
    collapse = meta["results"]["export"]["collapse"]
    assert set(collapse) == set(ROLES)
    for report in collapse.values():
        assert report["rank"] == 16 and report["method"] == "fit"
        # full rank: the sum of 3 (or 2) routed experts plus the shared one is kept exactly
        assert report["relative_error"] < 1e-3
        assert report["calibration_tokens"] > 0
        assert 0.0 < report["mean_gate"] < 1.0


def test_routing_is_measured_on_each_roles_own_tokens(routing):
    sequences, stats = routing
    counts = [sum(role_ids.count(i) for _, role_ids in sequences) for i in range(3)]
    for index, role in enumerate(ROLES):
        entry = stats[(V_PROJ, role)]
        assert entry.tokens == counts[index]
        weights = entry.mean_weights(3 if role != "summarizer" else 2)
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-5)
        assert 0.0 < entry.mean_gate() < 1.0


def test_written_delta_is_the_expected_group_delta(mor_export, routing):
    root, model, _, _, _ = mor_export
    _, stats = routing
    layer = model.get_submodule(f"base_model.model.{V_PROJ}")
    reader = GGUFReader(root / "gguf" / "executor.gguf")
    tensors = {t.name: torch.tensor(t.data.copy()) for t in reader.tensors}
    a, b = tensors["blk.2.attn_v.weight.lora_a"], tensors["blk.2.attn_v.weight.lora_b"]
    alpha = float(reader.get_field("adapter.lora.alpha").contents())
    kinds = {name: getattr(layer, name)["default"]["executor"].detach() for name in
             ("mor_A", "mor_B", "mor_shared_A", "mor_shared_B")}  # fmt: skip
    pairs = group_factors(kinds, layer.scaling("default"), stats[(V_PROJ, "executor")])
    expected = sum(bb @ aa for bb, aa in pairs)
    written = (alpha / a.shape[0]) * (b @ a)
    assert torch.allclose(written, expected, atol=1e-5 * float(expected.abs().max()))


def group_inputs_and_outputs(model, sequences, role: str):
    """The inputs of V_PROJ at ``role``'s tokens and the role group's real output there."""
    from moragent.mor.layer import route

    layer = model.get_submodule(f"base_model.model.{V_PROJ}")
    seen = []
    handle = layer.register_forward_pre_hook(lambda module, args: seen.append(args[0][0]))
    with torch.no_grad():
        for ids, role_ids in sequences:
            model(input_ids=torch.tensor([ids]), role_ids=torch.tensor([role_ids]), use_cache=False)
    handle.remove()
    index = ROLES.index(role)
    mask = torch.cat([torch.tensor(role_ids) == index for _, role_ids in sequences])
    x = torch.cat(seen).float()[mask]
    get = lambda name: getattr(layer, name)["default"][role].detach().float()  # noqa: E731
    a, b, scaling = get("mor_A"), get("mor_B"), layer.scaling("default")
    _, top, weights = route(x @ get("mor_router").t(), 2)
    dense = torch.zeros(x.shape[0], a.shape[0]).scatter_(1, top, weights)
    y = scaling * torch.einsum("ne,eor,erd,nd->no", dense, b, a, x)
    gate = torch.sigmoid(x @ get("mor_gate").t())
    y += scaling * gate * (x @ get("mor_shared_A").t() @ get("mor_shared_B").t())
    kinds = {name: get(name) for name in ("mor_A", "mor_B", "mor_shared_A", "mor_shared_B")}
    return x, y, kinds, scaling


def test_the_fit_collapse_is_the_least_squares_map_of_the_group(mor_export, routing, monkeypatch):
    from moragent.export import collapse

    _, model, _, _, _ = mor_export
    sequences, _ = routing
    model.eval()  # no dropout: both passes see the same inputs
    x, y, kinds, scaling = group_inputs_and_outputs(model, sequences, "executor")
    stats = measure_routing(model, sequences, ROLES, fit=True)[(V_PROJ, "executor")]
    gram = x.t() @ x
    assert stats.tokens == x.shape[0]
    assert torch.allclose(stats.gram, gram, atol=1e-5 * float(gram.abs().max()))

    def error(pairs) -> float:
        w = sum(bb @ aa for bb, aa in pairs)
        return float((x @ w.t() - y).pow(2).sum())

    mean_stats = collapse.RoutingStats(stats.weights, stats.gate, stats.tokens)
    mean_error = error(group_factors(kinds, scaling, mean_stats))
    fit_error = error(group_factors(kinds, scaling, stats))
    assert fit_error < 0.9 * mean_error
    # with no ridge the fit is plain least squares: no linear map does better on these tokens
    monkeypatch.setattr(collapse, "FIT_RIDGE", 1e-9)
    best = torch.linalg.lstsq(x.double(), y.double()).solution
    best_error = float((x.double() @ best - y.double()).pow(2).sum())
    scale = float(y.pow(2).sum())
    assert error(group_factors(kinds, scaling, stats)) <= best_error + 1e-5 * scale
    assert mean_error > 1e-2 * scale  # the mean collapse is far from it


def test_collapsed_adapters_load_and_change_llamacpp_output(mor_export):
    root, _, tokenizer, _, _ = mor_export
    files = {role: root / "gguf" / f"{role}.gguf" for role in ROLES}
    backend = LlamaCppBackend(adapters=files, n_ctx=128)
    try:
        prompt = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
        backend.feed(Role.REASONER, prompt)
        with_adapter = backend.generate(Role.EXECUTOR, "", max_tokens=6).text
        backend.reset()
        backend._adapters.clear()
        backend._applied = backend._active = None
        backend.feed(Role.REASONER, prompt)
        bare = backend.generate(Role.EXECUTOR, "", max_tokens=6).text
        assert with_adapter != bare
        assert backend.stats.reevaluated == 0
    finally:
        backend.close()
