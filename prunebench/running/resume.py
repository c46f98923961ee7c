"""Resuming a killed stage from Lightning's last checkpoint.

A resumable stage (the baseline's and the finetune's training) saves ``last.ckpt`` — weights,
optimiser, scheduler, loop counters, the best epoch kept so far — at the end of every epoch under
``runs/resume/<key>/<stage>/``, keyed by the point id (the baseline by its hash, as it is shared).
Rerunning the same command rebuilds the model the same way (the slim structure comes from the
deterministic baseline and compress stages), passes ``ckpt_path=`` to ``Trainer.fit`` and goes
on from the next epoch; the batch order and augmentation of epoch k depend on (seed, k) only
(``prunebench.sampling``), so the result equals an uninterrupted run's on the CPU. The folder is
removed when the stage finishes.

``PRUNEBENCH_KILL_AT=<stage>:<epoch>`` makes the process SIGKILL itself as that epoch starts
(after the previous epoch's checkpoint): a test hook for the fault tests.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

KILL_ENV = "PRUNEBENCH_KILL_AT"
LAST = "last.ckpt"


class _KillAt(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class StageCheckpoint:
    """The checkpoint folder of one stage of one run, and the callbacks that fill it."""

    def __init__(self, runs_dir: str | Path, key: str, stage: str) -> None:
        self.stage = stage
        self.dir = Path(runs_dir) / "resume" / key / stage
        self.next_epoch = 0  # where a resumed stage goes on (set by ckpt_path)

    @property
    def ckpt_path(self) -> str | None:
        """The checkpoint to resume from, if a killed run left a readable one (one cut short
        by the kill is dropped: the stage starts again)."""
        path = self.dir / LAST
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)  # our own file
            self.next_epoch = int(blob["epoch"]) + 1
        except Exception as exc:  # noqa: BLE001 — any unreadable checkpoint is dropped
            print(f"warning: {path} is unreadable ({type(exc).__name__}); starting the stage again")
            self.clear()
            return None
        return str(path)

    def callbacks(self) -> list[pl.Callback]:
        # No monitor and top-1: the newest epoch, always under the same name.
        saver = ModelCheckpoint(
            dirpath=self.dir,
            filename=LAST.removesuffix(".ckpt"),
            save_top_k=1,
            enable_version_counter=False,
        )
        kill = os.environ.get(KILL_ENV, "")
        if kill.partition(":")[0] == self.stage:
            return [_KillAt(int(kill.partition(":")[2])), saver]
        return [saver]

    def clear(self) -> None:
        """Forget the checkpoint once the stage has finished."""
        shutil.rmtree(self.dir, ignore_errors=True)
