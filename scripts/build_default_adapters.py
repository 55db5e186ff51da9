"""Build the role adapters that ship with moragent, from a clean clone, in one command.

1. the default training set from ../shared/data (scripts/build_training_set.py);
2. ``moragent finetune`` of MoR adapters on the embedded SmolLM2-135M-Instruct, in
   ``--stages`` runs of ``--max-steps`` each, every run after the first starting from
   the one before (``--from``) with the next seed, so that it sees other trajectories;
3. ``moragent export`` of each role group to one GGUF LoRA (the fit collapse on
   ``--calibration`` training trajectories, at ``--rank``);
4. the exported folder copied into ``moragent/adapters/smollm2-135m-instruct`` (replaced
   whole, through a staging folder), where ``moragent chat``, ``run`` and ``Agent()``
   find it.

    python scripts/build_default_adapters.py [--stages 2] [--max-steps 120] [--rank 8]

The defaults are those of the shipped adapters, which are this script's output: two
runs of 120 optimizer steps of 4 sequences (two forwards of 2, which kept the process
under 10 GB; 4 at once peaked above 12 GB), seeds 0 and 1, a 0.8% validation split, and
a rank-8 export fitted on 32 calibration trajectories. About 55 minutes here (2 cores):
training set 3 s, the two runs 26 and 28 minutes, export 1 minute.

Every step's output stays under ``runs/`` (training set, trained adapters, export);
``--skip-training`` reuses ``runs/default-mor`` from an earlier run.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "moragent" / "adapters" / "smollm2-135m-instruct"


def step(title: str, command: list[str]) -> float:
    """Run one stage; stop the build with its exit code when it fails."""
    print(f"\n== {title}\n$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"{title} failed (exit code {done.returncode}); nothing was shipped")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=2, help="training runs, each from the last")
    parser.add_argument("--max-steps", type=int, default=120, help="optimizer steps per stage")
    parser.add_argument("--batch-size", type=int, default=2, help="sequences per forward")
    parser.add_argument("--grad-accum", type=int, default=2, help="forwards per optimizer step")
    parser.add_argument("--val-split", type=float, default=0.008, help="held-out share")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    parser.add_argument("--rank", type=int, default=8, help="rank of the exported GGUF LoRAs")
    parser.add_argument(
        "--calibration", type=int, default=32, help="trajectories the export's fit collapse runs"
    )
    parser.add_argument("--runs", type=Path, default=ROOT / "runs", help="work folder")
    parser.add_argument(
        "--skip-training", action="store_true", help="export runs/default-mor as it is"
    )
    args = parser.parse_args()
    if args.stages < 1:
        parser.error(f"--stages must be at least 1, got {args.stages}")

    moragent = [sys.executable, "-c", "from moragent.cli import main; main()"]
    data = args.runs / "train.jsonl"
    trained = args.runs / "default-mor"
    exported = args.runs / "default-gguf"
    times = {}
    if not args.skip_training:
        times["training set"] = step(
            "training set", [sys.executable, "scripts/build_training_set.py", "-o", str(data)]
        )
        previous = trained
        for stage in range(args.stages):
            out = trained if stage == args.stages - 1 else args.runs / f"default-mor-{stage + 1}"
            start = ["--from", str(previous)] if stage else []
            times[f"finetune {stage + 1}"] = step(
                f"finetune (MoR), stage {stage + 1} of {args.stages}",
                moragent + ["finetune", str(data), "--method", "mor", "--max-steps",
                            str(args.max_steps), "--batch-size", str(args.batch_size),
                            "--grad-accum", str(args.grad_accum), "--val-split",
                            str(args.val_split), "--lr", str(args.lr), "--seed", str(stage),
                            "--out", str(out), *start],
            )  # fmt: skip
            previous = out
    times["export"] = step(
        "export to GGUF",
        moragent + ["export", str(trained), "--to", "gguf", "-o", str(exported), "--rank",
                    str(args.rank), "--calibration", str(data), "--max-sequences",
                    str(args.calibration), "--dtype", "f16"],
    )  # fmt: skip

    staging = TARGET.with_name(TARGET.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(exported, staging)
    shutil.rmtree(TARGET, ignore_errors=True)
    staging.rename(TARGET)
    size = sum(path.stat().st_size for path in TARGET.iterdir())
    print(f"\nshipped {TARGET} ({size / 2**20:.1f} MiB)")
    for title, seconds in times.items():
        print(f"  {title}: {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
