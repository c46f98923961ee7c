"""The Method protocol: a method decides *what* to keep; the core does everything else.

``Method.compress(ctx)`` is the one entry point, whatever the shape of the algorithm
(docs/architecture.md). The pipeline always calls it on the starting model and then slims, finetunes and
evaluates what it returns; it never asks which shape a method has.

* **One-shot after training** (magnitude, random, CaP): score the units of ``ctx.structure``, call
  ``ctx.solve(scores, allocation)`` and return the plan.
* **Iterative after training** (KCP): loop — plan a step, ``ctx.apply_masks(plan)``,
  ``ctx.train(epochs)`` to finetune briefly — until the target is met, and return the last plan.
* **During training** (SPP, TRP from the baseline; LAPP with ``start = "scratch"``): pass a
  :class:`TrainingHooks` to ``ctx.train(epochs, hooks)``; the one LightningModule calls the hooks
  (extra loss term, before/after the optimiser step) while the core owns the loop. Then return the
  structure the training found.

A method that adds layers before training (LAPP's bypasses) does it in ``Method.prepare``, through
the core's layer replacements (``prunebench.surgery.bypass``), before the structure is traced, so the
added layers are counted, slimmed and saved like any other.

A method never slices tensors, counts MACs or owns a training loop.

A method that cannot apply to a model says so before anything trains: the pipeline traces the
model first and calls :meth:`Method.refusal`, which returns the reason in words (no unit of the
method's kind, a target out of reach, a layer kind the method does not handle); the run then
stops with one line naming the method, the model and that reason.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from prunebench.options import check_options
from prunebench.plan import Plan
from prunebench.surgery.masks import apply_masks
from prunebench.surgery.resolve import resolve
from prunebench.surgery.structure import MacModel, Structure
from prunebench.surgery.target import solve, solve_units


class TrainingHooks:
    """Training-time behaviour a method adds; every hook is a no-op by default.

    Attributes:
        keep_best_epoch: whether the stage ends with the best validation epoch's weights (the
            default) or the last step's — for hooks whose state (e.g. what they pruned) describes
            the last weights, not an earlier epoch's.
    """

    keep_best_epoch: ClassVar[bool] = True

    def param_groups(self) -> list[dict]:
        """Extra optimiser parameter groups (``{"params": [...], "lr": …}``) the hooks own — e.g.
        LAPP's thresholds; the LightningModule registers and optimises them with the model."""
        return []

    def epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Before the first batch of each training epoch (``epoch`` counts from 0)."""

    def batch_start(self, model: nn.Module, step: int) -> None:
        """Before the forward pass of a training batch (e.g. to project weights)."""

    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor | None:
        """A term added to the task loss (e.g. a regulariser or a MACs constraint)."""
        return None

    def before_optimizer_step(self, model: nn.Module, step: int) -> None:
        """After backward, before the update (e.g. to edit gradients)."""

    def momentum_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Parameter name → 0/1 mask (broadcastable to it): right before the update, after
        :meth:`before_optimizer_step`, the core multiplies the optimiser's momentum of that
        parameter by it (SGD's momentum buffer, Adam's first moment); none by default."""
        return {}

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        """After the update (e.g. to project or restore weights)."""


