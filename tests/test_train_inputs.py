"""Bad input to training: each a clear error, and nothing written."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_train_support import ADD_TOOL, tiny_base_dir, trajectory, write_data  # noqa: E402

from moragent.data.io import DataError  # noqa: E402
from moragent.models import ModelNotFoundError  # noqa: E402
from moragent.train import (  # noqa: E402
    AdapterMetadata,
    AdapterMismatchError,
    check_adapters,
    finetune,
)
from moragent.train.base import resolve_base  # noqa: E402
from moragent.train.dataset import load_training_data, split  # noqa: E402
from moragent.train.metadata import write_metadata  # noqa: E402
from moragent.train.training import work_dir  # noqa: E402

pytestmark = pytest.mark.torch


def assert_nothing_written(out) -> None:
    assert not out.exists()
    assert not work_dir(out).exists()
    if out.parent.exists():
        assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


def test_malformed_line_names_its_number(tmp_path) -> None:
    data = write_data(tmp_path / "data.jsonl", 3)
    lines = data.read_text().splitlines()
    lines.insert(2, '{"query": "broken", "steps": [')
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "runs" / "adapters"
    with pytest.raises(DataError, match=r"data\.jsonl:3: not valid JSON"):
        finetune(data, base=tiny_base_dir(), out=out)
    assert_nothing_written(out)


def test_a_line_that_is_not_a_trajectory(tmp_path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(trajectory(1, 2).to_json() + "\n" + json.dumps({"query": 3}) + "\n")
    with pytest.raises(DataError, match=r"data\.jsonl:2: not a trajectory: field 'query'"):
        load_training_data(data)


def test_call_to_a_tool_not_among_the_candidates(tmp_path) -> None:
    bad = trajectory(1, 2).to_dict()
    bad["steps"][1]["calls"][0]["name"] = "multiply"
    data = tmp_path / "data.jsonl"
    data.write_text(trajectory(3, 4).to_json() + "\n" + json.dumps(bad) + "\n")
    out = tmp_path / "adapters"
    with pytest.raises(DataError) as info:
        finetune(data, base=tiny_base_dir(), out=out)
    message = str(info.value)
    assert "data.jsonl:2" in message
    assert "unknown-function" in message and "'multiply'" in message and "add" in message
    assert_nothing_written(out)


def test_a_trajectory_that_verify_rejects_is_refused(tmp_path) -> None:
    """An empty answer would teach the summarizer to say nothing: refused, with its line."""
    bad = trajectory(1, 2).to_dict()
    assert bad["steps"][-1]["role"] == "summarizer"
    bad["steps"][-1]["answer"] = ""
    data = tmp_path / "data.jsonl"
    data.write_text(trajectory(3, 4).to_json() + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"data\.jsonl:2: empty-turn: steps\[4\]\.answer"):
        load_training_data(data)


def test_empty_file(tmp_path) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("\n  \n")
    out = tmp_path / "adapters"
    with pytest.raises(DataError, match="empty"):
        finetune(data, base=tiny_base_dir(), out=out)
    assert_nothing_written(out)


def test_missing_base_model(tmp_path) -> None:
    data = write_data(tmp_path / "data.jsonl", 2)
    out = tmp_path / "adapters"
    with pytest.raises(ModelNotFoundError, match="no-such-model.gguf does not exist"):
        finetune(data, base=tmp_path / "no-such-model.gguf", out=out)
    assert_nothing_written(out)


def test_a_folder_without_config_is_not_a_base(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        resolve_base(tmp_path)


def test_openai_messages_are_converted_on_the_way_in(tmp_path) -> None:
    record = {
        "messages": [
            {"role": "user", "content": "What is 2 plus 3?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "5"},
            {"role": "assistant", "content": "2 plus 3 is 5."},
        ],
        "tools": [{"type": "function", "function": ADD_TOOL}],
    }
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(record) + "\n")
    loaded = load_training_data(data)
    assert loaded.converted_from == "openai"
    (episode,) = loaded.trajectories
    assert [step.role for step in episode.steps] == [
        "reasoner", "executor", "observation", "reasoner", "summarizer",
    ]  # fmt: skip
    assert episode.calls[0].arguments == {"a": 2, "b": 3}
    assert all(step.thought for step in episode.steps if step.role == "reasoner")


def test_split_is_seeded_and_disjoint() -> None:
    episodes = [trajectory(i, i) for i in range(20)]
    train, val = split(episodes, 0.2, seed=3)
    again, val_again = split(episodes, 0.2, seed=3)
    assert len(val) == 4 and len(train) == 16
    assert [e.query for e in val] == [e.query for e in val_again]
    assert not {e.query for e in val} & {e.query for e in train}


def adapter_folder(tmp_path, base_sha: str, version: str = "1"):
    folder = tmp_path / "adapters"
    folder.mkdir()
    metadata = AdapterMetadata(
        method="mor",
        roles=["reasoner", "executor", "summarizer"],
        template_version=version,
        base={"name": "tiny", "sha256": base_sha, "path": "x", "kind": "transformers"},
        data={"sha256": "0"},
        adapter_config={},
    )
    write_metadata(folder, metadata)
    return folder


def test_check_adapters_accepts_the_right_base(tmp_path) -> None:
    base = resolve_base(tiny_base_dir())
    folder = adapter_folder(tmp_path, base.sha256)
    assert check_adapters(folder, tiny_base_dir(), "1").method == "mor"


def test_check_adapters_refuses_another_base(tmp_path) -> None:
    folder = adapter_folder(tmp_path, resolve_base(tiny_base_dir()).sha256)
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF not the same model")
    with pytest.raises(AdapterMismatchError, match="trained on base model tiny .*not on .*other"):
        check_adapters(folder, other, "1")


def test_check_adapters_refuses_another_template(tmp_path) -> None:
    folder = adapter_folder(tmp_path, "abc", version="0")
    with pytest.raises(AdapterMismatchError, match="template version 0, but .* version 1"):
        check_adapters(folder, None, "1")


def test_check_adapters_needs_metadata(tmp_path) -> None:
    with pytest.raises(AdapterMismatchError, match="no moragent.json"):
        check_adapters(tmp_path, None, "1")


def test_replace_keeps_the_old_adapters_until_the_new_are_in_place(tmp_path) -> None:
    from moragent.train.training import _recover, _replace

    out = tmp_path / "adapters"
    out.mkdir()
    (out / "adapter_model.safetensors").write_text("old")
    staged = tmp_path / ".adapters.training" / "adapter"
    staged.mkdir(parents=True)
    (staged / "adapter_model.safetensors").write_text("new")
    _replace(staged, out)
    assert (out / "adapter_model.safetensors").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".adapters.training", "adapters"]

    # a crash between the two renames leaves the old adapters set aside: they come back
    out.rename(tmp_path / ".adapters.old")
    _recover(out)
    assert (out / "adapter_model.safetensors").read_text() == "new"
    assert not (tmp_path / ".adapters.old").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [({"lr": -1.0}, "lr must be positive"), ({"batch_size": 0}, "batch_size must be at least 1")],
)
def test_bad_settings_are_refused_before_anything_loads(setting, message) -> None:
    from moragent.train.training import _settings

    with pytest.raises(ValueError, match=message):
        _settings(None, setting)
