"""Stereo metrics and loss over valid pixels.

A ground-truth map is (B, H, W) disparities in pixels with NaN where there is no ground truth;
a pixel is *valid* when its disparity is finite, ≥ 0 and < maxdisp (PSMNet's SceneFlow mask,
``disp_gt < maxdisp``; KITTI's ``gt > 0`` becomes NaN at load time). Every metric is
**pixel-weighted**: the sum over every valid pixel of the split divided by their number — not
PSMNet's mean of per-batch means, which weighs a batch with few valid pixels as much as a full one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics

LOSS_WEIGHTS = (0.5, 0.7, 1.0)  # pred1, pred2, pred3 (PSMNet main.py)


def valid_mask(gt: torch.Tensor, maxdisp: int) -> torch.Tensor:
    """bool mask of pixels with ground truth in [0, maxdisp)."""
    return torch.isfinite(gt) & (gt >= 0) & (gt < maxdisp)


def stereo_loss(output, gt: torch.Tensor, maxdisp: int) -> torch.Tensor:
    """PSMNet's loss: Σ_k w_k · SmoothL1(pred_k, gt) over valid pixels, w = 0.5/0.7/1.0 for the
    three training outputs (a single prediction, e.g. in eval mode, gets weight 1)."""
    preds = output if isinstance(output, tuple | list) else (output,)
    weights = LOSS_WEIGHTS if len(preds) == 3 else (1.0,) * len(preds)
    mask = valid_mask(gt, maxdisp)
    if not mask.any():  # no supervision in this batch: a zero that keeps the graph
        return sum(p.sum() * 0.0 for p in preds)
    target = gt[mask]
    return sum(w * F.smooth_l1_loss(p[mask], target) for w, p in zip(weights, preds, strict=True))


class _PixelMetric(torchmetrics.Metric):
    """Σ over valid pixels of a per-pixel value, divided by the number of valid pixels."""

    full_state_update = False

    def __init__(self, maxdisp: int) -> None:
        super().__init__()
        self.maxdisp = maxdisp
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def per_pixel(self, err: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        mask = valid_mask(gt, self.maxdisp)
        err = (pred.detach()[mask] - gt[mask]).abs()
        self.total += self.per_pixel(err, gt[mask]).double().sum()
        self.count += int(mask.sum())

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)


class EPE(_PixelMetric):
    """End-point error: mean |d − d_gt| in pixels over valid pixels (pixel-weighted)."""

    higher_is_better = False

    def per_pixel(self, err, gt):
        return err


class D1(_PixelMetric):
    """KITTI 2015's D1: fraction of valid pixels with |d − d_gt| > 3 px **and** > 5 % of d_gt
    (the complement of PSMNet's "correct" test)."""

    higher_is_better = False

    def per_pixel(self, err, gt):
        return ((err > 3.0) & (err > 0.05 * gt.abs())).float()


class ThreePixel(_PixelMetric):
    """3-px error: fraction of valid pixels with |d − d_gt| > 3 px."""

    higher_is_better = False

    def per_pixel(self, err, gt):
        return (err > 3.0).float()


def stereo_metrics(maxdisp: int) -> dict[str, torchmetrics.Metric]:
    """Metric key → metric; ``epe`` is the primary one."""
    return {"epe": EPE(maxdisp), "d1": D1(maxdisp), "3px": ThreePixel(maxdisp)}
