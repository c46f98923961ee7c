"""Wall time of the README's default run (``python run.py``), from an empty cache.

Each repeat runs in fresh temporary results/runs folders, so the baseline is trained, not loaded.
Prints the median and writes ``results/benchmarks/default_run_time.json``.

    python benchmarks/default_run_time.py [--repeats 1] [extra overrides …]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prunebench.records import write_atomic

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default="results/benchmarks/default_run_time.json")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    times, stages = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                "run.py",
                f"paths.results_dir={tmp}/results",
                f"paths.runs_dir={tmp}/runs",
                *args.overrides,
            ]
            start = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
            rec = json.loads(next(Path(tmp, "results").rglob("*.json")).read_text())
            stages.append(rec["stage_seconds"])
            print(
                f"run: {times[-1]:.1f} s; stages {rec['stage_seconds']}; "
                f"test/top1 {rec['test']['test/top1']:.4f} (baseline {rec['baseline']['test']['test/top1']:.4f}); "
                f"MACs −{100 * rec['achieved_macs_reduction']:.1f} %"
            )
    print(
        f"median wall time of `python run.py {' '.join(args.overrides)}`: {statistics.median(times):.1f} s "
        f"over {len(times)} run(s)"
    )
    write_atomic(
        args.out,
        json.dumps(
            {"overrides": args.overrides, "wall_seconds": times, "stages": stages}, indent=1
        ),
    )


if __name__ == "__main__":
    main()
