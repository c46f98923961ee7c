"""CIFAR ResNets of He et al. (2016, arXiv 1512.03385, §4.2), depth 6n+2.

Option A shortcuts are parameter-free. Two codes for them circulate; we follow the one the
pruning literature KCP/FPGM/HRank compare against (SFP/FPGM's ``DownsampleA``): stride-2
subsampling, then concatenation of zeros, so the identity occupies the *first* half of the output
channels (akamaster's variant pads on both sides instead). The residual stream's channels are
coupled through these shortcuts, so only the channels inside each block (conv1's outputs) are
declared prunable — the usual choice for option-A ResNets in the pruning literature.

Option B uses a 1×1 conv + BN projection where the shape changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

STAGE_WIDTHS = (16, 32, 64)


class DownsampleA(nn.Module):
    """Parameter-free shortcut: subsample by the stride, then append zero channels."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN, add the shortcut, ReLU. ``mid`` is conv1's output width."""

    def __init__(self, cin: int, cout: int, stride: int, mid: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            if shortcut == "A":
                self.shortcut = DownsampleA(stride, cout - cin)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs.

    Args:
        depth: 20, 32, 44, 56, 110, … (6n+2).
        num_classes: classifier outputs.
        shortcut: ``"A"`` (parameter-free, default, as He et al.) or ``"B"`` (1×1 projection).
        mid_widths: conv1 output width of every block in order (3n entries); ``None`` = the
            stage width. Used to build a model directly at slimmed widths.
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        shortcut: str = "A",
        mid_widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth={depth} is not 6n+2 (choices: 20, 32, 44, 56, 110, …)")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut={shortcut!r}; choices: 'A', 'B'")
        n = (depth - 2) // 6
        mids = (
            list(mid_widths)
            if mid_widths is not None
            else [w for w in STAGE_WIDTHS for _ in range(n)]
        )
        if len(mids) != 3 * n:
            raise ValueError(
                f"mid_widths has {len(mids)} entries; ResNet-{depth} has {3 * n} blocks"
            )
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin, k = 16, 0
        for s, width in enumerate(STAGE_WIDTHS):
            blocks = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(BasicBlock(cin, width, stride, mids[k], shortcut))
                cin, k = width, k + 1
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)
