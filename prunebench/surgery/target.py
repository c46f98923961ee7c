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
from collections.abc import Callable

import torch

from prunebench.errors import ConfigError
from prunebench.plan import Plan, PlanEntry
from prunebench.surgery.structure import MacModel

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


def _bisect(n: int, reduction: Callable[[int], float], target: float) -> int:
    """Smallest k in [0, n] with reduction(k) ≥ target (reduction is non-decreasing in k)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if reduction(mid) >= target - 1e-9:
            hi = mid
        else:
            lo = mid + 1
    return lo


def solve_units(
    scores: dict[str, torch.Tensor],
    kind: str,
    mac_model: MacModel,
    macs_reduction: float,
    allocation: str = "global",
    tolerance: float = 0.01,
    min_keep: int = 1,
    alive: dict[str, torch.Tensor] | None = None,
    round_to: int = 1,
) -> Plan:
    """Prune the lowest-scored units until the MACs reduction reaches ``macs_reduction``.

    Args:
        scores: layer → one score per unit, flattened (higher = more important). For ``global``
            allocation the scores must be comparable across layers (normalise them first).
        kind: ``"filter"`` (layers are group roots, units their channels), ``"kernel"``
            (layers are convs, units their (C_out, C_in) kernels) or ``"column"`` (layers are
            convs, units their (C_in, k…) columns).
        mac_model: counts the plan's MACs.
        macs_reduction: target fraction of dense MACs removed, in (0, 1).
        allocation: ``"global"`` or ``"uniform"``.
        tolerance: largest accepted |achieved − target| (absolute fraction).
        min_keep: units every layer keeps.
        alive: layer → bool mask of units still in play (pruned earlier ones stay pruned).
        round_to: filters only — every group keeps a multiple of ``round_to`` channels (or all
            of them), restoring its highest-scored removed ones, so the slimmed convs have
            SIMD-friendly widths (e.g. 8); the bisection then finds the smallest removal that
            still reaches the target. 1 (default): no rounding.
    """
    target = validate_target(macs_reduction)
    if round_to < 1 or (round_to > 1 and kind != "filter"):
        raise ConfigError(f"round_to={round_to!r}: an integer ≥ 1, and > 1 only for filters")
    if allocation not in ALLOCATIONS:
        raise ConfigError(f"allocation={allocation!r}; choices: {ALLOCATIONS}")
    layers = list(scores)
    alive = {
        r: torch.ones(scores[r].numel(), dtype=torch.bool) if alive is None else alive[r].flatten()
        for r in layers
    }
    keys, layer_idx, unit_idx = [], [], []
    for li, r in enumerate(layers):
        s, ok = scores[r].flatten().double(), alive[r]
        units = torch.nonzero(ok).flatten()
        order = units[torch.argsort(s[units], stable=True)]  # ties break by index: deterministic
        order = order[: max(0, len(order) - min_keep)]
        dead = int((~ok).sum())
        # global: by score; uniform: by the fraction of the layer pruned after this removal, so
        # every layer prunes as nearly the same fraction as whole units allow.
        k = (
            s[order]
            if allocation == "global"
            else (dead + torch.arange(1, len(order) + 1)) / s.numel()
        )
        keys.append(k.double())
        layer_idx.append(torch.full((len(order),), li))
        unit_idx.append(order)
    keys_t, layer_t, unit_t = (torch.cat(x) for x in (keys, layer_idx, unit_idx))
    # Sort by (key, layer order, unit order): by layer first, then stably by key.
    rank = torch.argsort(layer_t, stable=True)
    rank = rank[torch.argsort(keys_t[rank], stable=True)]
    layer_t, unit_t = layer_t[rank], unit_t[rank]

    shapes = {r: scores[r].shape for r in layers}

    def kept_at(k: int) -> dict[str, torch.Tensor]:
        kept = {r: alive[r].clone() for r in layers}
        for li, r in enumerate(layers):
            removed = unit_t[:k][layer_t[:k] == li]  # lowest score first
            n = int(kept[r].sum()) - len(removed)
            extra = min(kept[r].numel(), -(-n // round_to) * round_to) - n  # round n up
            kept[r][removed[: len(removed) - extra]] = False
        return {r: m.view(shapes[r]) for r, m in kept.items()}

    def reduction(k: int) -> float:
        masks: dict[str, dict] = {"filter": {}, "kernel": {}, "column": {}}
        masks[kind] = kept_at(k)
        return mac_model.masks_reduction(masks["filter"], masks["kernel"], masks["column"])

    def to_plan(kept: dict[str, torch.Tensor]) -> Plan:
        make = {
            "filter": lambda m: PlanEntry("filter", m.numel(), torch.nonzero(m).flatten().tolist()),
            "kernel": PlanEntry.from_kernel_mask,
            "column": PlanEntry.from_column_mask,
        }[kind]
        return Plan({r: make(m) for r, m in kept.items() if not m.all()})

    most = reduction(len(rank))
    if most < target - 1e-9:
        raise ConfigError(
            f"target.macs_reduction={target} is unreachable: pruning every prunable unit but "
            f"{min_keep} per layer removes {most:.3f} of the MACs"
        )
    k = _bisect(len(rank), reduction, target)
    if reduction(k) <= 0.0:  # a target within rounding of 0: the plan would remove nothing
        raise ConfigError(
            f"target.macs_reduction={target!r} is below one prunable unit: the smallest {kind} "
            f"step removes {reduction(1):.2g} of the dense MACs; choose at least that"
        )
    plan = to_plan(kept_at(k))
    achieved = mac_model.plan_reduction(plan)
    if achieved - target > tolerance:
        raise ConfigError(
            f"{allocation} allocation reaches {achieved:.4f}, not within {tolerance} of "
            f"target.macs_reduction={target}: one unit removes too many MACs at this size"
            + (
                f" (widths rounded to multiples of target.round_to={round_to})"
                if round_to > 1
                else ""
            )
        )
    return plan


def solve(
    scores: dict[str, torch.Tensor],
    mac_model: MacModel,
    macs_reduction: float,
    allocation: str = "global",
    tolerance: float = 0.01,
    min_keep: int = 1,
    round_to: int = 1,
) -> Plan:
    """Filter pruning: ``scores`` maps each group root to one score per output channel; every
    group keeps a multiple of ``round_to`` channels (see :func:`solve_units`)."""
    return solve_units(
        scores,
        "filter",
        mac_model,
        macs_reduction,
        allocation,
        tolerance,
        min_keep,
        round_to=round_to,
    )
