"""The default training set (scripts/build_training_set.py) holds no BFCL question.

A question counts as present when most of its 8-word runs (``SHARED``) occur in the
training queries: one shared run alone is common phrasing ("Could you please help me
with the following tasks? First, I ..." opens many BFCL questions and some glaive ones).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WINDOW = 8
SHARED = 0.6

pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not here"),
    pytest.mark.skipif(importlib.util.find_spec("bfcl_eval") is None, reason="bfcl-eval missing"),
]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def shingles(text: str) -> set[tuple[str, ...]]:
    """Every run of WINDOW words (the whole text when it is shorter)."""
    tokens = words(text)
    if len(tokens) <= WINDOW:
        return {tuple(tokens)}
    return {tuple(tokens[i : i + WINDOW]) for i in range(len(tokens) - WINDOW + 1)}


def user_texts(line: str) -> list[str]:
    data = json.loads(line)
    return [data["query"]] + [turn["query"] for turn in data.get("history", [])]


def bfcl_overlap(lines: list[str]) -> list[str]:
    """BFCL questions whose WINDOW-word runs are mostly (SHARED) in the training queries."""
    from moragent.eval.bfcl import SUPPORTED_CATEGORIES, load_category

    seen: set[tuple[str, ...]] = set()
    for line in lines:
        for text in user_texts(line):
            seen |= shingles(text)
    found = []
    for category in SUPPORTED_CATEGORIES:
        for question in load_category(category):
            runs = shingles(question.query)
            if len(runs & seen) >= SHARED * len(runs):
                found.append(f"{question.id}: {question.query[:80]}")
    return found


@pytest.fixture(scope="module")
def training_lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("set") / "train.jsonl"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_training_set.py"), "--data", str(DATA),
         "-o", str(out)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return out.read_text().splitlines()


def test_no_bfcl_question_in_the_default_training_set(training_lines: list[str]) -> None:
    assert len(training_lines) > 3000
    assert bfcl_overlap(training_lines) == []


def test_the_check_finds_a_planted_bfcl_question(training_lines: list[str]) -> None:
    from moragent.eval.bfcl import load_category

    planted = json.loads(training_lines[0])
    question = load_category("simple_python", limit=1)[0]
    planted["query"] = "Please help. " + question.query
    found = bfcl_overlap(training_lines[:50] + [json.dumps(planted)])
    assert question.id in [item.split(":")[0] for item in found]
