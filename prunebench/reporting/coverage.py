"""The grid's coverage: every task × method cell of a tier and data source, with what fills it —
the reductions run and their seeds, a failure with its reason, or "not run" with the reason
``results/gaps.yaml`` gives — so an empty cell is said, never left out. A gap may name one MACs
level of a cell (``level``): a level that cannot be made is said beside the levels that were."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from prunebench.errors import RecordError
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
GAP_KEYS = ("task", "method", "tier", "data", "reason")
GAP_OPTIONAL = ("level",)  # a target MACs reduction in (0, 1): the gap is that level only

Cell = tuple[str, str, str, str, float | None]  # (task, method, data source, tier, level)


def load_gaps(
    path: Path, tasks: Iterable[str], tiers: Iterable[str], data: Iterable[str]
) -> dict[Cell, str]:
    """The cells known to have no record, and why: ``{(task, method, data, tier, level): reason}``
    from a gaps file (``results/gaps.yaml``; schema in its header; ``level`` None: the whole
    cell). A bad entry raises :class:`RecordError` naming it and the choices."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecordError(f"{path.name}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("gaps", []), list):
        raise RecordError(f"{path.name}: expected a mapping with a `gaps:` list")
    choices = {
        "task": sorted(tasks),
        "method": list(GRID_METHODS),
        "tier": sorted(tiers),
        "data": sorted(data),
    }
    gaps: dict[Cell, str] = {}
    for i, g in enumerate(doc.get("gaps") or []):
        where = f"{path.name}: gap {i}"
        if not isinstance(g, dict) or not set(GAP_KEYS) <= set(g) <= {*GAP_KEYS, *GAP_OPTIONAL}:
            raise RecordError(
                f"{where}: needs the keys {', '.join(GAP_KEYS)} (optional: {', '.join(GAP_OPTIONAL)})"
            )
        for key, allowed in choices.items():
            if g[key] not in allowed:
                raise RecordError(f"{where}: {key}={g[key]!r}; choices: {', '.join(allowed)}")
        if not isinstance(g["reason"], str) or not g["reason"].strip():
            raise RecordError(f"{where}: reason must be a non-empty sentence")
        level = g.get("level")
        if level is not None and (
            isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1
        ):
            raise RecordError(f"{where}: level={level!r}; a target MACs reduction in (0, 1)")
        cell = (g["task"], g["method"], g["data"], g["tier"], level)
        if cell in gaps:
            raise RecordError(f"{where}: {cell_name(cell)} is listed twice")
        gaps[cell] = " ".join(g["reason"].split())
    return gaps


def cell_name(cell: Cell) -> str:
    """``task × method × data × tier``, with ``at <level>`` for a one-level gap."""
    return " × ".join(cell[:4]) + ("" if cell[4] is None else f" at {cell[4]:g}")


def stale_gaps(tables: dict[tuple[str, str, str], list[Row]], gaps: dict[Cell, str]) -> list[Cell]:
    """The gap entries whose cell (or level) has the method's own rows now (the entry should go)."""
    return [
        cell
        for cell in gaps
        if any(
            r.method == cell[1]
            and r.finetune_samples is None
            and (cell[4] is None or r.target is not None and abs(r.target - cell[4]) < 1e-9)
            for r in tables.get((cell[0], cell[2], cell[3]), [])
        )
    ]


def _cell(rows: list[Row], failed: list[dict[str, Any]]) -> str | None:
    """What fills a cell: its reductions and seeds, or its failure; None when it is empty."""
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
    return None


def coverage_section(
    tables: dict[tuple[str, str, str], list[Row]],
    failed: list[dict[str, Any]],
    gaps: dict[Cell, str] | None = None,
) -> list[str]:
    """A task × method matrix per (data source, tier) present in ``tables``; an empty cell
    listed in ``gaps`` points to its reason, numbered under the matrix."""
    gaps = gaps or {}
    out = ["## Coverage of the grid", ""]
    out.append(
        "Each cell: the achieved MACs reductions run and their seeds (n), a failure with its "
        "reason, or “not run” ([k]: the reason `results/gaps.yaml` gives, under the matrix). "
        "Budget-matched control rows are not counted."
    )
    for data, tier in sorted({(d, t) for _, d, t in tables}):
        tasks = list(GRID_TASKS) + sorted(
            {t for t, d, ti in tables if (d, ti) == (data, tier)} - set(GRID_TASKS)
        )
        out += ["", f"### data: {data} · tier: {tier}", ""]
        out += ["| task | " + " | ".join(GRID_METHODS) + " |"]
        out += ["|---" * (len(GRID_METHODS) + 1) + "|"]
        notes: dict[str, int] = {}  # reason → its number, in order of first use
        for task in tasks:
            rows = tables.get((task, data, tier), [])
            cells = [
                _with_levels(
                    _cell(
                        [r for r in rows if r.method == m],
                        [
                            f
                            for f in failed
                            if (f["task"], f["method"], f["data_source"], f["budget"])
                            == (task, m, data, tier)
                        ],
                    )
                    or _not_run(notes, gaps.get((task, m, data, tier, None))),
                    notes,
                    gaps,
                    (task, m, data, tier),
                    rows,
                )
                for m in GRID_METHODS
            ]
            out.append(f"| {task} | " + " | ".join(cells) + " |")
        if notes:
            out += ["", *(f"[{k}] {reason}  " for reason, k in notes.items())]
            out[-1] = out[-1].rstrip()
    return [*out, ""]


def _not_run(notes: dict[str, int], reason: str | None) -> str:
    """An empty cell, pointing to its reason's footnote number (a new one on first use)."""
    if reason is None:
        return "not run"
    return f"not run [{notes.setdefault(reason, len(notes) + 1)}]"


def _with_levels(
    cell: str,
    notes: dict[str, int],
    gaps: dict[Cell, str],
    where: tuple[str, str, str, str],
    rows: list[Row],
) -> str:
    """A cell followed by its levels that the gaps file says were not made, each with its reason
    (a level with rows now is stale: :func:`stale_gaps` reports it, the cell shows the rows)."""
    stale = set(stale_gaps({(where[0], where[2], where[3]): rows}, gaps))
    levels = sorted(
        (c[4], reason) for c, reason in gaps.items() if c[:4] == where and c[4] and c not in stale
    )
    if not levels:
        return cell
    said = [f"−{100 * lv:g} %: not run [{notes.setdefault(r, len(notes) + 1)}]" for lv, r in levels]
    return "; ".join([cell, *said])
