"""The AMX repacking fix: llama.cpp's extra buffer types are off where they crash."""

from __future__ import annotations

import os

import llama_cpp.llama_cpp as lib
import pytest

from moragent.backends import llamacpp_safe


@pytest.fixture(autouse=True)
def fresh_setting(monkeypatch):
    llamacpp_safe.repack_allowed.cache_clear()
    yield
    llamacpp_safe.repack_allowed.cache_clear()


def test_off_turns_extra_buffer_types_off_inside_the_block_only(monkeypatch):
    monkeypatch.setenv(llamacpp_safe.ENV, "0")
    original = lib.llama_model_default_params
    assert original().use_extra_bufts  # llama.cpp's default
    with llamacpp_safe.safe_model_params():
        assert lib.llama_model_default_params().use_extra_bufts is False
    assert lib.llama_model_default_params is original


def test_on_keeps_llama_cpp_defaults(monkeypatch):
    monkeypatch.setenv(llamacpp_safe.ENV, "1")
    with llamacpp_safe.safe_model_params():
        assert lib.llama_model_default_params().use_extra_bufts


def test_auto_follows_whether_this_build_uses_amx(monkeypatch):
    monkeypatch.delenv(llamacpp_safe.ENV, raising=False)
    monkeypatch.setattr(lib, "llama_print_system_info", lambda: b"CPU : AVX2 = 1 | AMX_INT8 = 1 |")
    assert llamacpp_safe.repack_allowed() is False
    llamacpp_safe.repack_allowed.cache_clear()
    monkeypatch.setattr(lib, "llama_print_system_info", lambda: b"CPU : AVX2 = 1 | REPACK = 1 |")
    assert llamacpp_safe.repack_allowed() is True


def test_install_wraps_once(monkeypatch):
    monkeypatch.setenv(llamacpp_safe.ENV, "0")
    original = lib.llama_model_default_params
    monkeypatch.setattr(lib, "llama_model_default_params", original)  # restored after
    llamacpp_safe.install()
    llamacpp_safe.install()
    assert lib.llama_model_default_params.original is original
    assert lib.llama_model_default_params().use_extra_bufts is False


def test_thread_count_reads_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("MORAGENT_THREADS", "3")
    assert llamacpp_safe.thread_count(2) == 2
    assert llamacpp_safe.thread_count() == 3
    monkeypatch.setenv("MORAGENT_THREADS", "1")  # read again at every call, not cached
    assert llamacpp_safe.thread_count() == 1
    monkeypatch.delenv("MORAGENT_THREADS")
    assert llamacpp_safe.thread_count() == (os.cpu_count() or 1)
