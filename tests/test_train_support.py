"""Shared pieces of the training tests: a tiny random llama with SmolLM2's tokenizer, data.

The tokenizer comes from the embedded SmolLM2 GGUF (no download); the model is a 2-layer,
hidden-64 llama with random weights. Both are saved once to a folder under the temp dir
and reused by later test runs, so only the first run pays the tokenizer conversion.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from moragent.trajectory import Trajectory  # noqa: E402

TINY_VERSION = "1"

ADD_TOOL = {
    "name": "add",
    "description": "Add two numbers.",
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
}


def tiny_base_dir() -> Path:
    """A transformers folder: tiny random llama + SmolLM2 tokenizer (built once, then reused)."""
    target = Path(tempfile.gettempdir()) / f"moragent-tests-tiny-llama-{TINY_VERSION}"
    if (target / "model.safetensors").is_file():
        return target
    from moragent.models import default_gguf

    gguf = default_gguf()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    staging = Path(tempfile.mkdtemp(prefix=".tiny-llama.", dir=target.parent))
    transformers.LlamaForCausalLM(config).save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # built by a parallel run meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return target


def trajectory(a: int, b: int, system: str = "Use the tools.") -> Trajectory:
    """A short episode: reasoner, executor (add), observation, reasoner, summarizer."""
    return Trajectory.from_dict(
        {
            "query": f"What is {a} plus {b}?",
            "tools": [ADD_TOOL],
            "system": system,
            "steps": [
                {"role": "reasoner", "thought": "I add the numbers.", "next": "executor"},
                {"role": "executor", "calls": [{"name": "add", "arguments": {"a": a, "b": b}}]},
                {"role": "observation", "results": [{"name": "add", "content": str(a + b)}]},
                {"role": "reasoner", "thought": "I have the sum.", "next": "summarizer"},
                {"role": "summarizer", "answer": f"{a} plus {b} is {a + b}."},
            ],
        }
    )


def write_data(path: Path, count: int = 8) -> Path:
    """``count`` short trajectories as JSON Lines."""
    lines = [trajectory(i, 2 * i + 1).to_json() for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_settings(**overrides: Any) -> dict[str, Any]:
    """Training settings for a few quick steps on the tiny model."""
    settings: dict[str, Any] = {
        "max_steps": 4,
        "batch_size": 2,
        "grad_accum": 1,
        "lr": 1e-2,
        "max_length": 512,
        "val_split": 0.25,
        "save_steps": 2,
        "logging_steps": 1,
        "bf16": False,
        "seed": 0,
        "warmup_ratio": 0.0,
    }
    settings.update(overrides)
    return settings


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_tiny_base_is_a_llama_with_smollm2_vocabulary() -> None:
    config = read_json(tiny_base_dir() / "config.json")
    assert config["model_type"] == "llama"
    assert config["vocab_size"] == 49152
    assert config["num_hidden_layers"] == 2
