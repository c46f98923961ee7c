"""Weights & Biases, offline by default: one run per record, its curves, a per-layer table and
the summary. ``logger=none`` turns it off; ``wandb sync <dir>`` uploads an offline run later."""

from __future__ import annotations

import os
from typing import Any


class Tracker:
    """A W&B run (or nothing, when disabled) shared by every stage of one pipeline run."""

    def __init__(self, cfg: dict[str, Any], run_name: str, config: dict[str, Any]) -> None:
        self.enabled = bool(cfg.get("enabled", False))
        self.runs_dir = config.get("paths", {}).get("runs_dir", ".")  # records keep paths under it
        self.run = None
        if not self.enabled:
            return
        import wandb

        mode = cfg.get("mode", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        os.makedirs(cfg["dir"], exist_ok=True)
        self.run = wandb.init(
            project=cfg.get("project", "prunebench"),
            mode=mode,
            dir=cfg["dir"],
            name=run_name,
            config=config,
            group=config.get("task", {}).get("name"),
            job_type=run_name.split("-")[1],
            reinit="finish_previous",
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )

    def lightning_logger(self):
        """A Lightning logger writing to this run (False when disabled)."""
        if self.run is None:
            return False
        from pytorch_lightning.loggers import WandbLogger

        return WandbLogger(experiment=self.run)

    def log_layers(self, rows: list[dict[str, Any]]) -> None:
        """The per-layer table: layer, channels before/after, MACs before/after."""
        if self.run is None or not rows:
            return
        import wandb

        cols = list(rows[0].keys())
        self.run.log(
            {"layers": wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in rows])}
        )

    def finish(self, summary: dict[str, Any]) -> dict[str, Any] | None:
        """Write the summary, close the run and return where it lives (for the record)."""
        if self.run is None:
            return None
        self.run.summary.update(summary)
        info = {
            "id": self.run.id,
            "mode": self.run.settings.mode,
            "dir": os.path.relpath(os.path.dirname(self.run.dir), self.runs_dir),  # under runs_dir
        }
        self.run.finish()
        return info
