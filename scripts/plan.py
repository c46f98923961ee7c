"""Plan a sweep before launching it: every point, whether it is recorded, its controls, the compute.

python scripts/plan.py +experiment=<name> [OVERRIDES…] [--device NAME] [--no-probe]

Takes what ``python run.py -m`` would take and lists, without training anything or writing a
record: each point of the sweep (task, method, target, seed, tier, data) with its status in
``paths.results_dir`` (run.py's own point id and skip rule), the budget-matched controls that
would follow it (for a recorded point, the very points ``scripts/controls.py`` would launch;
otherwise estimated from the method's stage lengths), and the compute per point and in all, in
GPU-hours or CPU-hours of the device the points train on. The training rate is a measured
figure from ``results/benchmarks/`` where one matches (model, batch, precision, ``--device``),
else a short timed probe of the task's model here (cached). The output says which, per task.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf.errors import OmegaConfBaseException

from prunebench.errors import PrunebenchError, one_line
from prunebench.planning.estimate import hours, seconds, unit
from prunebench.planning.points import Point, is_hydra_override, sweep_points
from prunebench.planning.throughput import (
    Throughput,
    benchmark_figure,
    device_name,
    method_overhead,
    probe,
)
from prunebench.planning.work import Work, point_work, split_sizes
from prunebench.reporting.claims import load_claims
from prunebench.reporting.matching import CONTROLS
from prunebench.running.baseline import baseline_key
from prunebench.running.controls_callback import carried_overrides, path_overrides

try:
    from scripts.controls import control_sweeps
except ImportError:  # run as ``python scripts/plan.py``: this folder is first on sys.path
    from controls import control_sweeps  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
LOW_RANK = ("trp",)  # plans of low-rank pairs: no scratch control (scripts/controls.py)


@dataclass
class Row:
    """One line of the plan: a point, what it trains, and its estimate."""

    kind: str  # "point" or "control"
    cfg: dict[str, Any]
    status: str
    work: Work
    target: str
    secs: float | None = None
    figure: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def to_run(self) -> bool:
        """Whether the row counts in the totals (everything not recorded yet)."""
        return self.status != "done"


class Estimator:
    """Training rates per (model, precision, device), found once: a benchmark figure for
    ``device`` when one matches, else a probe here (unless ``probing`` is off)."""

    def __init__(self, device: str | None, probing: bool) -> None:
        self.device, self.probing = device, probing
        self.figures: dict[str, tuple[Throughput | None, str]] = {}
        self.sources: dict[str, str] = {}

    def key(self, cfg: dict[str, Any]) -> str:
        """What a figure depends on: the model, precision, device and data source."""
        device = self.device or device_name(cfg["trainer"])
        return repr((cfg["task"], cfg["trainer"]["precision"], device, cfg["data"]["source"]))

    def figure(self, cfg: dict[str, Any]) -> tuple[Throughput | None, str]:
        """The figure for ``cfg``'s points, and a note when it is not the asked device's."""
        key = self.key(cfg)
        if key not in self.figures:
            here = device_name(cfg["trainer"])
            device = self.device or here
            fig, note = benchmark_figure(cfg, device), ""
            if fig is None and self.probing:
                try:
                    fig = probe(cfg, cfg["paths"]["cache_dir"])
                except Exception as exc:  # noqa: BLE001 — the plan goes on without this figure
                    note = f"the probe failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
                if fig is not None and device != here:
                    note = f"no figure for {device}: the probe ran here ({here})"
            self.figures[key] = (fig, note)
            if fig is not None:
                self.sources[key] = f"[{len(self.sources) + 1}]"
        return self.figures[key]

    def estimate(self, row: Row) -> None:
        """Fill ``row``'s seconds and the tag of the figure they come from."""
        fig, note = self.figure(row.cfg)
        if note:
            row.notes.append(note)
        if fig is None:
            row.figure = "no figure" if self.probing else "no figure (--no-probe)"
            return
        overhead, _ = method_overhead(row.cfg["method"])
        row.secs = seconds(row.work, fig, overhead)
        row.figure = f"{self.sources[self.key(row.cfg)]} {unit(fig.device)}"


def method_of(cfg: dict[str, Any]) -> Any:
    """The method the config builds (its ``finetune`` and ``start``)."""
    return instantiate({k: v for k, v in cfg["method"].items() if k != "name"}, _convert_="all")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"−{100 * value:.1f} %"


