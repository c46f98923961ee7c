"""CaP — Pruning with Compensation: Xie, Fu, Tian, Zhou, Chen, "Pruning with Compensation:
Efficient Channel Pruning for Deep Convolutional Neural Networks", 2021 (arXiv 2108.13728).
Verified against the authors' code (``ZhouyangXie/pseudopruner``: statistics, compensation,
ranking; ``ZhouyangXie/compensation``: ``structural_search.py``); this implementation is our own.

No retraining. For the consumer conv of every prunable channel group (CIFAR ResNets: each
block's ``conv2``, reading ``conv1``'s channels — never the residual stream):

1. **Statistics** — one no-grad pass over ``calib_fraction`` of the *training* split: μ and
   Σ = E[xxᵀ] − μμᵀ of the consumer's unfolded inputs, float64 (``methods.cap_compensation``;
   the hooks are removed before anything else runs).
2. **Ranking** — greedy forward selection of input channels by compensated reconstruction loss
   L(S) = tr(WΣWᵀ) − tr(Bᵀ Σ_SS⁻¹ B), B = Σ_{S·}Wᵀ, with Schur-complement updates; dead channels
   (zero variance) go first, at no loss. Pruning ρ of a layer removes the last ⌊ρ·C⌋ channels.
3. **Compensation** — W' = W Σ_{·S} Σ_SS⁻¹, b' = b + Wμ − W'μ_S (``variance_rescale``: each
   output's variance kept, as the authors' code; ``ridge``: ridge · mean diag on Σ_SS).
4. **Binary structural search with step constraint** — layers from input to output; layer i
   (1-based, of L) must keep the *validation* metric ≥ acc_start − i·(acc_start − acc_end)/L;
   its sparsity is bisected over [0, ``max_sparsity``] for ``search_steps`` steps with
   compensation applied at each trial, and the largest passing sparsity is committed.

``mode: floor`` uses acc_end = acc_start − ``acc_drop`` (the paper's form: the reduction is what
the floor allows, the record says no target). ``mode: macs_target`` (ours, so CaP sits in the
leaderboard's MACs columns) bisects acc_end over [acc_start − 1, acc_start] for at most
``target_iters`` searches until the achieved MACs reduction is within ``tolerance`` of
``target.macs_reduction``; if no floor lands there, the closest search below the target is
topped up channel by channel (CaP's order, the least-pruned layer first) and a line says so.
Each search prints one progress line (acc_end, the MACs reduction it reached, elapsed time).

Deviations / unverified choices: statistics and rankings are computed once on the dense model,
as in the authors' code (later layers are not re-measured after earlier ones are pruned);
``search_steps`` (6) and ``max_sparsity`` (0.9) have no default in the authors' code; trial
evaluations are memoised (same committed prefix + same channel count → same model), and each
trial runs only the network from the trial layer on, over validation activations cached before
it (``CompressContext.evaluate_after``; the same outputs, bit for bit); a group
is pruned only when exactly one layer reads it and reads nothing else — a group read through a
concat (DeepLab's ASPP branches, whose projection reads all five) is left whole, and the record's
``method_notes`` name it (compensating several groups in one shared consumer is not
implemented).
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from methods.cap_compensation import (
    collect_input_stats,
    column_mask,
    compensate,
    fold_compensation,
    greedy_rank,
    kernel_numel,
    output_variance,
    restore,
    weight_matrix,
)
from prunebench.errors import ConfigError
from prunebench.method import CompressContext, Method
from prunebench.options import option
from prunebench.plan import Plan, PlanEntry

MODES = ("macs_target", "floor")
REFIT_CACHE_BYTES = 1 << 30  # the compensated weights kept for reuse across trials and searches


@dataclass
class _Layer:
    root: str  # the group whose output channels are pruned
    consumer: str  # the layer reading them, which is compensated
    size: int
    order: list[int]  # CaP ranking, most important first


@dataclass
class CaP(Method):
    calib_fraction: float = option(0.2, within="(0, 1]")
    ridge: float = option(0.0, within="[0, inf)")
    variance_rescale: bool = option(True)
    search_steps: int = option(6, within="[1, inf)")
    max_sparsity: float = option(0.9, within="(0, 1)")
    acc_drop: float = option(0.02, within="[0, 1]")
    mode: str = option("macs_target", choices=MODES)
    target_iters: int = option(10, within="[1, inf)")
    tolerance: float = option(0.01, within="[0, 1]")
    finetune: bool = option(False)

    @property
    def uses_target(self) -> bool:
        return self.mode == "macs_target"

    # -- steps 1–2: statistics and rankings -----------------------------------------------
    def _consumers(self, ctx: CompressContext) -> dict[str, str]:
        """Group root → the one layer reading it (an ungrouped conv with numeric zero padding, or
        a linear layer), which is compensated; the other groups go to ``self._skipped``."""
        s = ctx.structure
        consumers, self._skipped = {}, []
        for root, g in s.groups.items():
            readers = [m for m in g.in_members if m in s.shapes]
            module = ctx.model.get_submodule(readers[0]) if len(readers) == 1 else None
            plain = isinstance(module, nn.Linear) or (
                isinstance(module, nn.Conv2d | nn.Conv3d)
                and module.groups == 1
                and module.padding_mode == "zeros"
                and not isinstance(module.padding, str)
            )
            if not plain or s.shapes[readers[0]][1] != g.size:
                self._skipped.append(root)  # no exclusive consumer to compensate in
                continue
            consumers[root] = readers[0]
        return consumers

    def refusal(self, ctx: CompressContext) -> str | None:
        consumers = self._consumers(ctx)
        if not consumers:
            return (
                "CaP compensates the one layer that reads a group; no prunable group of this "
                "model is read by exactly one ungrouped conv or linear layer (a squeeze-excite "
                "gate or a second reader shares them)"
            )
        most = ctx.mac_model.masks_reduction(  # the search's most: max_sparsity of each group
            {
                r: torch.arange(g.size) >= int(self.max_sparsity * g.size)
                for r, g in ctx.structure.groups.items()
                if r in consumers
            },
            {},
        )
        if self.uses_target and most < ctx.macs_reduction - self.tolerance:
            return (
                f"target.macs_reduction={ctx.macs_reduction} is beyond reach: pruning "
                f"max_sparsity={self.max_sparsity} of each of the {len(consumers)} group(s) CaP "
                f"compensates removes {most:.3f} of the MACs"
            )
        return None

    def _layers(self, ctx: CompressContext) -> list[_Layer]:
        consumers = self._consumers(ctx)
        if not consumers:
            raise ConfigError("CaP needs groups read by exactly one layer; this model has none")
        self._var_old: dict[str, torch.Tensor] = {}
        loader = ctx.calib_loader(self.calib_fraction)
        stats = collect_input_stats(ctx.model, list(consumers.values()), loader, ctx.device)
        layers = []
        for root, consumer in consumers.items():
            module = ctx.model.get_submodule(consumer)
            w = weight_matrix(module).cpu()
            order = greedy_rank(w, stats[consumer], kernel_numel(module))
            if self.variance_rescale:  # the dense layer's, the same at every trial
                self._var_old[consumer] = output_variance(w, stats[consumer])
            layers.append(_Layer(root, consumer, ctx.structure.groups[root].size, order))
        self._stats = stats
        return layers

    # -- step 3: compensation --------------------------------------------------------------
    def _keep(self, layer: _Layer, n_pruned: int) -> torch.Tensor:
        keep = torch.ones(layer.size, dtype=torch.bool)
        if n_pruned:
            keep[layer.order[-n_pruned:]] = False
        return keep

    def _compensate(self, ctx: CompressContext, layer: _Layer, n_pruned: int) -> dict:
        """Prune the ``n_pruned`` last-ranked channels of ``layer`` and fold its compensation."""
        module = ctx.model.get_submodule(layer.consumer)
        keep = self._keep(layer, n_pruned)
        w_new, delta_b = self._refit(layer, n_pruned, module, keep)
        return fold_compensation(
            ctx.model, layer.consumer, keep, w_new, delta_b, ctx.structure.bn_after
        )

    def _refit(self, layer: _Layer, n_pruned: int, module: nn.Module, keep: torch.Tensor):
        """compensate()'s (W', Δb). It depends on the dense statistics and the kept channels
        alone, so each (layer, n_pruned) is solved once and reused by every trial and search
        that meets it again (up to ``REFIT_CACHE_BYTES``, least recently used out first)."""
        key = (layer.consumer, n_pruned)
        if key in self._refits:
            self._refits.move_to_end(key)
            return self._refits[key]
        out = compensate(
            weight_matrix(module).cpu(),
            self._stats[layer.consumer],
            column_mask(keep, kernel_numel(module)),
            self.ridge,
            self.variance_rescale,
            self._var_old.get(layer.consumer),
        )
        self._refits[key] = out
        size = lambda o: sum(t.numel() * t.element_size() for t in o)  # noqa: E731
        while sum(size(o) for o in self._refits.values()) > REFIT_CACHE_BYTES:
            self._refits.popitem(last=False)
        return out

    # -- step 4: binary structural search --------------------------------------------------
    def _search(self, ctx, layers: list[_Layer], acc_start: float, acc_end: float) -> list[int]:
        """Channels pruned per layer under the stepped floor; the model is left compensated."""
        committed: list[int] = []
        step = (acc_start - acc_end) / len(layers)
        for i, layer in enumerate(layers, start=1):
            floor = acc_start - i * step
            lo, hi = 0.0, self.max_sparsity
            for _ in range(self.search_steps):
                mid = (lo + hi) / 2
                if self._trial(ctx, layers, committed, int(mid * layer.size)) >= floor:
                    lo = mid
                else:
                    hi = mid
            n = int(lo * layer.size)
            self._compensate(ctx, layer, n)
            committed.append(n)
        return committed

    def _trial(self, ctx, layers: list[_Layer], committed: list[int], n: int) -> float:
        """Validation metric with ``n`` channels pruned in the next layer (memoised)."""
        if n == 0:  # the committed model: it passed a higher floor already
            return float("inf")
        key = (*committed, n)
        if key not in self._memo:
            layer = layers[len(committed)]
            saved = self._compensate(ctx, layer, n)
            try:  # only the consumer and its BN changed since the committed prefix
                changed = sorted({k.rsplit(".", 1)[0] for k in saved})
                self._memo[key] = ctx.score_after(changed, tuple(committed))
            finally:
                restore(ctx.model, saved)
        return self._memo[key]

    def _plan(self, ctx: CompressContext, layers: list[_Layer], pruned: list[int]) -> Plan:
        return Plan(
            {
                layer.root: PlanEntry(
                    "filter", layer.size, self._keep(layer, n).nonzero().flatten()
                )
                for layer, n in zip(layers, pruned, strict=True)
                if n
            }
        )

    def notes(self) -> dict:
        skipped = getattr(self, "_skipped", [])
        return {"groups_left_whole": skipped} if skipped else {}

    def compress(self, ctx: CompressContext) -> Plan:
        if ctx.evaluate is None or ctx.calib_loader is None:
            raise ConfigError("CaP needs a calibration loader and a validation evaluator")
        layers = self._layers(ctx)
        self._memo: dict[tuple, float] = {}
        self._refits: OrderedDict[tuple[str, int], tuple] = OrderedDict()
        dense = {}
        for layer in layers:  # to start every search from the dense model
            dense.update(self._compensate(ctx, layer, 0))
        acc_start = ctx.evaluate(ctx.model)
        if self.mode == "floor":
            pruned = self._search(ctx, layers, acc_start, acc_start - self.acc_drop)
            return self._plan(ctx, layers, pruned)
        return self._hit_target(ctx, layers, acc_start, dense)

    def _hit_target(self, ctx, layers: list[_Layer], acc_start: float, dense: dict) -> Plan:
        """Outer bisection over acc_end until the MACs reduction is within ``tolerance``."""
        target = ctx.macs_reduction

        def reduction(pruned: list[int]) -> float:
            return ctx.mac_model.plan_reduction(self._plan(ctx, layers, pruned))

        most = [int(self.max_sparsity * layer.size) for layer in layers]
        if reduction(most) < target - self.tolerance:
            raise ConfigError(
                f"target.macs_reduction={target} is beyond max_sparsity={self.max_sparsity} "
                f"in every layer ({reduction(most):.4f})"
            )
        lo, hi = acc_start - 1.0, acc_start  # acc_end: lo prunes the most, hi the least
        below: list[int] = [0] * len(layers)  # the most-pruned search under the target
        start = time.perf_counter()
        for k in range(1, self.target_iters + 1):
            restore(ctx.model, dense)
            acc_end = (lo + hi) / 2
            pruned = self._search(ctx, layers, acc_start, acc_end)
            r = reduction(pruned)
            print(  # a search over a ResNet-50 takes minutes: this line is the progress
                f"CaP: search {k}/{self.target_iters} · acc_end {acc_end:.4f} · MACs reduction "
                f"{r:.4f} (target {target} ± {self.tolerance}) · elapsed "
                f"{time.perf_counter() - start:.0f}s",
                flush=True,
            )
            if abs(r - target) <= self.tolerance:
                return self._plan(ctx, layers, pruned)
            if r < target:
                hi = acc_end
                if r > reduction(below):
                    below = pruned
            else:
                lo = acc_end
        # No floor lands within tolerance: top up the closest search below the target.
        sizes = [layer.size for layer in layers]
        pruned = top_up(below, most, sizes, reduction, target - self.tolerance / 2)
        print(
            f"CaP: no accuracy floor reached the target within {self.tolerance} in "
            f"{self.target_iters} searches; topped up to {reduction(pruned):.4f}"
        )
        restore(ctx.model, dense)
        for layer, n in zip(layers, pruned, strict=True):
            self._compensate(ctx, layer, n)
        return self._plan(ctx, layers, pruned)


def top_up(
    start: list[int],
    most: list[int],
    sizes: list[int],
    reduction: Callable[[list[int]], float],
    threshold: float,
) -> list[int]:
    """Prune one more channel at a time, always in the least-pruned layer (by share, then
    index), until ``reduction`` reaches ``threshold`` (or every layer is at ``most``). The
    order of the steps does not depend on the reduction, and the reduction only grows with
    them, so the first state that reaches the threshold is found by bisection over the steps:
    a few MACs evaluations instead of one per channel (thousands on a wide model)."""
    steps, state = [], list(start)
    heap = [(state[i] / sizes[i], i) for i in range(len(state)) if state[i] < most[i]]
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        steps.append(i)
        state[i] += 1
        if state[i] < most[i]:
            heapq.heappush(heap, (state[i] / sizes[i], i))

    def after(k: int) -> list[int]:
        out = list(start)
        for i in steps[:k]:
            out[i] += 1
        return out

    lo, hi = 0, len(steps)  # the answer lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if reduction(after(mid)) >= threshold:
            hi = mid
        else:
            lo = mid + 1
    return after(lo)
