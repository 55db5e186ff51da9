"""Build the default training set from the public data in ../shared/data.

For each set (Seal-Tools, glaive, FireAct): convert, complete with the rules teacher,
verify. Then no-fit trajectories (a query offered tools that cannot serve it, so the
reasoner calls nothing: ``moragent.data.augment``) are made from the accepted ones, a
``--no-fit`` share of the total, and verified the same way; a ``--near-miss`` part of
them offers tools of the query's own domain (the leftovers of its catalogue), the rest
tools of another trajectory. The union is written to one
JSONL file (default ``runs/train.jsonl``), and the script prints, per set, the records
read, the trajectories made, accepted and rejected by reason. BFCL data is never read
here: it is evaluation only.

    python scripts/build_training_set.py [--data ../shared/data] [-o runs/train.jsonl]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from moragent.data.augment import near_miss_trajectories, no_fit_trajectories
from moragent.data.complete import complete_file
from moragent.data.convert import convert_file
from moragent.data.io import atomic_writer, iter_lines
from moragent.data.rules import RulesTeacher
from moragent.data.verify import verify_file
from moragent.trajectory import Trajectory

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"

#: set name -> (source files relative to the data folder, format)
SETS: dict[str, tuple[list[str], str]] = {
    "seal-tools": (["seal-tools/dev.jsonl", "seal-tools/test_in_domain.jsonl"], "seal-tools"),
    "glaive": (["glaive-demo/glaive_toolcall_en_demo.json"], "sharegpt"),
    "fireact": (["fireact/multitask.jsonl"], "react-text"),
}


@dataclass
class SetReport:
    """Counts for one set."""

    name: str
    records: int = 0
    trajectories: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    filled: Counter[str] = field(default_factory=Counter)
    #: what was made, by kind (no-fit only)
    kinds: Counter[str] = field(default_factory=Counter)
    accepted_files: list[Path] = field(default_factory=list)


def build_set(name: str, data: Path, work: Path, seed: int, coerce: bool) -> SetReport:
    """Convert, complete and verify every file of one set into ``work``."""
    files, fmt = SETS[name]
    report = SetReport(name)
    teacher = RulesTeacher(seed)
    for relative in files:
        source = data / relative
        if "bfcl" in str(source).lower():
            raise ValueError(f"{source}: BFCL data is for evaluation only, never training")
        stem = f"{name}.{source.stem}"
        converted = work / f"{stem}.converted.jsonl"
        completed = work / f"{stem}.completed.jsonl"
        accepted = work / f"{stem}.accepted.jsonl"
        rejected = work / f"{stem}.rejected.jsonl"
        options = {"seed": seed, "coerce_numbers": coerce} if fmt == "seal-tools" else {}
        stats = convert_file(source, converted, fmt, **options)
        filled = complete_file(converted, completed, teacher)
        checked = verify_file(completed, accepted, rejected)
        report.records += stats.records
        report.trajectories += stats.trajectories
        report.accepted += checked.accepted
        report.rejected += checked.rejected
        report.reasons.update(checked.reasons)
        report.filled.update(filled.filled)
        report.accepted_files.append(accepted)
    return report


def build_no_fit(
    reports: list[SetReport], work: Path, share: float, near_share: float, seed: int
) -> SetReport:
    """No-fit trajectories from the accepted ones: ``share`` of the final total, verified;
    ``near_share`` of them with same-domain tools."""
    report = SetReport("no-fit")
    pool = [
        Trajectory.from_dict(json.loads(text))
        for set_report in reports
        for path in set_report.accepted_files
        for _, text in iter_lines(path)
    ]
    count = round(len(pool) * share / (1 - share)) if share > 0 else 0
    near, _ = near_miss_trajectories(pool, round(count * near_share), seed)
    used = {trajectory.query for trajectory in near}
    far, stats = no_fit_trajectories(
        [t for t in pool if t.query not in used], count - len(near), seed
    )
    made = near + far
    made_file, accepted, rejected = (
        work / f"no-fit.{kind}.jsonl" for kind in ("made", "accepted", "rejected")
    )
    with atomic_writer(made_file) as out:
        for trajectory in made:
            out.write(trajectory.to_json() + "\n")
    report.records = len(pool)
    report.trajectories = len(made)
    report.kinds.update({"same-domain": len(near), "other-domain": len(far)})
    if made:
        checked = verify_file(made_file, accepted, rejected)
        report.accepted, report.rejected = checked.accepted, checked.rejected
        report.reasons.update(checked.reasons)
        report.accepted_files.append(accepted)
    if stats.no_donor:
        report.reasons["no-donor"] = stats.no_donor
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "runs" / "train.jsonl")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder for the per-set files (default: <output folder>/data)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keep-number-strings",
        action="store_true",
        help="do not turn Seal-Tools' numeric strings into numbers",
    )
    parser.add_argument(
        "--no-fit",
        type=float,
        default=0.3,
        help="share of no-fit trajectories (a query with tools that cannot serve it) "
        "in the output; 0 for none",
    )
    parser.add_argument(
        "--near-miss",
        type=float,
        default=0.6,
        help="part of the no-fit trajectories whose tools are of the query's own domain "
        "(its catalogue's tools that it does not call)",
    )
    args = parser.parse_args()
    if not 0 <= args.no_fit < 1:
        parser.error(f"--no-fit must be in [0, 1), got {args.no_fit}")
    if not 0 <= args.near_miss <= 1:
        parser.error(f"--near-miss must be in [0, 1], got {args.near_miss}")
    console = Console(soft_wrap=True)
    if not args.data.is_dir():
        raise SystemExit(f"no data folder at {args.data}: see docs/data-format.md for the sources")
    work = args.work or args.output.parent / "data"
    work.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    reports = []
    for name in SETS:
        with console.status(f"building {name}"):
            reports.append(
                build_set(name, args.data, work, args.seed, not args.keep_number_strings)
            )
    with console.status("making no-fit trajectories"):
        reports.append(build_no_fit(reports, work, args.no_fit, args.near_miss, args.seed))

    total = 0
    with atomic_writer(args.output) as out:
        for report in reports:
            for path in report.accepted_files:
                for _, text in iter_lines(path):
                    out.write(text if text.endswith("\n") else text + "\n")
                    total += 1

    table = Table(title="training set by source")
    for column in (
        "set",
        "records in",
        "trajectories",
        "accepted",
        "rejected",
        "rejected by reason",
    ):
        table.add_column(
            column, justify="left" if column in ("set", "rejected by reason") else "right"
        )
    for report in reports:
        reasons = ", ".join(f"{code} {count}" for code, count in report.reasons.most_common())
        table.add_row(
            report.name,
            str(report.records),
            str(report.trajectories),
            str(report.accepted),
            str(report.rejected),
            reasons or "-",
        )
    console.print(table)
    for report in reports:
        filled = ", ".join(f"{count} {what}s" for what, count in sorted(report.filled.items()))
        console.print(f"{report.name}: filled by the rules teacher: {filled or 'nothing'}")
        if report.kinds:
            kinds = ", ".join(f"{count} {kind}" for kind, count in report.kinds.items())
            console.print(f"{report.name}: made {kinds} (before verification)")
    console.print(
        f"wrote {total} accepted trajectories to {args.output} "
        f"in {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
