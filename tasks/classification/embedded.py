"""A procedurally generated 10-class 32×32 RGB dataset: shapes on noisy, cluttered backgrounds.

Each image holds one shape of its class (disk, square, triangle, ring, plus, cross, horizontal
stripes, vertical stripes, dot pair, diamond) at a random position, scale, small rotation and
opacity, in a colour set off the background's, over a two-colour gradient with Gaussian noise and
a distractor blob. Faint, noisy samples, the distractor (a disk) and the square/diamond and
plus/cross pairs under rotation keep it from being trivially separable. Generation is vectorised and seeded: the same seed gives the same bytes.
"""

from __future__ import annotations

import numpy as np

CLASSES = (
    "disk",
    "square",
    "triangle",
    "ring",
    "plus",
    "cross",
    "h_stripes",
    "v_stripes",
    "dot_pair",
    "diamond",
)


def _shape_masks(u: np.ndarray, v: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Inside-the-shape masks in the shape's own (rotated, scaled) coordinates u, v."""
    r2 = u**2 + v**2
    box = np.maximum(np.abs(u), np.abs(v))
    bar = lambda a, b: (np.abs(a) < 0.3) & (np.abs(b) < 1.0)  # noqa: E731
    d, e = (u + v) / np.sqrt(2), (u - v) / np.sqrt(2)
    masks = np.stack(
        [
            r2 < 1.0,
            box < 0.85,
            (v < 0.7) & (np.abs(u) < (v + 0.9) * 0.6),
            (r2 > 0.3) & (r2 < 1.0),
            bar(u, v) | bar(v, u),
            bar(d, e) | bar(e, d),
            (box < 1.0) & (np.sin(v * 3 * np.pi) > 0),
            (box < 1.0) & (np.sin(u * 3 * np.pi) > 0),
            ((u - 0.5) ** 2 + v**2 < 0.16) | ((u + 0.5) ** 2 + v**2 < 0.16),
            np.abs(u) + np.abs(v) < 1.0,
        ]
    )  # (classes, n, H, W)
    return np.take_along_axis(masks, label[None, :, None, None], 0)[0]


def _colour(rng: np.random.Generator, m: int) -> np.ndarray:
    return rng.uniform(0, 1, (m, 3, 1, 1))


def make_shapes(
    n: int, seed: int, size: int = 32, chunk: int = 2048, scale_bands: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` images.

    Args:
        scale_bands: 1 gives the 10 shape classes. With b > 1 there are 10·b classes: label
            ``shape + 10·band``, where band picks one of b disjoint scale ranges in [0.3, 0.85]
            (the ImageNet-architecture stand-in uses 2: small and large shapes, 20 classes).

    Returns:
        images as uint8 (n, 3, size, size) and labels as int64 (n,), classes balanced up to one.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % (len(CLASSES) * scale_bands)).astype(np.int64)
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    for start in range(0, n, chunk):
        lab = labels[start : start + chunk]
        m = len(lab)
        cx, cy = (rng.uniform(-0.3, 0.3, (m, 1, 1)) for _ in range(2))
        scale = rng.uniform(0.45, 0.75, (m, 1, 1))
        if scale_bands > 1:  # the same draw, mapped into the label's band (70 % of its width)
            band = (lab // len(CLASSES))[:, None, None]
            width = 0.55 / scale_bands
            scale = 0.3 + band * width + (scale - 0.45) / 0.3 * 0.7 * width
            lab = lab % len(CLASSES)
        theta = rng.uniform(-0.4, 0.4, (m, 1, 1))
        x, y = (xx - cx) / scale, (yy - cy) / scale
        u = np.cos(theta) * x + np.sin(theta) * y
        v = -np.sin(theta) * x + np.cos(theta) * y
        shape = _shape_masks(u, v, lab)[:, None].astype(np.float64)
        # Background: a gradient between two colours along a random direction, plus clutter.
        phi = rng.uniform(0, 2 * np.pi, (m, 1, 1, 1))
        t = (np.cos(phi) * xx + np.sin(phi) * yy + 1.5) / 3
        c0, c1 = _colour(rng, m), _colour(rng, m)
        img = c0 * (1 - t) + c1 * t
        bx, by = (rng.uniform(-1, 1, (m, 1, 1, 1)) for _ in range(2))
        radius2 = rng.uniform(0.01, 0.04, (m, 1, 1, 1))
        blob = ((xx - bx) ** 2 + (yy - by) ** 2 < radius2).astype(float)
        img = img * (1 - blob) + _colour(rng, m) * blob
        # The shape's colour stands off the background's mean (so the shape is always visible);
        # its opacity and the pixel noise set how hard a sample is.
        fg = np.clip(1 - (c0 + c1) / 2 + rng.uniform(-0.25, 0.25, (m, 3, 1, 1)), 0, 1)
        alpha = rng.uniform(0.45, 1.0, (m, 1, 1, 1))
        img = img * (1 - alpha * shape) + fg * alpha * shape
        img = img + rng.normal(0, 1, img.shape) * rng.uniform(0.02, 0.15, (m, 1, 1, 1))
        images[start : start + m] = np.clip(img * 255, 0, 255).round().astype(np.uint8)
    return images, labels
