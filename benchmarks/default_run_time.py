"""Wall time and peak RSS of the README's default run (``python run.py``), from an empty cache.

Each repeat runs in fresh temporary results/runs folders, so the baseline is trained, not loaded.
Peak RSS is the run's own high-water mark (``VmHWM`` of the ``run.py`` process, read by a wrapper
just before it exits; its W&B service, a separate process, is not included). Prints the medians
and writes ``results/benchmarks/default_run_time.json``.

    python benchmarks/default_run_time.py [--repeats 1] [extra overrides …]
"""

from __future__ import annotations

import argparse
import json
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prunebench.reporting.records import write_atomic

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default="results/benchmarks/default_run_time.json")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, rest = p.parse_known_args()
    if args.child:  # run.py in this process, then report its VmHWM
        return child([*args.overrides, *rest])
    times, stages, peaks = [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                f"paths.results_dir={tmp}/results",
                f"paths.runs_dir={tmp}/runs",
                *args.overrides,
            ]
            start = time.perf_counter()
            out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            peaks.append(float(out.stdout.rsplit("VmHWM_MiB=", 1)[1].split()[0]))
            rec = json.loads(next(Path(tmp, "results").rglob("*.json")).read_text())
            stages.append(rec["stage_seconds"])
            print(
                f"run: {times[-1]:.1f} s; stages {rec['stage_seconds']}; "
                f"test/top1 {rec['test']['test/top1']:.4f} (baseline {rec['baseline']['test']['test/top1']:.4f}); "
                f"MACs −{100 * rec['achieved_macs_reduction']:.1f} %; peak RSS {peaks[-1]:.0f} MiB"
            )
    print(
        f"median wall time of `python run.py {' '.join(args.overrides)}`: "
        f"{statistics.median(times):.1f} s, median peak RSS {statistics.median(peaks):.0f} MiB "
        f"over {len(times)} run(s)"
    )
    write_atomic(
        args.out,
        json.dumps(
            {
                "overrides": args.overrides,
                "wall_seconds": times,
                "stages": stages,
                "peak_rss_mib": peaks,
                "rss_note": "VmHWM of the run.py process (W&B's service process not included)",
            },
            indent=1,
        ),
    )


def child(overrides: list[str]) -> None:
    """``python run.py <overrides>`` in this process; prints this process's VmHWM at exit."""
    sys.argv = ["run.py", *overrides]
    sys.path.insert(0, str(ROOT))
    try:
        runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        status = Path("/proc/self/status").read_text()
        kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
        print(f"VmHWM_MiB={kib / 1024:.1f}", flush=True)


if __name__ == "__main__":
    main()
