"""The random control: random filters at the same MACs target and finetune budget — the floor
every method must beat. The draw is seeded by the run's seed."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunebench.method import CompressContext, Method
from prunebench.options import option
from prunebench.plan import Plan
from prunebench.surgery.target import ALLOCATIONS


@dataclass
class Random(Method):
    core_filter_solve = True  # target.round_to applies
    allocation: str = option("uniform", choices=ALLOCATIONS)

    def compress(self, ctx: CompressContext) -> Plan:
        gen = torch.Generator().manual_seed(ctx.seed)
        scores = {r: torch.rand(g.size, generator=gen) for r, g in ctx.structure.groups.items()}
        return ctx.solve(scores, self.allocation)
