"""``export_adapters``: a folder of trained role adapters -> a folder of GGUF LoRA files.

>>> from moragent.export import export_adapters
>>> result = export_adapters("runs/adapters", "runs/gguf", calibration="runs/train.jsonl")
>>> result.files["executor"], result.reports["executor"].relative_error

The output folder is written next to ``out`` and renamed into place at the end; an
existing ``out`` is replaced only when it is an earlier export (or empty).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moragent.export.collapse import (
    CollapseReport,
    RoutingStats,
    calibration_sequences,
    group_factors,
    low_rank,
    measure_routing,
)
from moragent.export.gguf import (
    TENSOR_DTYPES,
    ExportError,
    module_of,
    read_base,
    to_gguf_pair,
    write_lora_gguf,
)
from moragent.export.manifest import EXPORT_KEY, base_identity, role_file

logger = logging.getLogger(__name__)

#: ways a mor group becomes one static LoRA (moragent.export.collapse)
COLLAPSES = ("fit", "mean")


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes:
        out: the output folder.
        method: ``"lora"`` (exact) or ``"mor"`` (collapsed).
        files: role -> GGUF LoRA file.
        rank: rank of the written adapters (``None``: each role's own rank, exact).
        reports: role -> how close the collapsed adapter is (``mor``, or ``lora`` with a rank).
    """

    out: Path
    method: str
    files: dict[str, Path]
    rank: int | None
    reports: dict[str, CollapseReport] = field(default_factory=dict)


def _load_adapter(folder: Path) -> tuple[dict[str, Any], dict[str, dict[str, dict[str, Any]]]]:
    """(adapter config, module -> role -> kind -> tensor) of a saved MoR adapter folder."""
    from safetensors.torch import load_file

    config_file, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    for path in (config_file, weights):
        if not path.is_file():
            raise ExportError(
                f"{path} not found: pass a folder of role adapters (`moragent finetune --out`)"
            )
    config = json.loads(config_file.read_text())
    if config.get("peft_type") != "MOR":
        raise ExportError(
            f"{config_file} describes {config.get('peft_type')} adapters, not MoR role adapters"
        )
    modules: dict[str, dict[str, dict[str, Any]]] = {}
    for key, tensor in load_file(str(weights)).items():
        module, kind, role = module_of(key)
        modules.setdefault(module, {}).setdefault(role, {})[kind] = tensor
    return config, modules


def _base_path(adapter_dir: Path, model: str | Path | None, metadata: Any) -> Path:
    """The base GGUF: ``model`` if given, else the GGUF the adapters were trained on."""
    if model is not None:
        path = Path(model).expanduser()
    elif metadata is not None and metadata.base.get("kind") == "gguf":
        path = Path(metadata.base["path"])
    else:
        raise ExportError(
            f"the adapters in {adapter_dir} were not trained on a GGUF file: pass the base "
            "GGUF to export for (--model)"
        )
    if not path.is_file():
        raise ExportError(f"base GGUF not found: {path}; pass it with --model")
    return path


def _routing(
    adapter_dir: Path,
    base: Path,
    calibration: str | Path,
    roles: list[str],
    max_sequences: int,
    fit: bool,
) -> dict[tuple[str, str], RoutingStats]:
    """Routing statistics of the MoR adapters on calibration trajectories."""
    from peft import PeftModel

    import moragent.mor  # noqa: F401 - registers the MOR type with peft
    from moragent.train.base import load_base, resolve_base

    model, tokenizer = load_base(resolve_base(base))
    model = PeftModel.from_pretrained(model, adapter_dir).eval()
    sequences = calibration_sequences(calibration, tokenizer, roles, max_sequences)
    logger.info("measuring routing on %d calibration trajectories", len(sequences))
    return measure_routing(model, sequences, roles, fit=fit)


