"""ImageNet classification with torchvision's ResNet-18 / ResNet-50 (v1.5), AlexNet and VGG-16,
top-1 and top-5.

The model is exactly torchvision's (built with ``weights=None``: nothing is ever downloaded), so
MACs, params and pretrained state dicts are the ones the papers report against. ``data=disk``
reads the ImageFolder layout; ``data=embedded`` is a generated stand-in that is **not
ImageNet**: 20 classes of shapes (10 shapes × small/large) at ``embedded.size`` px (64 by
default), fed to the same 1000-way model (the stand-in uses outputs 0–19), so that the
architecture, and every MACs figure, stays ImageNet's. AlexNet takes no less than 63 px and
VGG-16 no less than 32 px (torchvision's ``min_size``): a smaller stand-in or input is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics
import torchvision
from torch import nn

from prunebench.errors import ConfigError
from prunebench.task import Splits, Task
from tasks.classification.data import ImageTensorDataset
from tasks.classification.imagefolder import imagefolder_splits
from tasks.classification.task import embedded_splits

ARCHS = {
    # arch → torchvision builder, the IMAGENET1K_V1 file name torchvision caches it under
    "resnet18": (torchvision.models.resnet18, "resnet18-f37072fd.pth"),
    "resnet50": (torchvision.models.resnet50, "resnet50-0676ba61.pth"),
    "alexnet": (torchvision.models.alexnet, "alexnet-owt-7be5be79.pth"),
    "vgg16": (torchvision.models.vgg16, "vgg16-397923af.pth"),
}
# Plain conv chains (``features``) then a three-layer classifier: the first conv and the
# 1000-way head are protected.
PLAIN = {"alexnet": ("features.0", "classifier.6"), "vgg16": ("features.0", "classifier.6")}


class ImageNetClassification(Task):
    """A torchvision classifier on ImageNet (or its embedded stand-in).

    Args:
        name: config name.
        arch: ``resnet18``, ``resnet50``, ``alexnet`` or ``vgg16``.
        recipe: stage → optimiser recipe (``prunebench.task.OptimSpec``).
        num_classes: 1000.
        input_size: the stated input (224) for MACs, latency and the disk transforms.
        pretrained: a local torchvision state-dict file, ``torch_home`` to take
            ``$TORCH_HOME/hub/checkpoints/<torchvision's file name>``, or None (train).
        embedded: the stand-in's ``size`` (px) and ``scale_bands`` (classes = 10 × bands).
        zero_init_residual: start each residual block's last BatchNorm scale at 0 (Goyal et al.
            2017, torchvision's ``zero_init_residual``), so every block begins as the identity;
            ResNets only. The ResNet-50 config sets it for its cpu tier alone.
        paper / cpu / smoke: the tiers' task-specific numbers (read by ``conf/budget``).
    """

    metric = "top1"
    higher_is_better = True

    def __init__(
        self,
        name: str,
        arch: str,
        recipe: dict,
        num_classes: int = 1000,
        input_size: int = 224,
        pretrained: str | None = None,
        embedded: dict | None = None,
        zero_init_residual: bool = False,
        paper: dict | None = None,
        cpu: dict | None = None,
        smoke: dict | None = None,
    ) -> None:
        super().__init__(name, recipe, paper)
        if arch not in ARCHS:
            raise ConfigError(f"task.arch={arch!r}; choices: {sorted(ARCHS)}")
        if zero_init_residual and arch in PLAIN:
            raise ConfigError(
                f"task.zero_init_residual=true with task.arch={arch!r}: it has no residual "
                f"blocks; choices: {sorted(set(ARCHS) - set(PLAIN))}"
            )
        self.zero_init_residual = bool(zero_init_residual)
        self.arch, self.num_classes, self.input_size = arch, num_classes, input_size
        self.pretrained = pretrained
        self.embedded = {"size": 64, "scale_bands": 2, **(embedded or {})}
        self.cpu, self.smoke = dict(cpu or {}), dict(smoke or {})
        smallest = min_size_px(arch)
        for key, px in (("embedded.size", self.embedded["size"]), ("input_size", input_size)):
            if int(px) < smallest:
                raise ConfigError(
                    f"task.{key}={px}: torchvision's {arch} takes no less than {smallest} px"
                )

    def build_model(self) -> nn.Module:
        extra = {"zero_init_residual": True} if self.zero_init_residual else {}
        return ARCHS[self.arch][0](weights=None, num_classes=self.num_classes, **extra)

    def pretrained_path(self) -> Path | None:
        """The state-dict file ``task.pretrained`` names, or None."""
        if not self.pretrained:
            return None
        if self.pretrained == "torch_home":
            return Path(torch.hub.get_dir()) / "checkpoints" / ARCHS[self.arch][1]
        return Path(os.path.expanduser(self.pretrained))

    def load_pretrained(self, model: nn.Module) -> str | None:
        path = self.pretrained_path()
        if path is None:
            return None
        if not path.is_file():
            raise ConfigError(f"task.pretrained: {path} is not a file; give {self.weights_hint()}")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 — wrong architecture, cut or foreign file
            first = str(exc).strip().splitlines()
            raise ConfigError(
                f"task.pretrained: {path} is not {self.weights_what()} with "
                f"{self.num_classes} classes ({first[0] if first else type(exc).__name__} …)"
            ) from None
        return str(path)

    def weights_what(self) -> str:
        """What a ``task.pretrained`` file must be, for the error that refuses another."""
        return f"a torchvision {self.arch} state dict"

    def weights_hint(self) -> str:
        """Where such a file comes from, for the error that names a missing one."""
        return (
            f"a torchvision {self.arch} state dict (e.g. {ARCHS[self.arch][1]}) or put it under "
            "$TORCH_HOME/hub/checkpoints/"
        )

    def disk_transforms(self) -> dict | None:
        """The ``data=disk`` transforms (None: torchvision's reference presets)."""
        return None

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        return torch.randn(batch_size, 3, self.input_size, self.input_size, generator=gen)

    def training_input(self, batch_size: int, source: str) -> torch.Tensor:
        if source != "embedded":
            return self.example_input(batch_size)
        px = int(self.embedded["size"])  # the stand-in trains at its own size, not input_size
        return torch.randn(batch_size, 3, px, px, generator=torch.Generator().manual_seed(0))

    def prunable_layers(self, model: nn.Module) -> list[str]:
        if self.arch in PLAIN:
            # Every conv's output channels but the protected first conv's; conv5's are read by
            # the first classifier layer through adaptive-avgpool → flatten (H·W columns each,
            # prunebench.surgery.structure). The hidden classifier layers stay whole.
            first = PLAIN[self.arch][0]
            return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n != first]
        # Channels inside blocks only (BasicBlock conv1; Bottleneck conv1 and conv2): the
        # residual stream is shared by every block of a stage.
        inner = ("conv1",) if self.arch == "resnet18" else ("conv1", "conv2")
        return [
            n
            for n, _ in model.named_modules()
            if n.startswith("layer") and n.rsplit(".", 1)[-1] in inner
        ]

    def protected_layers(self, model: nn.Module) -> list[str]:
        return list(PLAIN.get(self.arch, ("conv1", "fc")))

    def loss(self, output: torch.Tensor, batch) -> torch.Tensor:
        return F.cross_entropy(output, batch[1])

    def metrics(self) -> dict[str, torchmetrics.Metric]:
        acc = lambda k: torchmetrics.Accuracy(  # noqa: E731
            task="multiclass", num_classes=self.num_classes, top_k=k
        )
        return {"top1": acc(1), "top5": acc(5)}

    def embedded_splits(self, data: dict, sizes: dict) -> Splits:
        size, bands = int(self.embedded["size"]), int(self.embedded["scale_bands"])
        train, val, test, mean, std = embedded_splits(data, sizes, size, bands)
        ds = lambda a, aug: ImageTensorDataset(  # noqa: E731
            a[0], np.asarray(a[1]), mean, std, augment=aug, pad=size // 8
        )
        return ds(train, True), ds(val, False), ds(test, False)

    def disk_splits(self, data: dict, sizes: dict) -> Splits:
        return imagefolder_splits(
            data.get("root"),
            sizes,
            self.num_classes,
            int(data.get("val_per_class", 10)),
            self.input_size,
            self.disk_transforms(),
        )


def min_size_px(arch: str) -> int:
    """The smallest input side ``arch`` takes, from torchvision's weights metadata (no download):
    63 px for AlexNet (its three stride-2 pools), 32 for VGG-16 (five), 1 for the ResNets."""
    weights = torchvision.models.get_model_weights(arch)
    return int(max(weights.DEFAULT.meta["min_size"]))
