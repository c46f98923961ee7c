"""Records → per-task tables beside the papers' claims. Generated, never hand-edited.

One table per (task, data source, tier): embedded and disk rows never share one. Seeds are pooled
only when everything but the seed agrees — method and hyper-parameters, target, finetune length,
baseline recipe and code version. Of a point made by several code versions only the newest is
current (:func:`split_superseded`; the script archives the rest); when several pools of one point
still reach :func:`aggregate`, each is shown apart and flagged. Rendering: ``prunebench.reporting.markdown``;
the headline against budget-matched controls: ``prunebench.reporting.headline``.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunebench.errors import RecordError
from prunebench.reporting.matching import (
    epochs_of,
    from_scratch,
    post_baseline_samples,
    total_samples,
)
from prunebench.reporting.records import read_record


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
    finetune_samples: int | None = None  # budget.finetune_samples (a budget-matched control)

    @property
    def point(self) -> tuple:
        """What a row is about, whatever code or baseline recipe produced it."""
        return (self.method, self.hparams, self.target, self.finetune_epochs, self.finetune_samples)

    @property
    def n(self) -> int:
        return len(self.records)

    def values(self, fn) -> list[float]:
        return [float(fn(r)) for r in self.records]

    def mean_std(self, fn) -> tuple[float, float | None]:
        v = self.values(fn)
        return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else None)

    def _shown_hparams(self) -> dict[str, Any]:
        """Hyper-parameters as labels show them: a scratch control's widths as a short digest
        (the architecture it copies, not a list of every layer)."""
        hp = json.loads(self.hparams)
        if isinstance(hp.get("widths"), dict) and hp["widths"]:
            hp["widths"] = f"{sum(hp['widths'].values())} filters"
        return hp

    def training(self) -> tuple[float | None, float | None]:
        """(post-baseline training, total training of a from-scratch method), in epochs of the
        training split, means over seeds; None where the records predate ``train_samples``
        (or, for the total, the method starts from the baseline)."""
        post = [epochs_of(post_baseline_samples(r), r) for r in self.records]
        total = [epochs_of(total_samples(r), r) for r in self.records if from_scratch(r)]
        post_mean = None if None in post else statistics.fmean(post)
        total_mean = None if not total or None in total else statistics.fmean(total)
        return post_mean, total_mean

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
        hp = {**self._shown_hparams(), "finetune_epochs": self.finetune_epochs}
        if self.finetune_samples is not None:
            hp["finetune_samples"] = self.finetune_samples
        if rows is not None:
            others = [
                {
                    **r._shown_hparams(),
                    "finetune_epochs": r.finetune_epochs,
                    "finetune_samples": r.finetune_samples,
                }
                for r in rows
                if r.method == self.method
            ]
            hp = {k: v for k, v in hp.items() if any(o.get(k) != v for o in others)}
        else:  # a table with its own training column
            hp.pop("finetune_epochs")
            hp.pop("finetune_samples", None)
        return self.method + (
            " (" + ", ".join(f"{k}={v}" for k, v in sorted(hp.items())) + ")" if hp else ""
        )


ARCHIVE = "archive"  # <results>/archive/records/…: superseded records, skipped by the leaderboard


def load_records(results_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every valid record under ``<results_dir>/records`` (not the archive); malformed ones are
    reported by file and skipped."""
    records, problems = [], []
    for path in sorted((Path(results_dir) / "records").rglob("*.json")):
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
        r.get("finetune_samples"),  # a budget-matched control: its finetune length in samples
    )


def _point(r: dict[str, Any]) -> tuple:
    """A record's point whatever code or baseline recipe made it."""
    k = _key(r)
    return (*k[:6], *k[8:])


def split_superseded(
    records: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(current, superseded): of each point's pools (code version × baseline recipe), only the
    one whose newest record is newest stays current; failed records stay as they are."""
    pools: dict[tuple, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["status"] == "ok":
            k = _key(r)
            pools[_point(r)][(k[6], k[7])].append(r)
    current = [r for r in records if r["status"] != "ok"]
    superseded = []
    for by_version in pools.values():
        newest = max(by_version, key=lambda v: (max(r["time"] for r in by_version[v]), v))
        for version, recs in by_version.items():
            (current if version == newest else superseded).extend(recs)
    return current, superseded


def older_versions(records: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """The ``ok`` records of ``task`` not made by the code version and baseline recipe of its
    newest record, per (data source, tier): what ``--one-version`` archives so that the task's
    table holds one code version only (older rows of points not rerun go too)."""
    tables: dict[tuple, list] = defaultdict(list)
    for r in records:
        if r["status"] == "ok" and r["task"] == task:
            tables[(r["data_source"], r["budget"])].append(r)
    old = []
    for recs in tables.values():
        newest = max(recs, key=lambda r: (r["time"], _key(r)[6:8]))
        old += [r for r in recs if _key(r)[6:8] != _key(newest)[6:8]]
    return old


def current_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of each point's newest code version (:func:`split_superseded`)."""
    return split_superseded(records)[0]


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
                finetune_samples=k[9],
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
                -1 if r.finetune_samples is None else r.finetune_samples,
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
