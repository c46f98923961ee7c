"""CIFAR-10 classification with He et al.'s ResNets, on embedded or on-disk data."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from prunebench.errors import ConfigError
from prunebench.task import Splits, Task
from tasks.classification.cifar_disk import load_cifar10, split_train_val
from tasks.classification.data import ImageTensorDataset, cap
from tasks.classification.embedded import make_shapes
from tasks.classification.resnet_cifar import CifarResNet

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
SHORTCUTS = ("A", "B")
EMBEDDED_FULL = {"train": 45000, "val": 5000, "test": 10000}  # generated when a tier says "all"


class CifarClassification(Task):
    """CIFAR ResNet-(6n+2), top-1 accuracy.

    Args:
        name: config name.
        depth: 20 or 56 (any 6n+2).
        shortcut: ``"A"`` (default, He et al.) or ``"B"``.
        num_classes: 10.
        recipe: stage → optimiser recipe (see ``prunebench.task.OptimSpec``).
        paper / cpu: the tiers' task-specific numbers (read by ``conf/budget``); ``cpu.recipe``
            is the cpu tier's change to the recipe, merged in by ``prunebench.running.tier``.
    """

    metric = "top1"
    higher_is_better = True

    def __init__(
        self,
        name: str,
        depth: int,
        recipe: dict,
        shortcut: str = "A",
        num_classes: int = 10,
        paper: dict | None = None,
        cpu: dict | None = None,
    ) -> None:
        super().__init__(name, recipe, paper)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ConfigError(
                f"task.depth={depth!r}: must be 6n+2 (choices: 20, 32, 44, 56, 110, …)"
            )
        if shortcut not in SHORTCUTS:
            raise ConfigError(f"task.shortcut={shortcut!r}; choices: {', '.join(SHORTCUTS)}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"task.num_classes={num_classes!r}: must be an integer ≥ 2")
        self.cpu = dict(cpu or {})
        self.depth, self.shortcut, self.num_classes = depth, shortcut, num_classes

    def build_model(self, mid_widths: list[int] | None = None) -> nn.Module:
        return CifarResNet(self.depth, self.num_classes, self.shortcut, mid_widths)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.randn(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def prunable_layers(self, model: nn.Module) -> list[str]:
        # Only channels inside blocks: the residual stream is coupled through option-A shortcuts.
        return [
            n for n, _ in model.named_modules() if n.startswith("layer") and n.endswith(".conv1")
        ]

    def protected_layers(self, model: nn.Module) -> list[str]:
        return ["conv1", "fc"]

    def loss(self, output: torch.Tensor, batch) -> torch.Tensor:
        return F.cross_entropy(output, batch[1])

    def metrics(self) -> dict[str, torchmetrics.Metric]:
        return {"top1": torchmetrics.Accuracy(task="multiclass", num_classes=self.num_classes)}

    def embedded_splits(self, data: dict, sizes: dict) -> Splits:
        train, val, test, mean, std = embedded_splits(data, sizes)
        return self._datasets(train, val, test, mean, std)

    def disk_splits(self, data: dict, sizes: dict) -> Splits:
        """CIFAR-10's binary batches under ``data.root``; ``data.val_fraction`` of the training
        set (seed 0) is held out for validation."""
        raw = load_cifar10(data.get("root"))
        train, val = split_train_val(raw["train"], float(data.get("val_fraction", 0.1)), seed=0)
        train, val, test = (
            cap(train, sizes["train"]),
            cap(val, sizes["val"]),
            cap(raw["test"], sizes["test"]),
        )
        return self._datasets(train, val, test, CIFAR10_MEAN, CIFAR10_STD)

    @staticmethod
    def _datasets(train, val, test, mean, std) -> Splits:
        ds = lambda a, aug: ImageTensorDataset(a[0], np.asarray(a[1]), mean, std, augment=aug)  # noqa: E731
        return ds(train, True), ds(val, False), ds(test, False)


def embedded_splits(data: dict, sizes: dict, size: int = 32, scale_bands: int = 1) -> tuple:
    """The embedded shapes set's train/val/test arrays (seeds ``embedded_seed`` + 0/1/2; a size
    of None generates CIFAR-10's split sizes) and the train split's per-channel mean and std
    (in [0, 1] units)."""
    s = int(data.get("embedded_seed", 0))
    train, val, test = (
        make_shapes(
            sizes[split] if sizes[split] is not None else EMBEDDED_FULL[split],
            seed=s + k,
            size=size,
            scale_bands=scale_bands,
        )
        for k, split in enumerate(("train", "val", "test"))
    )
    pixels = train[0].reshape(len(train[0]), 3, -1)
    mean = tuple((pixels.mean((0, 2)) / 255).tolist())
    std = tuple((pixels.std((0, 2)) / 255).tolist())
    return train, val, test, mean, std