def export_adapters(
    adapter_dir: str | Path,
    out: str | Path,
    *,
    model: str | Path | None = None,
    rank: int | None = None,
    calibration: str | Path | None = None,
    max_sequences: int = 16,
    dtype: str = "f32",
    collapse: str = "fit",
) -> ExportResult:
    """Export role adapters to one GGUF LoRA per role plus ``moragent.json``.

    Args:
        adapter_dir: a folder of MoR role adapters (``moragent finetune --out``).
        out: the folder to write (``<role>.gguf`` and ``moragent.json``).
        model: the base GGUF; default: the GGUF named in the adapters' metadata.
        rank: rank of the written LoRAs. ``lora`` adapters export exactly without it;
            ``mor`` groups default to the full rank of their expected delta.
        calibration: trajectories on which a ``mor`` group's routing is measured; without
            it every expert gets the same weight and the shared gate is 0.5.
        max_sequences: calibration trajectories to run.
        dtype: tensor type of the written files: ``f32`` or ``f16`` (half the size).
        collapse: how a ``mor`` group becomes one LoRA with calibration data: ``fit``
            (least squares to the group's output on the calibration tokens) or ``mean``
            (mean routing weights); see ``moragent.export.collapse``.

    Raises:
        ExportError: the adapters do not fit the base GGUF or cannot be expressed in it.
        AdapterMismatchError: the metadata names another base model or template version.
    """
    adapter_dir, out = Path(adapter_dir), Path(out)
    config, modules = _load_adapter(adapter_dir)
    metadata = _check_source(adapter_dir, model)
    base_path = _base_path(adapter_dir, model, metadata)
    base = read_base(base_path)
    method, roles = config.get("method", "mor"), list(config["roles"])
    if rank is not None and rank < 1:
        raise ExportError(f"--rank must be a positive integer, got {rank}")
    if dtype not in TENSOR_DTYPES:
        raise ExportError(f"unknown tensor type {dtype!r}: use {' or '.join(TENSOR_DTYPES)}")
    if collapse not in COLLAPSES:
        raise ExportError(f"unknown collapse {collapse!r}: use {' or '.join(COLLAPSES)}")

    stats: dict[tuple[str, str], RoutingStats] = {}
    how = collapse if calibration is not None else "uniform"
    if method == "mor" and calibration is not None:
        fit = collapse == "fit"
        stats = _routing(adapter_dir, base_path, calibration, roles, max_sequences, fit)
    elif method == "mor":
        logger.warning("no calibration data: the collapse uses uniform routing weights")

    exact = method == "lora" and rank is None
    scaling = float(config["lora_alpha"]) / int(config["r"])
    if rank is None and not exact:
        rank = _full_rank(modules)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=_parent(out)))
    try:
        files, reports = {}, {}
        for role in roles:
            tensors, report = [], CollapseReport(rank=rank or int(config["r"]), method=how)
            for module, per_role in sorted(modules.items()):
                if role not in per_role:
                    continue
                kinds = per_role[role]
                if exact:
                    a, b = kinds["mor_A"][0], kinds["mor_B"][0]
                else:
                    a, b = _collapse(kinds, scaling, stats.get((module, role)), rank, report)
                tensors.append(to_gguf_pair(base, module, a, b))
            _finish(report, stats, role)
            alpha = float(config["lora_alpha"]) if exact else float(rank)
            files[role] = write_lora_gguf(
                role_file(staging, role), base, tensors, alpha, f"moragent {role}", dtype
            )
            if not exact:
                reports[role] = report
        _write_metadata(staging, adapter_dir, metadata, config, base_path, files, rank, reports)
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = {role: role_file(out, role) for role in files}
    return ExportResult(out, method, final, None if exact else rank, reports)


