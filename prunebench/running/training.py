"""Training and evaluation under the core's one LightningModule, for every stage that trains.

:class:`Training` owns the loop: ``fit`` trains a model in place for a stage (keeping the best
validation epoch, resuming after a kill), ``evaluate`` gives a split's metrics, and
``val_metric``/``val_score`` are the plain no-grad validation pass methods select on. It never
asks which method or task it trains.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from prunebench.data import DataModule
from prunebench.errors import TrainingDiverged
from prunebench.method import TrainingHooks
from prunebench.running import distributed
from prunebench.running.module import KeepBest, PruneModule
from prunebench.running.precision import FP32
from prunebench.running.prefix import PrefixCache
from prunebench.running.progress import EpochLines, on_terminal
from prunebench.running.resume import StageCheckpoint
from prunebench.running.tracking import Tracker
from prunebench.running.usage import TrainUsage
from prunebench.task import Task

RESUMABLE_STAGES = ("baseline", "finetune")  # no method state outside Lightning's checkpoint


class Training:
    """The run's training and evaluation loop.

    Args:
        task: the run's task (model recipe, loss, metrics).
        dm: the run's data module.
        tracker: where Lightning logs (W&B or nothing).
        trainer: the run config's ``trainer`` group (``pl.Trainer`` arguments).
        runs_dir: ``paths.runs_dir`` (resume checkpoints, Lightning's root).
        seed: the run seed.
        usage: stage → training-split samples read (filled by ``fit`` and the calibration loader).
        batch_size: the training loader's batch size (samples per shortened epoch's batch).
    """

    def __init__(
        self,
        task: Task,
        dm: DataModule,
        tracker: Tracker,
        trainer: dict[str, Any],
        runs_dir: str,
        seed: int,
        usage: dict[str, TrainUsage],
        batch_size: int = 1,
    ) -> None:
        self.task, self.dm, self.tracker = task, dm, tracker
        self.trainer_cfg, self.runs_dir, self.seed, self.usage = trainer, runs_dir, seed, usage
        self.batch_size = batch_size
        self.rank_zero = distributed.is_rank_zero()
        self.resumed: dict[str, dict] = {}  # stage → {from_epoch, seconds_before} when resumed
        self._val_batches: list | None = None
        self._prefix: PrefixCache | None = None
        self.val_passes = 0  # validation-split passes the compress stage made (model selection)

    def fit(
        self,
        model: nn.Module,
        stage: str,
        epochs: int,
        recipe: str,
        hooks: TrainingHooks | None = None,
        resume_key: str | None = None,
        overrides: dict | None = None,
        batches_per_epoch: int | None = None,
    ) -> None:
        """Train ``model`` in place for ``epochs``; keep the best validation epoch's weights.

        With ``resume_key`` (a stage in ``RESUMABLE_STAGES``), every epoch ends with a Lightning
        checkpoint under ``runs/resume/<resume_key>/<stage>/`` and a rerun after a kill resumes
        from it (``prunebench.running.resume``). ``batches_per_epoch`` shortens every epoch to
        that many batches (``budget.finetune_samples``); the lr schedule spans the shortened
        epochs."""
        if epochs <= 0:
            return
        if stage in self.usage:
            per_epoch = None if batches_per_epoch is None else batches_per_epoch * self.batch_size
            self.usage[stage].add_passes(epochs, per_epoch)
        pl.seed_everything(self.seed + sum(map(ord, stage)), workers=True, verbose=False)
        spec = self.task.recipe[recipe]
        if overrides:  # a method's own change to the recipe (e.g. LAPP's warm-up)
            spec = dataclasses.replace(spec, **overrides)
        module = PruneModule(model, self.task, spec, stage, hooks, seed=self.seed)
        best = KeepBest(f"{stage}/val/{self.task.metric}", self.task.higher_is_better)
        keep_best = hooks is None or hooks.keep_best_epoch
        saver = None
        if resume_key is not None and hooks is None and stage in RESUMABLE_STAGES:
            saver = StageCheckpoint(self.runs_dir, resume_key, stage)
        ckpt_path = saver.ckpt_path if saver else None
        if ckpt_path:
            print(f"resuming the {stage} stage at epoch {saver.next_epoch} from {ckpt_path}")
            self.resumed[stage] = {
                "from_epoch": saver.next_epoch,
                "seconds_before": saver.seconds_before,
            }
        lines = EpochLines(stage, f"{stage}/val/{self.task.metric}")
        trainer = pl.Trainer(
            max_epochs=epochs,
            logger=self.tracker.lightning_logger(),
            callbacks=([best] if keep_best else [])
            + (saver.callbacks() if saver else [])
            + [lines],
            enable_checkpointing=saver is not None,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=self.runs_dir,
            **({"limit_train_batches": batches_per_epoch} if batches_per_epoch else {}),
            **{"enable_progress_bar": on_terminal(), **self.trainer_cfg},
        )
        trainer.fit(module, datamodule=self.dm, ckpt_path=ckpt_path)
        distributed.broadcast_state(model)
        for name, t in model.state_dict().items():  # a finite loss can still leave NaN weights
            if t.is_floating_point() and not torch.isfinite(t).all():
                step = trainer.global_step
                raise TrainingDiverged(
                    stage, trainer.current_epoch, step, math.nan, f"weight {name}"
                )
        if saver:
            distributed.barrier()
            if self.rank_zero:
                saver.clear()

    def evaluate(self, model: nn.Module, split: str = "test") -> dict[str, float]:
        module = PruneModule(model, self.task, self.task.recipe["baseline"], "eval")
        trainer = pl.Trainer(
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            **{**self.trainer_cfg, "precision": FP32},  # metrics in fp32, whatever trained
        )
        if split == "val":  # PruneModule logs val under the stage prefix
            out = trainer.validate(module, datamodule=self.dm, verbose=False)[0]
            return {f"val/{k.split('/')[-1]}": float(v) for k, v in out.items()}
        out = trainer.test(module, datamodule=self.dm, verbose=False)[0]
        extra = self.task.extra_test_metrics(model, self.device)
        return {k: float(v) for k, v in out.items()} | {f"test/{k}": v for k, v in extra.items()}

    @property
    def device(self) -> str:
        """Where the trainer runs: ``"cuda"`` for a GPU trainer on a machine with one."""
        return trainer_device(self.trainer_cfg)

    @torch.no_grad()
    def val_metric(
        self, model: nn.Module, changed: Sequence[str] = (), prefix_key: Hashable = None
    ) -> float:
        """The primary metric on the validation split: a plain no-grad loop (methods that
        select on it call it many times; no Lightning trainer per call). The model is moved to
        the trainer's device for the pass and back, and left in the mode it was in.

        With ``changed`` (module names), only those modules and what runs after them may
        differ from the model an earlier call with the same ``prefix_key`` saw: what runs
        before them is computed once and cached (``prunebench.running.prefix``)."""
        device = self.device
        if self._val_batches is None:
            self._val_batches = [self.task.split_batch(b) for b in self.dm.val_dataloader()]
        metric = self.task.metrics()[self.task.metric].to(device)
        was_training, home = model.training, next(model.parameters()).device
        model.eval().to(device)
        try:
            if changed:
                if self._prefix is None or self._prefix.model is not model:
                    self._prefix = PrefixCache(model)
                outputs = self._prefix.outputs(self._val_batches, changed, prefix_key, device)
            else:
                outputs = ((model(x.to(device)), y) for x, y in self._val_batches)
            for out, y in outputs:
                metric.update(out, y.to(device))
        finally:
            model.train(was_training).to(home)
        self.val_passes += 1
        return float(metric.compute())

    def val_score(
        self, model: nn.Module, changed: Sequence[str] = (), prefix_key: Hashable = None
    ) -> float:
        """:meth:`val_metric` oriented so that higher is better (a lower-is-better metric such as
        stereo EPE is negated): what ``CompressContext.evaluate`` gives methods."""
        value = self.val_metric(model, changed, prefix_key)
        return value if self.task.higher_is_better else -value


def trainer_device(trainer: dict[str, Any]) -> str:
    """``"cuda"`` for a GPU trainer config on a machine with one, else ``"cpu"``."""
    gpu = trainer.get("accelerator") in ("gpu", "cuda", "auto")
    return "cuda" if gpu and torch.cuda.is_available() else "cpu"
