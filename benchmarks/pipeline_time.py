"""Wall time of a leaderboard sweep (``run.py -m``), cold and warm baseline cache, per stage; and
CaP's time claim, from the committed records.

Live (default): ``python run.py -m method=<--methods> seed=<--seeds> budget=<--budget>
logger=none`` in a subprocess, with a fresh results folder. ``--cache cold`` uses a fresh runs
folder (every seed's baseline is trained); ``--cache warm`` reuses ``--runs-dir`` (its baseline
cache), with ``overwrite=true`` so every point runs again; ``--cache both`` (default) runs cold
then warm in the same fresh runs folder. Prints the wall time, the sum of every record's
``stage_seconds`` per stage, and the sweep process's peak RSS (``os.wait4``; Hydra's basic
launcher runs the points in that one process). ``--default-rss`` also measures the peak RSS of
``python run.py budget=smoke logger=none`` (the default command at the smoke tier).

``--from-records DIR`` (no run): the same figures **from committed records**
(``results/records/<task>/*.json``, ``cpu`` tier, embedded data, CPU trainer only): the warm
sweep is every ok point's compress + finetune + evaluate seconds once, split per method with the
budget-matched controls the leaderboard pairs with its points; the cold one adds one baseline
(the median baseline stage) per seed. Records carry the load of the machine they ran on. It also
computes CaP's claim (compression without retraining saves ~95 % of the processing time): CaP's
compress stage vs magnitude's compress + finetune, at r0.5, beside the test accuracies each
reached.

``--controls CMD`` runs the budget-matched controls' command after each live sweep (with
``{results}``/``{runs}`` replaced by the sweep's folders) and times it beside the sweep; every
live sweep also reports its seconds per method and stage (``per_method_seconds``).

    python benchmarks/pipeline_time.py --budget smoke --methods dense,magnitude --seeds 0
    python benchmarks/pipeline_time.py --from-records results/records
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _common import ROOT, peak_rss, write_json

from prunebench.reporting.matching import CONTROLS, pair

ALL_METHODS = "dense,magnitude,random,kcp,trp,spp,cap,lapp"
WORK_STAGES = ("compress", "finetune", "evaluate")  # what a warm sweep spends per point


def sweep(methods: str, seeds: str, budget: str, results: Path, runs: Path, extra: list[str]):
    """Run one ``run.py -m`` sweep; (wall seconds, peak RSS MiB, its records)."""
    argv = [
        "run.py",
        "-m",
        f"method={methods}",
        f"seed={seeds}",
        f"budget={budget}",
        "logger=none",
        f"paths.results_dir={results}",
        f"paths.runs_dir={runs}",
        *extra,
    ]
    start = time.perf_counter()
    peak = peak_rss(argv)
    wall = time.perf_counter() - start
    records = [json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))]
    return wall, peak["process_mib"], records


def stage_totals(records: list[dict]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for r in records:
        for stage, sec in r["stage_seconds"].items():
            totals[stage] += sec
    return dict(totals)


def per_method(records: list[dict]) -> dict[str, dict[str, float]]:
    """Seconds per method and stage, summed over the method's points (seeds)."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in records:
        for stage, sec in r["stage_seconds"].items():
            out[r["method"]][stage] += sec
    return {m: dict(v) for m, v in out.items()}


def controls(command: str, results: Path, runs: Path) -> dict:
    """Run the budget-matched controls' command (``{results}`` and ``{runs}`` in it become the
    sweep's folders) and time it; its records land beside the sweep's."""
    before = set(results.rglob("*.json"))
    start = time.perf_counter()
    rc = subprocess.call(command.format(results=results, runs=runs), shell=True, cwd=ROOT)
    wall = time.perf_counter() - start
    records = [json.loads(p.read_text()) for p in sorted(set(results.rglob("*.json")) - before)]
    print(f"controls: {wall:.1f} s wall, {len(records)} records, exit {rc}")
    return {
        "command": command,
        "exit": rc,
        "wall_seconds": wall,
        "points": len(records),
        "per_method_seconds": per_method(records),
    }


