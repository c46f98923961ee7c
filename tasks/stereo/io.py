"""Disparity file readers: SceneFlow's ``.pfm`` and KITTI's 16-bit PNG."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from prunebench.errors import ConfigError


def read_pfm(path: str | Path) -> np.ndarray:
    """A PFM image as float32, top row first: ``Pf`` (1 channel) → (H, W), ``PF`` → (H, W, 3).

    PFM stores rows bottom to top; the scale's sign is the endianness (< 0: little-endian).
    """
    with open(path, "rb") as f:
        kind = f.readline().strip()
        if kind not in (b"PF", b"Pf"):
            raise ConfigError(f"{path}: not a PFM file (header {kind[:8]!r}, expected PF or Pf)")
        dims = re.fullmatch(rb"\s*(\d+)\s+(\d+)\s*", f.readline())
        if dims is None:
            raise ConfigError(f"{path}: malformed PFM size line")
        width, height = int(dims.group(1)), int(dims.group(2))
        scale = float(f.readline().strip())
        dtype = "<f4" if scale < 0 else ">f4"
        shape = (height, width, 3) if kind == b"PF" else (height, width)
        data = np.fromfile(f, dtype=dtype, count=int(np.prod(shape)))
    if data.size != np.prod(shape):
        raise ConfigError(f"{path}: PFM data holds {data.size} values, expected {np.prod(shape)}")
    return np.flipud(data.reshape(shape)).astype(np.float32)


def read_kitti_disparity(path: str | Path) -> np.ndarray:
    """KITTI's 16-bit PNG disparity (value / 256 px) as float32 (H, W), NaN where 0 (no GT)."""
    raw = np.asarray(Image.open(path))
    if raw.dtype != np.uint16 and raw.dtype != np.int32:
        raise ConfigError(f"{path}: KITTI disparity must be a 16-bit PNG, got {raw.dtype}")
    disp = raw.astype(np.float32) / 256.0
    disp[raw == 0] = np.nan
    return disp


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3)."""
    return np.array(Image.open(path).convert("RGB"))  # a writable copy
