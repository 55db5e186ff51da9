"""Read and check the training file: trajectories, or OpenAI messages converted on the way in.

Every problem is a ``DataError`` naming the file and line, raised before anything is
written: a malformed line, a trajectory that breaks the schema, a call to a tool not
among the trajectory's candidates, an empty file.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from moragent.data.chat import OpenAIConverter
from moragent.data.complete import CompleteStats, complete_trajectory
from moragent.data.io import DataError, first_char, iter_records
from moragent.data.rules import RulesTeacher
from moragent.data.verify import check_calls, check_structure
from moragent.train.base import file_hash
from moragent.trajectory import Trajectory

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """The trajectories of a training file and where they came from.

    Attributes:
        path: the file as given.
        sha256: hash of the file's bytes.
        trajectories: the parsed trajectories, in file order.
        converted_from: ``"openai"`` when the file held OpenAI messages, else ``None``.
    """

    path: Path
    sha256: str
    trajectories: list[Trajectory]
    converted_from: str | None = None


def load_training_data(path: str | Path, seed: int = 0) -> TrainingData:
    """Read a trajectories file (JSONL or a JSON array), or an OpenAI-messages file.

    OpenAI records are converted to trajectories and their missing parts (thoughts) filled
    by the rules teacher, as ``moragent data convert`` + ``complete --teacher rules`` do.

    Raises:
        DataError: the file is missing or empty, a line is not JSON or not a trajectory,
            a trajectory breaks the role-order or content rules of ``moragent data
            verify`` (an empty turn, say), or a call names a tool that is not among the
            trajectory's candidates.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file: pass a trajectories file (JSON Lines)", path)
    first_char(path)  # an empty file is an error here, not an empty training run

    converter: OpenAIConverter | None = None
    teacher = RulesTeacher(seed)
    trajectories: list[Trajectory] = []
    for line, record in iter_records(path):
        if converter is None and not trajectories and _is_openai(record):
            logger.info("%s holds OpenAI messages: converting them to trajectories", path)
            converter = OpenAIConverter()
        if converter is not None:
            try:
                converted = converter.convert(record, line)
            except DataError as error:
                raise DataError(error.message, path, line, error.field) from None
            for trajectory in converted:
                complete_trajectory(trajectory, teacher, CompleteStats())
        else:
            converted = [_trajectory(record, path, line)]
        for trajectory in converted:
            _check(trajectory, path, line)
        trajectories += converted

    if not trajectories:
        raise DataError("the file holds no trajectories: nothing to train on", path)
    return TrainingData(
        path, file_hash(path), trajectories, "openai" if converter is not None else None
    )


def _is_openai(record: object) -> bool:
    return not (isinstance(record, dict) and "steps" in record) and OpenAIConverter.detect(record)


def _trajectory(record: object, path: Path, line: int) -> Trajectory:
    try:
        return Trajectory.from_dict(record)  # type: ignore[arg-type]
    except ValueError as exc:
        raise DataError(f"not a trajectory: {exc}", path, line) from None


def _check(trajectory: Trajectory, path: Path, line: int) -> None:
    """Refuse what would teach the model broken turns: the role-order and content rules
    of ``moragent data verify`` (an empty answer, a next role that does not follow) and
    calls of tools the trajectory does not offer. Argument checks are left to verify:
    public data often has loosely typed arguments that still make useful examples."""
    reasons = [
        reason for reason in check_calls(trajectory) if reason.startswith("unknown-function")
    ] + check_structure(trajectory)
    if reasons:
        raise DataError(
            f"{reasons[0]}; fix the trajectory or drop it (`moragent data verify` sorts them out)",
            path,
            line,
        )


def split(
    trajectories: list[Trajectory], val_split: float, seed: int
) -> tuple[list[Trajectory], list[Trajectory]]:
    """(train, validation): a seeded random ``val_split`` share held out for validation."""
    if not 0.0 <= val_split < 1.0:
        raise ValueError(f"val_split must lie in [0, 1), got {val_split}")
    if val_split == 0.0 or len(trajectories) < 2:
        return list(trajectories), []
    order = list(range(len(trajectories)))
    random.Random(seed).shuffle(order)
    held = min(max(1, round(len(order) * val_split)), len(order) - 1)
    val = set(order[:held])
    train = [t for i, t in enumerate(trajectories) if i not in val]
    return train, [t for i, t in enumerate(trajectories) if i in val]
