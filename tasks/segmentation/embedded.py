"""Rendered segmentation scenes: textured shapes over textured backgrounds, seeded.

Each scene holds 2–4 objects, each one of five classes (label 1–5) with its own shape *and* its
own texture — disk/horizontal stripes, square/checkerboard, triangle/diagonal stripes,
ring/dot grid, plus/fine noise — at a random position, scale and rotation, in random colours.
Later objects occlude earlier ones (overlaps). The background (label 0) is a two-colour gradient
under low-contrast stripes of random orientation and pixel noise. A one-pixel band along every
boundary between labels is marked 255 (ignored), as VOC marks its object outlines. Generation is
vectorised over images and seeded: the same seed gives the same bytes.
"""

from __future__ import annotations

import numpy as np

CLASSES = ("background", "disk", "square", "triangle", "ring", "plus")
IGNORE = 255


def _shape(u: np.ndarray, v: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Inside-the-shape mask of class ``cls`` (1–5) in its own coordinates u, v."""
    r2 = u**2 + v**2
    bar = lambda a, b: (np.abs(a) < 0.35) & (np.abs(b) < 1.0)  # noqa: E731
    masks = np.stack(
        [
            r2 < 1.0,
            np.maximum(np.abs(u), np.abs(v)) < 0.85,
            (v < 0.7) & (np.abs(u) < (v + 0.9) * 0.65),
            (r2 > 0.3) & (r2 < 1.0),
            bar(u, v) | bar(v, u),
        ]
    )
    return np.take_along_axis(masks, (cls - 1)[None, :, None, None], 0)[0]


def _texture(
    px: np.ndarray, py: np.ndarray, cls: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Texture intensity in [0, 1] of class ``cls``, in pixel coordinates (period 4–6 px)."""
    period = rng.uniform(4.0, 6.0, (len(cls), 1, 1))
    w = 2 * np.pi / period
    noise = rng.uniform(0, 1, (len(cls), *px.shape))
    px, py = np.broadcast_to(px, noise.shape), np.broadcast_to(py, noise.shape)
    textures = np.stack(
        [
            0.5 + 0.5 * np.sin(w * py),
            ((np.floor(px / period * 2) + np.floor(py / period * 2)) % 2).astype(float),
            0.5 + 0.5 * np.sin(w * (px + py) / np.sqrt(2)),
            ((np.sin(w * px) > 0.5) & (np.sin(w * py) > 0.5)).astype(float),
            noise,
        ]
    )
    return np.take_along_axis(textures, (cls - 1)[None, :, None, None], 0)[0]


def _ignore_boundaries(labels: np.ndarray) -> np.ndarray:
    """Mark pixels whose right or lower neighbour has another label (a 1-px band) as ignored."""
    out = labels.copy()
    dx = labels[:, :, 1:] != labels[:, :, :-1]
    dy = labels[:, 1:, :] != labels[:, :-1, :]
    out[:, :, :-1][dx] = IGNORE
    out[:, :-1, :][dy] = IGNORE
    return out


def make_scenes(
    n: int, seed: int, size: int = 64, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` scenes.

    Returns:
        images as uint8 (n, 3, size, size) and labels as uint8 (n, size, size): 0 background,
        1–5 the object classes, 255 ignored boundary pixels.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    labels = np.empty((n, size, size), dtype=np.uint8)
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    py, px = np.meshgrid(np.arange(size, dtype=float), np.arange(size, dtype=float), indexing="ij")
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        # background: gradient between two colours, faint stripes, noise
        phi = rng.uniform(0, 2 * np.pi, (m, 1, 1))
        t = (np.cos(phi) * xx + np.sin(phi) * yy + 1.5) / 3
        stripes = np.sin(
            2 * np.pi / rng.uniform(7, 12, (m, 1, 1)) * (np.cos(phi) * py - np.sin(phi) * px)
        )
        t = np.clip(t + 0.15 * stripes, 0, 1)[:, None]
        img = rng.uniform(0, 1, (m, 3, 1, 1)) * (1 - t) + rng.uniform(0, 1, (m, 3, 1, 1)) * t
        lab = np.zeros((m, size, size), dtype=np.uint8)
        n_obj = rng.integers(2, 5, m)
        for k in range(4):
            draw = (n_obj > k)[:, None, None]
            cls = rng.integers(1, len(CLASSES), m)
            cx, cy = (rng.uniform(-0.6, 0.6, (m, 1, 1)) for _ in range(2))
            scale = rng.uniform(0.25, 0.5, (m, 1, 1))
            theta = rng.uniform(-np.pi, np.pi, (m, 1, 1))
            x, y = (xx - cx) / scale, (yy - cy) / scale
            u = np.cos(theta) * x + np.sin(theta) * y
            v = -np.sin(theta) * x + np.cos(theta) * y
            inside = _shape(u, v, cls) & draw
            tex = _texture(px, py, cls, rng)[:, None]
            c0, c1 = rng.uniform(0, 1, (m, 3, 1, 1)), rng.uniform(0, 1, (m, 3, 1, 1))
            c1 = np.where(np.abs(c1 - c0) < 0.3, 1 - c0, c1)  # keep the texture visible
            obj = c0 * (1 - tex) + c1 * tex
            img = np.where(inside[:, None], obj, img)
            lab = np.where(inside, cls[:, None, None], lab).astype(np.uint8)
        img = img + rng.normal(0, 1, img.shape) * rng.uniform(0.02, 0.08, (m, 1, 1, 1))
        images[start : start + m] = np.clip(img * 255, 0, 255).round().astype(np.uint8)
        labels[start : start + m] = _ignore_boundaries(lab)
    return images, labels
