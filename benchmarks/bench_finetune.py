"""Training throughput and memory of finetune variants side by side: same data, model, steps.

Runs ``moragent.train.finetune`` once per variant, each in a fresh process (so each
peak resident memory is its own), on the first ``--trajectories`` of a training set
(default ``runs/train.jsonl`` from scripts/build_training_set.py) with the embedded
SmolLM2-135M, the same seed and settings, no validation split, and prints the tokens
per second that each run's Trainer measured over its optimizer steps (model loading not
included) and the process's peak resident memory.

Variants: ``mor`` and ``lora`` (the two methods); ``mor-full-logits``, MoR with the
cross-entropy taken from the logits of every position (the model's own loss) instead of
only the positions that predict a labelled token (``--logits`` adds it).

    python benchmarks/bench_finetune.py [--steps 3] [--trajectories 64] [--threads 2] [--logits]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(variant: str, data: Path, out: Path, steps: int, max_length: int) -> dict:
    """Train one variant in this process; its figures as a dict."""
    from moragent.train import finetune, trainer

    if variant.endswith("-full-logits"):
        # the model's own loss over every position: what the Trainer does with no loss function
        original = trainer.MoRTrainer.__init__

        def full_logits_init(self, *args, **kwargs):  # noqa: ANN001, ANN202
            kwargs["compute_loss_func"] = None
            original(self, *args, **kwargs)

        trainer.MoRTrainer.__init__ = full_logits_init
    began = time.perf_counter()
    result = finetune(
        data,
        method=variant.split("-")[0],
        out=out,
        max_steps=steps,
        val_split=0.0,
        max_length=max_length,
        save_steps=10**6,
    )
    return {
        "variant": variant,
        "tokens_per_second": result.tokens_per_second,
        "tokens": result.tokens,
        "steps": result.steps,
        "seconds": time.perf_counter() - began,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "runs" / "train.jsonl")
    parser.add_argument("--trajectories", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument(
        "--logits", action="store_true", help="add MoR with the loss over every position"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: this variant
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        row = run_one(
            args.one, args.folder / "data.jsonl", args.folder / args.one, args.steps,
            args.max_length,
        )  # fmt: skip
        print("RESULT " + json.dumps(row), flush=True)
        return

    variants = ["mor", "lora"] + (["mor-full-logits"] if args.logits else [])
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench_finetune_") as folder:
        with args.data.open(encoding="utf-8") as source:
            lines = [line for _, line in zip(range(args.trajectories), source, strict=False)]
        (Path(folder) / "data.jsonl").write_text("".join(lines), encoding="utf-8")
        for variant in variants:
            command = [
                sys.executable, __file__, "--one", variant, "--folder", folder,
                "--steps", str(args.steps), "--threads", str(args.threads),
                "--max-length", str(args.max_length),
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not found:
                sys.exit(f"{variant} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
            row = json.loads(found[-1].removeprefix("RESULT "))
            rows[variant] = row
            print(
                f"{variant}: {row['tokens_per_second']:.1f} tokens/s over {row['steps']} steps, "
                f"{row['tokens']:,} tokens, peak {row['peak_mib']:.0f} MiB; "
                f"whole call {row['seconds']:.0f} s",
                flush=True,
            )

    print(f"\n{len(lines)} trajectories of {args.data}; {args.steps} steps each; "
          f"{args.threads} threads; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'variant':<16} {'tokens/s':>9} {'tokens':>9} {'peak MiB':>9}")
    for variant, row in rows.items():
        print(
            f"{variant:<16} {row['tokens_per_second']:>9.1f} {row['tokens']:>9,} "
            f"{row['peak_mib']:>9.0f}"
        )
    mor, lora = rows["mor"], rows["lora"]
    print(f"mor / lora throughput: {mor['tokens_per_second'] / lora['tokens_per_second']:.2f}")
    if "mor-full-logits" in rows:
        full = rows["mor-full-logits"]
        print(
            f"mor, labelled-position logits / all logits: throughput "
            f"{mor['tokens_per_second'] / full['tokens_per_second']:.2f}, "
            f"peak memory {mor['peak_mib'] / full['peak_mib']:.2f}"
        )


if __name__ == "__main__":
    main()
