"""Compare two results folders point by point: the same plan and the same numbers.

A refactor that must not change behaviour runs the same points before and after (same seed,
``budget=smoke``) into two folders and checks them here::

    for m in dense magnitude random kcp lapp spp trp cap; do
        python run.py method=$m budget=smoke logger=none seed=0 paths.results_dir=/tmp/after
    done
    python scripts/compare_records.py /tmp/before /tmp/after

Points are matched by task and method; the compared fields are the point id, the plan's widths,
the MACs and params, the baseline's and the compressed model's test metrics and the compressed
weights' sha256 (weights, buffers and plan). Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FIELDS = (
    "point_id",
    "status",
    "plan_widths",
    "macs",
    "params",
    "achieved_macs_reduction",
    "test",
    "weights_sha256",
)


def load(results: Path) -> dict[tuple[str, str], dict]:
    """(task, method) → the record under ``results/records/``."""
    out = {}
    for path in sorted(results.rglob("records/**/*.json")):
        rec = json.loads(path.read_text())
        out[(rec["task"], rec["method"])] = rec
    return out


def differences(a: dict, b: dict) -> list[str]:
    """The compared fields that differ between records ``a`` and ``b``."""
    diffs = [f for f in FIELDS if a.get(f) != b.get(f)]
    if a["baseline"].get("test") != b["baseline"].get("test"):
        diffs.append("baseline.test")
    return diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("before", type=Path, help="results folder of the reference runs")
    p.add_argument("after", type=Path, help="results folder of the runs to check")
    args = p.parse_args(argv)
    before, after = load(args.before), load(args.after)
    bad = 0
    for key in sorted(before.keys() | after.keys()):
        if key not in before or key not in after:
            print(f"{key[0]} {key[1]}: only in {'before' if key in before else 'after'}")
            bad += 1
            continue
        a, b = before[key], after[key]
        diffs = differences(a, b)
        metric = a["metric"]
        print(
            f"{key[0]} {key[1]}: {metric} {a['test'].get(metric)} -> {b['test'].get(metric)}, "
            f"MACs {a['macs']['compressed']} -> {b['macs']['compressed']}, "
            + ("same" if not diffs else f"DIFFERENT: {', '.join(diffs)}")
        )
        bad += bool(diffs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
