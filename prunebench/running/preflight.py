"""Pre-flight: build what a run will need before the baseline trains, so a value that would fail
minutes later (at the finetune stage's Trainer, in the model's constructor, in a data loader)
fails now, as one :class:`ConfigError` naming the key, its value and the choices, with nothing
written. ``validate_config`` checks single values; this builds the objects:

* the task's model and its metrics (e.g. ``task.depth=21``, ``task.num_classes=0``), and the
  pretrained file loaded into it;
* the data module's settings (``data.num_workers``, ``data.pin_memory``, ``data.val_fraction``);
* the Lightning Trainer's arguments (accelerator, devices, strategy) — a Trainer is built and
  dropped;
* the budget: ``budget.baseline_epochs=0`` without a pretrained file would record a random
  initialisation as the trained baseline, so it is refused.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch

from prunebench.errors import ConfigError, PrunebenchError
from prunebench.running.validate import _need_int

if TYPE_CHECKING:
    from prunebench.task import Task

GPU_ACCELERATORS = ("gpu", "cuda")
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning")


def preflight(cfg: dict[str, Any], task: Task) -> None:
    """Raise :class:`ConfigError` for the first part of the run that cannot be built."""
    check_data(cfg["data"])
    check_trainer(cfg["trainer"])
    check_model(cfg["task"], task)
    check_budget(cfg["budget"], task)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def check_data(data: dict[str, Any]) -> None:
    """The data module's settings every task shares."""
    _need_int("data.num_workers", data.get("num_workers", 0), 0)
    for key in ("pin_memory", "device_resident"):
        if not isinstance(data.get(key, False), bool):
            raise ConfigError(f"data.{key}={data[key]!r}: must be true or false")
    if "embedded_seed" in data:
        _need_int("data.embedded_seed", data["embedded_seed"], 0)
    fraction = data.get("val_fraction", 0.1)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise ConfigError(f"data.val_fraction={fraction!r}: must be a number in (0, 1)")


def check_trainer(trainer: dict[str, Any]) -> None:
    """Build (and drop) the Lightning Trainer the stages will build, with the config's
    accelerator, devices and strategy."""
    accelerator = trainer.get("accelerator", "auto")
    if accelerator in GPU_ACCELERATORS and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator!r}: this machine has no CUDA GPU; "
            "choices here: trainer=cpu, trainer=ddp_cpu (or trainer.accelerator=cpu)"
        )
    devices = trainer.get("devices", "auto")
    ok = devices in ("auto", -1) or (isinstance(devices, int) and devices >= 1)
    ok = ok or (isinstance(devices, list) and all(isinstance(d, int) for d in devices) and devices)
    if isinstance(devices, bool) or not ok:
        raise ConfigError(
            f"trainer.devices={devices!r}: must be an integer ≥ 1, -1 (every device), 'auto' "
            "or a list of device indices"
        )
    levels = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    for name in LIGHTNING_LOGGERS:  # "GPU available: …" is printed again when the stage starts
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        pl.Trainer(
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            max_epochs=1,
            **trainer,
        )
    except Exception as exc:  # noqa: BLE001 — whatever Lightning refuses, said in one line
        used = ", ".join(
            f"{k}={trainer[k]!r}" for k in ("accelerator", "devices", "strategy") if k in trainer
        )
        raise ConfigError(f"trainer: Lightning refused {used}: {_first_line(exc)}") from None
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def check_model(task_cfg: dict[str, Any], task: Task) -> None:
    """Build the task's model and metrics, and load its pretrained file if it has one."""
    try:
        model = task.build_model()
        task.metrics()
    except PrunebenchError:
        raise
    except Exception as exc:  # noqa: BLE001 — a constructor's error, named with the task's keys
        keys = ", ".join(f"{k}={v!r}" for k, v in task_cfg.items() if not isinstance(v, dict))
        raise ConfigError(
            f"task {task_cfg.get('name')!r}: its model cannot be built ({_first_line(exc)}); "
            f"task keys: {keys}"
        ) from None
    if task.pretrained_path() is not None:  # a bad file fails now, not after the data
        task.load_pretrained(model)


def check_budget(budget: dict[str, Any], task: Task) -> None:
    """Refuse a baseline that would be recorded as trained without any training."""
    if budget.get("baseline_epochs") == 0 and task.pretrained_path() is None:
        raise ConfigError(
            "budget.baseline_epochs=0: the baseline would be an untrained random initialisation "
            "recorded as trained; choose ≥ 1, or give the task a pretrained file "
            "(task.pretrained=…)"
        )
