"""Agent episodes on the embedded model: the controller's own overhead and re-evaluated tokens.

Runs 20 episodes of the example tools on llama.cpp and prints, per episode and in total:
wall time, time inside the backend (model, sampling, grammar), time inside tools, the
controller's own overhead (the rest: templates, parsing, constraints, events) as a share
of wall time, and tokens evaluated twice (the segment rules keep this at 0).

    python benchmarks/bench_agent.py [--episodes 20] [--threads N] [--max-steps 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from moragent import Agent, load_tools
from moragent.backends.llamacpp import LlamaCppBackend

QUERIES = [
    "What is 17 times 23?",
    "Convert 5 miles to kilometers.",
    "How many days are there between 2024-01-01 and 2024-03-01?",
    "What weekday was 1969-07-20?",
    "What is the capital of Japan?",
    "What is the square root of 2025?",
    "Convert 100 fahrenheit to celsius.",
    "What date is 90 days after 2025-06-01?",
    "How many words are in the sentence 'the quick brown fox jumps over the lazy dog'?",
    "What currency does Brazil use?",
    "What is (12 + 8) * 3 - 4?",
    "Convert 2.5 kilograms to pounds.",
    "What is the population of Canada?",
    "How many days from 2023-12-25 to 2024-12-25?",
    "Convert 3 hours to minutes.",
    "What is 2 to the power of 16?",
    "On which continent is Kenya?",
    "What weekday is 2030-01-01?",
    "Give me text statistics for 'Hello world. Hello again.'",
    "What is 144 divided by 12?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=3)
    args = parser.parse_args()

    tools = load_tools(Path(__file__).resolve().parents[1] / "examples" / "tools.py")
    backend = LlamaCppBackend(n_threads=args.threads)
    agent = Agent(tools=tools, backend=backend, max_steps=args.max_steps)
    agent.run("warm-up: what is 1 + 1?")

    print(f"{'#':>2} {'wall s':>7} {'backend s':>9} {'tools s':>7} {'ctrl ms':>8} "
          f"{'ctrl %':>6} {'tokens':>6} {'reeval':>6}  steps")  # fmt: skip
    totals = {"wall": 0.0, "backend": 0.0, "tools": 0.0, "tokens": 0, "reeval": 0}
    started = time.perf_counter()
    for i in range(args.episodes):
        result = agent.run(QUERIES[i % len(QUERIES)])
        meta = result.trajectory.meta
        wall, inside, tools_s = meta["wall_seconds"], meta["backend_seconds"], meta["tool_seconds"]
        overhead = wall - inside - tools_s
        tokens = meta["prompt_tokens"] + meta["completion_tokens"]
        steps = "".join(step.role[0] for step in result.trajectory.steps)
        reeval = meta["reevaluated_tokens"]
        print(f"{i + 1:>2} {wall:>7.2f} {inside:>9.2f} {tools_s:>7.3f} {overhead * 1e3:>8.1f} "
              f"{100 * overhead / wall:>5.2f}% {tokens:>6} {reeval:>6}  {steps}")  # fmt: skip
        totals["wall"] += wall
        totals["backend"] += inside
        totals["tools"] += tools_s
        totals["tokens"] += tokens
        totals["reeval"] += meta["reevaluated_tokens"]
    elapsed = time.perf_counter() - started
    overhead = totals["wall"] - totals["backend"] - totals["tools"]
    print()
    print(f"episodes: {args.episodes}, wall {elapsed:.1f} s, tokens {totals['tokens']}")
    print(f"controller overhead: {overhead:.3f} s = {100 * overhead / totals['wall']:.2f}% "
          "of episode wall time (goal: under 5%)")  # fmt: skip
    print(f"tokens re-evaluated after each episode's first prefill: {totals['reeval']} (goal: 0)")
    print("steps: r = reasoner, e = executor, o = observation, s = summarizer")


if __name__ == "__main__":
    main()
