"""DeepLabV3 / DeepLabV3+ from segmentation-models-pytorch, built offline.

``encoder_weights=None`` always: smp's default downloads ImageNet weights from the Hugging Face
hub, which this project never does. A local torchvision ResNet state dict can be loaded into the
encoder instead (:func:`load_backbone`): smp's ResNet encoder is torchvision's ``ResNet`` without
``fc``/``avgpool``, with the same state-dict keys.

smp dilates a stage differently from torchvision's DeepLab: ``make_dilated`` gives *every* conv of
a dilated stage the stage's dilation (block 0 and its 1×1 downsample included), while torchvision's
``replace_stride_with_dilation`` gives block 0's 3×3 conv the previous dilation (OS 8, ResNet-50:
``layer3[0].conv2`` has dilation 2 and ``layer4[0].conv2`` 4 here, 1 and 2 in torchvision). Same
parameters and MACs, slightly different function.

A timm encoder through smp's ``tu-`` prefix (``task.encoder=tu-regnety_016``) is built the same
way (smp's ``TimmUniversalEncoder``, ``features_only``, random weights); its prunable channels
are found by tracing (``prunebench.surgery.structure.find_roots``), as for ``task=imagenet_timm``.
"""

from __future__ import annotations

import os
from pathlib import Path

import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
from torch import nn

from prunebench.errors import ConfigError

ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet101")  # or tu-<any timm model>


def timm_encoder(encoder: str) -> str | None:
    """The timm model name of a ``tu-<name>`` encoder, else None."""
    return encoder[3:] if encoder.startswith("tu-") else None


OUTPUT_STRIDES = (8, 16)


class _PadToStride:
    """smp refuses inputs whose sides are not multiples of the output stride; pad such an input
    at the bottom/right (zeros: the normalised mean colour) and crop the logits back, so any size
    works (VOC's 513 crop, full-size evaluation). Inputs already aligned take smp's own path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride = self.encoder.output_stride
        h, w = x.shape[-2:]
        ph, pw = -h % stride, -w % stride
        if ph == 0 and pw == 0:
            return super().forward(x)
        return super().forward(F.pad(x, (0, pw, 0, ph)))[..., :h, :w]


class DeepLabV3(_PadToStride, smp.DeepLabV3):
    """smp's DeepLabV3 taking any input size."""


class DeepLabV3Plus(_PadToStride, smp.DeepLabV3Plus):
    """smp's DeepLabV3+ taking any input size."""


ARCHS = {"deeplabv3": DeepLabV3, "deeplabv3plus": DeepLabV3Plus}


def build_deeplab(
    arch: str,
    encoder: str,
    num_classes: int,
    output_stride: int,
    aspp_separable: bool = False,
    atrous_rates: tuple[int, ...] = (12, 24, 36),
    decoder_channels: int = 256,
) -> nn.Module:
    """A DeepLab with random weights (``encoder_weights=None``: nothing is downloaded).

    Args:
        arch: ``deeplabv3`` or ``deeplabv3plus``.
        encoder: ``resnet18|34|50|101``.
        num_classes: output classes.
        output_stride: 8 or 16.
        aspp_separable: depth-wise separable ASPP convs (smp's DeepLabV3+ default); False keeps
            every ASPP conv a plain conv. DeepLabV3+'s decoder convs after the ASPP are always
            separable in smp 0.6.
        atrous_rates: the three ASPP dilations.
        decoder_channels: the ASPP's (and decoder's) width (DeepLab: 256).
    """
    if arch not in ARCHS:
        raise ConfigError(f"task.arch={arch!r}; choices: {sorted(ARCHS)}")
    name = timm_encoder(encoder)
    if encoder not in ENCODERS and not (name and timm.is_model(name)):
        raise ConfigError(
            f"task.encoder={encoder!r}; choices: {ENCODERS}, or tu-<a timm model name>"
        )
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"task.output_stride={output_stride!r}; choices: {OUTPUT_STRIDES}")
    return ARCHS[arch](
        encoder_name=encoder,
        encoder_weights=None,
        encoder_output_stride=output_stride,
        decoder_atrous_rates=tuple(atrous_rates),
        decoder_aspp_separable=aspp_separable,
        decoder_channels=decoder_channels,
        classes=num_classes,
    )


def load_backbone(model: nn.Module, path: str | Path, encoder: str) -> str:
    """Load a torchvision ResNet state dict (``fc.*`` dropped) into ``model.encoder``; returns the
    file's path. A missing file or another architecture's weights is a ConfigError."""
    if timm_encoder(encoder):
        raise ConfigError(
            f"task.pretrained_backbone loads a torchvision ResNet state dict; task.encoder="
            f"{encoder!r} is a timm encoder (not supported: use a resnet encoder)"
        )
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise ConfigError(
            f"task.pretrained_backbone: {path} is not a file; give a torchvision {encoder} "
            "state dict (e.g. resnet50-0676ba61.pth)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        model.encoder.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            f"task.pretrained_backbone: {path} is not a torchvision {encoder} state dict "
            f"({str(exc).strip().splitlines()[0]} …)"
        ) from None
    return str(path)