def _target(cfg: dict[str, Any]) -> str:
    method = method_of(cfg)
    own = not getattr(method, "uses_target", True)
    text = _pct(float(cfg["target"]["macs_reduction"]))
    return f"{text} (ref.)" if own else text


def baseline_role(cfg: dict[str, Any], seen: set[str], done: bool) -> str:
    """What a point does for its shared baseline (``work.point_work``'s ``baseline``): the first
    point of a baseline hash to run trains it, unless it is cached or a pretrained file."""
    key = baseline_key(cfg)
    cached = (Path(cfg["paths"]["cache_dir"]) / "baselines" / f"{key}.pt").exists()
    if done or cached or key in seen:
        return "none"
    seen.add(key)
    return "evaluate" if cfg["task"].get("pretrained") else "train"


def point_rows(points: list[Point], seen: set[str]) -> list[Row]:
    """A row per point: its status, its work (the baseline on the first point of its hash)."""
    rows = []
    for p in points:
        sizes, _ = split_sizes(p.cfg)
        method = method_of(p.cfg)
        role = baseline_role(p.cfg, seen, p.done)
        work = point_work(p.cfg, bool(method.finetune), role, sizes)
        rows.append(Row("point", p.cfg, p.status, work, _target(p.cfg), notes=list(work.notes)))
    return rows