def live(args) -> dict:
    out = {}
    with tempfile.TemporaryDirectory(prefix="pipeline_time_") as tmp:
        runs = Path(args.runs_dir) if args.runs_dir else Path(tmp, "runs")
        kinds = ["cold", "warm"] if args.cache == "both" else [args.cache]
        for kind in kinds:
            results = Path(tmp, f"results_{kind}")
            extra = ["overwrite=true"] if kind == "warm" else []
            wall, rss, records = sweep(args.methods, args.seeds, args.budget, results, runs, extra)
            out[kind] = {
                "wall_seconds": wall,
                "peak_rss_mib": rss,
                "points": len(records),
                "stage_seconds_total": stage_totals(records),
                "outside_stages_seconds": wall - sum(stage_totals(records).values()),
                "per_point": [
                    {"method": r["method"], "seed": r["seed"], "stage_seconds": r["stage_seconds"]}
                    for r in records
                ],
            }
            out[kind]["per_method_seconds"] = per_method(records)
            if args.controls:  # the budget-matched controls' own command, same folders
                out[kind]["controls"] = controls(args.controls, results, runs)
            print(
                f"{kind:5} sweep: {wall:.1f} s wall ({out[kind]['outside_stages_seconds']:.1f} s outside "
                f"the stages: start-up, imports, data), {len(records)} points, peak RSS {rss:.0f} MiB; "
                f"stages { ({k: round(v, 1) for k, v in out[kind]['stage_seconds_total'].items()}) }"
            )
        if args.default_rss:
            argv = ["run.py", "budget=smoke", "logger=none"]
            paths = [
                f"paths.results_dir={tmp}/results_default",
                f"paths.runs_dir={tmp}/runs_default",
            ]
            peak = peak_rss([*argv, *paths])["process_mib"]
            out["default_run_smoke_peak_rss_mib"] = peak
            print(f"`python run.py budget=smoke logger=none`: peak RSS {peak:.0f} MiB")
    return out


# -- from committed records --------------------------------------------------------------------
def _load(task_dir: Path) -> tuple[list[dict], list[str]]:
    kept, skipped = [], []
    for path in sorted(task_dir.glob("*.json")):
        r = json.loads(path.read_text())
        accel = r["config"].get("trainer", {}).get("accelerator")
        if r.get("status") != "ok" or r["budget"] != "cpu" or r["data_source"] != "embedded":
            skipped.append(f"{path.name} (status/budget/data)")
        elif accel != "cpu":
            skipped.append(f"{path.name} (trainer {accel})")
        else:
            kept.append(r)
    return kept, skipped


def _point(r: dict) -> str:
    ft = r["config"]["budget"]["finetune_epochs"] if "finetune" in r["stage_seconds"] else 0
    hp = json.dumps(r.get("method_hparams", {}), sort_keys=True)
    return f"{r['method']} r{r['target_macs_reduction']} ft{ft} {hp}"


def _work(r: dict) -> float:
    return sum(r["stage_seconds"].get(s, 0.0) for s in WORK_STAGES)


def _is_control(r: dict) -> bool:
    """A budget-matched control point (scripts/controls.py): magnitude/random given a method's
    training as ``budget.finetune_samples``, or the scratch control."""
    finetune_samples = r["config"]["budget"].get("finetune_samples")
    return r["method"] == "scratch" or (r["method"] in CONTROLS and finetune_samples is not None)


