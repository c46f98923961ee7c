"""Any timm model as an ImageNet classifier (``task=imagenet_timm task.model=<timm name>``).

The model is timm's own, built with ``pretrained=False`` (nothing is ever downloaded);
``task.pretrained`` loads a local state-dict file instead of training a baseline. Its data
config — input size, mean/std, interpolation, crop fraction, as timm's ``pretrained_cfg`` states
them — sets the ``data=disk`` transforms (timm's ``create_transform``) and the stated input for
MACs, latency and tracing; a budget tier may state a smaller input (``<tier>.input_size``,
``conf/task/imagenet_timm.yaml``). ``data=embedded`` is the ImageNet task's generated stand-in
(NOT ImageNet). Recipes, metrics and the data layout are the ImageNet task's.

No layer list is written by hand: the prunable roots are found by tracing
(``prunebench.surgery.structure.find_roots``: the inner channel groups of the blocks, residual streams,
attention heads and grouped convs left whole); the protected layers are timm's ``first_conv``
and ``classifier``.
"""

from __future__ import annotations

import os
from pathlib import Path

import timm
from timm.data import create_transform, resolve_data_config
from torch import nn

from prunebench.errors import ConfigError
from prunebench.surgery.structure import find_roots
from prunebench.task import Task
from tasks.classification.imagenet import ImageNetClassification

COVERED = (
    "resnet50",
    "resnext50_32x4d",
    "regnety_016",
    "mobilenetv3_large_100",
    "efficientnet_b0",
    "convnext_tiny",
    "vit_tiny_patch16_224",
)  # the families docs/timm_coverage.md is generated for; any timm name is accepted


class TimmClassification(ImageNetClassification):
    """A timm model on ImageNet (or its embedded stand-in), top-1/top-5.

    Args:
        name: config name (``timm_<model>``).
        model: a timm model name (``timm.list_models()``).
        recipe: stage → optimiser recipe (the ImageNet task's).
        num_classes: 1000.
        input_size: the stated input (px) for MACs, latency, tracing and the disk transforms;
            None: the model's own (timm's ``pretrained_cfg``).
        tier_input_size: a budget tier's smaller input, which wins over ``input_size``.
        pretrained: a local state-dict file of this timm model (``.pth``/``.safetensors``).
        embedded / paper / cpu / smoke: as the ImageNet task's.
    """

    def __init__(
        self,
        name: str,
        model: str,
        recipe: dict,
        num_classes: int = 1000,
        input_size: int | None = None,
        tier_input_size: int | None = None,
        pretrained: str | None = None,
        embedded: dict | None = None,
        paper: dict | None = None,
        cpu: dict | None = None,
        smoke: dict | None = None,
    ) -> None:
        Task.__init__(self, name, recipe, paper)
        if not isinstance(model, str) or not timm.is_model(model):
            raise ConfigError(
                f"task.model={model!r} is not a timm model name; e.g. {', '.join(COVERED)} "
                "(timm.list_models() lists them all)"
            )
        self.model_name = self.arch = model
        self.num_classes = num_classes
        cfg = timm.models.get_pretrained_cfg(model)
        self.data_config = resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg else {})
        self.input_size = int(tier_input_size or input_size or self.data_config["input_size"][-1])
        self.first_conv = getattr(cfg, "first_conv", None)
        self.classifier = getattr(cfg, "classifier", None)
        self.pretrained = pretrained
        self.embedded = {"size": 64, "scale_bands": 2, **(embedded or {})}
        self.cpu = dict(cpu or {})
        self._roots: dict[tuple, list[str]] = {}

    def build_model(self) -> nn.Module:
        """timm's model with random weights. Models with a fixed input size (ViT) are built with
        ``dynamic_img_size``, so the stand-in's small images and the stated input both fit."""
        kwargs = {"pretrained": False, "num_classes": self.num_classes}
        try:
            return timm.create_model(self.model_name, dynamic_img_size=True, **kwargs)
        except TypeError:  # a model whose input size is free (every CNN)
            return timm.create_model(self.model_name, **kwargs)

    def disk_transforms(self) -> dict:
        """timm's transforms from the model's data config, at the stated input size."""
        cfg = {**self.data_config, "input_size": (3, self.input_size, self.input_size)}
        return {
            "train": create_transform(**cfg, is_training=True),
            "eval": create_transform(**cfg, is_training=False),
        }

    def pretrained_path(self) -> Path | None:
        return Path(os.path.expanduser(self.pretrained)) if self.pretrained else None

    def weights_what(self) -> str:
        return f"a state dict of timm's {self.model_name}"

    def weights_hint(self) -> str:
        return f"a state dict of timm's {self.model_name} (.pth or .safetensors)"

    def protected_layers(self, model: nn.Module) -> list[str]:
        names = dict(model.named_modules())
        listed = [n for v in (self.first_conv, self.classifier) for n in _names(v)]
        return [n for n in listed if n in names]

    def prunable_layers(self, model: nn.Module) -> list[str]:
        """The inner channel groups' roots, traced (once per architecture)."""
        key = tuple(
            (n, tuple(p.shape)) for n, p in model.named_parameters() if n.endswith("weight")
        )
        if key not in self._roots:
            roots, _ = find_roots(model, self.example_input(), self.protected_layers(model))
            self._roots[key] = roots
        return list(self._roots[key])


def _names(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
