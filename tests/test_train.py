"""Training on a tiny random llama: loss goes down, adapters load, resume, DDP, the CLI."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402
from test_train_support import read_json, tiny_base_dir, tiny_settings, write_data  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from moragent.cli.app import app  # noqa: E402
from moragent.prompts import TEMPLATE_VERSION  # noqa: E402
from moragent.train import check_adapters, finetune  # noqa: E402
from moragent.train.training import work_dir  # noqa: E402

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread than on two busy ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("data") / "train.jsonl", 8)


def load_adapters(folder: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import moragent.mor  # noqa: F401  (registers the MOR peft type)

    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir())
    return PeftModel.from_pretrained(base, folder)


@pytest.mark.parametrize("method", ["mor", "lora"])
def test_a_few_steps_reduce_the_loss_of_every_role(tmp_path, data, method) -> None:
    out = tmp_path / "adapters"
    result = finetune(
        data, base=tiny_base_dir(), method=method, out=out, **tiny_settings(max_steps=8)
    )

    assert result.steps == 8
    assert result.tokens > 0 and result.tokens_per_second > 0
    assert result.val_sequences == 2
    for role in ("all", "reasoner", "executor", "summarizer"):
        assert result.loss_after[role] < result.loss_before[role] - 0.2, role

    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "moragent.json",
        "training_args.bin",
    ]  # fmt: skip
    assert not work_dir(out).exists()  # checkpoints go with the work folder
    metadata = read_json(out / "moragent.json")
    assert metadata["method"] == method
    assert metadata["roles"] == ["reasoner", "executor", "summarizer"]
    assert metadata["template_version"] == TEMPLATE_VERSION
    assert metadata["base"]["name"] == tiny_base_dir().name
    assert metadata["data"]["trajectories"] == 8 and len(metadata["data"]["sha256"]) == 64
    assert metadata["adapter_config"]["method"] == method
    assert metadata["training"]["max_steps"] == 8
    assert metadata["results"]["val_loss_after"]["executor"] == result.loss_after["executor"]

    assert check_adapters(out, tiny_base_dir(), TEMPLATE_VERSION).method == method
    from peft import get_peft_model_state_dict

    loaded = get_peft_model_state_dict(load_adapters(out))
    trained = load_file(out / "adapter_model.safetensors")
    assert loaded.keys() == trained.keys() and len(trained) > 0
    for name, value in trained.items():
        assert torch.equal(loaded[name], value), name


def test_a_new_run_replaces_the_old_adapters_whole(tmp_path, data) -> None:
    out = tmp_path / "adapters"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    finetune(data, base=tiny_base_dir(), out=out, **tiny_settings(max_steps=1, val_split=0.0))
    assert not (out / "stale.txt").exists()
    assert (out / "adapter_model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["adapters"]


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from transformers import TrainerCallback
    sys.path.insert(0, {tests!r})
    from test_train_support import tiny_base_dir, tiny_settings
    from moragent.train import finetune

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    torch.set_num_threads(1)
    finetune({data!r}, base=tiny_base_dir(), out={out!r}, callbacks=[Kill()],
             **tiny_settings(max_steps=4, val_split=0.0))
    """
)


