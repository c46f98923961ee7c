"""Turn per-unit importance scores into a plan that hits a MACs-reduction target.

Two allocations, both by bisection:

* ``global``: one threshold over all groups' (normalised) scores; the bisection runs over the
  number of lowest-scored units removed, which is a bisection on the threshold at the resolution
  the scores allow.
* ``uniform``: the same fraction removed in every group (as nearly as whole units allow),
  bisection on that fraction.

The achieved reduction is the smallest one at or above the target; it must be within
``tolerance`` (absolute) of it, or the solver says why it is not.
"""

from __future__ import annotations

import math

import torch

from prunebench.errors import ConfigError
from prunebench.plan import Plan, PlanEntry
from prunebench.structure import MacModel

ALLOCATIONS = ("global", "uniform")


def validate_target(macs_reduction: float) -> float:
    """Check ``macs_reduction`` ∈ (0, 1) and return it as a float."""
    try:
        value = float(macs_reduction)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 < value < 1.0:
        raise ConfigError(
            f"target.macs_reduction={macs_reduction!r} is outside (0, 1): it is the fraction of "
            "dense MACs removed, e.g. target.macs_reduction=0.5"
        )
    return value


def _plan(order: dict[str, list[int]], sizes: dict[str, int], n_pruned: dict[str, int]) -> Plan:
    return Plan(
        {
            root: PlanEntry("filter", sizes[root], sorted(order[root][n_pruned[root] :]))
            for root in sizes
            if n_pruned[root] > 0
        }
    )


def _ascending(scores: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    # Stable sort: ties break by index, so the same scores always give the same plan.
    return {r: torch.argsort(s.double(), stable=True).tolist() for r, s in scores.items()}


def solve(
    scores: dict[str, torch.Tensor],
    mac_model: MacModel,
    macs_reduction: float,
    allocation: str = "global",
    tolerance: float = 0.01,
    min_keep: int = 1,
) -> Plan:
    """Prune the lowest-scored units until the MACs reduction reaches ``macs_reduction``.

    Args:
        scores: group root → one score per unit (higher = more important). For ``global``
            allocation the scores must be comparable across groups (normalise them first).
        mac_model: predicts MACs from widths.
        macs_reduction: target fraction of dense MACs removed, in (0, 1).
        allocation: ``"global"`` or ``"uniform"``.
        tolerance: largest accepted |achieved − target| (absolute fraction).
        min_keep: units every group keeps.
    """
    target = validate_target(macs_reduction)
    if allocation not in ALLOCATIONS:
        raise ConfigError(f"allocation={allocation!r}; choices: {ALLOCATIONS}")
    sizes = {r: int(s.numel()) for r, s in scores.items()}
    order = _ascending(scores)

    def reduction(n_pruned: dict[str, int]) -> float:
        return mac_model.reduction({r: sizes[r] - n_pruned[r] for r in sizes})

    # Removal order: by score (global), or by rank fraction within the layer (uniform), so that
    # after any number of removals every layer has pruned as nearly the same fraction as it can.
    def key(root: str, rank: int) -> float:
        return (
            float(scores[root][order[root][rank]])
            if allocation == "global"
            else (rank + 1) / sizes[root]
        )

    candidates = sorted(
        (key(r, rank), g, r) for g, r in enumerate(sizes) for rank in range(sizes[r] - min_keep)
    )

    def counts(k: int) -> dict[str, int]:
        n = dict.fromkeys(sizes, 0)
        for _, _, r in candidates[:k]:
            n[r] += 1
        return n

    lo, hi = 0, len(candidates)
    if reduction(counts(hi)) < target - 1e-9:
        raise ConfigError(
            f"target.macs_reduction={target} is unreachable: pruning every prunable unit but "
            f"{min_keep} per group removes {reduction(counts(hi)):.3f} of the MACs"
        )
    while lo < hi:  # smallest k whose reduction reaches the target
        mid = (lo + hi) // 2
        if reduction(counts(mid)) >= target - 1e-9:
            hi = mid
        else:
            lo = mid + 1
    n_pruned = counts(lo)
    achieved = reduction(n_pruned)
    if achieved - target > tolerance:
        raise ConfigError(
            f"{allocation} allocation reaches {achieved:.4f}, not within {tolerance} of "
            f"target.macs_reduction={target}: one unit removes too many MACs at this size"
        )
    return _plan(order, sizes, n_pruned)
