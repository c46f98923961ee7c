"""The dense baseline, cached on disk by a hash of exactly what determines it, so every method
in a sweep starts from the same weights. A cache file that cannot be read is rebuilt (and the
run says so); writes are atomic, so a killed run never leaves half a file behind. Reading and
building hold a file lock, so two processes sharing a cache train a baseline once: the second
waits, then reads what the first wrote."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench.reporting.records import file_lock, write_atomic
from prunebench.running.provenance import environment, git_commit

log = logging.getLogger("prunebench")
CACHE_FORMAT = 1


def baseline_key(cfg: dict[str, Any], with_seed: bool = True) -> str:
    """Hash of the task, the data, the budget's baseline part and (``with_seed``) the seed.

    Without the seed it identifies the baseline *recipe*: the leaderboard averages seeds only
    over records whose recipe hashes agree."""
    data = cfg["data"]
    budget = cfg["budget"]
    ident = {
        "format": CACHE_FORMAT,
        # The task's `paper` and `cpu` blocks only feed the budget, whose training part is hashed
        # below.
        "task": {k: v for k, v in cfg["task"].items() if k not in ("paper", "cpu")},
        "data": {
            **{k: data.get(k) for k in ("source", "root", "embedded_seed", "val_fraction")},
            **({"val_per_class": data["val_per_class"]} if "val_per_class" in data else {}),
            # other augmentation draws: another baseline (absent when false: keys made before it)
            **({"device_resident": True} if data.get("device_resident") else {}),
        },
        "budget": {"baseline_epochs": budget["baseline_epochs"], "data": budget["data"]},
        "trainer_precision": cfg["trainer"].get("precision"),
        "seed": cfg["seed"] if with_seed else None,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_or_train(
    model: nn.Module,
    cache_dir: str | Path,
    key: str,
    train: Callable[[nn.Module], dict[str, float]],
    writer: bool = True,
) -> dict[str, Any]:
    """Load the cached baseline ``key`` into ``model``, or train it with ``train`` and cache it.

    Args:
        model: a freshly built dense model; receives the baseline weights in place.
        train: trains ``model`` in place and returns its metrics (``val/…``, ``test/…``).
        writer: whether this process writes the cache and takes the lock (False on DDP ranks
            other than 0: rank 0 holds the lock while every rank trains together, and writes).

    Returns:
        ``{"hash", "source": "cache"|"trained", "path", "metrics", "trained_by"}``;
        ``trained_by`` is the ``provenance`` the training run stored beside the weights (its
        commit, torch version, threads, processor, time), None for a file written before it was.
    """
    path = Path(cache_dir) / "baselines" / f"{key}.pt"
    if not writer:
        return _load_or_train(model, path, key, train, writer)
    with file_lock(path):
        return _load_or_train(model, path, key, train, writer)


def _load_or_train(model, path: Path, key: str, train, writer: bool) -> dict[str, Any]:
    if path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("format") != CACHE_FORMAT:
                raise ValueError(f"format {blob.get('format')!r}")
            model.load_state_dict(blob["state_dict"])
            return {
                "hash": key,
                "source": "cache",
                "path": str(path),
                "metrics": dict(blob["metrics"]),
                "trained_by": blob.get("provenance"),
            }
        except Exception as exc:  # noqa: BLE001 — any unreadable cache is rebuilt
            log.warning("cached baseline %s is corrupt (%s); rebuilding it", path, exc)
            print(
                f"warning: cached baseline {path} is corrupt ({type(exc).__name__}); rebuilding it"
            )
    metrics = train(model)
    trained_by = provenance()
    if writer:
        buf = io.BytesIO()
        blob = {
            "format": CACHE_FORMAT,
            "state_dict": model.state_dict(),
            "metrics": metrics,
            "provenance": trained_by,
        }
        torch.save(blob, buf)
        write_atomic(path, buf.getvalue())
    return {
        "hash": key,
        "source": "trained",
        "path": str(path),
        "metrics": metrics,
        "trained_by": trained_by,
    }


def provenance() -> dict[str, Any]:
    """Who trained a cached baseline: the code's commit, the environment, the time (UTC)."""
    device = "cuda" if torch.cuda.is_initialized() else "cpu"
    return {
        "git_commit": git_commit(),
        **environment(device),
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
