"""Run the budget-matched controls of a method's records through ``run.py``.

python scripts/controls.py --task cifar10_resnet20 --method kcp [--tier cpu] [--data embedded]
    [--results DIR] [--seeds 0,1,2] [--record PATH …] [--dry-run] [-- HYDRA_OVERRIDES…]

For every ``ok`` record of the method (the newest code version of each point), one Hydra
multirun per seed: ``magnitude`` and ``random`` at the method's achieved MACs reduction with its
post-baseline training as their finetune (``budget.finetune_samples``); for a from-scratch method
also ``scratch``, its final architecture trained from a fresh initialisation for its total epochs.
``run.py`` does the rest: a point whose record exists is skipped, a lock keeps two launches of
one point apart, and the baseline comes from the cache. Overrides after ``--`` go to every run
(e.g. ``hydra/launcher=…``, or the overrides the method's records were made with). Every point's
baseline hash is checked against the method record's before anything runs.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from prunebench.errors import ConfigError, RecordError
from prunebench.method import CompressContext
from prunebench.reporting.leaderboard import current_records, load_records
from prunebench.reporting.matching import CONTROLS, control_specs
from prunebench.reporting.records import checkpoint_file, read_record
from prunebench.running.baseline import baseline_key
from prunebench.running.pipeline import run_config

ROOT = Path(__file__).resolve().parents[1]


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def compose_cfg(overrides: list[str]) -> dict[str, Any]:
    """The run config ``run.py`` would run with ``overrides``, as its record keeps it (the
    tier's recipe merged in, ``trainer.precision: auto`` resolved for this machine)."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return run_config(cfg)


def baseline_mismatch(record: dict[str, Any], overrides: list[str]) -> str | None:
    """None when the control composed from ``overrides`` has the record's baseline; otherwise
    the config values that differ (the overrides the method's record was made with)."""
    cfg = compose_cfg(overrides)
    if baseline_key(cfg) == record["baseline"]["hash"]:
        return None
    mine, theirs = _flat(cfg), _flat(record["config"])
    keys = [
        k
        for k in sorted(set(mine) | set(theirs))
        if k.split(".")[0] in ("task", "data", "budget", "trainer")
        and not k.startswith(("budget.finetune", "budget.compress", "budget.latency"))
        and mine.get(k) != theirs.get(k)
    ]
    diff = ", ".join(f"{k}={theirs.get(k)!r} (control: {mine.get(k)!r})" for k in keys[:6])
    return f"the record's config differs in {diff or 'the baseline recipe'}; pass it after --"


_CONTEXTS: dict[str, CompressContext] = {}


def feasible_target(cfg: dict[str, Any], target: float) -> float:
    """``target``, or the largest reduction (to 0.1 pt) that the filter controls' uniform solve
    reaches on the task's model when ``target`` is beyond it."""
    key = json.dumps(cfg["task"], sort_keys=True, default=str)
    if key not in _CONTEXTS:
        task = instantiate(cfg["task"], _convert_="all")
        model = task.build_model()
        _CONTEXTS[key] = CompressContext.build(
            model,
            task.example_input(),
            task.prunable_layers(model),
            task.protected_layers(model),
            macs_reduction=target,
        )
    ctx = _CONTEXTS[key]
    ones = {root: torch.ones(g.size) for root, g in ctx.structure.groups.items()}

    def reachable(t: float) -> bool:
        ctx.macs_reduction = t
        try:
            ctx.solve(ones, "uniform")
        except ConfigError:
            return False
        return True

    if reachable(target):
        return target
    lo, hi = 0.0, target
    for _ in range(14):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if reachable(mid) else (lo, mid)
    return math.floor(lo * 1000) / 1000


def scratch_refusal(record: dict[str, Any]) -> str | None:
    """Why the record's architecture cannot be a scratch control (the ``scratch`` method builds
    filter-pruned architectures only, e.g. not TRP's low-rank pairs), read from the plan in its
    checkpoint; None when it can, or when the checkpoint is not on this machine (``run.py``
    then refuses the point itself if it must)."""
    try:
        plan = torch.load(checkpoint_file(record), map_location="cpu", weights_only=False)["plan"]
    except (RecordError, OSError, KeyError):
        return None
    kinds = sorted({e["kind"] for e in plan["entries"].values()} - {"filter"})
    if not kinds:
        return None
    return f"its plan has {', '.join(kinds)} entries; the scratch control builds filter plans only"


def control_sweeps(rec: dict[str, Any], extra: list[str]) -> list[list[str]]:
    """The ``run.py -m`` overrides of one ``ok`` method record's controls (magnitude and random
    in one multirun; scratch, when it applies, in another), ``extra`` appended to each; notes
    go to stderr. Raises ValueError (one line) for a record without ``train_samples`` or whose
    controls would not start from its baseline."""
    specs = control_specs(rec)
    finetuned = [s for s in specs if s.method != "scratch"]
    refusal = scratch_refusal(rec) if len(finetuned) < len(specs) else None
    if refusal:
        print(f"note: {rec['point_id']}: no scratch control: {refusal}", file=sys.stderr)
        specs = finetuned
    cfg = compose_cfg([*finetuned[0].overrides, *extra])
    reach = feasible_target(cfg, finetuned[0].target)
    if reach < finetuned[0].target:
        print(
            f"note: {rec['point_id']}: magnitude/random reach only −{100 * reach:.1f} % MACs "
            f"of the wanted −{100 * finetuned[0].target:.1f} %; the nearest feasible "
            "controls run there (matched_to records the wanted one)",
            file=sys.stderr,
        )
        for spec in finetuned:
            spec.overrides = [
                f"target.macs_reduction={reach}" if o.startswith("target.") else o
                for o in spec.overrides
            ] + [f"matched_to={spec.target}"]
    sweeps = []
    for group in (finetuned, [s for s in specs if s.method == "scratch"]):
        if not group:
            continue
        ov = [o for o in group[0].overrides if not o.startswith("method=")]
        ov = [f"method={','.join(s.method for s in group)}", *ov, *extra]
        for s in group:
            single = [o if not o.startswith("method=") else f"method={s.method}" for o in ov]
            why = baseline_mismatch(rec, single)
            if why:
                raise ValueError(f"{rec['point_id']}: {why}")
        sweeps.append(ov)
    return sweeps


def select(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str | None]:
    """The method records to match, or an error line."""
    if args.method in CONTROLS or args.method == "dense":
        return [], f"method {args.method!r} is a control itself; controls match a pruning method"
    if args.record:
        chosen = []
        for path in args.record:
            try:
                r = read_record(path)
            except RecordError as exc:
                return [], f"record {exc}"
            for key, want in (("task", args.task), ("budget", args.tier), ("method", args.method)):
                if want and r[key] != want:
                    return [], f"record {path}: {key} {r[key]!r}, not {want!r}"
            if r["status"] != "ok":
                return [], f"record {path} failed ({r['failure_reason']}); rerun the point first"
            chosen.append(r)
        return chosen, None
    records, problems = load_records(args.results)
    for prob in problems:
        print(f"skipped malformed record: {prob}", file=sys.stderr)
    mine = [
        r
        for r in records
        if r["task"] == args.task
        and r["method"] == args.method
        and r["budget"] == args.tier
        and r["data_source"] == args.data
        and (args.seeds is None or r["seed"] in args.seeds)
    ]
    where = f"task {args.task!r}, tier {args.tier!r}, data {args.data!r} under {args.results}"
    if not mine:
        return [], f"no record of method {args.method!r} for {where}"
    ok = current_records([r for r in mine if r["status"] == "ok"])
    if not ok:
        names = ", ".join(sorted(r["point_id"] for r in mine))
        return [], f"every record of method {args.method!r} for {where} failed: {names}"
    return ok, None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True)
    p.add_argument("--method", required=True, help="the pruning method whose records to match")
    p.add_argument("--tier", default="cpu")
    p.add_argument("--data", default="embedded")
    p.add_argument("--results", default=None, help="records to read and write (paths.results_dir)")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--record", action="append", help="match only this record (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the run.py commands only")
    args = p.parse_args(argv)
    args.results = args.results or compose_cfg(extra)["paths"]["results_dir"]

    chosen, error = select(args)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    commands = []
    for rec in sorted(chosen, key=lambda r: (r["seed"], r["point_id"])):
        try:
            sweeps = control_sweeps(rec, [f"paths.results_dir={args.results}", *extra])
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        commands += [[sys.executable, str(ROOT / "run.py"), "-m", *ov] for ov in sweeps]
    status = 0
    for cmd in commands:
        print("$ " + shlex.join(["python", "run.py", *cmd[2:]]), flush=True)
        if not args.dry_run:
            status = max(status, subprocess.run(cmd, cwd=ROOT, check=False).returncode)
    return status


if __name__ == "__main__":
    sys.exit(main())
