"""Semantic segmentation with DeepLabV3 / DeepLabV3+ (segmentation-models-pytorch), mIoU.

``data=disk`` reads Pascal VOC 2012 (+SBD trainaug) or Cityscapes (``task.dataset``);
``data=embedded`` renders textured-shape scenes (``tasks.segmentation.embedded``, 6 classes fed
to the task's ``num_classes``-way model, as the ImageNet stand-in does). A budget tier may swap
in a smaller encoder and input through the ``model`` entry of the task's block named like the
tier (``cpu:``/``smoke:``), which the task config reads into ``tier`` — so the record's config
declares it.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from prunebench.errors import ConfigError
from prunebench.surgery.structure import find_roots
from prunebench.task import Splits, Task
from tasks.segmentation.data import (
    IGNORE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationData,
    SegmentationDataset,
)
from tasks.segmentation.disk import disk_readers
from tasks.segmentation.embedded import make_scenes
from tasks.segmentation.model import build_deeplab, load_backbone, timm_encoder

TIER_KEYS = (
    "encoder",
    "output_stride",
    "decoder_channels",
    "input_size",
    "crop_size",
    "embedded",
    "recipe",  # stage → recipe fields that replace the task's (a random-init encoder's lr_mult)
)
ASPP = ("convs.0.0", "convs.1.0", "convs.2.0", "convs.3.0", "convs.4.1", "project.0")
DECODER_PRUNABLE = {  # the head conv's input (decoder.conv / block2) stays whole
    "deeplabv3": tuple(f"decoder.aspp.{n}" for n in ASPP),
    "deeplabv3plus": (*(f"decoder.aspp.0.{n}" for n in ASPP), "decoder.block1.0"),
}


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Segmentation(Task):
    """DeepLab on VOC / Cityscapes (or the embedded scenes); primary metric mIoU (↑).

    Args:
        name: config name.
        dataset: ``voc`` or ``cityscapes`` (the disk layout read by ``data=disk``).
        num_classes: 21 (VOC) or 19 (Cityscapes trainIds); 255 is ignored.
        arch: ``deeplabv3`` or ``deeplabv3plus``.
        encoder: ``resnet18|34|50|101``.
        output_stride: 8 or 16.
        recipe: stage → optimiser recipe (``prunebench.task.OptimSpec``).
        aspp_separable: depth-wise separable ASPP convs (False: plain convs, the pruning core's
            common case).
        atrous_rates: the ASPP's three dilations.
        decoder_channels: the ASPP's and decoder's width (256).
        input_size: the stated input (H, W) for MACs and latency.
        crop_size: the training crop (disk data).
        scale_range: the training random scale (disk data).
        eval_size: disk evaluation pads every image to this (H, W) so batches stack (padded
            pixels are ignored); None keeps the image's size (Cityscapes: all 1024×2048).
        eval_scale: disk evaluation resizes by this first.
        pretrained_backbone: a local torchvision ResNet state dict loaded into the encoder of
            every freshly built model (the head stays random; the baseline still trains).
        embedded: the rendered scenes' ``size`` (px) and training ``scale_range``.
        paper / cpu / smoke: the tiers' task-specific numbers (read by ``conf/budget``).
        tier: what the budget tier swaps in (keys of ``TIER_KEYS``): the task config sets it to
            ``<tier block>.model``.
    """

    metric = "miou"
    higher_is_better = True

    def __init__(
        self,
        name: str,
        dataset: str,
        num_classes: int,
        arch: str,
        encoder: str,
        output_stride: int,
        recipe: dict,
        aspp_separable: bool = False,
        atrous_rates: tuple[int, ...] = (12, 24, 36),
        decoder_channels: int = 256,
        input_size: int | tuple[int, int] = 520,
        crop_size: int | tuple[int, int] = 513,
        scale_range: tuple[float, float] = (0.5, 2.0),
        eval_size: int | tuple[int, int] | None = None,
        eval_scale: float = 1.0,
        pretrained_backbone: str | None = None,
        embedded: dict | None = None,
        paper: dict | None = None,
        cpu: dict | None = None,
        smoke: dict | None = None,
        tier: dict | None = None,
    ) -> None:
        unknown = sorted(set(tier or {}) - set(TIER_KEYS))
        if unknown:
            raise ConfigError(
                f"task.tier keys {unknown} cannot be swapped by a tier; choices: {TIER_KEYS}"
            )
        t = dict(tier or {})
        stages = sorted(set(t.get("recipe") or {}) - set(recipe))
        if stages:
            raise ConfigError(f"task.tier recipe stages {stages}; choices: {sorted(recipe)}")
        swapped = t.get("recipe") or {}
        recipe = {stage: {**spec, **swapped.get(stage, {})} for stage, spec in recipe.items()}
        super().__init__(name, recipe, paper)
        self.dataset, self.num_classes, self.arch = dataset, num_classes, arch
        self.encoder = t.get("encoder", encoder)
        self.output_stride = int(t.get("output_stride", output_stride))
        self.aspp_separable, self.atrous_rates = aspp_separable, tuple(atrous_rates)
        self.decoder_channels = int(t.get("decoder_channels", decoder_channels))
        self.input_size = _pair(t.get("input_size", input_size))
        self.crop_size = _pair(t.get("crop_size", crop_size))
        self.scale_range = tuple(scale_range)
        self.eval_size = None if eval_size is None else _pair(eval_size)
        self.eval_scale = float(eval_scale)
        self.pretrained_backbone = pretrained_backbone
        self.embedded = {"size": 64, "scale_range": (0.75, 1.25), **(embedded or {})}
        self.embedded.update(t.get("embedded", {}))
        self.cpu, self.smoke = dict(cpu or {}), dict(smoke or {})

    def build_model(self) -> nn.Module:
        model = build_deeplab(
            self.arch,
            self.encoder,
            self.num_classes,
            self.output_stride,
            self.aspp_separable,
            self.atrous_rates,
            self.decoder_channels,
        )
        if self.pretrained_backbone:
            load_backbone(model, self.pretrained_backbone, self.encoder)
        return model

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        return torch.randn(batch_size, 3, *self.input_size, generator=gen)

    def prunable_layers(self, model: nn.Module) -> list[str]:
        # Encoder: channels inside residual blocks only (the residual stream is shared by a
        # stage). Decoder: the ASPP's parallel branches (image pooling included; their concat
        # is coupled by the dependency graph) and its projection.
        inner = ("conv1",) if self.encoder in ("resnet18", "resnet34") else ("conv1", "conv2")
        encoder = [
            n
            for n, _ in model.named_modules()
            if n.startswith("encoder.layer") and n.rsplit(".", 1)[-1] in inner
        ]
        if timm_encoder(self.encoder):  # traced: the encoder's inner channel groups
            roots, _ = find_roots(model, self.example_input(), self.protected_layers(model))
            encoder = [n for n in roots if n.startswith("encoder.")]
        decoder = []
        for n in DECODER_PRUNABLE[self.arch]:
            if not isinstance(model.get_submodule(n), nn.Conv2d):
                n = f"{n}.1"  # a separable conv: its point-wise half sets the channels
            decoder.append(n)
        return encoder + decoder

    def protected_layers(self, model: nn.Module) -> list[str]:
        name = timm_encoder(self.encoder)
        if name:  # timm's first conv, inside smp's wrapper
            first = timm.models.get_pretrained_cfg(name).first_conv
            return [f"encoder.model.{first}", "segmentation_head.0"]
        return ["encoder.conv1", "segmentation_head.0"]

    def loss(self, output: torch.Tensor, batch) -> torch.Tensor:
        return F.cross_entropy(output, batch[1], ignore_index=IGNORE)

    def metrics(self) -> dict[str, torchmetrics.Metric]:
        """mIoU from one confusion matrix over the whole evaluation set (torchmetrics'
        ``JaccardIndex``: IoU per class, mean over classes present in prediction or label, 255
        ignored — checked by hand in ``tests/test_segmentation.py``) and pixel accuracy."""
        kw = {"task": "multiclass", "num_classes": self.num_classes, "ignore_index": IGNORE}
        return {
            "miou": torchmetrics.JaccardIndex(average="macro", **kw),
            "pixel_acc": torchmetrics.Accuracy(average="micro", **kw),
        }

    data_module = SegmentationData

    def embedded_splits(self, data: dict, sizes: dict) -> Splits:
        """Generated scenes (module docstring); ``sizes`` caps each split (None: 2000)."""
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        size, s = int(self.embedded["size"]), int(data.get("embedded_seed", 0))
        n = {k: 2000 if v is None else int(v) for k, v in sizes.items()}
        arrays = [make_scenes(n[k], s + i, size) for i, k in enumerate(("train", "val", "test"))]
        reader = lambda a: lambda i: (a[0][i], a[1][i])  # noqa: E731
        train = SegmentationDataset(
            len(arrays[0][0]),
            reader(arrays[0]),
            mean,
            std,
            crop=(size, size),
            scale_range=self.embedded["scale_range"],
        )
        val, test = (SegmentationDataset(len(a[0]), reader(a), mean, std) for a in arrays[1:])
        return train, val, test

    def disk_splits(self, data: dict, sizes: dict) -> Splits:
        """The dataset's files under ``data.root`` (module docstring); ``sizes`` caps each split."""
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        readers = disk_readers(
            self.dataset, data.get("root"), float(data.get("val_fraction", 0.1)), sizes
        )
        train = SegmentationDataset(
            len(readers[0]),
            readers[0],
            mean,
            std,
            crop=self.crop_size,
            scale_range=self.scale_range,
        )
        val, test = (
            SegmentationDataset(len(r), r, mean, std, None, (1, 1), self.eval_size, self.eval_scale)
            for r in readers[1:]
        )
        return train, val, test
