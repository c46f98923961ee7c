"""SPP — Structured Probabilistic Pruning: Wang, Zhang, Wang, Hu, "Structured Probabilistic
Pruning for Convolutional Neural Network Acceleration", BMVC 2018 (arXiv 1709.06994).
Verified against the authors' Caffe code (``PP_Col`` in ``MingSun-Tse/Caffe_IncReg``: the
``ConvolutionLayer`` forward/backward around ``ProbPruneCol`` and the SGD solver's
``ClearHistory``); this implementation is our own.

Code version followed: the defaults are the code of 23 March 2018 (commit ``6e93b0b``), inside
the window in which ``score_decay`` = 0.9 and element-wise draws held together (decay 0.9 from
7 March, element-wise draws from 15 March, both back to 0 / one draw per column on 23 April
2018); that code clears the masked weights' momentum at every step. The last version with SPP
(10 August 2018, ``15c55db``), like the code before the window, has ``score_decay`` 0 and one
draw per column, and clears the momentum only once the layer has pruned a column (from 29 April
2018; 19–29 April not at all): ``score_decay=0 sampling=column clear_momentum=once_pruned``.
Both versions restore the weights at the end of the forward (``restore: forward``).

The unit is a *column* of a conv's im2col weight matrix: ``W[:, c, i, j]``, one input position
across every filter (``prunebench.surgery.columns``). Each column has a pruning probability ``p`` (0 at
the start). Training from the baseline (the during-training shape):

* every ``prune_interval`` iterations, per layer: the score ``h ← score_decay·h + Σ|W|`` (L1 over
  the column, ``score_decay`` = 0.9); the columns not yet pruned are ranked by ``h`` (r = 0 the
  least important); with ``G`` the columns still to prune in this layer, ``α = ln(2/u)/G`` and
  ``N_c = −ln(u)/α``, ``p ← clip(p + Δ(r), 0, 1)`` where (the paper's centrosymmetric Δ)

      Δ(r) = A·exp(−α·r)                       for r < N_c
      Δ(r) = 2uA − A·exp(−α·(2N_c − r))        for r ≥ N_c

  so Δ(0) = A, Δ(N_c) = uA, Δ(G) = 0: low-ranked columns gain probability, the others lose it
  (and can recover). A column whose ``p`` reaches 1 is pruned for good (its weights zeroed).
* every iteration, each weight is kept with probability ``1 − p`` of its column (``sampling``:
  ``element``, a Bernoulli draw per weight; ``column``, one draw per column). The draw is seeded
  from (seed, global step): the same masks on every DDP rank. With ``restore: forward`` (the
  authors' code) the mask holds for the **forward pass only** and the weights are restored at
  its end (``prunebench.surgery.forward_masks``): the input gradient flows through the unmasked weights;
  the masked weights' gradients are zeroed only once the layer has pruned at least one column;
  weight decay still moves them; their momentum is cleared (``clear_momentum``).
* a layer whose pruned columns reach its target ``R_l`` has its masks fixed (surviving columns
  p = 0) and keeps training; the finetune stage then retrains the column-slimmed network.

Per-layer targets (``allocation``): ``paper`` sets ``R_l`` = ``target.macs_reduction`` in every
pruned conv (each conv's MACs speed-up is 1/(1 − R), the paper's 2×/4× convention);
``uniform`` (default) asks the shared solver (``prunebench.surgery.target``, uniform allocation over
column L1 at the start) for the per-layer column counts that remove ``target.macs_reduction`` of
the *whole* network's MACs, protected layers and channels that lose every column included.

Deviations and unverified choices (named options):

* ``prune_interval`` (1) — a solver parameter in the authors' code; its value for each recipe is
  not verified.
* ``restore: step`` (the project's earlier rule, a named option): the masked weights are used in
  forward *and* backward, their gradients are always zeroed, they are restored after the
  optimiser step (so weight decay does not move them) and their momentum is kept (with
  ``clear_momentum: never``, its pair).
* The code marks filters whose every column in the next layer is pruned as pruned rows and masks
  them during training; here they keep training (their output reaches nothing) and are removed
  when the plan is slimmed. The code also adds the current L1 to ``h`` at every iteration; here
  at every probability update (the same with ``prune_interval`` 1).
* When the compress budget ends before a layer reaches ``R_l``, its lowest-``h`` surviving
  columns are pruned deterministically to reach it; with ``uniform`` allocation, if the network
  then still falls short of the MACs target (fewer channels emptied than the solver predicted),
  the solver prunes the lowest-``h`` columns left until it is met. The record's
  ``method_notes`` say how many columns each way.
* Layers: every conv that is not protected (``Structure.kernel_layers``: groups = 1, 2D or 3D);
  1×1 convs included (a column is then one input channel).
* Input channels left with no column are removed with their producers when those are prunable
  (``prunebench.surgery.resolve``); the slimmed conv computes over its kept columns only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from prunebench.method import CompressContext, Method, TrainingHooks, kernel_refusal
from prunebench.options import option
from prunebench.plan import Plan, PlanEntry
from prunebench.surgery.forward_masks import clear_forward_mask, set_forward_mask

ALLOCATIONS = ("uniform", "paper")
SAMPLINGS = ("element", "column")
RESTORES = (
    "forward",
    "step",
)  # the code's restore at the end of the forward | ours: after the step
CLEAR_MOMENTUM = ("always", "once_pruned", "never")


def delta(r: torch.Tensor, G: int, A: float, u: float) -> torch.Tensor:
    """Δ(r): the probability increment of the column ranked ``r`` (0 = least important) when
    ``G`` ≥ 1 columns remain to be pruned (the paper's Eq. for the centrosymmetric Δ)."""
    alpha = math.log(2 / u) / G
    N_c = -math.log(u) / alpha
    r = r.double()
    return torch.where(
        r < N_c, A * torch.exp(-alpha * r), 2 * u * A - A * torch.exp(-alpha * (2 * N_c - r))
    )


@dataclass
class ColumnState:
    """One layer's SPP state; tensors have the column shape (C_in, k…)."""

    target: int  # columns to prune in this layer: ⌈R_l · num_col⌉
    p: torch.Tensor
    h: torch.Tensor
    pruned: torch.Tensor  # bool, for good
    fixed: bool = False
    updates: int = 0

    @classmethod
    def new(cls, shape: tuple[int, ...], target: int, device) -> ColumnState:
        zeros = torch.zeros(shape, dtype=torch.float64, device=device)
        return cls(target, zeros.clone(), zeros.clone(), zeros.bool(), fixed=target <= 0)


class SPPHooks(TrainingHooks):
    """Probability updates every ``prune_interval`` steps, Bernoulli masks every step, weights
    restored at the end of the forward (``restore: forward``) or after the optimiser step
    (``step``). Vectorised per layer (no loop over columns)."""

    keep_best_epoch = False  # the pruned columns describe the last weights, not an earlier epoch's

    def __init__(self, method: SPP, targets: dict[str, int], seed: int) -> None:
        self.m, self.targets, self.seed = method, targets, seed
        self.state: dict[str, ColumnState] = {}
        self._masks: dict[str, torch.Tensor] = {}
        self._saved: dict[str, torch.Tensor] = {}

    def _init(self, model: nn.Module) -> None:
        for name, target in self.targets.items():
            w = model.get_submodule(name).weight
            self.state[name] = ColumnState.new(tuple(w.shape[1:]), target, w.device)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Scores, ranks and probabilities of every layer still pruning (one interval)."""
        if not self.state:
            self._init(model)
        for name, st in self.state.items():
            if st.fixed:
                continue
            w = model.get_submodule(name).weight
            st.h = self.m.score_decay * st.h + w.detach().abs().sum(0).double()  # h ← 0.9h + Σ|W|
            alive = ~st.pruned
            G = st.target - int(st.pruned.sum())  # columns still to prune
            h = st.h[alive]
            order = torch.argsort(h, stable=True)  # r = 0: least important; ties by index
            r = torch.empty_like(h)
            r[order] = torch.arange(len(h), dtype=h.dtype, device=h.device)
            st.p[alive] = (st.p[alive] + delta(r, G, self.m.A, self.m.u)).clamp(0.0, 1.0)
            st.updates += 1
            newly = alive & (st.p >= 1.0)  # at most G: only ranks < G gain probability
            if newly.any():
                st.pruned |= newly
                w.mul_((~newly).to(w.dtype).unsqueeze(0))  # pruned for good
            if int(st.pruned.sum()) >= st.target:
                self.fix(st)

    @staticmethod
    def fix(st: ColumnState) -> None:
        """The layer reached its target: surviving columns are kept for sure from now on."""
        st.p[~st.pruned] = 0.0
        st.fixed = True

    @torch.no_grad()
    def batch_start(self, model: nn.Module, step: int) -> None:
        if step % self.m.prune_interval == 0 or not self.state:
            self.update(model)
        gen: torch.Generator | None = None
        for name, st in self.state.items():
            conv = model.get_submodule(name)
            w = conv.weight
            if st.fixed:  # pruned columns only; they are zero already
                self._masks[name] = (~st.pruned).to(w.dtype).unsqueeze(0)
                self._saved.pop(name, None)
                continue
            if gen is None:  # seeded by (seed, global step): identical on every DDP rank
                gen = torch.Generator(device=w.device).manual_seed(self.seed * 2**32 + step)
            keep_prob = (1.0 - st.p).to(w.dtype)
            if self.m.sampling == "element":
                u = torch.rand(w.shape, generator=gen, device=w.device, dtype=w.dtype)
                mask = u < keep_prob.unsqueeze(0)  # rand ∈ [0, 1): p = 0 always kept
            else:
                u = torch.rand(keep_prob.shape, generator=gen, device=w.device, dtype=w.dtype)
                mask = (u < keep_prob).unsqueeze(0)
            self._masks[name] = mask.to(w.dtype)
            if self.m.restore == "forward":  # the code: masked forward, restored at its end
                set_forward_mask(conv, self._masks[name])
            else:
                self._saved[name] = w.detach().clone()
                w.mul_(self._masks[name])

    def _zeroes_masked(self, name: str) -> bool:
        """Whether the masked weights' gradients are zeroed: always (``step``), or once the
        layer has pruned a column (the code's ``pruned_ratio > 0``)."""
        return self.m.restore == "step" or bool(self.state[name].pruned.any())

    @torch.no_grad()
    def before_optimizer_step(self, model: nn.Module, step: int) -> None:
        for name, mask in self._masks.items():
            g = model.get_submodule(name).weight.grad
            if g is not None and self._zeroes_masked(name):
                g.mul_(mask)

    def momentum_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The code's ``ClearHistory``: the masked weights' momentum, every step (``always``) or
        once the layer has pruned a column (``once_pruned``); ``never`` keeps it."""
        rule = self.m.clear_momentum
        return {
            f"{name}.weight": mask
            for name, mask in self._masks.items()
            if rule == "always" or (rule == "once_pruned" and self.state[name].pruned.any())
        }

    @torch.no_grad()
    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        for name, mask in self._masks.items():
            conv = model.get_submodule(name)
            w = conv.weight
            if name in self._saved:  # restore: step — masked weights get their pre-step values
                w.copy_(torch.where(mask.bool().expand_as(w), w, self._saved[name]))
            else:  # pruned columns stay zero (a no-op unless momentum was kept)
                clear_forward_mask(conv)
                w.mul_((~self.state[name].pruned).to(w.dtype).unsqueeze(0))
        self._masks.clear()
        self._saved.clear()


@dataclass
class SPP(Method):
    A: float = option(0.05, within="(0, 1]")
    u: float = option(0.25, within="(0, 1)")
    prune_interval: int = option(1, within="[1, inf)")
    score_decay: float = option(0.9, within="[0, 1]")
    sampling: str = option("element", choices=SAMPLINGS)
    allocation: str = option("uniform", choices=ALLOCATIONS)
    restore: str = option("forward", choices=RESTORES)
    clear_momentum: str = option("always", choices=CLEAR_MOMENTUM)
    _notes: dict = field(default_factory=dict, repr=False)

    def notes(self) -> dict:
        return dict(self._notes)

    def targets(self, ctx: CompressContext) -> dict[str, int]:
        """Columns to prune per layer, ``⌈R_l · num_col⌉`` (see ``allocation``)."""
        weights = ctx.kernel_weights()
        if self.allocation == "paper":
            r = ctx.macs_reduction
            return {n: math.ceil(r * w[0].numel() - 1e-9) for n, w in weights.items()}
        l1 = {n: w.abs().sum(0).cpu() for n, w in weights.items()}
        plan = ctx.solve_columns(l1, allocation="uniform")
        kept = {n: len(e.keep) for n, e in plan.entries.items()}
        return {n: w[0].numel() - kept.get(n, w[0].numel()) for n, w in weights.items()}

    def refusal(self, ctx: CompressContext) -> str | None:
        return kernel_refusal(ctx, ctx.structure.kernel_layers, "column")

    def hooks(self, ctx: CompressContext) -> SPPHooks:
        """The training-time hooks (also used by ``benchmarks/method_overhead.py``)."""
        return SPPHooks(self, self.targets(ctx), ctx.seed)

    def compress(self, ctx: CompressContext) -> Plan:
        hooks = self.hooks(ctx)
        ctx.train(ctx.compress_epochs, hooks, "finetune")
        if not hooks.state:  # no training step ran (zero epochs)
            hooks._init(ctx.model)
        return self.finish(ctx, hooks.state)

    def finish(self, ctx: CompressContext, state: dict[str, ColumnState]) -> Plan:
        """Fix the masks: layers short of their target prune their lowest-``h`` columns
        (deterministic), then (``uniform``) the solver tops up to the MACs target if needed."""
        weights = ctx.kernel_weights()
        kept, scores, forced = {}, {}, 0
        for name, st in state.items():
            # h, or the current L1 where no interval ran yet
            h = st.h.cpu() if st.updates else weights[name].abs().sum(0).double().cpu()
            keep = ~st.pruned.cpu()
            need = st.target - int((~keep).sum())
            if need > 0:
                alive = torch.nonzero(keep.flatten()).flatten()
                lowest = alive[torch.argsort(h.flatten()[alive], stable=True)[:need]]
                keep.view(-1)[lowest] = False
                forced += need
            kept[name], scores[name] = keep, h
        topped = 0
        reduction = ctx.mac_model.masks_reduction({}, {}, kept)
        if self.allocation == "uniform" and reduction < ctx.macs_reduction - 1e-9:
            plan = ctx.solve_columns(scores, allocation="uniform", alive=kept)
            now = {n: e.mask() for n, e in plan.entries.items()}
            topped = sum(int(kept[n].sum() - now[n].sum()) for n in now)
        else:
            plan = Plan({n: PlanEntry.from_column_mask(k) for n, k in kept.items() if not k.all()})
        self._notes = {
            "layers_reached_target_in_training": sum(st.fixed for st in state.values()),
            "layers": len(state),
            "columns_pruned_in_training": sum(int(st.pruned.sum()) for st in state.values()),
            "columns_pruned_at_budget_end": forced,
            "columns_added_for_macs_target": topped,
        }
        return plan
