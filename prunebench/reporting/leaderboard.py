"""Records → per-task tables beside the papers' claims. Generated, never hand-edited.

One table per (task, data source, tier): embedded and disk rows never share one. Seeds are pooled
only when everything but the seed agrees — method and hyper-parameters, target, baseline recipe
and code version; when a (method, target) appears under several such pools in one table, each is
shown apart and flagged.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunebench.errors import RecordError
from prunebench.reporting.claims import claims_for, macs_reduction
from prunebench.reporting.records import read_record
from prunebench.reporting.report import metric_scale


@dataclass
class Row:
    """One pool of seeds."""

    task: str
    data_source: str
    tier: str
    method: str
    hparams: str
    target: float | None  # None: no compression (empty plan)
    recipe_hash: str
    code: str
    metric: str
    higher_is_better: bool
    records: list[dict[str, Any]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    finetune_epochs: int | None = None  # None: a record from before the field existed

    @property
    def point(self) -> tuple:
        """What a row is about, whatever code or baseline recipe produced it."""
        return (self.method, self.hparams, self.target, self.finetune_epochs)

    @property
    def n(self) -> int:
        return len(self.records)

    def values(self, fn) -> list[float]:
        return [float(fn(r)) for r in self.records]

    def mean_std(self, fn) -> tuple[float, float | None]:
        v = self.values(fn)
        return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else None)

    def summary(self) -> dict[str, Any]:
        """The pooled numbers: means (and sample stds) over the row's seeds."""
        k = self.metric
        metric, metric_std = self.mean_std(lambda r: r["test"][k])
        delta, delta_std = self.mean_std(lambda r: r["test"][k] - r["baseline"]["test"][k])
        lat = [r["latency"]["speedup"] for r in self.records if r["latency"]]
        return {
            "n": self.n,
            "metric": metric,
            "metric_std": metric_std,
            "delta": delta,
            "delta_std": delta_std,
            "achieved": self.mean_std(lambda r: r["achieved_macs_reduction"])[0],
            "macs": self.mean_std(lambda r: r["macs"]["compressed"])[0],
            "params": self.mean_std(lambda r: r["params"]["compressed"])[0],
            "params_dense": self.records[0]["params"]["dense"],
            "speedup": statistics.fmean(lat) if lat else None,
        }

    def label(self, rows: list[Row] | None = None) -> str:
        """The method's name, plus the hyper-parameters (and finetune epochs) that differ between
        its rows in ``rows``; with ``rows`` None, all its hyper-parameters."""
        hp = {**json.loads(self.hparams), "finetune_epochs": self.finetune_epochs}
        if rows is not None:
            others = [
                {**json.loads(r.hparams), "finetune_epochs": r.finetune_epochs}
                for r in rows
                if r.method == self.method
            ]
            hp = {k: v for k, v in hp.items() if any(o.get(k) != v for o in others)}
        else:  # a table with its own finetune_epochs column
            del hp["finetune_epochs"]
        return self.method + (
            " (" + ", ".join(f"{k}={v}" for k, v in sorted(hp.items())) + ")" if hp else ""
        )


