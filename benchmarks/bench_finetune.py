"""Training tokens per second of ``mor`` and ``lora`` side by side: same data, model, steps.

Runs ``moragent.train.finetune`` twice on the first ``--trajectories`` of a training
set (default ``runs/train.jsonl`` from scripts/build_training_set.py) with the embedded
SmolLM2-135M, the same seed and settings, no validation split, and prints the tokens
per second that each run's Trainer measured over its optimizer steps (model loading
not included).

    python benchmarks/bench_finetune.py [--steps 3] [--trajectories 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "runs" / "train.jsonl")
    parser.add_argument("--trajectories", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args()

    import torch

    from moragent.train import finetune

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_finetune_") as folder:
        data = Path(folder) / "data.jsonl"
        with args.data.open(encoding="utf-8") as source:
            lines = [line for _, line in zip(range(args.trajectories), source, strict=False)]
        data.write_text("".join(lines), encoding="utf-8")
        rows = {}
        for method in ("mor", "lora"):
            began = time.perf_counter()
            result = finetune(
                data,
                method=method,
                out=Path(folder) / method,
                max_steps=args.steps,
                val_split=0.0,
                max_length=args.max_length,
                save_steps=10**6,
            )
            rows[method] = (result, time.perf_counter() - began)
            print(
                f"{method}: {result.tokens_per_second:.1f} tokens/s over {result.steps} steps, "
                f"{result.tokens:,} tokens; whole call {rows[method][1]:.0f} s",
                flush=True,
            )

    print(f"\n{len(lines)} trajectories of {args.data}; {args.steps} steps each; "
          f"{args.threads} threads; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'method':<6} {'tokens/s':>9} {'tokens':>9}")
    for method, (result, _) in rows.items():
        print(f"{method:<6} {result.tokens_per_second:>9.1f} {result.tokens:>9,}")
    mor, lora = rows["mor"][0], rows["lora"][0]
    print(f"mor / lora throughput: {mor.tokens_per_second / lora.tokens_per_second:.2f}")


if __name__ == "__main__":
    main()
