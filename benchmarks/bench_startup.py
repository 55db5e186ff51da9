"""Start-up time of `moragent chat`: from launching the command to its first prompt.

Starts `moragent chat --tools examples/tools.py` as a user would (a new process, the
embedded default model), waits for the `you>` prompt, then sends /exit. Prints the time
to the prompt for each run and the median. Where role adapters ship with the package,
each run also starts `moragent chat --no-adapters` (the bare model), alternating, so the
cost of loading and checking the adapters is measured side by side.

    python benchmarks/bench_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def time_to_prompt(extra: tuple[str, ...] = (), timeout: float = 60.0) -> float:
    command = [shutil.which("moragent") or "moragent", "chat", "--tools", "examples/tools.py"]
    command += extra
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "100"},
    )  # fmt: skip
    seen = b""
    try:
        while b"you>" not in seen:
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"no prompt after {timeout} s; output so far: {seen!r}")
            ready, _, _ = select.select([process.stdout], [], [], 0.05)
            if ready:
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(f"chat exited before its prompt: {seen.decode()}")
                seen += chunk
        elapsed = time.perf_counter() - started
        process.communicate(b"/exit\n", timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from moragent.models import SHIPPED_ADAPTERS

    variants = {"default": ()}
    if (SHIPPED_ADAPTERS / "moragent.json").is_file():
        variants = {"shipped adapters": (), "--no-adapters": ("--no-adapters",)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(args.runs):
        for name, extra in variants.items():
            times[name].append(time_to_prompt(extra))
            print(f"run {i + 1}, {name}: {times[name][-1]:.2f} s to the first prompt")
    for name, measured in times.items():
        print(f"median, {name}: {statistics.median(measured):.2f} s (goal: within 3 s)")


if __name__ == "__main__":
    main()
