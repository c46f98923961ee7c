"""PSMNet, stacked-hourglass variant (Chang & Chen, "Pyramid Stereo Matching Network", CVPR 2018,
arXiv 1803.08669), written from the architecture of the authors' ``models/stackhourglass.py`` and
``models/submodule.py``; module names follow that code, so its state dicts map one to one.

Faithful details kept: the PSMNet BasicBlock has no ReLU after the residual add; ``convbn`` pads
by the dilation when dilated; SPP average pools of 64/32/16/8 on the 1/4-resolution map, each a
1×1 conv-BN-ReLU to 32 channels, upsampled bilinearly (``align_corners=False``, what the code's
``F.upsample`` does since PyTorch 0.4) and concatenated as [layer2, layer4, branch4 … branch1];
the concatenation cost volume at maxdisp/4; three hourglasses where the third reuses ``pre1``
(``dres4(out2, pre1, post2)``) and every output adds ``cost0``; chained classifiers
(``cost2 = classif2(out2) + cost1`` …); soft-argmin over ``softmax(c)`` (not ``−c``, as the code);
three predictions in training, the last one in eval; the code's initialisation.

Three choices of ours, all mathematically neutral for the paper configuration:

* **one input tensor** ``(B, 6, H, W)`` = left and right RGB stacked on channels, so the shared
  core (MAC counting, Torch-Pruning's tracing, latency, ONNX export) sees a one-input model;
* the feature extractor runs **once on both views concatenated along the batch** (shared weights,
  identical outputs): the dependency graph sees one node per layer, and the MAC counter counts
  the extractor twice at batch 1, as the MACs convention asks (docs/architecture.md);
* the cost volume is built functionally (shift, pad, concatenate, stack) rather than by writing
  into a zero tensor; the values are the same (columns left of the shift stay zero).

``width`` scales every channel count (32/64/128 → round(width·c)) and ``spp_pools`` replaces the
64/32/16/8 pools, so the ``cpu``/``smoke`` tiers can shrink the model; at ``width=1`` and the
paper's pools the model has 5,224,768 parameters (maxdisp does not change the count).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.errors import ConfigError

PAPER_POOLS = (64, 32, 16, 8)


def convbn(c_in: int, c_out: int, k: int, stride: int, pad: int, dilation: int) -> nn.Sequential:
    pad = dilation if dilation > 1 else pad
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, pad, dilation, bias=False), nn.BatchNorm2d(c_out)
    )


def convbn_3d(c_in: int, c_out: int, k: int, stride: int, pad: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, k, stride, pad, bias=False), nn.BatchNorm3d(c_out))


class BasicBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, plus the (downsampled) input; no ReLU after the add."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, downsample: nn.Module | None, dilation: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(convbn(c_in, c_out, 3, stride, 1, dilation), nn.ReLU())
        self.conv2 = convbn(c_out, c_out, 3, 1, 1, dilation)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.conv2(self.conv1(x)) + shortcut


def _layer(c_in: int, c_out: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    down = None
    if stride != 1 or c_in != c_out:
        down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
    layers = [BasicBlock(c_in, c_out, stride, down, dilation)]
    layers += [BasicBlock(c_out, c_out, 1, None, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class FeatureExtraction(nn.Module):
    """The shared 2D extractor: 1/4 resolution, ``c(32)`` channels out."""

    def __init__(self, c: dict[int, int], pools: Sequence[int]) -> None:
        super().__init__()
        self.firstconv = nn.Sequential(
            convbn(3, c[32], 3, 2, 1, 1),
            nn.ReLU(),
            convbn(c[32], c[32], 3, 1, 1, 1),
            nn.ReLU(),
            convbn(c[32], c[32], 3, 1, 1, 1),
            nn.ReLU(),
        )
        self.layer1 = _layer(c[32], c[32], 3, 1, 1)
        self.layer2 = _layer(c[32], c[64], 16, 2, 1)
        self.layer3 = _layer(c[64], c[128], 3, 1, 1)
        self.layer4 = _layer(c[128], c[128], 3, 1, 2)
        for i, p in enumerate(pools, start=1):  # branch1 has the largest pool, as the code
            branch = nn.Sequential(nn.AvgPool2d(p, p), convbn(c[128], c[32], 1, 1, 0, 1), nn.ReLU())
            setattr(self, f"branch{i}", branch)
        self.n_branches = len(pools)
        self.lastconv = nn.Sequential(
            convbn(c[64] + c[128] + len(pools) * c[32], c[128], 3, 1, 1, 1),
            nn.ReLU(),
            nn.Conv2d(c[128], c[32], 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.layer2(self.layer1(self.firstconv(x)))
        skip = self.layer4(self.layer3(raw))
        size = skip.shape[2:]
        branches = [
            F.interpolate(getattr(self, f"branch{i}")(skip), size, mode="bilinear")
            for i in range(self.n_branches, 0, -1)  # branch4, branch3, branch2, branch1
        ]
        return self.lastconv(torch.cat([raw, skip, *branches], 1))


class Hourglass(nn.Module):
    """The 3D encoder-decoder; ``forward(x, presqu, postsqu)`` → (out, pre, post)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(convbn_3d(c, 2 * c, 3, 2, 1), nn.ReLU())
        self.conv2 = convbn_3d(2 * c, 2 * c, 3, 1, 1)
        self.conv3 = nn.Sequential(convbn_3d(2 * c, 2 * c, 3, 2, 1), nn.ReLU())
        self.conv4 = nn.Sequential(convbn_3d(2 * c, 2 * c, 3, 1, 1), nn.ReLU())
        up = lambda a, b: nn.ConvTranspose3d(  # noqa: E731
            a, b, 3, padding=1, output_padding=1, stride=2, bias=False
        )
        self.conv5 = nn.Sequential(up(2 * c, 2 * c), nn.BatchNorm3d(2 * c))
        self.conv6 = nn.Sequential(up(2 * c, c), nn.BatchNorm3d(c))

    def forward(self, x, presqu, postsqu):
        pre = self.conv2(self.conv1(x))
        pre = F.relu(pre if postsqu is None else pre + postsqu)
        out = self.conv4(self.conv3(pre))
        post = F.relu(self.conv5(out) + (pre if presqu is None else presqu))
        return self.conv6(post), pre, post


