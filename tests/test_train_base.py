"""``file_hash``: the SHA-256 of a base model is remembered on disk between processes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from moragent.train import base


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MORAGENT_CACHE", str(tmp_path / "cache"))
    base._file_hash.cache_clear()
    yield tmp_path / "cache"
    base._file_hash.cache_clear()


def test_a_large_file_is_hashed_once_then_read_from_the_memo(cache: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(os.urandom(2 << 20))
    real = hashlib.sha256(model.read_bytes()).hexdigest()

    assert base.file_hash(model) == real
    memo = json.loads((cache / base.HASH_MEMO).read_text())
    assert list(memo.values()) == [real]

    # a later process (empty in-process memo) takes the value from the file, unread
    (key,) = memo
    (cache / base.HASH_MEMO).write_text(json.dumps({key: "remembered"}))
    base._file_hash.cache_clear()
    assert base.file_hash(model) == "remembered"


def test_a_changed_file_is_hashed_again_and_replaces_its_entry(cache: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"a" * (2 << 20))
    first = base.file_hash(model)
    model.write_bytes(b"b" * (2 << 20))
    os.utime(model, ns=(1, 1))  # a new modification time, whatever the clock's resolution

    second = base.file_hash(model)
    assert second == hashlib.sha256(b"b" * (2 << 20)).hexdigest() != first
    assert list(json.loads((cache / base.HASH_MEMO).read_text()).values()) == [second]


def test_small_files_and_a_broken_memo_are_handled(cache: Path, tmp_path: Path) -> None:
    cache.mkdir()
    (cache / base.HASH_MEMO).write_text("not json")
    small = tmp_path / "small.gguf"
    small.write_bytes(b"tiny")

    assert base.file_hash(small) == hashlib.sha256(b"tiny").hexdigest()
    assert (cache / base.HASH_MEMO).read_text() == "not json"  # small files are not memoised
