"""L1-norm filter pruning: Li, Kadav, Durdanovic, Samet, Graf, "Pruning Filters for Efficient
ConvNets", ICLR 2017 (arXiv 1608.08710).

Each filter's score is Σ|W| over its kernel weights (the paper's s_j); the smallest go.
Deviation: the paper sets per-layer ratios from a sensitivity analysis; here ``allocation``
is ``uniform`` (one ratio for every prunable layer, solved to hit the MACs target) or ``global``
(one threshold over scores normalised by each layer's mean, so layers are comparable).
"""

from __future__ import annotations

from dataclasses import dataclass

from prunebench.method import CompressContext, Method
from prunebench.options import option
from prunebench.plan import Plan
from prunebench.surgery.target import ALLOCATIONS


@dataclass
class Magnitude(Method):
    core_filter_solve = True  # target.round_to applies
    allocation: str = option("uniform", choices=ALLOCATIONS)

    def compress(self, ctx: CompressContext) -> Plan:
        scores = {}
        for root in ctx.structure.groups:
            s = ctx.weight(root).abs().flatten(1).sum(1)  # s_j = Σ |F_{i,j}|
            scores[root] = s / s.mean() if self.allocation == "global" else s
        return ctx.solve(scores, self.allocation)
