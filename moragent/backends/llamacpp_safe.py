"""Loading llama.cpp models without the weight repacking that crashes on AMX CPUs.

llama-cpp-python built from source (``GGML_NATIVE``) on a CPU with Intel AMX puts the
weights into llama.cpp's AMX buffer type, which repacks them at load time. With
llama-cpp-python 0.3.36 and the embedded Q4_1 model that load ends in a segmentation
fault (seen on a Xeon with ``amx_tile``/``amx_int8``). llama.cpp's model parameter
``use_extra_bufts`` turns the extra buffer types (AMX, and the CPU repack ones) off;
``Llama`` has no argument for it, so ``safe_model_params`` sets it on the parameters
``Llama`` asks for while a model loads.

Only builds that would use AMX are changed (``AMX_INT8 = 1`` in llama.cpp's system
info). ``MORAGENT_LLAMA_REPACK=1`` keeps the repacking anyway, ``=0`` turns it off
everywhere.

``python -m moragent.backends.llamacpp_safe [llama_cpp.server options]`` runs
llama-cpp-python's OpenAI-compatible server with the same fix.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from typing import Any

ENV = "MORAGENT_LLAMA_REPACK"


def thread_count(n_threads: int | None = None) -> int:
    """llama.cpp's CPU threads: ``n_threads``, else ``MORAGENT_THREADS``, else every core."""
    return n_threads or int(os.environ.get("MORAGENT_THREADS", 0)) or os.cpu_count() or 1


@functools.cache
def repack_allowed() -> bool:
    """Whether llama.cpp may use its extra (repacking) buffer types in this process."""
    setting = os.environ.get(ENV, "").strip().lower()
    if setting in ("1", "true", "yes", "on"):
        return True
    if setting in ("0", "false", "no", "off"):
        return False
    import llama_cpp.llama_cpp as lib

    info = lib.llama_print_system_info()
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    return "AMX_INT8 = 1" not in text


def _without_repack(original: Any) -> Any:
    def default_params() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    default_params.original = original  # type: ignore[attr-defined]
    return default_params


@contextlib.contextmanager
def safe_model_params() -> Iterator[None]:
    """Inside the block, models that ``llama_cpp.Llama`` loads skip repacking where unsafe."""
    if repack_allowed():
        yield
        return
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params
    lib.llama_model_default_params = _without_repack(original)
    try:
        yield
    finally:
        lib.llama_model_default_params = original


def load_llama(path: Any, n_ctx: int, n_threads: int | None = None, **options: Any) -> Any:
    """``llama_cpp.Llama`` on ``path`` with the fix, quiet, ``thread_count`` threads.

    ``options`` go to ``Llama`` as they are (a seed, a chat format).
    """
    import llama_cpp

    threads = thread_count(n_threads)
    with safe_model_params():  # no AMX repacking: it crashes where it is unsafe
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
            **options,
        )


def install() -> None:
    """Apply the fix for the rest of the process (for a server that loads models later)."""
    import llama_cpp.llama_cpp as lib

    if not repack_allowed() and not hasattr(lib.llama_model_default_params, "original"):
        lib.llama_model_default_params = _without_repack(lib.llama_model_default_params)


def main() -> None:
    """``llama_cpp.server`` with the fix applied (same command-line options)."""
    install()
    from llama_cpp.server.__main__ import main as server_main

    sys.argv[0] = "llama_cpp.server"
    server_main()


if __name__ == "__main__":
    main()