def _classifier(c: int) -> nn.Sequential:
    return nn.Sequential(convbn_3d(c, c, 3, 1, 1), nn.ReLU(), nn.Conv3d(c, 1, 3, 1, 1, bias=False))


def cost_volume(left: torch.Tensor, right: torch.Tensor, disparities: int) -> torch.Tensor:
    """Concatenation volume (B, 2C, D, H, W): at disparity i, left features at columns ≥ i and
    right features shifted right by i; columns < i are zero."""
    w = left.shape[-1]
    planes = [
        F.pad(torch.cat([left[..., i:], right[..., : w - i]], 1), (i, 0))
        for i in range(disparities)
    ]
    return torch.stack(planes, 2)


def soft_argmin(cost: torch.Tensor, maxdisp: int, size: Sequence[int]) -> torch.Tensor:
    """Upsample a (B, 1, D/4, h, w) cost trilinearly to (maxdisp, H, W), softmax over disparity,
    expectation Σ d·p(d) for d = 0 … maxdisp−1: (B, H, W) in pixels."""
    cost = F.interpolate(cost, (maxdisp, *size), mode="trilinear").squeeze(1)
    prob = F.softmax(cost, 1)
    disp = torch.arange(maxdisp, dtype=prob.dtype, device=prob.device).view(1, -1, 1, 1)
    return (prob * disp).sum(1)


def channels(width: float) -> dict[int, int]:
    """Base channel count → scaled count (at least 1)."""
    return {n: max(1, round(n * width)) for n in (32, 64, 128)}


