"""Resuming a killed stage from Lightning's last checkpoint.

A resumable stage (the baseline's and the finetune's training) saves ``last.ckpt`` — weights,
optimiser, scheduler, loop counters, the best epoch kept so far — at the end of every epoch under
``runs/resume/<key>/<stage>/``, keyed by the point id (the baseline by its hash, as it is shared).
Rerunning the same command rebuilds the model the same way (the slim structure comes from the
deterministic baseline and compress stages), passes ``ckpt_path=`` to ``Trainer.fit`` and goes
on from the next epoch; the batch order and augmentation of epoch k depend on (seed, k) only
(``prunebench.sampling``), so the result equals an uninterrupted run's on the CPU. The folder is
removed when the stage finishes (and ``runs/resume/<key>/`` with it once empty). Beside the
checkpoint, ``elapsed.json`` keeps the stage's training seconds so far, so a resumed stage's
record counts the whole stage's time and says how much of it came after the resume.

``PRUNEBENCH_KILL_AT=<stage>:<epoch>`` makes the process SIGKILL itself as that epoch starts
(after the previous epoch's checkpoint): a test hook for the fault tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from prunebench.reporting.records import write_atomic

KILL_ENV = "PRUNEBENCH_KILL_AT"
LAST = "last.ckpt"
ELAPSED = "elapsed.json"


class _Elapsed(pl.Callback):
    """Writes the stage's training seconds so far (earlier, killed runs included) at the end of
    every epoch, beside the checkpoint saved then."""

    def __init__(self, path: Path, seconds_before: float) -> None:
        self.path, self.seconds_before, self._start = path, seconds_before, time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            seconds = self.seconds_before + time.perf_counter() - self._start
            write_atomic(self.path, json.dumps({"seconds": round(seconds, 3)}))


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
        self.seconds_before = 0.0  # training seconds the killed run(s) spent (set by ckpt_path)

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
            elapsed = self.dir / ELAPSED
            if elapsed.is_file():
                self.seconds_before = float(json.loads(elapsed.read_text())["seconds"])
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
        if self.next_epoch:  # resuming: the folder holds our own checkpoint, as it should
            warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty")
        elapsed = _Elapsed(self.dir / ELAPSED, self.seconds_before)
        kill = os.environ.get(KILL_ENV, "")
        if kill.partition(":")[0] == self.stage:
            return [_KillAt(int(kill.partition(":")[2])), saver, elapsed]
        return [saver, elapsed]

    def clear(self) -> None:
        """Forget the checkpoint once the stage has finished; drop the folders left empty."""
        shutil.rmtree(self.dir, ignore_errors=True)
        for folder in (self.dir.parent, self.dir.parent.parent):  # resume/<key>, resume
            try:
                folder.rmdir()
            except OSError:  # not empty (another stage or point), or already gone
                break
