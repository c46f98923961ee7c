"""Stereo datasets: in-memory arrays (embedded) and file lists (disk), one sample =
(x (6, H, W) float: left and right RGB normalised with ImageNet's mean/std as PSMNet does,
disparity (H, W) float, NaN where there is no ground truth).

Crops (PSMNet): training takes a random ``crop`` = (h, w) window, the same for both views and
the disparity; evaluation either pads at the top and right to multiples of 16 (``pad16``,
SceneFlow's test) or takes the bottom-right window (``bottom_right``, KITTI's 1232×368).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from prunebench.errors import ConfigError
from tasks.stereo.io import read_rgb

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
MODES = ("random", "pad16", "bottom_right", "none")


def to_input(left: np.ndarray, right: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) views → normalised (6, H, W)."""
    views = [
        (torch.from_numpy(np.ascontiguousarray(v)).permute(2, 0, 1).float() / 255 - MEAN) / STD
        for v in (left, right)
    ]
    return torch.cat(views, 0)


def window(
    x: torch.Tensor, disp: torch.Tensor, mode: str, crop: Sequence[int] | None, gen=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a crop ``mode`` (see the module docstring) to one sample."""
    h, w = disp.shape
    if mode == "none":
        return x, disp
    if mode == "pad16":
        top, right = -h % 16, -w % 16
        x = torch.nn.functional.pad(x, (0, right, top, 0))
        disp = torch.nn.functional.pad(disp, (0, right, top, 0), value=float("nan"))
        return x, disp
    if mode not in ("random", "bottom_right"):
        raise ConfigError(f"crop mode {mode!r}; choices: {MODES}")
    ch, cw = (int(v) for v in crop)
    if ch > h or cw > w:
        raise ConfigError(f"crop {ch}×{cw} is larger than the {h}×{w} image; choose a smaller crop")
    if mode == "random":
        top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    else:
        top, left = h - ch, w - cw
    return x[:, top : top + ch, left : left + cw], disp[top : top + ch, left : left + cw]


class ArrayStereo(Dataset):
    """Pairs held in memory: ``left``/``right`` uint8 (N, H, W, 3), ``disp`` float32 (N, H, W)."""

    def __init__(self, arrays: dict, mode: str = "none", crop: Sequence[int] | None = None) -> None:
        self.left, self.right = arrays["left"], arrays["right"]
        self.disp = torch.from_numpy(np.ascontiguousarray(arrays["disp"]))
        self.mode, self.crop = mode, crop

    def __len__(self) -> int:
        return len(self.disp)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return window(to_input(self.left[i], self.right[i]), self.disp[i], self.mode, self.crop)


class FileStereo(Dataset):
    """Pairs on disk: ``samples`` of (left, right, disparity) paths, ``read_disp`` the reader."""

    def __init__(
        self,
        samples: list[tuple[Path, Path, Path]],
        read_disp: Callable[[Path], np.ndarray],
        mode: str,
        crop: Sequence[int] | None = None,
    ) -> None:
        self.samples, self.read_disp, self.mode, self.crop = samples, read_disp, mode, crop

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        left, right, disp = self.samples[i]
        x = to_input(read_rgb(left), read_rgb(right))
        d = torch.from_numpy(np.ascontiguousarray(self.read_disp(disp)))
        if d.shape != x.shape[1:]:
            raise ConfigError(f"{disp}: disparity {tuple(d.shape)} ≠ image {tuple(x.shape[1:])}")
        return window(x, d, self.mode, self.crop)
