"""Import BFCL's AST checker without its model registry.

``bfcl_eval.eval_checker.ast_eval.ast_checker`` does
``from bfcl_eval.constants.model_config import MODEL_CONFIG_MAPPING``, and that module
imports a handler for every model BFCL knows, which pulls every provider SDK
(anthropic, openai, google-genai, boto3, ...). The checker reads the mapping in one
place only: ``convert_func_name`` looks up ``MODEL_CONFIG_MAPPING[model_name]
.underscore_to_dot`` when a function name has a dot, to decide whether the model
under test wrote ``math_factorial`` for ``math.factorial``. Our calls keep the dots, so
the answer is always ``False``.

So, for the duration of the checker's import only, a stand-in module holding a
one-entry mapping sits in ``sys.modules`` under the registry's name; the checker binds
the mapping at import time, and the stand-in is removed again afterwards, so nothing
else in the process sees it. BFCL's own code is used as it is.
"""

from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass
from typing import Any

#: the model name handed to the checker; it must not contain "_" (BFCL maps "_" to "/")
CHECKER_MODEL_NAME = "moragent"

_REGISTRY = "bfcl_eval.constants.model_config"
_CHECKER = "bfcl_eval.eval_checker.ast_eval.ast_checker"
_INSTALL_HINT = "install it with: pip install --no-deps bfcl-eval==2026.3.23"


@dataclass(frozen=True)
class _ModelConfig:
    """The one field of BFCL's ``ModelConfig`` that the AST checker reads."""

    underscore_to_dot: bool = False


@dataclass(frozen=True)
class Checker:
    """BFCL's checker entry point and the arguments it needs besides the data."""

    ast_checker: Any
    python: Any
    model_name: str = CHECKER_MODEL_NAME


_loaded: Checker | None = None


def load_checker() -> Checker:
    """BFCL's ``ast_checker`` and ``Language.PYTHON``, imported without the model registry.

    Raises:
        ImportError: bfcl-eval is not installed (the message says how to install it).
    """
    global _loaded
    if _loaded is not None:
        return _loaded

    try:
        importlib.import_module("bfcl_eval")
    except ImportError as exc:
        raise ImportError(f"BFCL needs the package bfcl-eval; {_INSTALL_HINT}") from exc

    module = sys.modules.get(_CHECKER)
    if module is None:
        module = _import_with_stand_in()

    mapping = module.MODEL_CONFIG_MAPPING
    if CHECKER_MODEL_NAME not in mapping:
        # The real registry was imported earlier by someone else: add our entry to it.
        mapping[CHECKER_MODEL_NAME] = _ModelConfig()

    from bfcl_eval.constants.enums import Language

    _loaded = Checker(ast_checker=module.ast_checker, python=Language.PYTHON)
    return _loaded


def _import_with_stand_in() -> types.ModuleType:
    """Import the checker with a minimal registry module in place of the real one."""
    had_registry = _REGISTRY in sys.modules
    if not had_registry:
        stand_in = types.ModuleType(_REGISTRY, "Stand-in for BFCL's model registry (moragent).")
        stand_in.MODEL_CONFIG_MAPPING = {CHECKER_MODEL_NAME: _ModelConfig()}  # type: ignore[attr-defined]
        sys.modules[_REGISTRY] = stand_in
    try:
        return importlib.import_module(_CHECKER)
    finally:
        if not had_registry:
            sys.modules.pop(_REGISTRY, None)
