"""The headline: each pruning method's paired per-seed difference against its budget-matched
controls (``prunebench.reporting.matching``), per MACs level — the numbers the leaderboard ranks by.

Pairing by seed and baseline hash cancels the baseline's variance: a seed whose dense model
trained badly drags the method and its control alike.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from prunebench.reporting.leaderboard import Row
from prunebench.reporting.matching import CONTROLS, Pairing, beyond_noise, from_scratch, pair

KINDS = ("magnitude", "random", "scratch")  # the controls, in the headline's column order


@dataclass
class Paired:
    """A method row's pairings with one kind of control, seed by seed."""

    kind: str
    pairings: list[Pairing] = field(default_factory=list)

    @property
    def diffs(self) -> list[float]:
        return [p.delta() for p in self.pairings if p.control is not None]

    @property
    def nearest(self) -> list[Pairing]:
        return [p for p in self.pairings if p.status == "nearest feasible"]

    def mean_std(self) -> tuple[float | None, float | None]:
        d = self.diffs
        if not d:
            return None, None
        return statistics.fmean(d), (statistics.stdev(d) if len(d) > 1 else None)

    def outcome(self, higher_is_better: bool) -> str:
        """``better``, ``worse`` or ``within noise`` (``NOISE_RULE``); needs a paired seed."""
        d = self.diffs
        if not beyond_noise(d):
            return "within noise"
        return "better" if (statistics.fmean(d) > 0) == higher_is_better else "worse"

    def verdict(self, higher_is_better: bool) -> str:
        """The comparison in words."""
        if not self.diffs:
            return f"no matched {self.kind} control yet"
        word = self.outcome(higher_is_better)
        if word == "within noise":
            return f"within noise of {self.kind}"
        return f"{word} than {self.kind} beyond noise"


@dataclass
class HeadlineRow:
    row: Row
    level: int  # the MACs level: the achieved reduction in whole percent
    paired: dict[str, Paired]


def is_method(row: Row) -> bool:
    """A pruning method's row (not dense, not a control)."""
    return row.method not in CONTROLS and bool(row.records[0]["plan_widths"])


def headline(rows: list[Row]) -> list[HeadlineRow]:
    """Every method row of one table with its pairings, sorted by MACs level then method."""
    candidates = [r for row in rows if row.method in CONTROLS for r in row.records]
    out = []
    for row in filter(is_method, rows):
        kinds = KINDS if any(from_scratch(r) for r in row.records) else KINDS[:2]
        paired = {k: Paired(k, [pair(rec, candidates, k) for rec in row.records]) for k in kinds}
        level = round(100 * row.summary()["achieved"])
        out.append(HeadlineRow(row, level, paired))
    return sorted(out, key=lambda h: (h.level, h.row.method, h.row.hparams))


def cell(p: Paired | None, scale: float) -> str:
    """``+1.23 ± 0.45 (n=3)``; the unmatched and nearest-feasible seeds said in words."""
    if p is None:
        return "—"
    mean, std = p.mean_std()
    if mean is None:
        return "no matched control yet"
    s = "—" if std is None else f"{scale * std:.2f}"
    text = f"{scale * mean:+.2f} ± {s} (n={len(p.diffs)})"
    if len(p.diffs) < len(p.pairings):
        text += f", {len(p.pairings) - len(p.diffs)} seed(s) unmatched"
    if p.nearest:
        reach = statistics.fmean(q.control["achieved_macs_reduction"] for q in p.nearest)
        text += f"; nearest feasible control at −{100 * reach:.1f} % MACs"
    return text


def summary_words(h: HeadlineRow) -> str:
    """One verdict per control kind, joined."""
    hib = h.row.higher_is_better
    if not any(p.diffs for p in h.paired.values()):
        return "no matched controls yet"
    return "; ".join(p.verdict(hib) for p in h.paired.values())


def as_dict(h: HeadlineRow) -> dict[str, Any]:
    """The headline row as plain data (W&B tables, tests)."""
    out: dict[str, Any] = {"method": h.row.label(), "level": h.level}
    for k, p in h.paired.items():
        mean, std = p.mean_std()
        out |= {f"delta_vs_{k}": mean, f"delta_vs_{k}_std": std, f"n_vs_{k}": len(p.diffs)}
    return out
