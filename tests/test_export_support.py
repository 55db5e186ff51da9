"""Helpers of the export tests: random MoR role adapters on the real SmolLM2 GGUF."""

from __future__ import annotations

import torch

from moragent.models import default_gguf

ROLES = ("reasoner", "executor", "summarizer")


def make_adapters(folder, method="lora", seed=0, b_scale=0.5, target=None):
    """Random MoR role adapters on SmolLM2 saved with moragent.json; returns (model, tokenizer)."""
    from peft import get_peft_model

    from moragent.mor import MoRConfig
    from moragent.prompts import TEMPLATE_VERSION
    from moragent.train.base import load_base, resolve_base
    from moragent.train.metadata import AdapterMetadata, write_metadata

    base = resolve_base(default_gguf())
    model, tokenizer = load_base(base)
    torch.manual_seed(seed)
    options = {"target_modules": target} if target else {}
    config = MoRConfig(method=method, init_weights=False, lora_dropout=0.0, **options)
    peft_model = get_peft_model(model, config).eval()
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "mor_B" in name or "mor_shared_B" in name:
                param.mul_(b_scale)
    peft_model.save_pretrained(folder)
    metadata = AdapterMetadata(
        method=method,
        roles=list(ROLES),
        template_version=TEMPLATE_VERSION,
        base=base.to_dict(),
        data={},
        adapter_config=config.to_dict(),
    )
    write_metadata(folder, metadata)
    return peft_model, tokenizer
