"""The torch backend on a tiny random llama with random MoR adapters, and on real SmolLM2.

The tiny model (2 layers, hidden 64) uses SmolLM2's tokenizer, read from the embedded
GGUF once, so the templates' special tokens are real special tokens.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jsonschema
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("llguidance")

from peft import get_peft_model  # noqa: E402

from moragent import Agent, controller  # noqa: E402
from moragent.backends import BackendError, make_backend  # noqa: E402
from moragent.backends.torch import TorchBackend  # noqa: E402
from moragent.controller import Limits  # noqa: E402
from moragent.events import AnswerEvent  # noqa: E402
from moragent.grammar import (  # noqa: E402
    executor_constraint,
    parse_executor,
    parse_reasoner,
    reasoner_constraint,
)
from moragent.models import default_gguf  # noqa: E402
from moragent.mor import MoRConfig  # noqa: E402
from moragent.prompts import DEFAULT_PROMPTS as P  # noqa: E402
from moragent.roles import Role  # noqa: E402
from moragent.tools import load_tools  # noqa: E402

pytestmark = pytest.mark.torch
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tools.py"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """A tiny model runs faster on one thread than on two busy ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A random 2-layer llama with SmolLM2's tokenizer, saved as a transformers folder."""
    gguf = default_gguf()
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama")
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def mor_dir(tiny_dir, tmp_path_factory) -> Path:
    """Random-initialised MoR adapters (B not zero, so every role changes the logits)."""
    base = transformers.LlamaForCausalLM.from_pretrained(tiny_dir)
    torch.manual_seed(1)
    model = get_peft_model(base, MoRConfig(init_weights=False, lora_dropout=0.0))
    folder = tmp_path_factory.mktemp("mor")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def backend(tiny_dir, mor_dir) -> TorchBackend:
    return TorchBackend(tiny_dir, adapters=mor_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def example_tools():
    return load_tools(EXAMPLES)


def full_forward(backend: TorchBackend, roles: list[Role]) -> torch.Tensor:
    """Logits of one forward over the whole session, each token under its role."""
    ids = torch.tensor([backend.token_ids])
    role_ids = torch.tensor([[backend.role_index(role) for role in roles]])
    with torch.inference_mode():
        return backend.model(input_ids=ids, role_ids=role_ids).logits[0].float()


SEGMENTS = [
    (Role.REASONER, P.frame([], "What is 2 + 2?")),
    (Role.REASONER, P.header(Role.REASONER)),
    (Role.REASONER, "Thought: add them.\nNext: executor<|im_end|>"),
    (Role.EXECUTOR, P.header(Role.EXECUTOR)),
    (Role.EXECUTOR, '{"name": "calculate", "arguments": {"expression": "2 + 2"}}<|im_end|>'),
    (Role.REASONER, "\n<|im_start|>tool\ncalculate returned: 4<|im_end|>"),
    (Role.SUMMARIZER, P.header(Role.SUMMARIZER)),
]


def test_segments_under_roles_equal_one_full_forward(backend):
    backend.reset()
    roles, ends, last = [], [], []
    for role, text in SEGMENTS:
        n = backend.feed(role, text)
        roles += [role] * n
        ends.append(len(roles))
        last.append(backend.last_logits[0].clone())
    generation = backend.generate(Role.SUMMARIZER, "", max_tokens=6)
    roles += [Role.SUMMARIZER] * generation.completion_tokens

    full = full_forward(backend, roles)
    for end, logits in zip(ends, last, strict=True):
        assert torch.allclose(full[end - 1], logits, atol=1e-5, rtol=0)
    assert torch.allclose(full[-1], backend.last_logits[0], atol=1e-5, rtol=0)
    # greedy decoding from the cache picks what the full forward's logits pick
    generated = backend.token_ids[ends[-1] :]
    assert generation.completion_tokens == 6
    assert generated == full[ends[-1] - 1 : -1].argmax(-1).tolist()
    # the role ids matter: the whole sequence under one role gives other logits
    one_role = full_forward(backend, [Role.REASONER] * len(roles))
    assert (one_role[-1] - full[-1]).abs().max() > 1e-3
    stats = backend.stats
    assert stats.reevaluated == 0
    assert stats.evaluated == len(roles) == backend.n_tokens
    assert stats.role_switches == 4


def test_session_start_and_special_tokens(backend):
    backend.reset()
    backend.feed(Role.REASONER, "<|im_start|>user\nhi<|im_end|>")
    ids = backend.token_ids
    assert ids[0] == backend.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids[-1] == backend.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert len(ids) == 5  # SmolLM2 wants no extra BOS: <|im_start|> opens every turn
    assert backend.count_tokens("<|im_end|>") == 1


def test_constrained_executor_output_parses_and_validates(backend, example_tools):
    schemas = [t.schema for t in example_tools]
    for query in ("What is 17 times 23?", "What weekday was 2000-01-01?"):
        backend.reset()
        backend.feed(Role.REASONER, P.frame(schemas, query))
        generation = backend.generate(
            Role.EXECUTOR, P.header(Role.EXECUTOR), max_tokens=256,
            constraint=executor_constraint(schemas),
        )  # fmt: skip
        assert generation.finish_reason == "stop", generation.text
        parsed = parse_executor(generation.text)
        assert parsed.problem is None, generation.text
        by_name = {s["name"]: s for s in schemas}
        for call in parsed.calls:
            jsonschema.validate(call.arguments, by_name[call.name]["parameters"])
        assert backend.stats.reevaluated == 0


def test_reasoner_constraint_names_a_legal_next_role(backend):
    backend.reset()
    generation = backend.generate(
        Role.REASONER,
        P.frame([], "Hello") + P.header(Role.REASONER),
        max_tokens=128,
        constraint=reasoner_constraint(max_thought_chars=60),
    )
    parsed = parse_reasoner(generation.text)
    assert generation.text.startswith("Thought: ")
    assert parsed.next in (Role.EXECUTOR, Role.SUMMARIZER), generation.text
    assert generation.finish_reason == "stop"


def test_stop_string_is_cut_from_text_and_cache(backend):
    prompt = P.frame([], "Count.") + P.header(Role.SUMMARIZER)
    backend.reset()
    free = backend.generate(Role.SUMMARIZER, prompt, max_tokens=12)
    tokens = backend.token_ids[-free.completion_tokens :]
    ends = [len(backend.tokenizer.decode(tokens[: i + 1])) for i in range(len(tokens))]
    # a stop string from the middle of one token into the next: the cache must drop the
    # evaluated token it starts in and re-feed the text before it
    pairs = zip([0, *ends[:-1]], ends[:-1], ends[1:], strict=True)
    boundary = next(b for a, b, c in pairs if b - a >= 2 and c - b >= 2)
    stop = free.text[boundary - 1 : boundary + 2]
    assert free.text.index(stop) == boundary - 1

    backend.reset()
    generation = backend.generate(Role.SUMMARIZER, prompt, max_tokens=12, stop=[stop])
    assert generation.text == free.text[: boundary - 1]
    assert generation.finish_reason == "stop"
    decode = backend.tokenizer.decode
    prompt_text = decode(backend.tokenizer.encode(prompt), skip_special_tokens=True)
    assert decode(backend.token_ids, skip_special_tokens=True) == prompt_text + generation.text
    # the text re-fed after the crop sits where dropped tokens were: counted as re-evaluated
    assert backend.stats.reevaluated >= 1
    # the cropped cache continues exactly as a fresh forward over what it holds
    backend.feed(Role.SUMMARIZER, P.end)
    full = full_forward(backend, backend._roles)
    assert torch.allclose(full[-1], backend.last_logits[0], atol=1e-5, rtol=0)


def test_agent_episode_on_random_mor_adapters_reevaluates_nothing(
    backend, example_tools, monkeypatch
):
    # the random reasoner must hand over to the executor, so that every role runs
    executor_only = reasoner_constraint((Role.EXECUTOR,), max_thought_chars=120)
    monkeypatch.setattr(controller, "reasoner_constraint", lambda *_, **__: executor_only)
    agent = Agent(
        tools=example_tools,
        backend=backend,
        max_steps=1,
        limits=Limits(reasoner=96, executor=160, summarizer=24),
    )
    events = list(agent.stream("What is 12 times 7?"))

    assert isinstance(events[-1], AnswerEvent)
    trajectory = events[-1].trajectory
    assert trajectory.steps[-1].role == "summarizer"
    assert trajectory.meta["reevaluated_tokens"] == 0
    stats = backend.stats
    assert stats.reevaluated == 0
    assert stats.role_switches == 4  # reasoner, executor, reasoner (observation), summarizer
    roles = [step.role for step in trajectory.steps]
    assert roles == ["reasoner", "executor", "observation", "summarizer"]
    assert stats.evaluated == backend.n_tokens  # nothing evaluated twice, nothing dropped
    assert json.loads(trajectory.to_json())["query"] == "What is 12 times 7?"


def test_bare_model_through_make_backend(tiny_dir):
    backend = make_backend("torch", tiny_dir, None, device="cpu")
    assert isinstance(backend, TorchBackend)
    assert backend.dtype == torch.float32 and backend.roles is None
    backend.feed(Role.REASONER, "<|im_start|>user\nhi<|im_end|>")
    generation = backend.generate(Role.EXECUTOR, "<|im_start|>assistant\n", max_tokens=3)
    assert backend.n_tokens == 5 + generation.prompt_tokens + generation.completion_tokens
    assert backend.stats.evaluated == backend.n_tokens
    assert backend.stats.role_switches == 2 and backend.stats.reevaluated == 0


def test_loading_errors_say_what_to_pass(tiny_dir, tmp_path):
    with pytest.raises(BackendError, match="adapter_config.json"):
        TorchBackend(tiny_dir, adapters=tmp_path, device="cpu")
    with pytest.raises(BackendError, match="adapter folder not found"):
        make_backend("torch", tiny_dir, tmp_path / "nowhere")
    with pytest.raises(BackendError, match="one folder of MoR adapters"):
        TorchBackend(tiny_dir, adapters={"reasoner": tmp_path}, device="cpu")
    with pytest.raises(BackendError, match="not found"):
        TorchBackend(tmp_path / "missing.gguf", device="cpu")
    with pytest.raises(BackendError, match="unknown dtype"):
        TorchBackend(tiny_dir, dtype="int3", device="cpu")


@pytest.mark.slow
def test_smollm2_gguf_loads_through_the_cache_and_runs_an_episode(example_tools, caplog):
    first = TorchBackend(device="cpu")
    first.close()
    with caplog.at_level(logging.INFO, logger="moragent.backends.torch_load"):
        backend = TorchBackend(device="cpu")
    assert "from its cached conversion" in caplog.text
    assert backend.vocab_size == 49152

    agent = Agent(
        tools=example_tools,
        backend=backend,
        max_steps=1,
        limits=Limits(reasoner=64, executor=64, summarizer=24),
    )
    result = agent.run("What is 12 times 7?")
    assert result.trajectory.steps[-1].role == "summarizer"
    assert result.trajectory.meta["reevaluated_tokens"] == 0
    assert backend.stats.reevaluated == 0