def from_records(task_dir: Path) -> dict:
    """The sweep's cost from its records: every ok cpu-tier point's compress + finetune +
    evaluate seconds once (the warm sweep), per method with the controls matched to its points
    (the leaderboard's pairing), plus one baseline per seed (the cold sweep)."""
    records, skipped = _load(task_dir)
    methods = [r for r in records if not _is_control(r)]
    points: dict[str, list[dict]] = defaultdict(list)
    for r in methods:
        points[_point(r)].append(r)
    rows = [
        {
            "point": key,
            "seeds": sorted(r["seed"] for r in rs),
            "median_work_seconds": statistics.median(_work(r) for r in rs),
            "median_stage_seconds": {
                s: statistics.median(r["stage_seconds"].get(s, 0.0) for r in rs)
                for s in WORK_STAGES
            },
        }
        for key, rs in sorted(points.items())
    ]
    per_method: dict[str, dict] = {}
    matched: set[str] = set()
    for m in sorted(methods, key=lambda r: r["point_id"]):
        e = per_method.setdefault(
            m["method"],
            {
                "points": 0,
                "work_seconds": 0.0,
                "controls": 0,
                "shared_controls": 0,  # counted under the method listed first
                "controls_work_seconds": 0.0,
            },
        )
        e["points"] += 1
        e["work_seconds"] += _work(m)
        for kind in CONTROLS if m["method"] not in (*CONTROLS, "dense") else ():
            c = pair(m, records, kind).control
            if c is None:
                continue
            e["controls"] += 1
            if c["point_id"] in matched:  # one point serves two methods (same MACs and samples)
                e["shared_controls"] += 1
            else:
                matched.add(c["point_id"])
                e["controls_work_seconds"] += _work(c)
    loose = [r for r in records if _is_control(r) and r["point_id"] not in matched]
    seeds = sorted({r["seed"] for r in records})
    # the records that trained their baseline (the rest loaded it from the cache: ~1 s)
    baselines = [
        r["stage_seconds"]["baseline"] for r in records if r["baseline"].get("source") == "trained"
    ]
    base = statistics.median(baselines) if baselines else None
    warm = sum(_work(r) for r in records)
    return {
        "source": f"from committed records: {task_dir}",
        "records": len(records),
        "skipped": skipped,
        "seeds": seeds,
        "points": rows,
        "per_method": per_method,
        "unmatched_controls": len(loose),
        "unmatched_controls_work_seconds": sum(_work(r) for r in loose),
        "warm_seconds": warm,
        "warm_by_stage_seconds": {
            s: sum(r["stage_seconds"].get(s, 0.0) for r in records) for s in WORK_STAGES
        },
        "baseline_median_seconds": base,  # None: every record read a cached baseline
        "cold_seconds": None if base is None else warm + len(seeds) * base,
    }


