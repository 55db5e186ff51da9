"""The same episodes through an OpenAI-compatible server and in-process on llama.cpp.

Starts ``llama_cpp.server`` on 127.0.0.1 serving the embedded model under the three role
names (the server's extra dependencies must be installed: fastapi, uvicorn,
sse-starlette, starlette-context, pydantic-settings), runs the episodes through the
openai backend, runs the same episodes on ``LlamaCppBackend`` in this process, stops the
server, and prints per-episode wall times, totals and their ratio.

    python benchmarks/bench_openai.py [--episodes 20] [--threads 1] [--max-steps 2]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from moragent import Agent, load_tools
from moragent.backends.llamacpp import LlamaCppBackend
from moragent.backends.openai import OpenAIBackend
from moragent.models import default_gguf
from moragent.roles import ROLE_NAMES

QUERIES = [
    "What is 19 times 21?",
    "Convert 10 miles to kilometers.",
    "How many days are there between 2024-02-01 and 2024-04-01?",
    "What weekday was 2000-01-01?",
    "What is the capital of France?",
    "What is the square root of 1764?",
    "Convert 212 fahrenheit to celsius.",
    "What date is 30 days after 2025-01-15?",
    "How many words are in 'a small model can call tools well'?",
    "What currency does Japan use?",
    "What is (7 + 5) * 4 - 6?",
    "Convert 4 kilograms to pounds.",
    "What is the population of Australia?",
    "How many days from 2024-06-01 to 2024-12-01?",
    "Convert 90 minutes to hours.",
    "What is 3 to the power of 7?",
    "On which continent is Peru?",
    "What weekday is 2031-05-05?",
    "Give me text statistics for 'One fish. Two fish.'",
    "What is 256 divided by 16?",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(folder: Path, threads: int) -> tuple[subprocess.Popen, str]:
    """``llama_cpp.server`` with the embedded model as reasoner, executor and summarizer."""
    port = free_port()
    model = {"model": str(default_gguf()), "n_ctx": 4096, "verbose": False,
             "logits_all": False, "use_mlock": False,
             "n_threads": threads, "n_threads_batch": threads}  # fmt: skip
    config = {"host": "127.0.0.1", "port": port,
              "models": [{**model, "model_alias": role} for role in ROLE_NAMES]}  # fmt: skip
    (folder / "server.json").write_text(json.dumps(config))
    log = (folder / "server.log").open("w")
    command = [
        sys.executable,
        "-m",
        "moragent.backends.llamacpp_safe",  # llama_cpp.server, minus the AMX crash
        "--config_file",
        str(folder / "server.json"),
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=1).close()
            return process, url + "/v1"
        except OSError:
            time.sleep(0.3)
    stop_server(process)
    raise SystemExit(
        "llama_cpp.server did not start: " + (folder / "server.log").read_text()[-2000:]
    )


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def run_episodes(agent: Agent, episodes: int, label: str) -> tuple[float, list[str]]:
    """Wall seconds of all episodes, and each episode's step letters."""
    agent.run("warm-up: what is 1 + 1?")
    total, shapes = 0.0, []
    for i in range(episodes):
        began = time.perf_counter()
        result = agent.run(QUERIES[i % len(QUERIES)])
        wall = time.perf_counter() - began
        total += wall
        shape = "".join(step.role[0] for step in result.trajectory.steps)
        shapes.append(shape + ("!" if result.error else ""))
        print(f"{label:>10} {i + 1:>2} {wall:>7.2f} s  {shape}", flush=True)
    return total, shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=2)
    args = parser.parse_args()
    tools = load_tools(Path(__file__).resolve().parents[1] / "examples" / "tools.py")
    # a SIGTERM (timeout, kill) still runs the finally below that stops the server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory() as folder:
        process, url = start_server(Path(folder), args.threads)
        try:
            backend = OpenAIBackend(
                role_models={r: r for r in ROLE_NAMES}, base_url=url, check=True
            )
            agent = Agent(tools=tools, backend=backend, max_steps=args.max_steps)
            server_s, server_shapes = run_episodes(agent, args.episodes, "server")
            requests = backend.stats.extra["requests"]
        finally:
            stop_server(process)

    local = LlamaCppBackend(n_threads=args.threads)
    agent = Agent(tools=tools, backend=local, max_steps=args.max_steps)
    local_s, local_shapes = run_episodes(agent, args.episodes, "in-process")
    local.close()

    same = sum(a == b for a, b in zip(server_shapes, local_shapes, strict=True))
    print()
    print(f"episodes: {args.episodes}, threads: {args.threads}, max steps: {args.max_steps}")
    print(f"server (llama_cpp.server): {server_s:.1f} s, "
          f"{server_s / args.episodes:.2f} s/episode, {requests} requests in the last")  # fmt: skip
    print(f"in-process (LlamaCppBackend): {local_s:.1f} s, {local_s / args.episodes:.2f} s/episode")
    print(f"wall time ratio server / in-process: {server_s / local_s:.2f}")
    print(f"episodes with the same steps on both: {same} of {args.episodes}")


if __name__ == "__main__":
    main()
