"""The one LightningModule: a task's model, loss and metrics, plus a method's training hooks."""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
from torch import nn

from prunebench.errors import ConfigError, TrainingDiverged
from prunebench.method import TrainingHooks
from prunebench.running.milestones import milestone_epochs
from prunebench.sampling import epoch_seed
from prunebench.task import OptimSpec, Task


def fp32(x: torch.Tensor | tuple | list) -> torch.autocast:
    """A context that turns autocast (Lightning's mixed precision) off on ``x``'s device."""
    while isinstance(x, (tuple, list)):
        x = x[0]
    return torch.autocast(device_type=x.device.type, enabled=False)


class PruneModule(pl.LightningModule):
    """Trains, validates and tests ``model`` for ``task``; metrics are logged as
    ``<stage>/<split>/<metric>`` during training and ``<split>/<metric>`` for the final test.

    Args:
        model: the network (trained in place).
        task: loss and metrics.
        optim: this stage's optimiser recipe.
        stage: ``baseline``, ``compress`` or ``finetune`` — a prefix for logged curves.
        hooks: a method's training-time hooks (None: plain training).
        seed: reseeds torch's global generator (data augmentation) at every epoch from (seed,
            epoch, rank), so a run resumed at epoch k augments as an uninterrupted one does;
            None leaves it alone.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        optim: OptimSpec,
        stage: str,
        hooks: TrainingHooks | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.model, self.task, self.optim, self.stage = model, task, optim, stage
        self.seed = seed
        self.hooks = hooks or TrainingHooks()
        self.hook_groups = self.hooks.param_groups()
        # registered, so they move with the module (same Parameter objects as the hooks hold)
        self.hook_params = nn.ParameterList([p for g in self.hook_groups for p in g["params"]])
        self.val_metrics = nn.ModuleDict(task.metrics())
        self.test_metrics = nn.ModuleDict(task.metrics())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        if self.seed is not None:
            torch.manual_seed(epoch_seed(self.seed, self.current_epoch, self.global_rank))
        self.hooks.epoch_start(self.model, self.current_epoch)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self.hooks.batch_start(self.model, self.global_step)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, _ = self.task.split_batch(batch)
        loss = self.task.loss(self.model(x), batch)
        with fp32(x):  # a method's penalty (ranks, MACs, norms) in full precision
            extra = self.hooks.extra_loss(self.model, self.global_step)
        if extra is not None:
            self.log(f"{self.stage}/train/extra_loss", extra)
            loss = loss + extra
        if not torch.isfinite(loss.detach()):
            raise TrainingDiverged(self.stage, self.current_epoch, self.global_step, loss.item())
        self.log(f"{self.stage}/train/loss", loss, prog_bar=True)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        self.hooks.before_optimizer_step(self.model, self.global_step)
        clear_momentum(optimizer, self.model, self.hooks.momentum_masks(self.model))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.hooks.after_optimizer_step(self.model, self.global_step)

    def _eval_step(self, batch, metrics: nn.ModuleDict) -> None:
        x, y = self.task.split_batch(batch)
        with fp32(x):  # evaluation metrics are fp32 whatever precision trains
            out = self.model(x)
        for m in metrics.values():
            m.update(out, y)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        for k, m in self.val_metrics.items():
            self.log(f"{self.stage}/val/{k}", m.compute(), prog_bar=k == self.task.metric)
            m.reset()

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        for k, m in self.test_metrics.items():
            self.log(f"test/{k}", m.compute())
            m.reset()

    def configure_optimizers(self):
        o = self.optim
        groups = [*lr_groups(self.model, o.lr, o.lr_mult), *self.hook_groups]
        opt = make_optimizer(groups, o)
        epochs = max(1, self.trainer.max_epochs or 1)
        milestones = milestone_epochs(o.milestones, epochs)
        if o.warmup_epochs <= 0 and o.schedule == "step":
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=o.gamma)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = max(1, total_steps // epochs)
        warmup = round(o.warmup_epochs * steps_per_epoch)
        if o.schedule == "poly":
            factor = warmup_then_poly(warmup, o.warmup_factor, total_steps, o.power, o.warmup_shape)
        else:
            factor = warmup_then_steps(
                warmup,
                o.warmup_factor,
                [m * steps_per_epoch for m in milestones],
                o.gamma,
                o.warmup_shape,
            )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


OPTIMIZERS = ("sgd", "adam")
MOMENTUM_STATE = ("momentum_buffer", "exp_avg")  # SGD's momentum, Adam's first moment


def clear_momentum(
    optimizer: torch.optim.Optimizer, model: nn.Module, masks: dict[str, torch.Tensor]
) -> None:
    """Multiply the momentum of each named parameter of ``model`` by its 0/1 mask (where the
    optimiser holds one yet), so masked entries start the update with no history."""
    for name, mask in masks.items():
        state = optimizer.state.get(model.get_parameter(name), {})
        for key in MOMENTUM_STATE:
            if isinstance(state.get(key), torch.Tensor):
                state[key].mul_(mask.to(state[key].dtype))


def make_optimizer(groups: list[dict], o: OptimSpec) -> torch.optim.Optimizer:
    """The optimiser ``o`` names, over ``groups`` (a group's own keys override ``o``'s)."""
    if o.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov
        )
    if o.optimizer == "adam":
        return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    raise ConfigError(f"recipe optimizer={o.optimizer!r}; choices: {OPTIMIZERS}")


def lr_groups(model: nn.Module, lr: float, lr_mult: dict[str, float] | None) -> list[dict]:
    """The model's trainable parameters as optimiser groups: one per ``lr_mult`` prefix that
    matches a parameter name (lr × its multiplier; the first matching prefix wins), then the
    rest at ``lr``. A prefix that matches nothing is an error (a typo would silently do nothing)."""
    mult = dict(lr_mult or {})
    buckets: dict[str | None, list] = {p: [] for p in mult}
    buckets[None] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            prefix = next((k for k in mult if name == k or name.startswith(k + ".")), None)
            buckets[prefix].append(p)
    empty = [k for k in mult if not buckets[k]]
    if empty:
        raise ConfigError(f"recipe lr_mult prefixes {empty} name no parameters of the model")
    groups = [{"params": buckets[k], "lr": lr * mult[k]} for k in mult]
    return [*groups, {"params": buckets[None], "lr": lr}] if buckets[None] else groups


def warmup_multiplier(
    step: int, warmup_steps: int, warmup_factor: float, shape: str = "constant"
) -> float:
    """The lr multiplier at ``step`` (< ``warmup_steps``) of a warm-up: ``constant`` holds
    ``warmup_factor`` (He et al.); ``linear`` goes from ``warmup_factor`` at step 0 up by an
    equal amount each step, reaching 1 at ``warmup_steps`` (Goyal et al.)."""
    if shape == "linear":
        return warmup_factor + (1.0 - warmup_factor) * step / warmup_steps
    return warmup_factor


def warmup_then_poly(
    warmup_steps: int,
    warmup_factor: float,
    total_steps: int,
    power: float,
    shape: str = "constant",
):
    """The lr multiplier at each optimiser step: the warm-up (``warmup_multiplier``), then DeepLab's poly
    decay ``(1 − step / total_steps) ** power`` (Chen et al., 2017)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_multiplier(step, warmup_steps, warmup_factor, shape)
        return max(0.0, 1.0 - step / total_steps) ** power

    return factor


