"""Training-step cost of MoR against one plain LoRA and the naive dense reference.

SmolLM2-135M (loaded from its GGUF, or built from the same config at random with
``--random``), batch 4 x 256 tokens, bf16 autocast on CPU, AdamW steps. Variants:

- ``mor``: ``MoRConfig()`` defaults (the ``role_dense`` dispatch: two products per
  module over the A and B sides of the roles present, each token's other roles masked
  to zero);
- ``mor-masked``: ``MoRConfig(dispatch="masked")``: tokens gathered by role, each role's
  experts computed on its own tokens only, results put back in token order;
- ``lora``: peft ``LoraConfig`` with the same rank, alpha, dropout and target modules;
- ``dense``: ``MoRConfig()`` run through the naive dense reference forward.

Each variant runs twice, each time in a fresh process (so one variant's allocations
cannot hide in another's):

- time: mean wall time of the timed steps, with the default allocator;
- memory: peak resident set size during the timed steps minus the RSS just before them
  (model, adapters and optimizer state already allocated), sampled every 2 ms, with
  glibc's malloc told to map every block of 64 KiB or more on its own
  (``MALLOC_MMAP_THRESHOLD_``), so that freed memory leaves the RSS at once. Without
  that, glibc keeps what the warm-up step freed and hands it out again, and "peak minus
  before" measures how fragmented the heap got rather than what the step needs (an
  earlier version of this script did that and reported MoR at 2.4x LoRA);
- saved: bytes of the tensors autograd keeps for the backward pass of one forward
  (counted once per storage through ``saved_tensors_hooks``): independent of the
  allocator.

    python benchmarks/bench_mor.py [--random] [--steps 3] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BATCH, LENGTH = 4, 256
VARIANTS = ("mor", "mor-masked", "lora", "dense")
#: glibc: blocks of 64 KiB and more get their own mapping, returned to the system on free
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples the RSS in a thread; ``peak`` is the highest value seen."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self._stop = interval, _rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def prepare_model_dir(random_init: bool, directory: Path) -> str:
    """Save SmolLM2-135M (GGUF-converted or random) as a plain HF directory; say which."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from moragent.models import default_gguf

    if random_init:
        config = LlamaConfig(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            head_dim=64,
            tie_word_embeddings=True,
            rms_norm_eps=1e-5,
        )
        torch.manual_seed(0)
        model, source = LlamaForCausalLM(config), "random init, SmolLM2-135M config"
    else:
        gguf = default_gguf()
        started = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        source = f"{gguf.name} (GGUF load {time.perf_counter() - started:.0f} s)"
    # a GGUF-loaded model refuses save_pretrained: keep its config and weights ourselves
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (directory / "config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), directory / "weights.pt")
    return source


def load_model_dir(directory: Path):  # noqa: ANN201 - a transformers model
    """The model ``prepare_model_dir`` saved, in float32."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = json.loads((directory / "config.json").read_text())
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(torch.load(directory / "weights.pt"), strict=False)
    model.tie_weights()
    return model


def run_variant(variant: str, model_dir: str, steps: int, threads: int) -> dict[str, float]:
    """One variant in this process: wrap, warm up one step, run ``steps`` steps."""
    import torch
    from peft import LoraConfig, get_peft_model

    from moragent.mor import MoRConfig, auxiliary_loss, dense_reference

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = load_model_dir(Path(model_dir))
    mor_config = MoRConfig()
    if variant == "lora":
        config = LoraConfig(
            r=mor_config.r,
            lora_alpha=mor_config.lora_alpha,
            lora_dropout=mor_config.lora_dropout,
            target_modules=list(mor_config.target_modules),
        )
    elif variant == "mor-masked":
        config = MoRConfig(dispatch="masked")
    else:
        config = mor_config
    model = get_peft_model(base, config)
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5)

    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, base.config.vocab_size, (BATCH, LENGTH), generator=generator)
    # role segments as in a transcript: reasoner, executor, reasoner, ..., summarizer
    bounds = torch.linspace(0, LENGTH, 9).long().tolist()
    roles = [0, 1, 0, 1, 0, 1, 0, 2]
    role_ids = torch.zeros(BATCH, LENGTH, dtype=torch.long)
    for (start, stop), role in zip(zip(bounds, bounds[1:], strict=False), roles, strict=True):
        role_ids[:, start:stop] = role

    def step() -> float:
        kwargs = {} if variant == "lora" else {"role_ids": role_ids}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids, **kwargs).loss
            if variant != "lora":
                loss = loss + auxiliary_loss(model)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    def timed_steps() -> tuple[float, int, float]:
        step()  # warm-up: allocator, optimizer state
        before = _rss_bytes()
        with PeakRss() as peak:
            started = time.perf_counter()
            for _ in range(steps):
                loss = step()
            elapsed = (time.perf_counter() - started) / steps
        return elapsed, peak.peak - before, loss

    def saved_bytes() -> int:
        storages: dict[int, int] = {}

        def keep(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            storages.setdefault(storage.data_ptr(), storage.nbytes())
            return tensor

        kwargs = {} if variant == "lora" else {"role_ids": role_ids}
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model(input_ids=ids, labels=ids, **kwargs)
        return sum(storages.values())

    context = dense_reference(model) if variant == "dense" else contextlib.nullcontext()
    with context:
        seconds, memory, loss = timed_steps()
        saved = saved_bytes()
    return {
        "seconds": seconds,
        "memory": memory,
        "saved": saved,
        "trainable": trainable,
        "loss": loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", action="store_true", help="random weights, no GGUF load")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadiest on a shared machine)"
    )
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:
        result = run_variant(args.variant, args.model_dir, args.steps, args.threads)
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="bench_mor_") as directory:
        source = prepare_model_dir(args.random, Path(directory))
        results = {}
        for variant in VARIANTS:
            command = [sys.executable, __file__, "--variant", variant, "--model-dir", directory]
            command += ["--steps", str(args.steps), "--threads", str(args.threads)]
            timed = _run(command, dict(os.environ))
            measured = _run(command, {**os.environ, **MALLOC_ENV})
            if timed is None or measured is None:
                print(f"{variant}: failed", flush=True)
                continue
            results[variant] = {**timed, "memory": measured["memory"]}
            print(f"{variant}: {results[variant]}", flush=True)

    print(f"model: {source}; batch {BATCH} x {LENGTH}; bf16 autocast; {args.threads} threads")
    print(f"{args.steps} timed steps after 1 warm-up; peak = peak RSS during steps - RSS before")
    print("(memory runs with MALLOC_MMAP_THRESHOLD_=65536); saved = tensors kept for backward")
    print(f"load average: {os.getloadavg()[0]:.1f}")
    print(
        f"{'variant':<10} {'trainable':>11} {'s/step':>8} {'peak MiB':>9} {'saved MiB':>10}"
        f" {'loss':>7}"
    )
    for variant, row in results.items():
        print(
            f"{variant:<10} {row['trainable']:>11,} {row['seconds']:>8.2f} "
            f"{row['memory'] / 2**20:>9.0f} {row['saved'] / 2**20:>10.0f} {row['loss']:>7.3f}"
        )
    if len(results) < len(VARIANTS):
        return
    mor, lora, dense = results["mor"], results["lora"], results["dense"]
    print(
        f"mor/lora time {mor['seconds'] / lora['seconds']:.2f}x (goal <= 1.5), "
        f"memory {mor['memory'] / lora['memory']:.2f}x (goal <= 1.3; saved tensors "
        f"{mor['saved'] / lora['saved']:.2f}x); "
        f"dense/mor time {dense['seconds'] / mor['seconds']:.2f}x (goal >= 2)"
    )
    masked = results["mor-masked"]
    print(
        f"mor-masked/lora time {masked['seconds'] / lora['seconds']:.2f}x, "
        f"memory {masked['memory'] / lora['memory']:.2f}x"
    )


def _run(command: list[str], env: dict[str, str]) -> dict[str, float] | None:
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(f"exit code {done.returncode}: {done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
