"""The grid's coverage: every task × method cell of a tier and data source, with what fills it —
the reductions run and their seeds, a failure with its reason, or "not run" — so an empty cell
is said, never left out."""

from __future__ import annotations

from typing import Any

from prunebench.reporting.leaderboard import Row

# The benchmark's grid: its six tasks and eight methods (the controls' own rows, with a
# finetune matched to a method, are counted under the method they control, not here).
GRID_TASKS = (
    "cifar10_resnet20",
    "cifar10_resnet56",
    "imagenet_resnet18",
    "imagenet_resnet50",
    "stereo_psmnet_sceneflow",
    "seg_deeplabv3_voc",
)
GRID_METHODS = ("dense", "magnitude", "random", "kcp", "spp", "cap", "trp", "lapp")


def _cell(rows: list[Row], failed: list[dict[str, Any]]) -> str:
    own = [r for r in rows if r.finetune_samples is None]
    if own:
        best: dict[float, int] = {}
        for r in own:
            key = round(100 * r.summary()["achieved"], 1)
            best[key] = max(best.get(key, 0), r.n)
        return "; ".join(
            f"{'uncompressed' if k == 0 else f'−{k:.1f} %'} ({n})" for k, n in sorted(best.items())
        )
    if failed:
        reason = (failed[0].get("failure_reason") or "").splitlines()[0][:80].replace("|", "\\|")
        return f"failed ({len(failed)}): {reason}"
    return "not run"


def coverage_section(
    tables: dict[tuple[str, str, str], list[Row]], failed: list[dict[str, Any]]
) -> list[str]:
    """A task × method matrix per (data source, tier) present in ``tables``."""
    out = ["## Coverage of the grid", ""]
    out.append(
        "Each cell: the achieved MACs reductions run and their seeds (n), a failure with its "
        "reason, or “not run”. Budget-matched control rows are not counted."
    )
    for data, tier in sorted({(d, t) for _, d, t in tables}):
        tasks = list(GRID_TASKS) + sorted(
            {t for t, d, ti in tables if (d, ti) == (data, tier)} - set(GRID_TASKS)
        )
        out += ["", f"### data: {data} · tier: {tier}", ""]
        out += ["| task | " + " | ".join(GRID_METHODS) + " |"]
        out += ["|---" * (len(GRID_METHODS) + 1) + "|"]
        for task in tasks:
            rows = tables.get((task, data, tier), [])
            cells = [
                _cell(
                    [r for r in rows if r.method == m],
                    [
                        f
                        for f in failed
                        if (f["task"], f["method"], f["data_source"], f["budget"])
                        == (task, m, data, tier)
                    ],
                )
                for m in GRID_METHODS
            ]
            out.append(f"| {task} | " + " | ".join(cells) + " |")
    return [*out, ""]
