"""MoR adapter method on tiny random llama and gemma3 models (no download)."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from peft import PeftModel, get_peft_model  # noqa: E402

from moragent.mor import (  # noqa: E402
    MoRConfig,
    MoRLinear,
    RoleIdsError,
    dense_reference,
    load_balancing_loss,
    mor_losses,
    orthogonality_loss,
    role_context,
)

pytestmark = pytest.mark.torch

VOCAB = 97


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread than on two busy ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(kind: str) -> torch.nn.Module:
    """A 2-layer, hidden-64 model of the given architecture, random weights, float32."""
    torch.manual_seed(0)
    if kind == "llama":
        config = transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.Gemma3TextConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
        )
        model = transformers.Gemma3ForCausalLM(config)
    return model.eval()


def random_inputs(batch: int = 2, length: int = 12, roles: int = 3, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, length), generator=generator)
    role_ids = torch.randint(0, roles, (batch, length), generator=generator)
    return ids, role_ids


def adapted(kind: str, **overrides) -> torch.nn.Module:
    settings = {"init_weights": False, "lora_dropout": 0.0}
    settings.update(overrides)
    torch.manual_seed(2)
    return get_peft_model(tiny_model(kind), MoRConfig(**settings)).eval()


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
@pytest.mark.parametrize("method", ["mor", "lora"])
def test_zero_b_gives_the_base_logits_exactly(kind: str, method: str) -> None:
    base = tiny_model(kind)
    ids, role_ids = random_inputs()
    with torch.no_grad():
        expected = base(input_ids=ids).logits
    model = get_peft_model(base, MoRConfig(method=method)).eval()
    with torch.no_grad():
        got = model(input_ids=ids, role_ids=role_ids).logits
    assert torch.equal(got, expected)


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
@pytest.mark.parametrize(
    ("method", "dispatch"),
    [
        ("mor", "role_dense"),
        ("mor", "masked"),
        ("mor", "grouped"),
        ("lora", "role_dense"),
        ("lora", "masked"),
    ],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_efficient_forward_equals_dense_reference(
    kind: str, method: str, dispatch: str, seed: int
) -> None:
    model = adapted(kind, method=method, dispatch=dispatch)
    ids, role_ids = random_inputs(batch=3, length=10, seed=seed)
    with torch.no_grad():
        base = model.get_base_model()
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
        fast = model(input_ids=ids, role_ids=role_ids).logits
        fast_losses = mor_losses(model)
        with dense_reference(model):
            dense = model(input_ids=ids, role_ids=role_ids).logits
            dense_losses = mor_losses(model)
    assert base is not None
    assert (fast - plain).abs().max() > 1e-2  # the adapters do change the output
    torch.testing.assert_close(fast, dense, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast_losses[0], dense_losses[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(fast_losses[1], dense_losses[1], atol=1e-6, rtol=0)


def test_mor_losses_are_the_mean_of_the_one_group_losses() -> None:
    """The losses computed for all groups at once equal a loop over groups (values and
    gradients), with a model whose modules differ in size and roles in experts."""
    model = adapted("llama", num_experts={"reasoner": 3, "executor": 2, "summarizer": 4})
    ids, role_ids = random_inputs(batch=2, length=16, seed=3)
    model(input_ids=ids, role_ids=role_ids)
    aux_terms, orth_terms = [], []
    for module in model.modules():
        if isinstance(module, MoRLinear):
            config = module.mor_config["default"]
            for role, probs in module.router_probs["default"].items():
                aux_terms.append(load_balancing_loss(probs, config.top_k_of(role)))
                a, b = module.mor_A["default"][role], module.mor_B["default"][role]
                orth_terms.append(orthogonality_loss(a, b))
    assert len(aux_terms) == 3 * 7 * 2  # 3 routed roles, 7 modules, 2 layers
    expected = (torch.stack(aux_terms).mean(), torch.stack(orth_terms).mean())
    params = [p for p in model.parameters() if p.requires_grad]
    want = torch.autograd.grad(
        expected[0] + expected[1], params, allow_unused=True, retain_graph=True
    )
    aux, orth = mor_losses(model)
    got = torch.autograd.grad(aux + orth, params, allow_unused=True)
    torch.testing.assert_close(aux, expected[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(orth, expected[1], atol=1e-6, rtol=1e-6)
    assert sum(g is not None for g in got) == sum(g is not None for g in want) > 0
    for mine, theirs in zip(got, want, strict=True):
        if theirs is not None:
            torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=1e-5)


def test_single_role_batch_matches_dense_and_skips_routing_of_others() -> None:
    model = adapted("llama")
    ids, _ = random_inputs()
    role_ids = torch.full_like(ids, 1)
    with torch.no_grad():
        fast = model(input_ids=ids, role_ids=role_ids).logits
        layer = next(m for m in model.modules() if isinstance(m, MoRLinear))
        assert list(layer.router_probs["default"]) == ["executor"]
        with dense_reference(model):
            dense = model(input_ids=ids, role_ids=role_ids).logits
    torch.testing.assert_close(fast, dense, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["mor", "lora"])
@pytest.mark.parametrize("dispatch", ["role_dense", "masked", "grouped"])
def test_gradients_reach_only_roles_in_the_batch(method: str, dispatch: str) -> None:
    model = adapted("llama", method=method, dispatch=dispatch)
    model.train()
    ids, role_ids = random_inputs()
    role_ids = torch.where(role_ids == 1, torch.zeros_like(role_ids), role_ids)  # no executor
    out = model(input_ids=ids, role_ids=role_ids, labels=ids)
    aux, orth = mor_losses(model)
    (out.loss + 1e-3 * aux + 1e-4 * orth).backward()

    seen = {"reasoner": 0, "summarizer": 0}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert "mor_" not in name
            continue
        role = name.rsplit(".", 1)[-1]
        if role == "executor":
            assert param.grad is None, name
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
            seen[role] += 1
    assert seen["reasoner"] > 0 and seen["summarizer"] > 0


def test_only_adapter_parameters_are_trainable() -> None:
    model = adapted("llama")
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    assert names and all(".mor_" in name for name in names)
    kinds = {name.split(".mor_")[1].split(".")[0] for name in names}
    assert kinds == {"A", "B", "router", "shared_A", "shared_B", "gate"}


@pytest.mark.parametrize("method", ["mor", "lora"])
def test_save_then_load_gives_bit_identical_logits(tmp_path, method: str) -> None:
    model = adapted("gemma3", method=method)
    ids, role_ids = random_inputs()
    with torch.no_grad():
        expected = model(input_ids=ids, role_ids=role_ids).logits
    model.save_pretrained(tmp_path)

    loaded = PeftModel.from_pretrained(tiny_model("gemma3"), tmp_path).eval()
    assert loaded.peft_config["default"].method == method
    assert loaded.peft_config["default"].roles == ["reasoner", "executor", "summarizer"]
    with torch.no_grad():
        got = loaded(input_ids=ids, role_ids=role_ids).logits
    assert torch.equal(got, expected)


def test_saved_keys_hold_roles_but_not_the_adapter_name(tmp_path) -> None:
    from safetensors.torch import load_file

    adapted("llama").save_pretrained(tmp_path)
    keys = list(load_file(tmp_path / "adapter_model.safetensors"))
    assert keys and not any(".default" in key for key in keys)
    assert any(key.endswith("q_proj.mor_router.reasoner") for key in keys)
    assert any(key.endswith("down_proj.mor_B.summarizer") for key in keys)


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_incremental_decoding_with_a_kv_cache_equals_the_full_forward(kind: str) -> None:
    model = adapted(kind)
    ids, role_ids = random_inputs(batch=2, length=11)
    with torch.no_grad():
        full = model(input_ids=ids, role_ids=role_ids).logits

        first = model(input_ids=ids[:, :6], role_ids=role_ids[:, :6], use_cache=True)
        cache, pieces = first.past_key_values, [first.logits]
        for start, stop in ((6, 7), (7, 9), (9, 11)):  # one token, then chunks
            step = model(
                input_ids=ids[:, start:stop],
                role_ids=role_ids[:, start:stop],
                past_key_values=cache,
                use_cache=True,
            )
            cache = step.past_key_values
            pieces.append(step.logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4, rtol=0)


def test_generate_inside_role_context_follows_the_roles() -> None:
    model = adapted("llama")
    ids, role_ids = random_inputs(batch=1, length=7)
    with torch.no_grad(), role_context(model, role_ids=role_ids, role="summarizer"):
        generated = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=0)

    # the same greedy decoding by hand, with explicit role ids
    tokens, roles = ids, role_ids
    with torch.no_grad():
        for _ in range(4):
            logits = model(input_ids=tokens, role_ids=roles).logits
            next_token = logits[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, next_token], dim=1)
            roles = torch.cat([roles, torch.full_like(next_token, 2)], dim=1)
    assert torch.equal(generated, tokens)


def test_role_context_with_a_role_name_sets_every_token() -> None:
    model = adapted("llama")
    ids, _ = random_inputs()
    with torch.no_grad():
        explicit = model(input_ids=ids, role_ids=torch.ones_like(ids)).logits
        with role_context(model, role="executor"):
            implicit = model(input_ids=ids).logits
    assert torch.equal(explicit, implicit)


def test_missing_or_bad_role_ids_raise_clear_errors() -> None:
    model = adapted("llama")
    ids, role_ids = random_inputs()
    with pytest.raises(RoleIdsError, match="role_ids=ids"):
        model(input_ids=ids)
    with pytest.raises(RoleIdsError, match=r"must lie in \[0, 3\)"):
        model(input_ids=ids, role_ids=torch.full_like(ids, -1))
    with pytest.raises(RoleIdsError, match="shape"):
        model(input_ids=ids, role_ids=role_ids[:, :-1])
    with pytest.raises(RoleIdsError, match="unknown role"):
        with role_context(model, role="planner"):
            pass


def test_disable_adapter_runs_the_base_model_without_role_ids() -> None:
    base = tiny_model("llama")
    ids, _ = random_inputs()
    with torch.no_grad():
        expected = base(input_ids=ids).logits
    model = get_peft_model(base, MoRConfig(init_weights=False)).eval()
    with torch.no_grad(), model.disable_adapter():
        got = model(input_ids=ids).logits
    assert torch.equal(got, expected)


def test_merge_is_refused_with_an_explanation() -> None:
    model = adapted("llama")
    with pytest.raises(ValueError, match="cannot be merged"):
        model.merge_and_unload()


def test_any_number_of_roles_and_experts() -> None:
    config = MoRConfig(
        roles=["planner", "coder"],
        num_experts=4,
        top_k=3,
        init_weights=False,
        lora_dropout=0.0,
    )
    torch.manual_seed(3)
    model = get_peft_model(tiny_model("llama"), config).eval()
    ids, role_ids = random_inputs(roles=2)
    with torch.no_grad():
        fast = model(input_ids=ids, role_ids=role_ids).logits
        with dense_reference(model):
            dense = model(input_ids=ids, role_ids=role_ids).logits
    torch.testing.assert_close(fast, dense, atol=1e-5, rtol=0)
    layer = next(m for m in model.modules() if isinstance(m, MoRLinear))
    assert set(layer.mor_A["default"]) == {"planner", "coder"}
    assert layer.mor_A["default"]["coder"].shape[0] == 4


def test_config_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="top_k=3 must lie between 1 and num_experts=2"):
        MoRConfig(num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="unknown roles"):
        MoRConfig(num_experts={"planner": 2})
    with pytest.raises(ValueError, match="'mor' or 'lora'"):
        MoRConfig(method="moe")


def test_parameter_count_of_the_default_config() -> None:
    model = get_peft_model(tiny_model("llama"), MoRConfig())
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    d_in = d_out = 64
    r = 4
    expected = 0
    for experts in (3, 3, 2):  # routed experts, each role
        expected += experts * r * (d_in + d_out)  # A and B of the routed experts
        expected += experts * d_in  # router
        expected += r * (d_in + d_out) + d_in  # shared expert and its gate
    got = sum(p.numel() for name, p in layer.named_parameters() if ".mor_" in f".{name}")
    assert got == expected


def test_bf16_autocast_training_step_runs_and_tracks_float32() -> None:
    # top_k == num_experts: no routing flips from bf16 rounding, so results stay comparable
    model = adapted("llama", num_experts=2, top_k=2)
    model.train()
    ids, role_ids = random_inputs()
    with torch.no_grad():
        exact = model(input_ids=ids, role_ids=role_ids).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, role_ids=role_ids, labels=ids)
        with torch.no_grad(), dense_reference(model):
            dense = model(input_ids=ids, role_ids=role_ids).logits
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)
    # the random test adapters are large, so bf16 rounding shows; the efficient forward
    # must not round worse than the dense reference does
    fast_error = (out.logits.float() - exact).abs().max().item()
    dense_error = (dense.float() - exact).abs().max().item()
    assert fast_error < 0.2 and fast_error <= 1.5 * dense_error


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    for checkpointing in (False, True):
        model = adapted("llama")
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        ids, role_ids = random_inputs()
        model(input_ids=ids, role_ids=role_ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5)


def test_deepcopy_keeps_one_shared_role_state() -> None:
    model = copy.deepcopy(adapted("llama"))
    states = {id(m.role_state) for m in model.modules() if isinstance(m, MoRLinear)}
    assert len(states) == 1
