"""MoR on the real models at hand, each loaded from its GGUF (slow: a minute or two).

Run with ``pytest -m slow tests/test_mor_models.py -s`` to see the trainable parameter
counts of the default config.
"""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("gguf")

from peft import get_peft_model  # noqa: E402

from moragent import models  # noqa: E402
from moragent.mor import MoRConfig, dense_reference, mor_losses  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.torch]
logger = logging.getLogger(__name__)


def load(name: str) -> torch.nn.Module:
    try:
        path = models.default_gguf() if name == "smollm2" else models.gemma3_gguf()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    return model.eval()


@pytest.mark.parametrize(
    ("name", "architecture", "share_range"),
    [("smollm2", "llama", (0.08, 0.12)), ("gemma3", "gemma3_text", (0.03, 0.05))],
)
def test_default_mor_on_the_real_model(name: str, architecture: str, share_range) -> None:
    base = load(name)
    assert base.config.model_type == architecture
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, base.config.vocab_size, (2, 24), generator=generator)
    role_ids = torch.randint(0, 3, (2, 24), generator=generator)
    with torch.no_grad():
        expected = base(input_ids=ids).logits

    model = get_peft_model(base, MoRConfig())
    trainable, total = model.get_nb_trainable_parameters()
    share = trainable / total
    line = f"{name}: trainable {trainable:,} of {total:,} parameters ({share:.2%})"
    print(line)
    logger.info(line)
    assert share_range[0] < share < share_range[1]

    model.eval()
    with torch.no_grad():
        got = model(input_ids=ids, role_ids=role_ids).logits
    assert torch.equal(got, expected)  # B starts at zero

    # move B off zero, then the efficient forward must match the dense reference
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if ".mor_B." in param_name or ".mor_shared_B." in param_name:
                param.normal_(std=0.02)
        fast = model(input_ids=ids, role_ids=role_ids).logits
        with dense_reference(model):
            dense = model(input_ids=ids, role_ids=role_ids).logits
    assert (fast - expected).abs().max() > 1e-3
    torch.testing.assert_close(fast, dense, atol=5e-4, rtol=1e-4)

    # one training step under bf16 autocast reaches the adapters
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, role_ids=role_ids, labels=ids).loss
        aux, orth = mor_losses(model)
        total_loss = loss + 1e-3 * aux + 1e-4 * orth
    total_loss.backward()
    assert torch.isfinite(total_loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
