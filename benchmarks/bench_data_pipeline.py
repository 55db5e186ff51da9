"""Throughput of the data pipeline on the full Seal-Tools set (rules only, no model).

Times ``convert`` (both Seal-Tools files, tool index load included), ``verify`` of the
converted files, and ``complete --teacher rules`` + ``verify`` of the completed ones,
all through the same file-to-file functions the CLI uses. Prints trajectories per
second; the goal for convert + verify is 2,000/s or better.

    python benchmarks/bench_data_pipeline.py [--data ../shared/data] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from moragent.data import seal as seal_module
from moragent.data.complete import complete_file
from moragent.data.convert import convert_file
from moragent.data.rules import RulesTeacher
from moragent.data.schema import _fast_check
from moragent.data.verify import verify_file

ROOT = Path(__file__).resolve().parents[1]
FILES = ("dev.jsonl", "test_in_domain.jsonl")


def run_once(seal: Path, work: Path) -> dict[str, float]:
    """Seconds per stage over both files, and the number of trajectories."""
    times = {"convert": 0.0, "verify": 0.0, "complete": 0.0, "verify completed": 0.0}
    count = 0
    seal_module._INDEXES.clear()  # every run reads tool.jsonl once, as a fresh process would
    for name in FILES:
        converted, completed = work / f"{name}.conv", work / f"{name}.done"
        start = time.perf_counter()
        count += convert_file(seal / name, converted, "seal-tools").trajectories
        times["convert"] += time.perf_counter() - start

        start = time.perf_counter()
        verify_file(converted, work / "a.jsonl", work / "r.jsonl")
        times["verify"] += time.perf_counter() - start

        start = time.perf_counter()
        complete_file(converted, completed, RulesTeacher())
        times["complete"] += time.perf_counter() - start

        start = time.perf_counter()
        verify_file(completed, work / "a.jsonl", work / "r.jsonl")
        times["verify completed"] += time.perf_counter() - start
    times["trajectories"] = count
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the fastest counts")
    args = parser.parse_args()
    seal = args.data / "seal-tools"
    if not seal.is_dir():
        raise SystemExit(f"no Seal-Tools data at {seal}: see docs/data-format.md")

    with tempfile.TemporaryDirectory() as folder:
        runs = [run_once(seal, Path(folder)) for _ in range(args.repeat)]
    count = runs[0]["trajectories"]
    best = {key: min(run[key] for run in runs) for key in runs[0] if key != "trajectories"}
    print(
        f"Seal-Tools: {count:.0f} trajectories, best of {args.repeat} runs; "
        f"fastjsonschema {'on' if _fast_check() else 'off (pip install fastjsonschema)'}"
    )
    for key, seconds in best.items():
        print(f"  {key:<18} {seconds:6.3f} s  {count / seconds:8.0f} trajectories/s")
    pipeline = best["convert"] + best["verify completed"]
    print(
        f"  convert + verify   {pipeline:6.3f} s  {count / pipeline:8.0f} trajectories/s "
        "(verify of completed trajectories: every rule runs to the end)"
    )
    full = best["convert"] + best["complete"] + best["verify completed"]
    print(f"  convert + complete + verify {full:6.3f} s  {count / full:8.0f} trajectories/s")


if __name__ == "__main__":
    main()
