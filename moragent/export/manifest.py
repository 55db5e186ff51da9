"""The metadata of an exported adapter folder, and the check llama.cpp makes before loading.

An export folder holds ``<role>.gguf`` per role and ``moragent.json`` (the training
metadata format of ``moragent.train.metadata``) whose ``base`` names the base GGUF
(file name, size, SHA-256) and whose ``results["export"]`` lists each role file with
its hash. ``check_export`` refuses, each with an error naming the file: a missing role
file, a role file changed or corrupted since export, a template-version mismatch, and a
base model other than the one exported for.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: the key of the export record inside ``moragent.json``'s results
EXPORT_KEY = "export"


class ExportCheckError(ValueError):
    """An export folder does not fit the model at hand or is damaged; the message says why."""


def role_file(folder: str | Path, role: str) -> Path:
    """Where an export folder keeps a role's GGUF LoRA."""
    return Path(folder) / f"{role}.gguf"


def base_identity(path: str | Path) -> dict[str, Any]:
    """Name, path, size and SHA-256 of a base GGUF file."""
    from moragent.train.base import file_hash

    path = Path(path)
    return {
        "name": path.name,
        "path": str(path.resolve()),
        "size": path.stat().st_size,
        "sha256": file_hash(path),
        "kind": "gguf",
    }


def check_export(
    folder: str | Path, model_path: str | Path, template_version: str | None
) -> dict[str, Path]:
    """Check an export folder against a base GGUF; returns role -> GGUF LoRA file.

    A folder without ``moragent.json`` (adapters converted by other tools) needs every
    role's ``<role>.gguf`` and is otherwise taken unchecked.

    Raises:
        ExportCheckError: a role file is missing or corrupted, the base model or the
            template version differs.
    """
    from moragent.train.base import file_hash
    from moragent.train.metadata import METADATA_FILE, AdapterMismatchError, read_metadata

    folder, model_path = Path(folder), Path(model_path)
    if not (folder / METADATA_FILE).is_file():
        from moragent.roles import ROLE_NAMES

        found = {role: role_file(folder, role) for role in ROLE_NAMES}
        missing = [str(path) for path in found.values() if not path.is_file()]
        if missing:
            raise ExportCheckError(
                f"role adapter file missing: {', '.join(missing)} (a folder made by "
                f"`moragent export` holds one GGUF LoRA per role and {METADATA_FILE})"
            )
        logger.warning("%s has no %s: its adapters are loaded unchecked", folder, METADATA_FILE)
        return found

    try:
        metadata = read_metadata(folder)
    except AdapterMismatchError as exc:
        raise ExportCheckError(str(exc)) from None
    record = metadata.results.get(EXPORT_KEY) or {}
    if record.get("format") != "gguf":
        raise ExportCheckError(
            f"{folder / METADATA_FILE} describes trained adapters, not a GGUF export: run "
            f"`moragent export {folder} --to gguf -o OUT` and pass OUT"
        )

    files = {role: role_file(folder, role) for role in metadata.roles}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise ExportCheckError(
            f"role adapter file missing: {', '.join(missing)}; export the adapters again "
            "(`moragent export`)"
        )

    if template_version is not None and str(metadata.template_version) != str(template_version):
        raise ExportCheckError(
            f"the adapters in {folder} were trained with transcript template version "
            f"{metadata.template_version}, but this moragent uses version {template_version}: "
            "train and export them again with this version"
        )

    expected = metadata.base
    size = model_path.stat().st_size
    if int(expected.get("size", size)) != size or file_hash(model_path) != expected.get("sha256"):
        raise ExportCheckError(
            f"the adapters in {folder} were exported for base model {expected.get('name')} "
            f"({expected.get('size')} bytes, sha256 {str(expected.get('sha256'))[:12]}...), not "
            f"for {model_path}: load them on that model (--model), or export adapters for this one"
        )

    hashes = record.get("files", {})
    for role, path in files.items():
        recorded = (hashes.get(role) or {}).get("sha256")
        if recorded and file_hash(path) != recorded:
            raise ExportCheckError(
                f"{path} is corrupted or was changed after export (its SHA-256 differs from "
                f"the one in {METADATA_FILE}): export the adapters again"
            )
    return files
