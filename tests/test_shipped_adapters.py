"""Which role adapters a backend gets: the shipped ones, a folder, or none."""

from __future__ import annotations

import pytest

import moragent.backends.llamacpp as llamacpp_module
from moragent import models
from moragent.backends import BackendError, make_backend


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    folder = tmp_path / "shipped"
    folder.mkdir()
    (folder / "moragent.json").write_text("{}")
    monkeypatch.setattr(models, "SHIPPED_ADAPTERS", folder)
    return folder


@pytest.fixture
def captured(monkeypatch):
    seen = {}

    class FakeBackend:
        def __init__(self, model, adapters=None, **options):
            seen.update(model=model, adapters=adapters)

    monkeypatch.setattr(llamacpp_module, "LlamaCppBackend", FakeBackend)
    monkeypatch.setattr(
        "moragent.backends._adapter_files",
        lambda adapters, model=None: None if adapters is None else {"folder": adapters},
    )
    return seen


def test_shipped_adapters_go_with_the_default_model_only(shipped, tmp_path):
    assert models.shipped_adapters() == shipped
    assert models.shipped_adapters(models.default_gguf()) == shipped
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF")
    assert models.shipped_adapters(other) is None


def test_a_build_without_shipped_adapters_has_none(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "SHIPPED_ADAPTERS", tmp_path / "absent")
    assert models.shipped_adapters() is None


def test_make_backend_takes_shipped_by_default_and_none_when_false(shipped, captured):
    make_backend("llamacpp")
    assert captured["adapters"] == {"folder": shipped}
    make_backend("llamacpp", adapters=False)
    assert captured["adapters"] is None


def test_make_backend_refuses_adapters_true():
    with pytest.raises(BackendError, match="not a folder"):
        make_backend("llamacpp", adapters=True)
