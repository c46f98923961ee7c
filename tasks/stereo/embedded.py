"""Embedded stereo data: rendered pairs with exact dense disparity, and the real Middlebury 2014
"motorcycle" pair that ships inside scikit-image. Nothing is downloaded.

**Rendered pairs** (seeded; a few ms each at 64×128). A scene is a background plane plus 3–6
rectangles or ellipses, each a textured plane at its own depth, slightly slanted: in left-image
coordinates surface k has disparity ``d_k(x, y) = d0 + bx·(x − cx) + by·(y − cy)``. The left
view shows, at each pixel, the covering surface with the largest disparity (the nearest). The
right view is rendered *exactly*, not warped: right pixel ``x_r`` sees surface k at the left
coordinate solving ``x − d_k(x, y) = x_r``, i.e. ``x = (x_r + d0 − bx·cx + by·(y − cy)) / (1 − bx)``,
if that point lies inside the surface's outline; the nearest such surface wins, so occlusions
and disocclusions are what the geometry gives. Textures are continuous functions of the surface
point (bilinear value noise at a random scale, per channel), so both views sample the same
texture. Ground truth is the left view's disparity; occluded pixels keep their true disparity
(as SceneFlow and KITTI's ``disp_occ`` do), and pixels whose match falls outside the right image
(``x − d < 0``) are invalid (NaN). Independent Gaussian noise (σ = 2 grey levels) is added to
each view.

**Motorcycle** (``skimage.data.stereo_motorcycle()``, 500×741, disparity 7.2–59.9 px, unknown
pixels ``inf``): downscaled by ``s = min(1, (maxdisp − 1) / max disparity)`` so every disparity
fits the model's range; disparity scales with the image width, so it is multiplied by the
width ratio. It is padded at the top and right to multiples of 16 (as PSMNet pads its test
images); padding and unknown pixels are NaN in the ground truth.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

NOISE_SIGMA = 2.0  # grey levels, per view


def _texture(rng: np.random.Generator, h: int, w: int, maxdisp: int):
    """A continuous RGB texture: (x, y) arrays → (…, 3) floats in [0, 255]."""
    cell = float(rng.choice([2.0, 3.0, 5.0, 8.0]))
    gh, gw = int(h / cell) + 3, int((w + maxdisp) / cell) + 3
    grids = rng.random((4, gh, gw))  # shared luminance + three chroma grids
    base = rng.uniform(40, 215, 3)
    contrast = rng.uniform(0.4, 0.9)

    def sample(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        coords = np.stack([y / cell, x / cell])
        lum = map_coordinates(grids[0], coords, order=1, mode="mirror")
        chans = [
            0.7 * lum + 0.3 * map_coordinates(g, coords, order=1, mode="mirror") for g in grids[1:]
        ]
        return np.clip(base * (1 - contrast / 2 + contrast * np.stack(chans, -1)), 0, 255)

    return sample


def _surfaces(rng: np.random.Generator, h: int, w: int, maxdisp: int) -> list[dict]:
    m = maxdisp
    surfaces = [  # the background: everywhere, far, its disparity growing towards the bottom
        {
            "d0": rng.uniform(0.05, 0.2) * m,
            "bx": 0.0,
            "by": rng.uniform(0.0, 0.1) * m / h,
            "cx": 0.0,
            "cy": 0.0,
            "shape": "all",
        }
    ]
    for _ in range(int(rng.integers(3, 7))):
        rx, ry = rng.uniform(0.08, 0.3) * w, rng.uniform(0.12, 0.45) * h
        surfaces.append(
            {
                "d0": rng.uniform(0.25, 0.8) * m,
                "bx": rng.uniform(-0.04, 0.04),
                "by": rng.uniform(-0.04, 0.04),
                "cx": rng.uniform(-0.1, 1.1) * w,
                "cy": rng.uniform(0.0, 1.0) * h,
                "rx": rx,
                "ry": ry,
                "shape": str(rng.choice(["rect", "ellipse"])),
            }
        )
    return surfaces


def _inside(s: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if s["shape"] == "all":
        return np.ones(x.shape, dtype=bool)
    u, v = (x - s["cx"]) / s["rx"], (y - s["cy"]) / s["ry"]
    if s["shape"] == "rect":
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    return u * u + v * v <= 1


def _disparity(s: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return s["d0"] + s["bx"] * (x - s["cx"]) + s["by"] * (y - s["cy"])


def render_pair(
    rng: np.random.Generator, h: int, w: int, maxdisp: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One rendered scene: left and right uint8 (H, W, 3) and the left disparity float32 (H, W),
    NaN where invalid (see the module docstring)."""
    surfaces = _surfaces(rng, h, w, maxdisp)
    textures = [_texture(rng, h, w, maxdisp) for _ in surfaces]
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)

    def view(preimage) -> tuple[np.ndarray, np.ndarray]:
        best_d = np.full((h, w), -np.inf)
        image = np.zeros((h, w, 3))
        for s, tex in zip(surfaces, textures, strict=True):
            xs = preimage(s)
            d = _disparity(s, xs, y)
            win = _inside(s, xs, y) & (d > best_d)
            best_d = np.where(win, d, best_d)
            image[win] = tex(xs[win], y[win])
        return image, best_d

    left, disp = view(lambda s: x)
    right, _ = view(
        lambda s: (x + s["d0"] - s["bx"] * s["cx"] + s["by"] * (y - s["cy"])) / (1 - s["bx"])
    )
    disp[(x - disp) < 0] = np.nan  # the match falls outside the right image
    noisy = lambda im: np.clip(im + rng.normal(0, NOISE_SIGMA, im.shape), 0, 255)  # noqa: E731
    return (
        noisy(left).round().astype(np.uint8),
        noisy(right).round().astype(np.uint8),
        disp.astype(np.float32),
    )