def warmup_then_steps(
    warmup_steps: int,
    warmup_factor: float,
    milestone_steps: list[int],
    gamma: float,
    shape: str = "constant",
):
    """The lr multiplier at each optimiser step: the warm-up (``warmup_multiplier``) for the first
    ``warmup_steps`` steps, then ``gamma`` per milestone passed."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_multiplier(step, warmup_steps, warmup_factor, shape)
        return gamma ** sum(step >= m for m in milestone_steps)

    return factor


class KeepBest(pl.Callback):
    """Keep, in memory, the model weights of the best validation epoch (checkpoint selection on
    the validation split only) and restore them when training ends."""

    def __init__(self, key: str, higher_is_better: bool) -> None:
        self.key, self.sign = key, 1.0 if higher_is_better else -1.0
        self.best: float | None = None
        self.state: dict | None = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: PruneModule) -> None:
        value = trainer.callback_metrics.get(self.key)
        if value is None or trainer.sanity_checking:
            return
        value = float(value)
        if self.best is None or self.sign * value > self.sign * self.best:
            self.best = value
            self.state = copy.deepcopy(pl_module.model.state_dict())

    def on_train_end(self, trainer: pl.Trainer, pl_module: PruneModule) -> None:
        if self.state is not None:
            pl_module.model.load_state_dict(self.state)

    # Saved in Lightning's checkpoints, so a resumed stage still ends with the best epoch.
    def state_dict(self) -> dict:
        return {"best": self.best, "state": self.state}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.state = state_dict["best"], state_dict["state"]
