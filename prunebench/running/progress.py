"""Plain progress lines for a training stage — epoch, loss, validation metric, elapsed, ETA —
logged through the ``prunebench`` logger, so they reach the console and Hydra's ``run.log``
alike. Under ``nohup``, Slurm or a pipe (stdout not a terminal) Lightning's progress bar is off
and these lines are the progress; on a terminal the bar shows too."""

from __future__ import annotations

import logging
import sys
import time

import pytorch_lightning as pl

log = logging.getLogger("prunebench")


def on_terminal() -> bool:
    """Whether stdout is a terminal (the progress bar is worth drawing)."""
    return sys.stdout.isatty()


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class EpochLines(pl.Callback):
    """One line per finished epoch of ``stage``; ``metric`` is the validation metric's key."""

    def __init__(self, stage: str, metric: str) -> None:
        self.stage, self.metric = stage, metric
        self._start = 0.0
        self._first_epoch = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()
        self._first_epoch = trainer.current_epoch  # > 0 when resumed

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        done = trainer.current_epoch + 1
        total = trainer.max_epochs or done
        elapsed = time.perf_counter() - self._start
        eta = elapsed / max(done - self._first_epoch, 1) * (total - done)
        values = trainer.callback_metrics
        parts = [f"{self.stage} epoch {done}/{total}"]
        val = (self.metric, self.metric.split("/", 1)[-1])  # "finetune/val/top1" → "val/top1"
        for key, label in ((f"{self.stage}/train/loss", "loss"), val):
            if key in values:
                parts.append(f"{label} {float(values[key]):.4f}")
        parts.append(f"elapsed {_clock(elapsed)}, ETA {_clock(eta)}")
        log.info(" · ".join(parts))
