"""The openai backend: bad conditions on a tiny fake server, episodes on a real one.

The fake is ``http.server`` in a thread on 127.0.0.1 answering from a script; the real
server is ``llama_cpp.server`` serving the embedded model under the three role names,
started and stopped here (marked slow).
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moragent import tool
from moragent.agent import Agent
from moragent.backends import BackendError, make_backend
from moragent.backends.openai import OpenAIBackend
from moragent.backends.server_dialects import constraint_fields, estimate_tokens
from moragent.controller import Limits
from moragent.events import AnswerEvent, ErrorEvent, TokenEvent
from moragent.grammar import executor_constraint, parse_reasoner, reasoner_constraint
from moragent.roles import ROLE_NAMES, Role

ROLE_MODELS = {role: f"{role}-lora" for role in ROLE_NAMES}
CALL = '{"name": "add", "arguments": {"a": 2, "b": 40}}'


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first.
        b: the second.
    """
    return a + b


class FakeServer:
    """An OpenAI-compatible fake: ``replies`` answer /v1/completions in order.

    A reply is a text (streamed word by word), an int (that HTTP status), ``"garbage"``
    (a 200 HTML page), ``("cut", text)`` (one piece, then the connection breaks), or a
    callable returning one of these.
    """

    def __init__(self, replies: list, models: list[str] | None = None, usage=None) -> None:
        self.replies = list(replies)
        self.models = list(ROLE_MODELS.values()) if models is None else models
        self.usage = usage
        self.requests: list[dict] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    data = [{"id": m, "object": "model", "owned_by": "fake"} for m in fake.models]
                    self._json(200, {"object": "list", "data": data})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/extras/tokenize":
                    self._json(200, {"tokens": list(range(len(body["input"].split())))})
                    return
                if self.path != "/v1/completions":
                    self._json(404, {"error": {"message": "not found"}})
                    return
                fake.requests.append(body)
                reply = fake.replies.pop(0) if fake.replies else "Thought: ok\nNext: summarizer"
                reply = reply() if callable(reply) else reply
                if isinstance(reply, int):
                    self._json(
                        reply, {"error": {"message": f"status {reply}"}}, {"Retry-After": "0"}
                    )
                elif reply == "garbage":
                    self._raw(200, b"<html>gateway says hello</html>", "text/html")
                elif isinstance(reply, tuple):
                    self._stream([reply[1]], broken=True)
                else:
                    self._stream([word for word in reply.split(" ")])

            def _json(self, status: int, data: dict, headers: dict | None = None) -> None:
                self._raw(status, json.dumps(data).encode(), "application/json", headers)

            def _raw(self, status: int, payload: bytes, kind: str, headers=None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, words: list[str], broken: bool = False) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
                events = [
                    {"choices": [{"index": 0, "text": p, "finish_reason": None}]} for p in pieces
                ]
                if broken:
                    self._chunk(f"data: {json.dumps(events[0])}\n\n")
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # mid-stream: no end chunk
                    return
                final = {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}
                if fake.usage:
                    final["usage"] = fake.usage
                for event in [*events, final]:
                    event.update(id="cmpl-1", object="text_completion", created=0, model="m")
                    self._chunk(f"data: {json.dumps(event)}\n\n")
                self._chunk("data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")

            def _chunk(self, text: str) -> None:
                data = text.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def fake_server():
    servers: list[FakeServer] = []

    def start(replies: list, **kwargs: object) -> FakeServer:
        servers.append(FakeServer(replies, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        if server.thread.is_alive():
            server.stop()


def backend_for(server: FakeServer, **options: object) -> OpenAIBackend:
    options = {"role_models": ROLE_MODELS, "backoff": 0.01, "timeout": 5.0, **options}
    return OpenAIBackend(base_url=server.base_url, **options)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- requests on the fake


def test_episode_sends_whole_transcript_under_each_role_model(fake_server):
    server = fake_server(
        ["Thought: add them\nNext: executor", CALL, "Thought: done\nNext: summarizer", "It is 42."]
    )
    agent = Agent(tools=[add], backend=backend_for(server))
    events = list(agent.stream("What is 2 + 40?"))

    assert isinstance(events[-1], AnswerEvent) and events[-1].text == "It is 42."
    models = [request["model"] for request in server.requests]
    assert models == ["reasoner-lora", "executor-lora", "reasoner-lora", "summarizer-lora"]
    first, second = server.requests[0]["prompt"], server.requests[1]["prompt"]
    assert second.startswith(first + "Thought: add them\nNext: executor<|im_end|>")
    assert all(request["stream"] and "<|im_end|>" in request["stop"] for request in server.requests)
    streamed = "".join(
        e.text for e in events if isinstance(e, TokenEvent) and e.role is Role.SUMMARIZER
    )
    assert streamed == "It is 42."
    assert agent.backend.transcript.endswith("It is 42.<|im_end|>")


def test_constraints_travel_in_the_fields_of_the_chosen_dialect(fake_server):
    server = fake_server(
        ["Thought: add\nNext: executor", CALL, "Thought: ok\nNext: summarizer", "42"]
    )
    agent = Agent(
        tools=[add], backend=backend_for(server, constraints="vllm"), parallel_calls=False
    )
    assert agent.run("2 + 40?").answer == "42"

    reasoner, executor = server.requests[0], server.requests[1]
    assert reasoner["structured_outputs"]["regex"].startswith("Thought: ")
    assert executor["structured_outputs"]["json"]["properties"]["name"] == {"const": "add"}
    assert "summarizer" in reasoner["structured_outputs"]["regex"]


def test_role_fields_go_with_that_roles_requests_only(fake_server):
    server = fake_server(["a", "b"])
    lora = {"lora": [{"id": 1, "scale": 1.0}]}
    backend = backend_for(server, role_fields={"executor": lora}, constraints="none")
    backend.generate(Role.REASONER, "x", max_tokens=2)
    backend.generate(Role.EXECUTOR, "y", max_tokens=2)
    assert "lora" not in server.requests[0] and server.requests[1]["lora"] == lora["lora"]
    assert server.requests[1]["prompt"] == "xay"


def test_dialect_fields():
    schema = executor_constraint([add.schema], parallel=False)
    reasoner = reasoner_constraint()
    assert constraint_fields("none", schema) == {}
    assert constraint_fields("vllm-guided", schema)["guided_json"] == schema.json_schema
    assert "executor|summarizer" in constraint_fields("vllm-guided", reasoner)["guided_regex"]
    assert constraint_fields("response_format", reasoner) == {}
    rf = constraint_fields("response_format", schema)["response_format"]
    assert rf["json_schema"]["schema"] == schema.json_schema
    grammar = constraint_fields("llamacpp", schema)["grammar"]
    assert grammar.startswith("root ::=") or "\nroot ::=" in grammar
    assert (
        'Next: " ( "executor" | "summarizer" )'
        in constraint_fields("llamacpp", reasoner)["grammar"]
    )


def test_usage_with_cached_tokens_gives_evaluated_counts(fake_server):
    usage = {
        "prompt_tokens": 50,
        "completion_tokens": 3,
        "total_tokens": 53,
        "prompt_tokens_details": {"cached_tokens": 40},
    }
    server = fake_server(["a b c"], usage=usage)
    backend = backend_for(server)
    backend.feed(Role.REASONER, "<|im_start|>user\nhello<|im_end|>")
    generation = backend.generate(Role.REASONER, "\n", max_tokens=8)

    assert (generation.text, generation.completion_tokens, generation.prompt_tokens) == (
        "a b c",
        3,
        50,
    )
    assert backend.stats.evaluated == 10 and backend.stats.extra["cache_reported"] is True
    assert backend.stats.extra["token_counts"] == "server"


def test_count_tokens_uses_the_tokenize_endpoint_else_estimates(fake_server):
    server = fake_server([])
    backend = backend_for(server, constraints="llamacpp")
    assert backend.count_tokens("one two three") == 3  # the fake's /extras/tokenize
    other = backend_for(server, constraints="vllm")  # tries /tokenize only: missing here
    assert (
        other.count_tokens("<|im_start|>abcdefgh") == estimate_tokens("<|im_start|>abcdefgh") == 3
    )


# ---------------------------------------------------------------- bad conditions


def test_server_not_started_is_a_clear_error_within_the_timeout():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendError, match="no OpenAI-compatible server answers at " + url):
        make_backend("openai", "m", base_url=url, retries=1, backoff=0.01, timeout=2.0)

    agent = Agent(tools=[add], backend=OpenAIBackend("m", base_url=url, retries=0, timeout=2.0))
    result = agent.run("2 + 40?")
    assert result.answer is None and "start the server or pass --base-url" in result.error


def test_server_that_accepts_but_never_answers_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # connections queue up and nobody answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        backend = OpenAIBackend("m", base_url=url, timeout=0.5, retries=2)
        with pytest.raises(BackendError, match=r"did not answer within 0.5 s"):
            backend.check()


def test_missing_role_model_lists_what_the_server_has(fake_server):
    server = fake_server([], models=["reasoner-lora", "executor-lora"])
    with pytest.raises(BackendError) as caught:
        make_backend("openai", None, base_url=server.base_url, role_models=ROLE_MODELS)
    message = str(caught.value)
    assert "no model 'summarizer-lora' for the summarizer" in message
    assert "it serves: reasoner-lora, executor-lora" in message
    with pytest.raises(BackendError, match="no model name for the executor, summarizer"):
        OpenAIBackend(role_models={"reasoner": "r"})


def test_429_is_answered_with_retries(fake_server):
    server = fake_server([429, 503, "Thought: fine\nNext: summarizer"])
    backend = backend_for(server)
    generation = backend.generate(Role.REASONER, "<|im_start|>user\nhi<|im_end|>", max_tokens=16)

    assert generation.text == "Thought: fine\nNext: summarizer"
    assert len(server.requests) == 3 and backend.stats.extra["retries"] == 2

    server.replies = [429, 429, 429]
    with pytest.raises(BackendError, match="failed after 3 tries: the server answered 429"):
        backend_for(server, retries=2).generate(Role.REASONER, "x", max_tokens=4)
    assert len(server.requests) == 6


def test_server_dies_mid_episode_ends_it_with_an_error_event(fake_server):
    server = fake_server(["Thought: add\nNext: executor", CALL])

    @tool
    def add_then_crash(a: int, b: int) -> int:
        """Add two integers; the server goes down meanwhile.

        Args:
            a: the first.
            b: the second.
        """
        server.stop()
        return a + b

    call = CALL.replace('"add"', '"add_then_crash"')
    server.replies[1] = call
    agent = Agent(tools=[add_then_crash], backend=backend_for(server, retries=1))
    events = list(agent.stream("2 + 40?"))

    assert isinstance(events[-1], ErrorEvent) and events[-1].fatal
    assert "no OpenAI-compatible server answers" in events[-1].message
    assert events[-1].trajectory.steps[-1].results[0].content == "42"


def test_connection_broken_mid_stream_is_an_error_not_a_hang(fake_server):
    server = fake_server([("cut", "Thought:")])
    pieces: list[str] = []
    with pytest.raises(BackendError, match="stopped answering mid-generation"):
        backend_for(server).generate(Role.REASONER, "x", max_tokens=8, on_token=pieces.append)
    assert pieces == ["Thought:"] and len(server.requests) == 1  # streamed text: no retry


def test_executor_text_that_is_not_json_is_recovered_from(fake_server):
    server = fake_server(
        [
            "Thought: add\nNext: executor",
            "Sure, I will add them.",
            "Thought: answer now\nNext: summarizer",
            "I could not call the tool.",
        ]
    )
    result_events = list(
        Agent(tools=[add], backend=backend_for(server, constraints="none")).stream("2+40?")
    )

    problems = [e for e in result_events if isinstance(e, ErrorEvent)]
    assert len(problems) == 1 and not problems[0].fatal and problems[0].where == "executor"
    assert "wrote no JSON" in problems[0].message
    assert isinstance(result_events[-1], AnswerEvent)
    assert result_events[-1].text == "I could not call the tool."


def test_a_reply_that_is_not_a_json_stream_ends_the_episode(fake_server):
    server = fake_server(["garbage"])
    result = Agent(tools=[add], backend=backend_for(server, retries=0)).run("2 + 40?")
    assert result.answer is None
    assert "answered the reasoner's request with no completion" in result.error


def test_cli_run_with_role_models(fake_server):
    from moragent.cli import app

    server = fake_server(["Hello there."])  # no tools: the summarizer answers at once
    options = [f"--role-model={role}={name}" for role, name in ROLE_MODELS.items()]
    result = CliRunner().invoke(
        app,
        [
            "run",
            "Say hello",
            "--backend",
            "openai",
            "--base-url",
            server.base_url,
            *options,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["answer"] == "Hello there."
    assert [request["model"] for request in server.requests] == ["summarizer-lora"]
    bad = CliRunner().invoke(app, ["run", "x", "--backend", "openai", "--role-model", "judge=m"])
    assert bad.exit_code == 2 and "unknown role 'judge'" in bad.output


def test_teacher_spec_openai_model_uses_this_backend(fake_server, monkeypatch):
    from moragent.data.teacher import resolve_teacher

    server = fake_server(["The user wants a sum.", "The user wants a sum."], models=["teacher"])
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    teacher = resolve_teacher("openai:teacher")
    assert teacher.ask(Role.REASONER, "Why add?") == "The user wants a sum."
    assert server.requests[0]["model"] == "teacher"


# ---------------------------------------------------------------- a real server


SERVER_DEPS = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


@contextmanager
def llama_cpp_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``llama_cpp.server`` serving the embedded model as the three roles; always stopped."""
    for module in SERVER_DEPS:
        pytest.importorskip(
            module, reason="llama_cpp.server needs: pip install " + " ".join(SERVER_DEPS)
        )
    from moragent.models import default_gguf

    port = free_port()
    model = {
        "model": str(default_gguf()),
        "n_ctx": 4096,
        "verbose": False,
        "logits_all": False,
        "use_mlock": False,
        "n_threads": 1,
        "n_threads_batch": 1,
    }
    config = {
        "host": "127.0.0.1",
        "port": port,
        "models": [{**model, "model_alias": role} for role in ROLE_NAMES],
    }
    (tmp_path / "server.json").write_text(json.dumps(config))
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moragent.backends.llamacpp_safe",
            "--config_file",
            str(tmp_path / "server.json"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(
                    "llama_cpp.server exited: " + (tmp_path / "server.log").read_text()[-2000:]
                )
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("llama_cpp.server did not come up within 90 s")
                time.sleep(0.3)
        yield url + "/v1", process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


SHORT = Limits(reasoner=48, executor=40, summarizer=32)


@pytest.mark.slow
def test_episodes_through_llama_cpp_server_with_three_role_models(tmp_path):
    with llama_cpp_server(tmp_path) as (url, _):
        backend = make_backend("openai", None, base_url=url, role_models={r: r for r in ROLE_NAMES})
        assert backend.served_models() == list(ROLE_NAMES)
        assert backend.dialect == "llamacpp"
        assert backend.count_tokens("<|im_start|>user\nhi<|im_end|>") == 5

        agent = Agent(tools=[add], backend=backend, max_steps=1, limits=SHORT, parallel_calls=False)
        first = list(agent.chat_stream("What is 2 + 40? Use the add tool."))
        second = list(agent.chat_stream("Thanks. And 1 + 1?"))

        for events in (first, second):
            assert isinstance(events[-1], AnswerEvent), events[-1]
            # the grammar held: the reasoner always named a legal role
            assert not [e for e in events if isinstance(e, ErrorEvent) and e.where == "reasoner"]
            trajectory = events[-1].trajectory
            assert (
                trajectory.steps[0].role == "reasoner" and trajectory.steps[-1].role == "summarizer"
            )
            for step in trajectory.steps:
                if step.role == "executor":
                    assert step.calls[0].name == "add"
        answer = first[-1].text
        assert backend.transcript.count("<|im_start|>user") == 2
        assert answer in backend.transcript
        streamed = "".join(
            e.text for e in first if isinstance(e, TokenEvent) and e.role is Role.SUMMARIZER
        )
        assert streamed.strip() == answer
        assert backend.stats.extra["requests"] >= 2 and backend.stats.role_switches >= 2
        backend.close()


@pytest.mark.slow
def test_real_server_killed_mid_episode(tmp_path):
    with llama_cpp_server(tmp_path) as (url, process):
        backend = OpenAIBackend(
            role_models={r: r for r in ROLE_NAMES},
            base_url=url,
            retries=1,
            backoff=0.05,
            timeout=10,
        )
        reply = backend.generate(
            Role.REASONER,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n[reasoner] ",
            max_tokens=48,
            constraint=reasoner_constraint(max_thought_chars=40),
        )
        assert parse_reasoner(reply.text).next in (Role.EXECUTOR, Role.SUMMARIZER)
        process.kill()  # the server dies between two turns
        assert process.wait(timeout=10) != 0
        with pytest.raises(BackendError, match="no OpenAI-compatible server answers"):
            backend.generate(Role.EXECUTOR, "\n", max_tokens=8)
