"""Pareto plots: test metric vs MACs per task, one marker per method, error bars over seeds,
the dense baseline as a reference line, the Pareto front drawn."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prunebench.reporting.leaderboard import Row  # noqa: E402

MARKERS = "osD^v<>Pp*hX"


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


def plot_task(task: str, tables: dict[tuple[str, str], list[Row]], path: str | Path) -> Path:
    """One figure per task, one panel per (data source, tier) table."""
    fig, axes = plt.subplots(1, len(tables), figsize=(6.4 * len(tables), 4.8), squeeze=False)
    for ax, ((data, tier), rows) in zip(axes[0], tables.items(), strict=True):
        metric, hib = rows[0].metric, rows[0].higher_is_better
        scale = 100.0 if metric.endswith(("top1", "top5", "miou")) else 1.0
        unit = " (%)" if scale == 100 else ""
        methods = sorted({r.method for r in rows})
        points = []
        for row in rows:
            x = statistics.fmean(row.values(lambda r: r["macs"]["compressed"])) / 1e6
            y, s = row.mean_std(lambda r, m=metric: r["test"][m])
            points.append((x, scale * y))
            i = methods.index(row.method)
            ax.errorbar(
                x,
                scale * y,
                yerr=None if s is None else scale * s,
                fmt=MARKERS[i % len(MARKERS)],
                color=f"C{i}",
                capsize=4,
                markersize=8,
                label=f"{row.method} (n={row.n})",
            )
        base = [r["baseline"]["test"][metric] for row in rows for r in row.records]
        ax.axhline(
            scale * statistics.fmean(base),
            color="grey",
            ls="--",
            lw=1,
            label=f"dense baseline ({scale * statistics.fmean(base):.2f})",
        )
        front = pareto_front(points, hib)
        ax.plot(
            *zip(*front, strict=True),
            color="black",
            lw=1,
            alpha=0.5,
            drawstyle="steps-post",
            label="Pareto front",
        )
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles, strict=True))
        ax.legend(uniq.values(), uniq.keys(), fontsize=8, loc="best")
        ax.set_xlabel("MACs (millions, batch 1)")
        ax.set_ylabel(f"{metric}{unit}")
        ax.set_title(f"{task} · data {data} · tier {tier}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