def load_records(results_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every valid record under ``results_dir``; malformed ones are reported by file and skipped."""
    records, problems = [], []
    for path in sorted(Path(results_dir).rglob("records/**/*.json")):
        try:
            records.append(read_record(path))
        except RecordError as exc:
            problems.append(str(exc))
    return records, problems


def _key(r: dict[str, Any]) -> tuple:
    t = r["target_macs_reduction"]
    target = None if not r["plan_widths"] or t is None else round(float(t), 4)
    return (
        r["task"],
        r["data_source"],
        r["budget"],
        r["method"],
        json.dumps(r["method_hparams"], sort_keys=True),
        target,
        r["baseline"]["recipe_hash"],
        r["git_commit"] or "unknown",
        finetune_epochs(r),  # "magnitude without finetune" pools apart from with
    )


def finetune_epochs(r: dict[str, Any]) -> int:
    """The epochs the record's finetune stage ran. Records from before the field existed ran the
    budget's epochs exactly when they have a finetune stage time."""
    if r.get("finetune_epochs") is not None:
        return int(r["finetune_epochs"])
    return int(r["config"]["budget"]["finetune_epochs"]) if "finetune" in r["stage_seconds"] else 0


def aggregate(
    records: list[dict[str, Any]],
    task: str | None = None,
    tier: str | None = None,
    data: str | None = None,
) -> dict[tuple[str, str, str], list[Row]]:
    """Pool seeds into rows; tables keyed by (task, data source, tier)."""
    pools: dict[tuple, Row] = {}
    for r in records:
        if (
            r["status"] != "ok"
            or (task and r["task"] != task)
            or (tier and r["budget"] != tier)
            or (data and r["data_source"] != data)
        ):
            continue
        k = _key(r)
        if k not in pools:
            pools[k] = Row(
                *k[:6],
                recipe_hash=k[6],
                code=k[7],
                finetune_epochs=k[8],
                metric=r["metric"],
                higher_is_better=r["higher_is_better"],
            )
        pools[k].records.append(r)
    tables: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for row in pools.values():
        row.records.sort(key=lambda r: (r["seed"], r["run_id"]))
        tables[(row.task, row.data_source, row.tier)].append(row)
    for rows in tables.values():
        by_point = defaultdict(list)
        for row in rows:
            by_point[row.point].append(row)
        for split in (v for v in by_point.values() if len(v) > 1):
            for row in split:
                row.flags.append(
                    f"not pooled: baseline recipe {row.recipe_hash[:8]}, code {row.code[:7]}"
                )
        seeds = defaultdict(int)
        for row in rows:
            for rec in row.records:
                seeds[(*row.point, row.recipe_hash, row.code, rec["seed"])] += 1
            if any(
                c > 1 for k, c in seeds.items() if k[:-1] == (*row.point, row.recipe_hash, row.code)
            ):
                row.flags.append("repeated seed")
        for row in rows:
            if any(
                r["latency"] and r["latency"].get("order") != "interleaved" for r in row.records
            ):
                # Before the pipeline interleaved the two models' passes, the dense model was timed
                # first, which inflated speed-ups (×1.10–1.25 for identical models, 16 threads).
                row.flags.append("latency timed dense-first: speed-up biased up")
        # Uncompressed rows first, then by reduction: the target, or what was achieved when the
        # method sets its own.
        rows.sort(
            key=lambda r: (
                bool(r.records[0]["plan_widths"]),
                r.target if r.target is not None else round(r.summary()["achieved"], 4),
                r.method,
                r.hparams,
                -1 if r.finetune_epochs is None else r.finetune_epochs,
                r.recipe_hash,
                r.code,
            )
        )
    return dict(sorted(tables.items()))


def failed_runs(
    records: list[dict[str, Any]],
    task: str | None = None,
    tier: str | None = None,
    data: str | None = None,
) -> list[dict[str, Any]]:
    """The ``failed`` records (never pooled into a row), in a stable order."""
    return sorted(
        (
            r
            for r in records
            if r["status"] == "failed"
            and not (task and r["task"] != task)
            and not (tier and r["budget"] != tier)
            and not (data and r["data_source"] != data)
        ),
        key=lambda r: (
            r["task"],
            r["data_source"],
            r["budget"],
            r["method"],
            r["seed"],
            r["point_id"],
        ),
    )


def _pm(mean: float, std: float | None, scale: float = 100, digits: int = 2) -> str:
    s = "—" if std is None else f"{scale * std:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {s}"


def _claim_cell(claims: list[dict[str, Any]], achieved: float) -> str:
    if not claims:
        return "—"
    best = min(claims, key=lambda c: abs((macs_reduction(c)[0] or 2.0) - achieved))
    red, how = macs_reduction(best)
    delta = "" if best["delta"] is None else f"Δ {best['delta']:+.2f} pt {best['metric']}; "
    base = "" if best["baseline"] is None else f"{best['baseline']:.2f} → {best['value']:.2f}; "
    more = f" (+{len(claims) - 1} more below)" if len(claims) > 1 else ""
    return f"{base}{delta}{how} [{best['source']}, {best['verified']}]{more}"


def render_markdown(
    tables: dict[tuple[str, str, str], list[Row]],
    claims: dict[str, Any],
    problems: list[str],
    failed: list[dict[str, Any]] | None = None,
) -> str:
    """The whole ``LEADERBOARD.md`` text (same input → byte-identical output); ``failed``
    records are listed apart, at the end, with the stage and reason."""
    out = [
        "# prunebench leaderboard",
        "",
        "Generated by `python scripts/leaderboard.py` from the run records under `results/`; do not edit.",
        "Metric: mean ± sample std over seeds (n). Δ: each seed's metric minus its own dense baseline "
        "(same baseline hash), averaged. MACs/params: mean over seeds, % removed vs dense. Speed-up: "
        "measured CPU latency, dense / compressed, at the record's batch. Paper claims are the papers' "
        "own numbers on their own baselines (see `results/claims.yaml`), converted to our MACs convention "
        "where they are MACs figures.",
        "",
    ]
    if problems:
        out += ["Records skipped as malformed:", "", *[f"- {p}" for p in problems], ""]
    for (task, data, tier), rows in tables.items():
        metric = rows[0].metric
        scale, unit = metric_scale(metric)
        out += [
            f"## {task} · data: {data} · tier: {tier}",
            "",
            f"| method | target −MACs | achieved −MACs | {metric} (n) | Δ vs dense ({unit or 'abs'}) | MACs | params "
            "| speed-up | paper claim | flags |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            x = row.summary()
            target = "—" if row.target is None else f"{100 * row.target:.1f} %"
            speedup = "—" if x["speedup"] is None else f"{x['speedup']:.2f}×"
            removed = 100 * (1 - x["params"] / x["params_dense"])
            out.append(
                f"| {row.label(rows)} | {target} | {100 * x['achieved']:.1f} % | "
                f"{_pm(x['metric'], x['metric_std'], scale)} ({row.n}) | "
                f"{_pm(x['delta'], x['delta_std'], scale)} | "
                f"{x['macs'] / 1e6:.2f} M | {x['params'] / 1e6:.3f} M (−{removed:.1f} %) | {speedup} | "
                f"{_claim_cell(claims_for(claims, row.method, task, json.loads(row.hparams)), x['achieved'])} | "
                f"{'; '.join(row.flags)} |"
            )
        listed = [
            (meth, c) for meth in sorted(claims["methods"]) for c in claims_for(claims, meth, task)
        ]
        if listed:
            out += ["", f"Paper claims for {task}:", ""]
            for meth, c in listed:
                out.append(
                    f"- **{meth}** — {c['words']} [{c['source']}, {c['verified']}]; "
                    f"{macs_reduction(c)[1]}"
                )
        out.append("")
    if not tables:
        out += ["No records matched.", ""]
    if failed:
        out += [
            "## Failed runs",
            "",
            "Not in any table above; rerunning the point replaces the record.",
            "",
            "| task | data | tier | method | seed | point | reason |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in failed:
            reason = (r["failure_reason"] or "").replace("|", "\\|").replace("\n", " ")
            out.append(
                f"| {r['task']} | {r['data_source']} | {r['budget']} | {r['method']} | "
                f"{r['seed']} | {r['point_id']} | {reason} |"
            )
        out.append("")
    return "\n".join(out)
