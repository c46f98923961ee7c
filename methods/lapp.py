"""LAPP — Layer Adaptive Progressive Pruning: Zhai, Guo, Liu, Xing, Xu, "Layer Adaptive
Progressive Pruning for Compressing CNNs from Scratch", arXiv 2309.14157, 2023. No official code;
this is our reading, every unverified detail a named option.

Verified from the paper: training from scratch; compression during the first few epochs; a
learnable threshold t_l per prunable layer; a MACs constraint that updates the thresholds with
the task loss, so each layer's rate is found by training; a lightweight bypass added before
training to every conv that will be pruned, kept at inference and counted.

Our reading (options):

* ``importance``: s_i = |γ_i| of the BN after layer l (``bn``, default) or the filter's L2 norm
  (``l2``), detached (the scores rank; t_l learns).
* ``score_norm``: how s_i is put on the thresholds' scale. ``rank`` (default, ours):
  s_i = (rank of s_i in its layer + 1) / C_l, so t_l is the fraction of layer l's filters below
  the cut and each layer's kept fraction moves smoothly with t_l; ``max``: s_i / max_j s_j (the
  first reading). On ResNet-20 at the ``cpu`` tier ``max`` failed: BN |γ| / max bunch in
  [0.8, 1], so a threshold step of a few hundredths crossed most of a layer at once, and the
  thresholds of the stage-1 layers — where a filter saves the most MACs — took them to one
  filter per block (Δ −38.8 pt at −50 % MACs, seeds 0–2). With ``rank`` the constraint's pull on
  t_l is the layer's coupled MACs, about equal across ResNet-20's layers, and the task loss sets
  the differences.
* Mask, straight-through: forward ``m_i = 1[s_i > t_l]`` (the best filter always kept), backward
  through ``σ((s_i − t_l)/τ)`` (``tau``). It multiplies the BN's output, so a masked model computes
  what the slimmed one does.
* Widths ``n_l = Σ_i m_i`` forward, ``Σ_i σ(·)`` backward; MACs(n) from consecutive widths with the
  shared counter's convention (the core's ``SoftMacs``, prunebench/surgery/soft_macs.py: each
  conv scales by its kept-output and kept-input fractions), so at hard masks the term *equals* ``count_macs`` of the slimmed model.
* Loss ``task + λ·(MACs/T − 1)²`` (``constraint: squared``, default) or ``λ·max(0, MACs/T − 1)²``
  (``hinge``), T = (1 − target)·dense MACs of the model *without* bypasses (what the record's
  reduction is measured against, so the bypasses' cost is paid inside the target).
* t_l: learnable, in their own optimiser group (``threshold_lr``, no weight decay, the recipe's
  schedule and warm-up applied), from ``threshold_init``.
* ``threshold_lr`` (default 0.02, ours) is sized so that the thresholds *alone* reach the target
  within E_p. With rank scores layer l's soft width falls by ≈ C_l per unit of t_l, so
  ∂(MACs/T)/∂t_l ≈ −a_l, a_l the MACs layer l's filters carry (its conv, its bypass, the next
  conv's inputs) over T. The squared term then shrinks the gap g = MACs/T − 1 like a spring: per
  step by ≈ 2λ·η/(1 − β)·Σ_l a_l² of itself (η the thresholds' lr at that step, β the recipe's
  momentum). ResNet-20: Σ a_l² = 0.49 at −50 % (0.75 at −59.7 %; ResNet-56 0.16 / 0.25); the
  ``cpu`` tier's E_p is 4 epochs of 39 steps, the first 2 at 0.1·η (warm-up). At the first
  default η = 0.002 the gap fell from 1.10 to ≈ 0.25 by E_p: the thresholds stopped at −38 %
  (−58 % at −59.7 %; seeds 0–2) and the projection did the rest. A replay of the thresholds
  under the constraint alone gives the same −37 % / −58 %, so the task loss's pull on t_l is
  minor: the thresholds' lr, not the constraint's balance with the task, was short. At 0.02 the
  replay ends at −49.7 % / −60.1 % (ResNet-56: −50.9 % / −59.3 %); the thresholds oscillate
  slightly (momentum) and the squared term pulls them back either way.
* ``reduction_per_epoch`` in the notes: the hard (``count_macs`` of the plan) and soft (Σσ
  widths) reduction at the start of each pruning epoch, before any projection.

Defaults (ours, on ResNet-20 at −50 %, smoke data, 4 of 6 epochs pruning): t_l from 0.5 never
reached the scores (soft constraint: nothing pruned, the projection did all of it); from 0.9 with
``hinge`` the thresholds overshot past every score (−95 %) and stayed, since nothing pulls back
below the target; ``squared`` from 0.9, λ = 1, lr 0.002 reached −53.5 % on its own (projection
offset −0.0015). At λ = 5, lr 0.05 a MACs-only proxy collapsed every layer to one filter in 2
steps.
* Bypass (``bypass``): ``conv1x1`` (default) | ``dwconv3x3`` | ``none`` beside every pruned
  k×k conv with k > 1 (the groups' root convs), ``prunebench.surgery.bypass``; the bypass's outputs are
  pruned with the conv's filters.
* Projection (``project``): when the hard masks at the end of the pruning phase miss the target by
  more than 1 % absolute, one global offset δ is added to every t_l, found by bisection (smallest δ
  whose reduction reaches the target); ``notes()`` records whether it was used and δ.

* ``warmup_epochs`` (ours, default 2): the from-scratch run starts at the recipe's
  ``warmup_factor`` (0.1) × lr, thresholds included. Without it the masks that start cutting in
  the first epochs at lr 0.1 left the network near chance for epochs (ResNet-20, 2,000 training
  images, seed 1: val top-1 ≈ 0.10 through the pruning epochs; test 47.0 % against 56.3 % with 1
  warm-up epoch and 61.9 % with 2, dense 61 %) — the same fragility as ResNet-56 at lr 0.1.

Budget: one from-scratch run with the baseline recipe and one schedule for ``ctx.baseline_epochs``
epochs (the same total as the dense baseline, which is therefore the scratch control the Δ column
compares with); thresholds learn during the first ``prune_epochs`` (E_p; default the budget's
``compress_epochs``), then the masks freeze and training goes on at the pruned width. The pipeline
slims the frozen plan (masked ≡ slimmed); ``finetune: false`` by default (nothing is left to
finetune: the budget's epochs are spent).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from prunebench.errors import ConfigError
from prunebench.method import CompressContext, Method, TrainingHooks
from prunebench.options import option
from prunebench.plan import Plan, PlanEntry
from prunebench.surgery.bypass import KINDS, bypass_spatial, bypasses
from prunebench.surgery.soft_macs import SoftMacs

IMPORTANCE = ("bn", "l2")
SCORE_NORMS = ("rank", "max")
DEFAULT_INIT = {"rank": 0.0, "max": 0.9}  # nothing pruned at the start, live gradient
CONSTRAINTS = ("hinge", "squared")
TOLERANCE = 0.01  # |achieved − target| beyond which the projection runs


def masked_batch_norm(
    bn: nn.modules.batchnorm._BatchNorm, mask: Callable[[], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """``bn(x) · mask()`` per channel, computed as BN with affine ``(γ·m, β·m)``: torch's
    ``_BatchNorm.forward`` (running statistics, momentum, ``num_batches_tracked``) with the
    masked affine."""
    m = mask().to(bn.weight)
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep_stats = not bn.training or bn.track_running_stats
    return nn.functional.batch_norm(
        x,
        bn.running_mean if keep_stats else None,
        bn.running_var if keep_stats else None,
        bn.weight * m,
        bn.bias * m,
        batch_stats,
        factor,
        bn.eps,
    )


def group_batch_norms(ctx: CompressContext) -> dict[str, str]:
    """Group root → the last BatchNorm among its out-members (the one LAPP masks), for the groups
    that have one."""
    out = {}
    for root, g in ctx.structure.groups.items():
        bns = [
            n
            for n in g.out_members
            if isinstance(ctx.model.get_submodule(n), nn.modules.batchnorm._BatchNorm)
        ]
        if bns:
            out[root] = bns[-1]
    return out


class LAPPHooks(TrainingHooks):
    """Thresholds, straight-through masks on the BN outputs, the MACs term, and the freeze."""

    keep_best_epoch = False  # the masks describe the last weights

    def __init__(self, method: LAPP, ctx: CompressContext, prune_epochs: int) -> None:
        self.m, self.ctx, self.prune_epochs = method, ctx, prune_epochs
        self.bn = group_batch_norms(ctx)  # groups without one (a squeeze-excite's) stay whole
        if not self.bn:
            raise ConfigError("LAPP masks a BN output; no prunable group has a BatchNorm")
        self.roots = list(self.bn)
        t0 = (
            DEFAULT_INIT[method.score_norm]
            if method.threshold_init is None
            else method.threshold_init
        )
        self.t = {r: nn.Parameter(torch.tensor(float(t0))) for r in self.roots}
        self.soft_macs = SoftMacs(ctx.mac_model)
        plain = ctx.mac_model.dense_total - sum(
            v
            for k, v in ctx.mac_model.per_module.items()
            if any(k.startswith(f"{b}.bypass") for b in bypasses(ctx.model))
        )
        self.dense = plain  # dense MACs without bypasses: the record's reference
        self.target_macs = (1.0 - ctx.macs_reduction) * plain
        self.frozen: dict[str, torch.Tensor] | None = None
        self.handles: list[Callable[[], object]] = []  # what undoes each masking
        self.masked: dict[str, nn.Module] = {}  # the BN module each group's mask is on
        self.notes: dict = {}
        self.trace: list[dict] = []  # per pruning epoch: hard and soft reduction at its start

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.t.values()), "lr": self.m.threshold_lr, "weight_decay": 0.0}]

    # -- scores and masks -------------------------------------------------------------------
    def scores(self, model: nn.Module, root: str) -> torch.Tensor:
        if self.m.importance == "bn":
            s = model.get_submodule(self.bn[root]).weight.detach().abs()
        else:
            s = model.get_submodule(root).weight.detach().flatten(1).norm(dim=1)
        if self.m.score_norm == "rank":
            return (s.argsort(stable=True).argsort() + 1).to(s.dtype) / len(s)
        return s / s.max().clamp_min(1e-12)

    @staticmethod
    def hard(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """1[s > t], the best filter always kept."""
        keep = s > t
        keep[s.argmax()] = True
        return keep

    def masks(self, model: nn.Module, root: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(straight-through mask, soft mask σ((s − t)/τ)) of one group."""
        s, t = self.scores(model, root), self.t[root]
        soft = torch.sigmoid((s - t) / self.m.tau)
        hard = self.hard(s, t.detach()).to(soft.dtype)
        return hard + soft - soft.detach(), soft

    def widths(self, model: nn.Module, soft: bool = False) -> dict[str, torch.Tensor]:
        """Every group's width for ``SoftMacs``: a masked group's straight-through mask sum (or
        its soft Σσ), a group left whole (no BatchNorm: a squeeze-excite's) at its full size."""
        widths = {r: torch.tensor(float(n)) for r, n in self.soft_macs.sizes.items()}
        for root in self.roots:
            widths[root] = self.masks(model, root)[int(soft)].sum()
        return widths

    def macs(self, model: nn.Module) -> torch.Tensor:
        """MACs of the current masks: hard widths forward, soft widths' gradient backward."""
        return self.soft_macs(self.widths(model))

    # -- training hooks ---------------------------------------------------------------------
    def mask(self, model: nn.Module, root: str) -> torch.Tensor:
        """The mask one forward applies: the frozen one after the freeze, else straight-through."""
        return self.frozen[root] if self.frozen is not None else self.masks(model, root)[0]

    def install(self, model: nn.Module) -> None:
        """Mask each group's BN output. A plain BatchNorm gets the mask folded into its affine,
        ``BN(x; γ·m, β·m) = m · BN(x; γ, β)``: C multiplies instead of N·C·H·W, the same output and
        gradients (straight-through included). Any other BN (SyncBatchNorm, a subclass) keeps a
        forward hook that multiplies its output."""
        for root in self.roots:
            self._mask_one(model, root)

    def _mask_one(self, model: nn.Module, root: str) -> None:
        bn = model.get_submodule(self.bn[root])
        mask = functools.partial(self.mask, model, root)
        self.masked[root] = bn
        if type(bn) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d) and bn.affine:
            bn.forward = functools.partial(masked_batch_norm, bn, mask)
            self.handles.append(lambda bn=bn: vars(bn).pop("forward", None))  # the class's again
            return

        def mask_output(module, inputs, output):
            m = mask().to(output)
            return output * m.view(1, -1, *[1] * (output.dim() - 2))

        self.handles.append(bn.register_forward_hook(mask_output).remove)

    def batch_start(self, model: nn.Module, step: int) -> None:
        """Mask again a BN replaced since :meth:`install`: Lightning's ``sync_batchnorm`` turns
        every BN into a new SyncBatchNorm when DDP starts, which would otherwise run unmasked."""
        for root in self.roots:
            if model.get_submodule(self.bn[root]) is not self.masked.get(root):
                self._mask_one(model, root)

    def remove(self) -> None:
        for undo in self.handles:
            undo()
        self.handles, self.masked = [], {}

    @torch.no_grad()
    def soft_reduction(self, model: nn.Module) -> float:
        """1 − MACs(Σσ)/dense: the reduction the constraint's gradient sees (soft widths)."""
        return 1.0 - float(self.soft_macs(self.widths(model, soft=True))) / self.dense

    def epoch_start(self, model: nn.Module, epoch: int) -> None:
        if self.frozen is None:  # the thresholds' own progress, before any projection
            hard = round(self.reduction(self.plan_at(model)), 4)
            soft = round(self.soft_reduction(model), 4)
            self.trace.append({"epoch": epoch, "hard": hard, "soft": soft})
            print(
                f"lapp: epoch {epoch} thresholds' MACs reduction hard {hard} soft {soft}",
                flush=True,
            )
        if epoch >= self.prune_epochs and self.frozen is None:
            self.freeze(model)

    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor | None:
        if self.frozen is not None:
            return None
        gap = self.macs(model) / self.target_macs - 1.0
        if self.m.constraint == "hinge":
            gap = gap.clamp_min(0.0)
        return (self.m.lam * gap**2).float()

    # -- the freeze and the plan --------------------------------------------------------------
    def plan_at(self, model: nn.Module, offset: float = 0.0) -> Plan:
        entries = {}
        for root in self.roots:
            keep = self.hard(self.scores(model, root), self.t[root].detach() + offset)
            entries[root] = PlanEntry(
                "filter", len(keep), [int(i) for i in keep.nonzero().flatten()]
            )
        return Plan(entries)

    def reduction(self, plan: Plan) -> float:
        return 1.0 - self.ctx.mac_model.plan_macs(plan) / self.dense

    @torch.no_grad()
    def freeze(self, model: nn.Module) -> Plan:
        """Fix the masks at the current thresholds (projected onto the target if they miss)."""
        target = self.ctx.macs_reduction
        plan, offset = self.plan_at(model), 0.0
        before = self.reduction(plan)
        projected = self.m.project and abs(before - target) > TOLERANCE
        if projected:
            ts = torch.stack([t.detach() for t in self.t.values()])
            lo, hi = -1.0 - float(ts.max()), 1.0 - float(ts.min())  # all kept … one kept
            if self.reduction(self.plan_at(model, hi)) < target:
                raise ConfigError(
                    f"target.macs_reduction={target} is beyond one filter per layer "
                    f"(with bypass={self.m.bypass!r})"
                )
            for _ in range(50):  # smallest offset whose reduction reaches the target
                mid = (lo + hi) / 2
                if self.reduction(self.plan_at(model, mid)) >= target:
                    hi = mid
                else:
                    lo = mid
            offset, plan = hi, self.plan_at(model, hi)
        self.frozen = {
            r: torch.zeros(e.size).index_fill_(0, torch.tensor(e.keep), 1.0)
            for r, e in plan.entries.items()
        }
        self.plan = plan
        self.notes = {
            "prune_epochs": self.prune_epochs,
            "reduction_before_projection": round(before, 6),
            "projected": bool(projected),
            "projection_offset": round(offset, 6),
            "achieved_reduction": round(self.reduction(plan), 6),
            "thresholds": {r: round(float(t), 6) for r, t in self.t.items()},
            "kept_fraction": {r: round(len(e.keep) / e.size, 4) for r, e in plan.entries.items()},
            "reduction_per_epoch": self.trace,
        }
        return plan