@dataclass
class CompressContext:
    """What a method sees: layers and their coupling, a MACs model, a target and training.

    Attributes:
        model: the starting model (baseline weights, or fresh for ``start = "scratch"``).
        structure: the prunable channel groups.
        mac_model: MACs as a function of group widths.
        macs_reduction: target fraction of dense MACs removed.
        seed: the run's seed (derive every random draw from it).
        compress_epochs: the budget's training epochs for during-training methods.
        baseline_epochs: the budget's baseline epochs (a from-scratch method may train as long
            as the dense baseline did, so the two compare at the same total epochs).
        train: ``train(epochs, hooks, recipe, **overrides)`` trains ``model`` in place under the
            core's loop (``recipe``: the task's ``"finetune"`` optimiser recipe by default, or
            ``"baseline"``; ``overrides``: fields of that :class:`OptimSpec` the method changes).
        calib_loader: ``calib_loader(fraction)`` → a loader over part of the training split.
        evaluate: ``evaluate(model)`` → the task's primary metric on the **validation** split,
            oriented so that higher is better (a lower-is-better metric, e.g. EPE, is negated;
            eval mode, no grad; the model is left as it was). Never the test split.
        evaluate_after: ``evaluate_after(model, changed, prefix_key)`` → what ``evaluate``
            gives, for a model in which only the modules ``changed`` (names) and what runs after
            them differ from what an earlier call with the same hashable ``prefix_key`` saw: the
            part before them is computed once and cached (None: call ``evaluate``).
        device: where a method may run its own no-grad passes (``"cuda"`` when the trainer
            uses a GPU, else ``"cpu"``); ``model`` itself stays on the CPU between stages.
    """

    model: nn.Module
    structure: Structure
    mac_model: MacModel
    macs_reduction: float
    seed: int
    compress_epochs: int
    train: Callable[..., None]
    calib_loader: Callable[[float], DataLoader]
    evaluate: Callable[[nn.Module], float] | None = None
    device: str = "cpu"
    baseline_epochs: int = 0
    round_to: int = 1
    evaluate_after: Callable[..., float] | None = None

    def score_after(self, changed: Sequence[str], prefix_key: Hashable) -> float:
        """``evaluate(model)`` through ``evaluate_after`` when the core offers it."""
        if self.evaluate_after is not None:
            return self.evaluate_after(self.model, changed, prefix_key)
        assert self.evaluate is not None
        return self.evaluate(self.model)

    @classmethod
    def build(
        cls,
        model: nn.Module,
        example_input: torch.Tensor,
        prunable: list[str],
        protected: list[str],
        macs_reduction: float,
        seed: int = 0,
        compress_epochs: int = 0,
        train: Callable[..., None] | None = None,
        calib_loader: Callable[[float], DataLoader] | None = None,
        evaluate: Callable[[nn.Module], float] | None = None,
        device: str = "cpu",
        baseline_epochs: int = 0,
        round_to: int = 1,
        evaluate_after: Callable[..., float] | None = None,
        traced: tuple[Structure, MacModel] | None = None,
    ) -> CompressContext:
        """A context for ``model``: its structure and MAC model traced on ``example_input`` (or
        ``traced``, from an earlier trace of the same architecture); ``train`` defaults to no
        training (unit tests, benchmarks)."""
        if traced is None:
            structure = Structure(model, example_input, prunable, protected)
            traced = structure, MacModel(model, example_input, structure)
        structure, mac_model = traced
        return cls(
            model,
            structure,
            mac_model,
            macs_reduction,
            seed,
            compress_epochs,
            train or (lambda *args, **kwargs: None),
            calib_loader,
            evaluate,
            device,
            baseline_epochs,
            round_to,
            evaluate_after,
        )

    def solve(self, scores: dict[str, torch.Tensor], allocation: str = "global") -> Plan:
        """Plan that prunes the lowest scores to hit the target (see ``prunebench.surgery.target``),
        every group's kept width a multiple of ``round_to`` (``target.round_to``)."""
        return solve(
            scores, self.mac_model, self.macs_reduction, allocation, round_to=self.round_to
        )

    def solve_kernels(
        self,
        scores: dict[str, torch.Tensor],
        macs_reduction: float | None = None,
        allocation: str = "global",
        alive: dict[str, torch.Tensor] | None = None,
    ) -> Plan:
        """Kernel plan pruning the lowest (C_out, C_in) scores to hit ``macs_reduction`` (default:
        the run's target), keeping already-pruned kernels pruned (``alive``)."""
        return self._solve_masked("kernel", scores, macs_reduction, allocation, alive)

    def solve_columns(
        self,
        scores: dict[str, torch.Tensor],
        macs_reduction: float | None = None,
        allocation: str = "uniform",
        alive: dict[str, torch.Tensor] | None = None,
    ) -> Plan:
        """Column plan pruning the lowest (C_in, k…) scores to hit ``macs_reduction`` (default:
        the run's target), keeping already-pruned columns pruned (``alive``)."""
        return self._solve_masked("column", scores, macs_reduction, allocation, alive)

    def _solve_masked(self, kind, scores, macs_reduction, allocation, alive) -> Plan:
        target = self.macs_reduction if macs_reduction is None else macs_reduction
        return solve_units(scores, kind, self.mac_model, target, allocation, alive=alive)

    def kernel_weights(self) -> dict[str, torch.Tensor]:
        """The current (masked) weights of every kernel-prunable conv."""
        return {
            n: self.model.get_submodule(n).weight.detach() for n in self.structure.kernel_layers
        }

    def alive_kernels(self, plan: Plan) -> dict[str, torch.Tensor]:
        """Per kernel-prunable conv, bool (C_out, C_in): kernels ``plan`` leaves computing."""
        alive = resolve(plan, self.structure).alive(self.structure)
        return {n: alive[n] for n in self.structure.kernel_layers}

    def apply_masks(self, plan: Plan) -> None:
        """Mask ``model`` in place so training respects ``plan`` (earlier masks are replaced)."""
        apply_masks(self.model, plan, self.structure)

    def weight(self, root: str) -> torch.Tensor:
        """The weight of a group's root layer (read-only use)."""
        return self.model.get_submodule(root).weight.detach()