def check_input(height: int, width: int, maxdisp: int, pools: Sequence[int]) -> None:
    """Raise a ConfigError unless (H, W, maxdisp) fit the network (see ``PSMNet``)."""
    need = 4 * max(pools)
    if height % 16 or width % 16 or height < need or width < need:
        raise ConfigError(
            f"PSMNet input {height}×{width}: H and W must be multiples of 16 (two stride-2 3D "
            f"convs at 1/4 resolution) and ≥ {need} (4 × the largest SPP pool {max(pools)}); "
            "pad or crop the pair, or change task.input_size / task.spp_pools"
        )
    if maxdisp % 16 or maxdisp <= 0:
        raise ConfigError(f"PSMNet maxdisp={maxdisp}: must be a positive multiple of 16")


class PSMNet(nn.Module):
    """Stacked-hourglass PSMNet on a (B, 6, H, W) input (left RGB, right RGB).

    Args:
        maxdisp: disparities 0 … maxdisp−1 (a multiple of 16).
        width: channel multiplier (1 = the paper's).
        spp_pools: the SPP pool sizes, largest first (the paper's 64/32/16/8).

    Returns (forward): in training, the three predictions (pred1, pred2, pred3), each (B, H, W)
    disparities in pixels; in eval, pred3.
    """

    def __init__(
        self, maxdisp: int = 192, width: float = 1.0, spp_pools: Sequence[int] = PAPER_POOLS
    ) -> None:
        super().__init__()
        if maxdisp % 16 or maxdisp <= 0:
            raise ConfigError(f"PSMNet maxdisp={maxdisp}: must be a positive multiple of 16")
        self.maxdisp, self.spp_pools = maxdisp, tuple(spp_pools)
        c = channels(width)
        self.feature_extraction = FeatureExtraction(c, self.spp_pools)
        self.dres0 = nn.Sequential(
            convbn_3d(2 * c[32], c[32], 3, 1, 1),
            nn.ReLU(),
            convbn_3d(c[32], c[32], 3, 1, 1),
            nn.ReLU(),
        )
        self.dres1 = nn.Sequential(
            convbn_3d(c[32], c[32], 3, 1, 1), nn.ReLU(), convbn_3d(c[32], c[32], 3, 1, 1)
        )
        self.dres2, self.dres3, self.dres4 = Hourglass(c[32]), Hourglass(c[32]), Hourglass(c[32])
        self.classif1, self.classif2, self.classif3 = (_classifier(c[32]) for _ in range(3))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():  # He-normal on fan-out, as the reference; ConvTranspose3d default
            if isinstance(m, nn.Conv2d | nn.Conv3d):
                n = math.prod(m.kernel_size) * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[1] != 6:
            raise ValueError(
                f"PSMNet takes (B, 6, H, W) (left and right RGB), got {tuple(x.shape)}"
            )
        b, _, h, w = x.shape
        check_input(h, w, self.maxdisp, self.spp_pools)
        features = self.feature_extraction(torch.cat([x[:, :3], x[:, 3:]], 0))
        cost = cost_volume(features[:b], features[b:], self.maxdisp // 4)
        cost0 = self.dres0(cost)
        cost0 = self.dres1(cost0) + cost0
        out1, pre1, post1 = self.dres2(cost0, None, None)
        out1 = out1 + cost0
        out2, _, post2 = self.dres3(out1, pre1, post1)
        out2 = out2 + cost0
        out3, _, _ = self.dres4(out2, pre1, post2)  # pre1, not pre2: the reference code's wiring
        out3 = out3 + cost0
        cost1 = self.classif1(out1)
        cost2 = self.classif2(out2) + cost1
        cost3 = self.classif3(out3) + cost2
        pred3 = soft_argmin(cost3, self.maxdisp, (h, w))
        if not self.training:
            return pred3
        return (
            soft_argmin(cost1, self.maxdisp, (h, w)),
            soft_argmin(cost2, self.maxdisp, (h, w)),
            pred3,
        )