def cap_claim(task_dir: Path) -> dict | None:
    """CaP's compress time vs magnitude's compress + finetune at r0.5, and the accuracies."""
    recs = [json.loads(p.read_text()) for p in sorted(task_dir.glob("*.json"))]
    recs = [r for r in recs if r.get("status") == "ok" and r["budget"] == "cpu"]
    cap = [r for r in recs if r["method"] == "cap" and r["target_macs_reduction"] == 0.5]
    mag = [
        r
        for r in recs
        if r["method"] == "magnitude" and r["target_macs_reduction"] == 0.5 and not _is_control(r)
    ]
    mag_ft = [r for r in mag if "finetune" in r["stage_seconds"]]
    mag_0 = [r for r in mag if "finetune" not in r["stage_seconds"]]
    if not cap or not mag_ft:
        return None
    metric = (
        cap[0]["metric"] if cap[0]["metric"].startswith("test/") else f"test/{cap[0]['metric']}"
    )

    def med(rs, stages):
        return statistics.median(sum(r["stage_seconds"].get(s, 0.0) for s in stages) for r in rs)

    def acc(rs):
        return statistics.fmean(r["test"][metric] for r in rs) if rs else None

    cap_s = med(cap, ("compress",))
    mag_s = med(mag_ft, ("compress", "finetune"))
    accel = {r["config"].get("trainer", {}).get("accelerator") for r in cap + mag_ft}
    return {
        "task": task_dir.name,
        "source": f"from committed records: {task_dir}",
        "trainer": sorted(a or "?" for a in accel),
        "cap_compress_median_seconds": cap_s,
        "magnitude_compress_plus_finetune_median_seconds": mag_s,
        "time_ratio_cap_over_magnitude_finetune": cap_s / mag_s,
        "time_saved_fraction": 1 - cap_s / mag_s,
        "finetune_epochs": mag_ft[0]["config"]["budget"]["finetune_epochs"],
        f"{metric} cap (mean over seeds)": acc(cap),
        f"{metric} magnitude+finetune": acc(mag_ft),
        f"{metric} magnitude, no finetune": acc(mag_0),
        f"{metric} baseline": statistics.fmean(r["baseline"]["test"][metric] for r in cap),
        "seeds": [len(cap), len(mag_ft)],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=ALL_METHODS)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget", default="cpu", choices=["smoke", "cpu", "paper"])
    p.add_argument("--cache", default="both", choices=["cold", "warm", "both"])
    p.add_argument("--runs-dir", default=None, help="warm: a runs folder holding the baselines")
    p.add_argument("--default-rss", action="store_true", help="also `run.py budget=smoke` RSS")
    p.add_argument("--from-records", default=None, metavar="DIR", help="results/records (no run)")
    p.add_argument("--task", default="cifar10_resnet20", help="--from-records: the task folder")
    p.add_argument(
        "--controls",
        default=None,
        metavar="CMD",
        help="a shell command that runs the budget-matched controls after each sweep, timed "
        "with it; {results} and {runs} in it become the sweep's folders",
    )
    p.add_argument("--out", default="results/benchmarks/pipeline_time.json")
    args = p.parse_args()
    if args.cache == "warm" and not args.runs_dir:
        raise SystemExit("--cache warm needs --runs-dir (a runs folder with the baseline cache)")
    if args.from_records:
        root = Path(args.from_records)
        est = from_records(root / args.task)
        base = est["baseline_median_seconds"]
        cold = (
            "cold unknown (every record read a cached baseline)"
            if base is None
            else f"cold {est['cold_seconds'] / 60:.1f} min (baseline {base:.0f} s × "
            f"{len(est['seeds'])} seeds)"
        )
        print(
            f"{args.task}, cpu tier, {est['records']} records: warm sweep "
            f"{est['warm_seconds'] / 60:.1f} min, {cold}; "
            f"warm by stage "
            f"{ ({k: round(v / 60, 1) for k, v in est['warm_by_stage_seconds'].items()}) } min"
        )
        print(f"  {'method':<10} {'points':>6} {'min':>7} {'controls':>8} {'min':>7} {'total':>7}")
        for name, e in sorted(
            est["per_method"].items(),
            key=lambda kv: -kv[1]["work_seconds"] - kv[1]["controls_work_seconds"],
        ):
            own, ctl = e["work_seconds"] / 60, e["controls_work_seconds"] / 60
            shared = (
                f" ({e['shared_controls']} shared, timed above)" if e["shared_controls"] else ""
            )
            print(
                f"  {name:<10} {e['points']:>6} {own:>7.1f} {e['controls']:>8} {ctl:>7.1f} "
                f"{own + ctl:>7.1f}{shared}"
            )
        if est["unmatched_controls"]:
            print(
                f"  {est['unmatched_controls']} control point(s) matched to no method record: "
                f"{est['unmatched_controls_work_seconds'] / 60:.1f} min"
            )
        claims = [c for t in ("cifar10_resnet20", "cifar10_resnet56") if (c := cap_claim(root / t))]
        for c in claims:
            print(
                f"CaP claim, {c['task']} ({c['trainer']}): "
                + json.dumps(
                    {
                        k: round(v, 4) if isinstance(v, float) else v
                        for k, v in c.items()
                        if k not in ("source", "task", "trainer")
                    }
                )
            )
        write_json(
            args.out,
            {"mode": "from-records", "records": str(root), "task": args.task},
            sweep_estimate=est,
            cap_claim=claims,
        )
        return
    result = live(args)
    settings = {
        k: getattr(args, k)
        for k in ("methods", "seeds", "budget", "cache", "runs_dir", "default_rss", "controls")
    } | {"mode": "live", "python": sys.executable, "cwd": str(ROOT)}
    write_json(args.out, settings, **result)


if __name__ == "__main__":
    main()