def test_resume_after_sigkill_gives_the_uninterrupted_adapter(tmp_path, data) -> None:
    settings = tiny_settings(max_steps=4, val_split=0.0)
    straight = tmp_path / "straight"
    finetune(data, base=tiny_base_dir(), out=straight, **settings)

    out = tmp_path / "resumed"
    script = KILLED_RUN.format(tests=str(ROOT / "tests"), data=str(data), out=str(out))
    killed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert not out.exists()  # nothing half-written where the adapters go
    checkpoints = sorted(p.name for p in (work_dir(out) / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-2"]

    result = finetune(data, base=tiny_base_dir(), out=out, resume=True, **settings)
    assert result.resumed_from.endswith("checkpoint-2")
    assert result.steps == 4
    expected = load_file(straight / "adapter_model.safetensors")
    got = load_file(out / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_gloo_train_adapters_that_load(tmp_path, data) -> None:
    out = tmp_path / "ddp"
    entry = tmp_path / "moragent_entry.py"
    entry.write_text("from moragent.cli import main\nmain()\n")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(free_port()), str(entry),
        "finetune", str(data), "--base", str(tiny_base_dir()), "--out", str(out),
        "--max-steps", "2", "--batch-size", "1", "--grad-accum", "1", "--val-split", "0.25",
        "--no-bf16", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, cwd=ROOT, capture_output=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    assert "adapters written to" in run.stdout.decode()
    metadata = read_json(out / "moragent.json")
    assert metadata["results"]["steps"] == 2
    assert metadata["results"]["processes"] == 2
    assert metadata["training"]["batch_size"] == 1
    model = load_adapters(out)
    assert sum("mor_" in name for name, _ in model.named_parameters()) > 0


def test_cli_trains_and_prints_the_summary(tmp_path, data) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app,
        [
            "finetune",
            str(data),
            "--base",
            str(tiny_base_dir()),
            "--out",
            str(out),
            "--method",
            "lora",
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--lr",
            "0.01",
            "--val-split",
            "0.25",
            "--no-bf16",
            "--quiet",
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    assert "2 steps" in result.output
    assert "validation loss" in result.output and "executor" in result.output
    assert "adapters written to" in result.output and str(out) in result.output.replace("\n", "")
    assert read_json(out / "moragent.json")["method"] == "lora"


def test_cli_prints_progress_lines_when_not_on_a_terminal(tmp_path, data) -> None:
    # CliRunner's output is no terminal: no live bar there, a line per logging step instead
    command = ["finetune", str(data), "--base", str(tiny_base_dir()), "--out",
               str(tmp_path / "out"), "--method", "lora", "--max-steps", "2", "--batch-size",
               "2", "--grad-accum", "1", "--val-split", "0.25", "--no-bf16"]  # fmt: skip
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    line = re.search(r"step 1/2  loss [\d.]+  \d+ tok/s  elapsed [\d.]+ min  left [\d.]+ min",
                     result.output)  # fmt: skip
    assert line is not None, result.output


def test_cli_reports_bad_input_without_a_traceback(tmp_path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text("not json\n")
    result = CliRunner().invoke(app, ["finetune", str(data), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "bad.jsonl:1: not valid JSON" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_cli_rejects_an_unknown_method(tmp_path, data) -> None:
    result = CliRunner().invoke(
        app, ["finetune", str(data), "--base", str(tiny_base_dir()), "--method", "qlora"]
    )
    assert result.exit_code == 1
    assert "unknown method 'qlora'" in result.output


def test_a_run_can_start_from_earlier_adapters(tmp_path, data) -> None:
    first = tmp_path / "first"
    settings = tiny_settings(max_steps=4)
    earlier = finetune(data, base=tiny_base_dir(), out=first, **settings)

    out = tmp_path / "second"
    result = finetune(data, base=tiny_base_dir(), out=out, init_from=first, **settings)
    # it starts where the first run ended (same validation split), then goes on
    for role, loss in earlier.loss_after.items():
        assert result.loss_before[role] == pytest.approx(loss, abs=1e-4), role
    assert result.loss_after["all"] < result.loss_before["all"]
    metadata = read_json(out / "moragent.json")
    assert metadata["started_from"]["path"] == str(first)
    assert metadata["started_from"]["data"]["sha256"] == metadata["data"]["sha256"]
    before = read_json(first / "moragent.json")
    assert metadata["adapter_config"]["r"] == before["adapter_config"]["r"]
    assert before["started_from"] is None

    with pytest.raises(ValueError, match="pass --method mor"):
        finetune(data, base=tiny_base_dir(), method="lora", out=tmp_path / "x", init_from=first,
                 **settings)  # fmt: skip
    with pytest.raises(ValueError, match="leave out --rank"):
        finetune(data, base=tiny_base_dir(), out=tmp_path / "x", init_from=first,
                 adapter_options={"r": 8}, **settings)  # fmt: skip
    with pytest.raises(ValueError, match="no adapters to start from"):
        finetune(data, base=tiny_base_dir(), out=tmp_path / "x", init_from=tmp_path, **settings)
    assert not (tmp_path / "x").exists()


def test_resume_with_no_checkpoint_is_refused_before_the_model_loads(tmp_path, data) -> None:
    out = tmp_path / "typo"
    with pytest.raises(ValueError, match="nothing to resume"):
        finetune(data, base=tiny_base_dir(), out=out, resume=True, **tiny_settings(max_steps=1))
    assert not out.exists() and not work_dir(out).exists()
