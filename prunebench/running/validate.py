"""Checks on a composed run config before anything runs: each bad value is one
:class:`ConfigError` naming the key, the value and what is accepted, so a bad sweep point fails
in a second and writes nothing (no record, no cache). Hydra itself refuses unknown keys and
unknown group choices (listing the choices); method hyper-parameters by ``prunebench.options``
when the method is built; the model, data settings and Trainer by ``prunebench.running.preflight``;
task-specific values (data roots, pretrained files) by the task.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch import nn

from prunebench.errors import ConfigError

EPOCH_KEYS = ("baseline_epochs", "finetune_epochs", "compress_epochs")
SIZE_KEYS = ("train", "val", "test")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _need_int(key: str, value: Any, low: int, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if not _is_int(value) or value < low:
        what = "an integer ≥ " + str(low) + (" or null" if none_ok else "")
        raise ConfigError(f"{key}={value!r}: must be {what}")


def validate_config(cfg: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for the first bad core value of ``cfg`` (resolved dict)."""
    _need_int("seed", cfg.get("seed"), 0)
    _need_int("target.round_to", cfg["target"].get("round_to", 1), 1)
    for key in ("force", "overwrite"):
        if not isinstance(cfg.get(key, False), bool):
            raise ConfigError(f"{key}={cfg.get(key)!r}: must be true or false")
    budget = cfg["budget"]
    for key in EPOCH_KEYS:
        _need_int(f"budget.{key}", budget.get(key), 0)
    _need_int("budget.finetune_samples", budget.get("finetune_samples"), 0, none_ok=True)
    for key in SIZE_KEYS:
        _need_int(f"budget.data.{key}", budget["data"].get(key), 1, none_ok=True)
    lat = budget.get("latency") or {}
    _need_int("budget.latency.batch", lat.get("batch"), 0, none_ok=True)
    if lat.get("batch"):
        _need_int("budget.latency.repeats", lat.get("repeats"), 1)
        _need_int("budget.latency.warmup", lat.get("warmup"), 0)
    accepted = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    owned = {"max_epochs", "logger", "callbacks", "enable_checkpointing", "default_root_dir"}
    for key in cfg["trainer"]:
        if key not in accepted or key in owned:
            raise ConfigError(
                f"trainer.{key}: not a pytorch_lightning.Trainer argument the config may set "
                f"({'set by the pipeline' if key in owned else 'unknown'}); "
                f"choices: {', '.join(sorted(accepted - owned))}"
            )
    for key in ("results_dir", "runs_dir"):
        if not isinstance(cfg["paths"].get(key), str) or not cfg["paths"][key]:
            raise ConfigError(f"paths.{key}={cfg['paths'].get(key)!r}: must be a folder path")


def check_writable(folder: Path, key: str) -> None:
    """Create ``folder`` if needed and check that this process may write there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot create {folder} ({exc.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {folder} is not writable")


def weights_sha256(model: nn.Module, plan: dict[str, Any]) -> str:
    """A checksum of the model's state (weights and buffers, in key order) and its plan."""
    h = hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode())
    for key, tensor in model.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
