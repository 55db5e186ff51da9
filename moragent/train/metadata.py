"""The metadata file next to trained adapters, and the check made before loading them.

``moragent.json`` records what the adapters are and what they were trained on: method,
roles, template version, base model identity (name and file hash), training data hash,
the adapter and training configuration, and the losses. ``check_adapters`` refuses
adapters whose base model or template version differs from the ones at hand: the
torch backend and export call it before loading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moragent.train.base import base_hash

METADATA_FILE = "moragent.json"
METADATA_FORMAT = 1


class AdapterMismatchError(ValueError):
    """Adapters do not fit the base model or templates at hand; the message says which."""


@dataclass
class AdapterMetadata:
    """What a folder of trained adapters holds (the content of ``moragent.json``)."""

    method: str
    roles: list[str]
    template_version: str
    base: dict[str, str]
    data: dict[str, Any]
    adapter_config: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    #: the adapters a run started from (``finetune(init_from=...)``), or None
    started_from: dict[str, Any] | None = None
    format: int = METADATA_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "method": self.method,
            "roles": self.roles,
            "template_version": self.template_version,
            "base": self.base,
            "data": self.data,
            "adapter_config": self.adapter_config,
            "training": self.training,
            "results": self.results,
            "started_from": self.started_from,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterMetadata:
        known = {
            "format", "method", "roles", "template_version", "base", "data",
            "adapter_config", "training", "results", "started_from",
        }  # fmt: skip
        return cls(**{key: value for key, value in data.items() if key in known})


def write_metadata(folder: str | Path, metadata: AdapterMetadata) -> Path:
    """Write ``moragent.json`` into ``folder``; returns its path."""
    path = Path(folder) / METADATA_FILE
    path.write_text(json.dumps(metadata.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return path


def read_metadata(folder: str | Path) -> AdapterMetadata:
    """Read the metadata of an adapter folder; raises ``AdapterMismatchError`` if absent."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        raise AdapterMismatchError(
            f"{folder} has no {METADATA_FILE}: it is not a folder written by `moragent "
            "finetune`; pass the --out folder of a training run"
        )
    try:
        return AdapterMetadata.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise AdapterMismatchError(f"{path} is not valid adapter metadata ({exc})") from None


def check_adapters(
    folder: str | Path, base_path: str | Path | None, template_version: str | None
) -> AdapterMetadata:
    """Check that the adapters in ``folder`` fit a base model and template version.

    Args:
        folder: the adapter folder (``moragent finetune --out``).
        base_path: the base model to load them on (GGUF file or transformers folder);
            ``None`` skips the base check.
        template_version: the transcript template version in use (``None`` skips it).

    Returns:
        The adapters' metadata.

    Raises:
        AdapterMismatchError: the base model's hash or the template version differs.
    """
    metadata = read_metadata(folder)
    if template_version is not None and str(metadata.template_version) != str(template_version):
        raise AdapterMismatchError(
            f"the adapters in {folder} were trained with transcript template version "
            f"{metadata.template_version}, but this moragent uses version {template_version}: "
            "train them again with this version (`moragent finetune`)"
        )
    if base_path is not None:
        trained_on = metadata.base.get("sha256")
        if base_hash(base_path) != trained_on:
            raise AdapterMismatchError(
                f"the adapters in {folder} were trained on base model "
                f"{metadata.base.get('name')} (sha256 {str(trained_on)[:12]}...), not on "
                f"{base_path}: load them on that base model (--model), or train adapters "
                "for this one"
            )
    return metadata