def render_set(n: int, h: int, w: int, maxdisp: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` rendered pairs: ``left``/``right`` uint8 (n, H, W, 3), ``disp`` float32 (n, H, W)."""
    rng = np.random.default_rng(seed)
    pairs = [render_pair(rng, h, w, maxdisp) for _ in range(n)]
    return {k: np.stack([p[i] for p in pairs]) for i, k in enumerate(("left", "right", "disp"))}


def motorcycle(maxdisp: int) -> dict[str, np.ndarray]:
    """The scikit-image motorcycle pair, scaled to fit ``maxdisp`` and padded to multiples of 16
    (one sample: ``left``/``right`` uint8 (1, H, W, 3), ``disp`` float32 (1, H, W)); also
    ``scale`` (the width ratio) and ``pad`` (top, right) in pixels."""
    from skimage.data import stereo_motorcycle
    from skimage.transform import resize

    left, right, disp = stereo_motorcycle()
    disp = np.where(np.isfinite(disp), disp, np.nan).astype(np.float32)
    h0, w0 = disp.shape
    scale = min(1.0, (maxdisp - 1) / float(np.nanmax(disp)))
    h, w = max(1, round(h0 * scale)), max(1, round(w0 * scale))
    ratio = w / w0  # disparity is a horizontal distance: it scales with the width
    img = lambda a: (resize(a, (h, w), anti_aliasing=scale < 1) * 255).round().astype(np.uint8)  # noqa: E731
    rows = np.minimum(((np.arange(h) + 0.5) * h0 / h).astype(int), h0 - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * w0 / w).astype(int), w0 - 1)
    disp = disp[rows][:, cols] * ratio  # nearest neighbour: never mixes a valid and an inf pixel
    top, rgt = -h % 16, -w % 16
    pad = lambda a, v: np.pad(a, ((top, 0), (0, rgt)) + ((0, 0),) * (a.ndim - 2), constant_values=v)  # noqa: E731
    return {
        "left": pad(img(left), 0)[None],
        "right": pad(img(right), 0)[None],
        "disp": pad(disp, np.nan)[None],
        "scale": np.float64(ratio),
        "pad": np.array([top, rgt]),
    }
