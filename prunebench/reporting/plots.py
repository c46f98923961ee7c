"""Leaderboard plots, one figure per task, one row of two panels per (data source, tier) table.

Left, the main panel: each method's paired per-seed difference against its budget-matched
magnitude control (filled) and random control (hollow), by MACs level, mean ± sample std — the
baseline's variance cancels in the pairing. Right: the absolute metric against MACs, the dense
row as a reference line, the Pareto front, a method whose realised MACs differ from its analytic
MACs (KCP's masked kernels still computed) at both. One colour and marker per method across every
task and tier; controls without finetuning are their own legend entry (hollow).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prunebench.reporting.headline import headline  # noqa: E402
from prunebench.reporting.leaderboard import Row  # noqa: E402
from prunebench.reporting.matching import FINETUNED_CONTROLS  # noqa: E402
from prunebench.reporting.report import metric_scale  # noqa: E402

MARKERS = "osD^v<>Pp*hX"


def method_styles(methods: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Method → (colour, marker), fixed by the sorted set of every method in the records."""
    names = sorted(set(methods))
    return {m: (f"C{i % 10}", MARKERS[i % len(MARKERS)]) for i, m in enumerate(names)}


def pareto_front(
    points: list[tuple[float, float]], higher_is_better: bool
) -> list[tuple[float, float]]:
    """Points not dominated by another with fewer-or-equal MACs and a better-or-equal metric,
    sorted by MACs."""
    sign = 1 if higher_is_better else -1
    front, best = [], None
    for x, y in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if best is None or sign * y > sign * best:
            front.append((x, y))
            best = y
    return front


def _label(row: Row) -> str:
    return row.method + (" (no finetune)" if row.finetune_epochs == 0 and _is_control(row) else "")


def _is_control(row: Row) -> bool:
    return row.method in FINETUNED_CONTROLS


def _paired_panel(ax, rows: list[Row], styles, scale: float, unit: str, hib: bool) -> None:
    heads = headline(rows)
    drawn = 0
    for h in heads:
        colour, marker = styles[h.row.method]
        for kind, filled in (("magnitude", True), ("random", False)):
            p = h.paired.get(kind)
            mean, std = p.mean_std() if p else (None, None)
            if mean is None:
                continue
            drawn += 1
            ax.errorbar(
                h.level + (0 if filled else 0.6),
                scale * mean,
                yerr=None if std is None else scale * std,
                fmt=marker,
                color=colour,
                mfc=colour if filled else "white",
                capsize=4,
                markersize=8,
                label=f"{h.row.method} vs {kind} (n={len(p.diffs)})",
            )
    ax.axhline(0, color="grey", lw=1, ls="--", label="matched control")
    if not drawn:
        ax.text(
            0.5,
            0.5,
            "no matched controls yet\n(python scripts/controls.py)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    better = "higher" if hib else "lower"
    ax.set_xlabel("MACs removed (%)")
    ax.set_ylabel(f"Δ vs matched control ({unit or 'abs'}; {better} is better)")
    if drawn:
        ax.legend(fontsize=7, loc="best")


def _absolute_panel(ax, rows: list[Row], styles, scale: float, unit: str, hib: bool) -> None:
    metric = rows[0].metric
    points = []
    for row in rows:
        colour, marker = styles[row.method]
        x = statistics.fmean(row.values(lambda r: r["macs"]["compressed"])) / 1e6
        y, s = row.mean_std(lambda r, m=metric: r["test"][m])
        points.append((x, scale * y))
        hollow = row.finetune_epochs == 0 and _is_control(row)
        ax.errorbar(
            x,
            scale * y,
            yerr=None if s is None else scale * s,
            fmt=marker,
            color=colour,
            mfc="white" if hollow else colour,
            capsize=4,
            markersize=8,
            label=_label(row),
        )
        realised = statistics.fmean(
            row.values(lambda r: r["macs"].get("realised", r["macs"]["compressed"]))
        )
        if abs(realised / 1e6 - x) > 0.005 * x:
            ax.plot([x, realised / 1e6], [scale * y] * 2, ":", color=colour)
            ax.plot(
                realised / 1e6,
                scale * y,
                marker,
                color=colour,
                mfc="none",
                markersize=8,
                label=f"{row.method} at realised MACs",
            )
    dense = [row for row in rows if not row.records[0]["plan_widths"] and row.method == "dense"]
    if dense:
        ref = dense[0].mean_std(lambda r: r["test"][metric])[0]
        ax.axhline(scale * ref, color="grey", ls="--", lw=1, label=f"dense ({scale * ref:.2f})")
    front = pareto_front(points, hib)
    if len(front) >= 2:
        right = max(x for x, _ in points)  # the best metric so far holds up to the densest point
        drawn = front + ([(right, front[-1][1])] if right > front[-1][0] else [])
        ax.plot(
            *zip(*drawn, strict=True),
            color="black",
            lw=1,
            alpha=0.5,
            marker=".",
            drawstyle="steps-post",
            label="Pareto front" + ("" if hib else " (lower is better)"),
        )
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="best")
    ax.set_xlabel("MACs (millions, batch 1)")
    ax.set_ylabel(f"{metric}{unit}" + ("" if hib else " (lower is better)"))


def plot_task(
    task: str,
    tables: dict[tuple[str, str], list[Row]],
    path: str | Path,
    styles: dict[str, tuple[str, str]] | None = None,
) -> Path:
    """One figure per task, one row (paired Δ, absolute metric) per (data source, tier)."""
    styles = styles or method_styles(r.method for rows in tables.values() for r in rows)
    fig, axes = plt.subplots(len(tables), 2, figsize=(13, 4.8 * len(tables)), squeeze=False)
    for (ax_d, ax_a), ((data, tier), rows) in zip(axes, tables.items(), strict=True):
        metric, hib = rows[0].metric, rows[0].higher_is_better
        scale, unit = metric_scale(metric)
        _paired_panel(ax_d, rows, styles, scale, unit, hib)
        _absolute_panel(ax_a, rows, styles, scale, " (%)" if scale == 100 else "", hib)
        for ax in (ax_d, ax_a):
            ax.set_title(f"{task} · data {data} · tier {tier}", fontsize=9)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
