"""Do bf16 and fp32 training give the same numbers within seed noise? Dense ResNet-20 and one
method's Δ, over seeds, trained in each precision side by side.

Live (default): two ``run.py -m method=dense,<--method> seed=<--seeds>`` sweeps at the same
time, one with ``trainer.precision=32-true`` and one with ``bf16-mixed``, each on one thread
(``OMP_NUM_THREADS=1``) in its own runs folder, so both see the same machine load. ``--from
FP32_DIR BF16_DIR`` reads two sweeps' records instead (each a results folder, searched
recursively). Prints, per precision: dense test top-1 per seed with mean ± sample std, the
method's paired Δ to its own seed's dense, and the median training seconds per stage; then the
per-seed bf16 − fp32 differences and the fp32/bf16 stage-time ratios (> 1: bf16 is faster).

"Agrees within seed noise": the mean difference between the precisions is no larger than one
sample std of the per-seed differences (n ≥ 2) — stricter than the leaderboard's paired
t-test, which would call even fewer of these differences real.

    python benchmarks/precision_agreement.py --seeds 0,1,2 --method magnitude
    python benchmarks/precision_agreement.py --from runs_fp32/results runs_bf16/results
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, write_json

from prunebench.running.precision import cpu_has_bf16

PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}
TRAIN_STAGES = ("baseline", "compress", "finetune")


def sweep_cmd(precision: str, method: str, seeds: str, runs: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable, "run.py", "-m", f"method=dense,{method}", f"seed={seeds}",
        f"trainer.precision={precision}", "logger=none", f"paths.runs_dir={runs}", *extra,
    ]  # fmt: skip


def load(results: Path, method: str) -> dict[str, dict[int, dict]]:
    """{"dense"|method: {seed: record}} of the ok records under ``results``."""
    out: dict[str, dict[int, dict]] = {"dense": {}, method: {}}
    for path in sorted(results.rglob("*.json")):
        r = json.loads(path.read_text())
        if r.get("status") == "ok" and r.get("method") in out and r.get("finetune_samples") is None:
            out[r["method"]][r["seed"]] = r
    return out


def top1(r: dict) -> float:
    """The record's headline test metric, in percent."""
    return 100.0 * r["test"][r["metric"]]


def mean_std(xs: list[float]) -> dict[str, float | None]:
    return {
        "mean": statistics.fmean(xs),
        "std": statistics.stdev(xs) if len(xs) > 1 else None,
        "n": len(xs),
    }


def summarise(runs: dict[str, dict[str, dict[int, dict]]], method: str) -> dict:
    seeds = sorted(set.intersection(*(set(r["dense"]) & set(r[method]) for r in runs.values())))
    if not seeds:
        raise SystemExit(f"error: no seed has both dense and {method} records in both precisions")
    out: dict = {"seeds": seeds, "precisions": {}}
    for name, recs in runs.items():
        dense = [top1(recs["dense"][s]) for s in seeds]
        delta = [top1(recs[method][s]) - top1(recs["dense"][s]) for s in seeds]
        stages = {
            st: statistics.median(
                r["stage_seconds"].get(st, 0.0)
                for r in (recs["dense"] if st == "baseline" else recs[method]).values()
            )
            for st in TRAIN_STAGES
        }
        out["precisions"][name] = {
            "training": {recs["dense"][s]["precision"]["training"] for s in seeds}.pop(),
            "dense_top1": dense,
            "dense": mean_std(dense),
            f"{method}_delta": delta,
            "delta": mean_std(delta),
            "median_stage_seconds": stages,
        }
    f, b = out["precisions"]["fp32"], out["precisions"]["bf16"]
    for key in ("dense_top1", f"{method}_delta"):
        diff = [y - x for x, y in zip(f[key], b[key], strict=True)]
        d = mean_std(diff)
        d["per_seed"] = diff
        d["within_noise"] = d["std"] is not None and abs(d["mean"]) <= d["std"]
        out[f"bf16_minus_fp32_{key}"] = d
    out["fp32_over_bf16_seconds"] = {
        st: f["median_stage_seconds"][st] / b["median_stage_seconds"][st]
        for st in TRAIN_STAGES
        if b["median_stage_seconds"][st] > 1.0
    }
    return out


def show(s: dict, method: str) -> None:
    for name, p in s["precisions"].items():
        d, m = p["dense"], p["delta"]
        print(
            f"{name} ({p['training']}): dense {' / '.join(f'{x:.2f}' for x in p['dense_top1'])} % "
            f"= {d['mean']:.2f} ± {d['std'] or 0:.2f}; {method} Δ "
            f"{' / '.join(f'{x:+.2f}' for x in p[f'{method}_delta'])} = {m['mean']:+.2f} ± "
            f"{m['std'] or 0:.2f} pt (seeds {s['seeds']})"
        )
    for key in ("dense_top1", f"{method}_delta"):
        d = s[f"bf16_minus_fp32_{key}"]
        verdict = "within seed noise" if d["within_noise"] else "NOT within seed noise"
        print(f"bf16 − fp32, {key}: {d['mean']:+.2f} ± {d['std'] or 0:.2f} pt → {verdict}")
    ratios = ", ".join(f"{k} ×{v:.2f}" for k, v in s["fp32_over_bf16_seconds"].items())
    print(f"fp32 / bf16 stage seconds (medians, run side by side): {ratios}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--method", default="magnitude")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--from", dest="from_dirs", nargs=2, metavar=("FP32_DIR", "BF16_DIR"))
    ap.add_argument("--note", default="", help="what the machine was doing (goes into the JSON)")
    ap.add_argument("--out", default="results/benchmarks/precision_agreement.json")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for both sweeps")
    args = ap.parse_args()
    if args.from_dirs:
        dirs = dict(zip(PRECISIONS, map(Path, args.from_dirs), strict=True))
        runs = {name: load(d, args.method) for name, d in dirs.items()}
    else:
        if not cpu_has_bf16():
            raise SystemExit("error: this CPU has no bf16 matrix instructions: nothing to compare")
        tmp = Path(tempfile.mkdtemp(prefix="precision_agreement_"))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = {
            name: subprocess.Popen(
                sweep_cmd(p, args.method, args.seeds, tmp / name, args.overrides),
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            for name, p in PRECISIONS.items()
        }
        for name, proc in procs.items():
            if proc.wait() != 0:
                raise SystemExit(f"error: the {name} sweep failed (exit {proc.returncode}): {tmp}")
        runs = {name: load(tmp / name / "results", args.method) for name in PRECISIONS}
    summary = summarise(runs, args.method)
    show(summary, args.method)
    settings = vars(args)
    if args.from_dirs:  # the folders' last two parts: no machine-specific absolute paths
        settings["from_dirs"] = ["/".join(Path(d).parts[-2:]) for d in args.from_dirs]
    write_json(args.out, settings, cpu_bf16_native=cpu_has_bf16(), **summary)


if __name__ == "__main__":
    main()