class Method:
    """Base class. Subclasses set ``start`` and ``finetune`` and implement :meth:`compress`.

    A method is a dataclass whose fields are its hyper-parameters, each declared with its type
    and its range or choices (``prunebench.options.option``); they are checked here, once, when
    the method is built, so a bad value names its key whatever the method.

    Attributes:
        start: ``"baseline"`` (from the shared dense baseline) or ``"scratch"``.
        finetune: whether the finetune stage runs after compression (False: 0 epochs, whatever
            the budget says; a method may make it a config field, as TRP and CaP do).
        uses_target: whether the plan is solved for ``target.macs_reduction``.
        core_filter_solve: whether the plan is the core's filter solve (:meth:`CompressContext.
            solve`), the one ``target.round_to`` rounds; a method that sets its widths itself
            refuses ``round_to > 1`` rather than ignore it.
    """

    start: ClassVar[str] = "baseline"
    finetune: ClassVar[bool] = True
    uses_target: ClassVar[bool] = (
        True  # False: the method sets its own reduction (record: no target)
    )
    core_filter_solve: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_options(self)

    @property
    def name(self) -> str:
        return type(self).__module__.rsplit(".", 1)[-1]

    def hparams(self) -> dict:
        """Hyper-parameters for the record (the dataclass fields of a method, by default)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def refusal(self, ctx: CompressContext) -> str | None:
        """Why this method cannot apply to ``ctx.model`` at ``ctx.macs_reduction`` (one clause,
        no method or model name: the pipeline adds them), or None. Called before any training on
        a freshly built, prepared model. The default checks the core's filter solve (a channel
        group to prune, a reachable target) for methods that use it, and accepts the others."""
        return filter_refusal(ctx, self.uses_target) if self.core_filter_solve else None

    def prepare(self, model: nn.Module, prunable: list[str]) -> list[str]:
        """Replace layers of the starting model before anything is traced (e.g. LAPP's bypasses,
        ``prunebench.surgery.bypass``) and return the prunable layers' names in the result; no-op by
        default. What it adds is counted in every figure (MACs, params, checkpoint)."""
        return prunable

    def notes(self) -> dict:
        """What the last :meth:`compress` did that the record should keep (not hyper-parameters:
        e.g. how a schedule ended); empty by default."""
        return {}

    def compress(self, ctx: CompressContext) -> Plan:
        raise NotImplementedError


def filter_refusal(ctx: CompressContext, check_target: bool = True) -> str | None:
    """The refusal of a filter method: no prunable channel group, or a target beyond what keeping
    one channel per group reaches."""
    groups = ctx.structure.groups
    if not groups:
        return "the model has no prunable channel group (inner channels of its blocks)"
    one = {r: torch.arange(g.size) == 0 for r, g in groups.items()}
    most = ctx.mac_model.masks_reduction(one, {})
    if check_target and most < ctx.macs_reduction - 1e-9:
        return (
            f"target.macs_reduction={ctx.macs_reduction} is beyond reach: one channel per group "
            f"removes {most:.3f} of the MACs"
        )
    return None


def kernel_refusal(
    ctx: CompressContext, layers: list[str], kind: str, check_target: bool = True
) -> str | None:
    """The refusal of a kernel (``kind="kernel"``) or column (``"column"``) method on ``layers``:
    none of them, or a target beyond what keeping one unit per layer reaches."""
    if not layers:
        return (
            "the model has no ungrouped, unprotected conv whose "
            f"{kind}s could be pruned (depth-wise convs and linear layers have none)"
        )
    masks: dict[str, dict] = {"kernel": {}, "column": {}}
    for name in layers:
        shape = ctx.structure.shapes[name]
        if kind == "column":
            shape = (shape[1], *ctx.structure.kernel_sizes[name])
        one = torch.zeros(shape, dtype=torch.bool)
        one.view(-1)[0] = True
        masks[kind][name] = one
    most = ctx.mac_model.masks_reduction({}, masks["kernel"], masks["column"])
    if check_target and most < ctx.macs_reduction - 1e-9:
        return (
            f"target.macs_reduction={ctx.macs_reduction} is beyond reach: one {kind} per conv in "
            f"its {len(layers)} conv(s) removes {most:.3f} of the MACs"
        )
    return None