@dataclass
class LAPP(Method):
    importance: str = option("bn", choices=IMPORTANCE)
    score_norm: str = option("rank", choices=SCORE_NORMS)
    tau: float = option(0.1, within="(0, inf)")
    lam: float = option(1.0, within="[0, inf)")
    constraint: str = option("squared", choices=CONSTRAINTS)
    threshold_init: float | None = option(None)
    threshold_lr: float = option(0.02, within="[0, inf)")
    prune_epochs: int | None = option(None, within="[0, inf)")
    warmup_epochs: float = option(2.0, within="[0, inf)")
    bypass: str = option("conv1x1", choices=KINDS)
    project: bool = option(True)
    finetune: bool = option(False)
    _notes: dict = field(default_factory=dict, repr=False)

    start = "scratch"

    def prepare(self, model: nn.Module, prunable: list[str]) -> list[str]:
        """Bypass every pruned k×k conv, k > 1 (beside a 1×1 conv a 1×1 branch adds nothing)."""
        return bypass_spatial(model, prunable, self.bypass)

    def refusal(self, ctx: CompressContext) -> str | None:
        if not group_batch_norms(ctx):
            return (
                "LAPP's importance and mask are the BatchNorm after each pruned layer; no "
                "prunable group of this model has one (LayerNorm or no norm)"
            )
        return None

    def hooks(self, ctx: CompressContext) -> LAPPHooks:
        total = max(ctx.baseline_epochs, ctx.compress_epochs)
        e_p = ctx.compress_epochs if self.prune_epochs is None else self.prune_epochs
        return LAPPHooks(self, ctx, min(e_p, total))

    def compress(self, ctx: CompressContext) -> Plan:
        hooks = self.hooks(ctx)
        hooks.install(ctx.model)
        total = max(ctx.baseline_epochs, ctx.compress_epochs)
        try:
            warm = {"warmup_epochs": self.warmup_epochs} if self.warmup_epochs > 0 else {}
            ctx.train(total, hooks, "baseline", **warm)
            plan = hooks.plan if hooks.frozen is not None else hooks.freeze(ctx.model)
        finally:
            hooks.remove()
        self._notes = {**hooks.notes, "total_epochs": total}
        return plan

    def notes(self) -> dict:
        return dict(self._notes)