def _check_source(adapter_dir: Path, model: str | Path | None) -> Any:
    """The adapters' metadata (``None`` if absent), checked against the base and templates."""
    from moragent.prompts import TEMPLATE_VERSION
    from moragent.train.metadata import METADATA_FILE, check_adapters, read_metadata

    if not (adapter_dir / METADATA_FILE).is_file():
        logger.warning(
            "%s has no %s: base model and templates unchecked", adapter_dir, METADATA_FILE
        )
        return None
    metadata = read_metadata(adapter_dir)
    if metadata.base.get("kind") != "gguf":
        if model is not None:
            logger.warning("adapters trained on %s: cannot verify that %s is the same model",
                           metadata.base.get("name"), model)  # fmt: skip
        return check_adapters(adapter_dir, None, TEMPLATE_VERSION)
    base = model if model is not None else metadata.base.get("path")
    if base is not None and not Path(base).is_file():
        raise ExportError(f"base GGUF not found: {base}; pass it with --model")
    return check_adapters(adapter_dir, base, TEMPLATE_VERSION)


def _full_rank(modules: dict[str, dict[str, dict[str, Any]]]) -> int:
    """The largest rank a role group's summed delta can have (routed plus shared experts)."""
    best = 0
    for per_role in modules.values():
        for kinds in per_role.values():
            rank = kinds["mor_A"].shape[0] * kinds["mor_A"].shape[1]
            if "mor_shared_A" in kinds:
                rank += kinds["mor_shared_A"].shape[0]
            best = max(best, rank)
    return best


def _collapse(
    kinds: dict[str, Any],
    scaling: float,
    stats: RoutingStats | None,
    rank: int,
    report: CollapseReport,
) -> tuple[Any, Any]:
    """One module's role group as a rank-``rank`` (A, B), adding its loss to ``report``."""
    a, b, lost, total = low_rank(group_factors(kinds, scaling, stats), rank)
    report._kept += total - lost
    report._total += total
    error = (lost / total) ** 0.5 if total > 0 else 0.0
    report.worst_module_error = max(report.worst_module_error, error)
    return a, b


def _finish(report: CollapseReport, stats: dict[tuple[str, str], RoutingStats], role: str) -> None:
    """Fill a role's report totals from the per-module sums."""
    if report._total > 0:
        report.relative_error = max(0.0, 1.0 - report._kept / report._total) ** 0.5
    seen = [entry for (_, r), entry in stats.items() if r == role and entry.tokens]
    if seen:
        report.tokens = max(entry.tokens for entry in seen)
        gates = [entry.mean_gate() for entry in seen if entry.gate]
        report.mean_gate = sum(gates) / len(gates) if gates else None


def _write_metadata(
    folder: Path,
    adapter_dir: Path,
    metadata: Any,
    config: dict[str, Any],
    base_path: Path,
    files: dict[str, Path],
    rank: int | None,
    reports: dict[str, CollapseReport],
) -> None:
    from moragent.prompts import TEMPLATE_VERSION
    from moragent.train.base import file_hash
    from moragent.train.metadata import AdapterMetadata, write_metadata

    record = {
        "format": "gguf",
        "source": str(adapter_dir.resolve()),
        "rank": rank,
        "exact": rank is None,
        "files": {role: {"file": p.name, "sha256": file_hash(p)} for role, p in files.items()},
        "collapse": {role: report.to_dict() for role, report in reports.items()},
    }
    results = dict(metadata.results) if metadata is not None else {}
    results[EXPORT_KEY] = record
    write_metadata(
        folder,
        AdapterMetadata(
            method=str(config.get("method", "mor")),
            roles=list(files),
            template_version=metadata.template_version if metadata else TEMPLATE_VERSION,
            base=base_identity(base_path),
            data=metadata.data if metadata else {},
            adapter_config=config,
            training=metadata.training if metadata else {},
            results=results,
            started_from=metadata.started_from if metadata else None,
        ),
    )


def _parent(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent


def _replace(staging: Path, out: Path) -> None:
    """Move the finished export into place; replace only an earlier export or an empty folder."""
    if out.exists():
        earlier = (out / "moragent.json").is_file() and any(out.glob("*.gguf"))
        if not (earlier or (out.is_dir() and not any(out.iterdir()))):
            raise ExportError(
                f"{out} exists and is not an earlier export: choose another -o folder"
            )
        shutil.rmtree(out)
    staging.rename(out)