def estimated_controls(row: Row) -> list[Row]:
    """The controls of a point not run yet: magnitude and random finetuned for its estimated
    post-baseline samples, and scratch for a from-scratch method with a filter plan."""
    cfg, out = row.cfg, []
    sizes, _ = split_sizes(cfg)
    for name in ("magnitude", "random"):
        c = copy.deepcopy(cfg)
        c["method"] = {"name": name}
        c["budget"]["finetune_samples"] = row.work.post_baseline
        work = point_work(c, True, "none", sizes)
        out.append(Row("control", c, "after the method", work, "≈ its achieved"))
    method = method_of(cfg)
    if method.start == "scratch" and cfg["method"]["name"] not in LOW_RANK:
        c = copy.deepcopy(cfg)
        train = sizes["train"] or 1
        epochs = -(-(row.work.compress + row.work.finetune) // train)
        c["method"] = {"name": "scratch", "epochs": epochs}
        work = point_work(c, False, "none", sizes)
        out.append(Row("control", c, "after the method", work, "≈ its achieved"))
    return out


def recorded_controls(p: Point, extra: list[str], seen: set[str]) -> list[Row]:
    """The control points ``scripts/controls.py`` would launch for ``p``'s ``ok`` record."""
    results = f"paths.results_dir={p.cfg['paths']['results_dir']}"
    extra = [results, *extra, *path_overrides(p.cfg["paths"])]
    try:
        sweeps = control_sweeps(p.record, extra)  # type: ignore[arg-type]
    except ValueError as exc:
        return [Row("control", p.cfg, f"error: {exc}", Work(), "—")]
    rows = []
    for ov in sweeps:
        for row in point_rows(sweep_points(ov), seen):
            row.kind = "control"
            rows.append(row)
    return rows


def plan(
    overrides: list[str], device: str | None = None, probing: bool = True
) -> tuple[list[Row], Estimator]:
    """Every row of the plan of ``run.py -m <overrides>`` — its points, then their controls,
    each with its work and (when a figure is found) its estimate — and the figures used."""
    points = sweep_points(overrides)
    seen: set[str] = set()
    rows = point_rows(points, seen)
    task_ov = [o for o in overrides if not is_hydra_override(o)]
    hydra_ov = [o for o in overrides if is_hydra_override(o)]
    extra = carried_overrides(task_ov, hydra_ov)
    extra = [o for o in extra if not o.startswith("hydra")]
    controls: list[Row] = []
    for p, row in zip(points, rows, strict=True):
        if p.cfg["method"]["name"] in (*CONTROLS, "dense"):
            continue
        if p.done:
            controls += recorded_controls(p, extra, seen)
        else:
            controls += estimated_controls(row)
    rows += controls
    est = Estimator(device, probing)
    for row in rows:
        if not row.status.startswith("error"):
            est.estimate(row)
    return rows, est


def _count(n: int) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return str(n)


def _rate(per_s: float) -> str:
    return f"{per_s:,.1f}" if per_s >= 10 else f"{per_s:.3g}"


def render(rows: list[Row], est: Estimator) -> str:
    """The plan as text: the points, their controls, the totals and where each figure is from."""
    lines = []
    cols = "  {:<3} {:<24} {:<10} {:<16} {:>4} {:<6} {:<9} {:<17} {:>26}  {}"
    head = cols.format(
        "#",
        "task",
        "method",
        "target",
        "seed",
        "tier",
        "data",
        "status",
        "samples: base+comp+ft",
        "estimate",
    )
    for kind, title in (
        ("point", "points of the sweep"),
        ("control", "budget-matched controls after them (scripts/controls.py)"),
    ):
        mine = [r for r in rows if r.kind == kind]
        lines.append(f"{title} ({len(mine)}):")
        if not mine:
            continue
        lines.append(head)
        for i, r in enumerate(mine, 1):
            c, w = r.cfg, r.work
            samples = f"{_count(w.baseline)}+{_count(w.compress)}+{_count(w.finetune)}"
            estimate = f"{hours(r.secs)} {r.figure}".strip()
            lines.append(
                cols.format(
                    i,
                    c["task"]["name"],
                    c["method"]["name"],
                    r.target,
                    c["seed"],
                    c["budget"]["name"],
                    c["data"]["source"],
                    r.status[:17],
                    samples,
                    estimate,
                )
            )
            lines += [f"      note: {n}" for n in dict.fromkeys(r.notes)]
    lines.append("")
    units = sorted({unit(f.device) for f, _ in est.figures.values() if f is not None})
    for kind, label in (("point", "point(s)"), ("control", "control(s)")):
        todo = [r for r in rows if r.kind == kind and r.to_run]
        known = [r.secs for r in todo if r.secs is not None]
        missing = len(todo) - len(known)
        lines.append(
            f"to run: {len(todo)} {label} of {sum(r.kind == kind for r in rows)}, "
            + (f"{hours(sum(known))} {'/'.join(units)}" if known else "no estimate")
            + (f" (+{missing} without one)" if missing and known else "")
        )
    lines.append("estimates from:")
    for key, tag in est.sources.items():
        fig = est.figures[key][0]
        assert fig is not None
        lines.append(
            f"  {tag} {fig.source} — {_rate(fig.train_per_s)} training, "
            f"{_rate(fig.eval_per_s)} evaluation samples/s"
        )
    overheads = {method_overhead(r.cfg["method"])[1] for r in rows}
    lines += [f"  {o}" for o in sorted(overheads) if not o.startswith("no ")]
    if any(r.target.endswith("(ref.)") for r in rows):
        lines.append("  (ref.): the method sets its own reduction; the target is the claim's")
    lines.append(
        "  samples: the budget's epochs × the training split (split sizes: "
        + "; ".join(sorted({split_sizes(r.cfg)[1] for r in rows}))
        + "); the shared baseline counted once, on the first point that trains it; one "
        "validation pass per epoch"
    )
    return "\n".join(lines)


def header(overrides: list[str], rows: list[Row]) -> str:
    """The command planned, and the claim an experiment reproduces."""
    lines = ["plan of: python run.py -m " + " ".join(overrides)]
    exp = rows[0].cfg.get("experiment") if rows else None
    if exp:
        method, index = exp["claim"].split("/")
        claim = load_claims(ROOT / "results" / "claims.yaml")["methods"][method]["claims"]
        lines.append(f"experiment {exp['name']}: {exp['claim']} — {claim[int(index)]['words']}")
        if exp.get("stand_in"):
            lines.append(f"  target is a stand-in: {exp['stand_in']}")
    if rows:
        c = rows[0].cfg
        lines.append(
            f"records: {c['paths']['results_dir']} · precision {c['trainer']['precision']} "
            "(as resolved here; pass trainer.precision to plan for another machine)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", help="what python run.py -m would take")
    p.add_argument("--device", help="the device the points train on, as torch names it")
    p.add_argument("--no-probe", action="store_true", help="no timed probe: benchmark figures only")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        rows, est = plan(args.overrides, args.device, not args.no_probe)
    except (HydraException, OmegaConfBaseException) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except PrunebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(header(args.overrides, rows))
    print(render(rows, est))
    return 0


if __name__ == "__main__":
    sys.exit(main())
