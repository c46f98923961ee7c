"""The Task contract: model, data, loss, metrics and which layers may be pruned.

Every task in ``tasks/`` subclasses :class:`Task`; the core calls nothing else of it. Nothing in a
task knows any method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch
import torchmetrics
from torch import nn
from torch.utils.data import Dataset

from prunebench.data import DataModule, SplitData
from prunebench.errors import ConfigError
from prunebench.running.milestones import milestone_fraction

SCHEDULES = ("step", "poly")
WARMUP_SHAPES = ("constant", "linear")
DATA_SOURCES = ("embedded", "disk")  # the run config's data.source
Splits = tuple[Dataset, Dataset, Dataset]  # train, val, test


@dataclass(frozen=True)
class OptimSpec:
    """One stage's optimiser recipe. Milestones are fractions of the stage's epochs (numbers, or
    exact ratios ``"a/b"``: ``prunebench.running.milestones``), so tiers that shrink the epochs keep the
    schedule's shape.

    ``optimizer`` is ``sgd`` (``momentum``, ``nesterov`` apply) or ``adam`` (``betas`` apply);
    ``weight_decay`` is the optimiser's own (L2 added to the gradient) in both.

    ``warmup_epochs`` > 0 warms up for that many epochs (rounded to whole steps) before the
    schedule starts. ``warmup_shape`` ``constant`` trains at ``lr * warmup_factor`` throughout:
    He et al. (2016, §4.2) warm ResNet-110 up at 0.01 for about 400 iterations (~1 epoch) because
    0.1 is "slightly too large to start converging". ``linear`` raises the lr every step from
    ``lr * warmup_factor`` at step 0 towards ``lr`` (Goyal et al., 2017, "gradual warm-up").

    ``schedule``: ``step`` (÷``1/gamma`` at each milestone) or ``poly`` (DeepLab: the lr times
    ``(1 − step/total steps) ** power``, updated every step). ``lr_mult`` maps a module-name
    prefix to an lr multiplier (DeepLab's backbone at 0.1×: ``{encoder: 0.1}``); parameters
    under no prefix train at ``lr``.
    """

    lr: float
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    milestones: tuple[float | str, ...] = (0.5, 0.75)
    gamma: float = 0.1
    batch_size: int = 128
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.1
    warmup_shape: str = "constant"  # "constant" (He et al.) or "linear" (Goyal et al.)
    optimizer: str = "sgd"  # "sgd" (momentum, nesterov) or "adam" (betas; PSMNet's recipe)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "step"
    power: float = 0.9
    lr_mult: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"recipe schedule={self.schedule!r}; choices: {SCHEDULES}")
        for m in self.milestones:
            milestone_fraction(m)
        if self.warmup_shape not in WARMUP_SHAPES:
            raise ConfigError(
                f"recipe warmup_shape={self.warmup_shape!r}; choices: {WARMUP_SHAPES}"
            )


class Task(ABC):
    """Base class of every task.

    Attributes:
        name: the config name (``cifar10_resnet20``).
        metric: the primary metric key without split (``top1``).
        higher_is_better: the metric's direction.
    """

    name: str
    metric: str
    higher_is_better: bool = True

    def __init__(self, name: str, recipe: dict, paper: dict | None = None) -> None:
        self.name = name
        self.paper = dict(paper or {})  # the paper tier's epochs (read by conf/budget/paper.yaml)
        self.recipe = {
            stage: OptimSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
            for stage, spec in recipe.items()
        }

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A fresh dense model."""

    data_module: type[SplitData] = SplitData  # a subclass may change the loaders' details

    def datamodule(self, data: dict, sizes: dict, seed: int) -> DataModule:
        """Train/val/test data from the run's ``data`` config.

        Args:
            data: the ``data`` config: ``source`` (``embedded``: generated in memory, or
                ``disk``: the real dataset under ``root``) and the loaders' options.
            sizes: ``train``/``val``/``test`` caps from the budget (None = all; for embedded
                data, the number generated).
            seed: the run seed (batch order).
        """
        source = data.get("source")
        if source == "embedded":
            splits = self.embedded_splits(data, sizes)
        elif source == "disk":
            splits = self.disk_splits(data, sizes)
        else:
            raise ConfigError(f"data.source={source!r}; choices: {DATA_SOURCES}")
        return self.data_module.from_config(*splits, self.recipe["baseline"].batch_size, seed, data)

    @abstractmethod
    def embedded_splits(self, data: dict, sizes: dict) -> Splits:
        """Train/val/test datasets generated in memory (seeded by ``data.embedded_seed``)."""

    @abstractmethod
    def disk_splits(self, data: dict, sizes: dict) -> Splits:
        """Train/val/test datasets read from ``data.root`` (a clear error if absent)."""

    @abstractmethod
    def loss(self, output: torch.Tensor, batch) -> torch.Tensor:
        """The training loss."""

    @abstractmethod
    def metrics(self) -> dict[str, torchmetrics.Metric]:
        """Metric key (no split) → a fresh metric; the primary one is ``self.metric``."""

    @abstractmethod
    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """An input of the task's stated size, for MAC counting and tracing."""

    def training_input(self, batch_size: int, source: str) -> torch.Tensor:
        """A batch of the size training reads from data ``source`` (``DATA_SOURCES``), for
        timing a training step; the stated size unless a task's embedded data is smaller."""
        return self.example_input(batch_size)

    @abstractmethod
    def prunable_layers(self, model: nn.Module) -> list[str]:
        """Layers whose output channels may be pruned."""

    @abstractmethod
    def protected_layers(self, model: nn.Module) -> list[str]:
        """Layers that must never change (first conv, prediction head)."""

    def pretrained_path(self) -> Path | None:
        """The pretrained-weights file the task is configured with (None: train a baseline)."""
        return None

    def load_pretrained(self, model: nn.Module) -> str | None:
        """Load the task's configured pretrained weights into ``model`` and return where they came
        from, or return None when the task trains its own baseline (the default)."""
        return None

    def extra_test_metrics(self, model: nn.Module, device: str = "cpu") -> dict[str, float]:
        """Metrics on evaluation data outside the test split (e.g. stereo's real motorcycle
        pair), keyed without the split (``motorcycle/epe``); the record adds them under
        ``test/``. None by default."""
        return {}

    def split_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) of a batch."""
        return batch[0], batch[1]
