"""KCP — Kernel Cluster Pruning: Yu, Wu, Chen, "Kernel Cluster Pruning for Dense Labeling Neural
Networks", 2021 (arXiv 2101.06686). No official code exists.

Verified from the paper's abstract: the unit is the *kernel* ``W[n, c]``
(one k×k, or k×k×k, slice of filter n for input channel c); a clustering technique finds each
layer's least representational kernels; they are removed *iteratively* (prune a step, finetune,
repeat).

Unverified — the most faithful reading we could make, each a named option:

* ``group``: kernels are clustered per input channel (``input_channel``: the C_out kernels
  ``W[:, c]`` form one cluster, its centre their mean) or over the whole layer
  (``layer_kmeans``: k-means with ``n_clusters``, seeded k-means++ then Lloyd).
* ``criterion``: the kernels ``nearest`` their cluster centre go first — the rest of the cluster
  can stand in for them (FPGM's intuition, which KCP compares against); ``farthest`` reverses it.
* schedule: ``step_reduction`` of dense MACs more is removed at each step (the last step lands
  on the target), with ``finetune_epochs_per_step`` of finetuning between steps.
* ``allocation``: ``uniform`` (every layer prunes the same fraction of its kernels) or
  ``global`` (one threshold over distances normalised by each layer's mean distance).
* MACs count surviving kernels; whatever becomes whole (a filter with no kernel left, an input
  channel no filter reads) is removed physically, the rest stays a masked dense conv (the record
  keeps both the analytic and the realised MACs).
* layers: every conv but the first and the task's protected head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prunebench.method import CompressContext, Method, kernel_refusal
from prunebench.options import option
from prunebench.plan import Plan
from prunebench.surgery.target import ALLOCATIONS

GROUPS = ("input_channel", "layer_kmeans")
CRITERIA = ("nearest", "farthest")


def _sq_dist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return ((x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1)).clamp(min=0)


def kmeans(
    x: torch.Tensor, k: int, seed: int, iters: int = 25
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded k-means (k-means++ init, Lloyd iterations) of the rows of ``x``.

    Returns:
        (centres (k, d), assignment (n,)).
    """
    gen = torch.Generator().manual_seed(seed)
    x = x.double()
    k = min(k, len(x))
    centres = x[torch.randint(len(x), (1,), generator=gen)]
    while len(centres) < k:
        d2 = _sq_dist(x, centres).min(dim=1).values
        p = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1 / len(d2))
        centres = torch.cat([centres, x[torch.multinomial(p, 1, generator=gen)]])
    for _ in range(iters):
        assign = _sq_dist(x, centres).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centres)  # empty: keep centre
        if torch.equal(new, centres):
            break
        centres = new
    return centres, _sq_dist(x, centres).argmin(dim=1)


def distance_to_centre(
    w: torch.Tensor, alive: torch.Tensor, group: str, n_clusters: int, seed: int
) -> torch.Tensor:
    """‖W[n, c] − centre of its cluster‖₂ for every kernel (C_out, C_in); +inf for pruned ones."""
    kernels = w.flatten(2).double()  # (C_out, C_in, k·k[·k])
    dist = torch.full(alive.shape, math.inf, dtype=torch.float64)
    if group == "input_channel":
        m = alive.double().unsqueeze(-1)
        centre = (kernels * m).sum(0) / m.sum(0).clamp(min=1)  # mean kernel of each W[:, c]
        d = (kernels - centre.unsqueeze(0)).norm(dim=-1)
    else:
        flat = kernels.reshape(-1, kernels.shape[-1])[alive.flatten()]
        centres, assign = kmeans(flat, n_clusters, seed)
        d = torch.full(alive.shape, math.inf, dtype=torch.float64)
        d.view(-1)[alive.flatten()] = (flat - centres[assign]).norm(dim=-1)
    dist[alive] = d[alive]
    return dist


@dataclass
class KCP(Method):
    group: str = option("input_channel", choices=GROUPS)
    n_clusters: int = option(8, within="[1, inf)")
    criterion: str = option("nearest", choices=CRITERIA)
    step_reduction: float = option(0.1, within="(0, 1]")
    finetune_epochs_per_step: int = option(1, within="[0, inf)")
    allocation: str = option("uniform", choices=ALLOCATIONS)

    def scores(
        self, ctx: CompressContext, alive: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Importance per kernel: higher is kept. Pruned kernels score −inf (they stay pruned)."""
        out = {}
        for i, (name, w) in enumerate(ctx.kernel_weights().items()):
            d = distance_to_centre(w, alive[name], self.group, self.n_clusters, ctx.seed + i)
            s = d if self.criterion == "nearest" else -d
            finite = s[alive[name]]
            if self.allocation == "global" and len(finite):  # comparable across layers
                s = s / finite.abs().mean().clamp(min=1e-12)
            s[~alive[name]] = -math.inf
            out[name] = s
        return out

    def refusal(self, ctx: CompressContext) -> str | None:
        return kernel_refusal(ctx, ctx.structure.kernel_layers, "kernel")

    def compress(self, ctx: CompressContext) -> Plan:
        steps = math.ceil(ctx.macs_reduction / self.step_reduction - 1e-9)
        plan = Plan()
        for i in range(1, steps + 1):
            alive = ctx.alive_kernels(plan)
            step_target = min(ctx.macs_reduction, i * self.step_reduction)
            plan = ctx.solve_kernels(self.scores(ctx, alive), step_target, self.allocation, alive)
            ctx.apply_masks(plan)
            if i < steps:  # the last step's finetuning is the finetune stage
                ctx.train(self.finetune_epochs_per_step, None)
        return plan
