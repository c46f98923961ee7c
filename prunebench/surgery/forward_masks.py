"""Weight masks that hold for the forward pass only, as Caffe layers that mask their weights at
the start of ``Forward`` and restore them at its end (SPP's sampled masks in the authors' code).

With a forward mask ``m`` on a conv, the output is ``conv(x, W·m)`` while the backward pass sees
the restored weights: the input gradient is computed with the *unmasked* ``W``, and the weight
gradient is the one of the weights the forward used (``∂L/∂(W·m)``, not multiplied by ``m``).
The weights themselves never change; :func:`clear_forward_mask` removes the mask.
Conv2d/Conv3d with numeric zero padding (any stride, dilation and groups).
"""

from __future__ import annotations

import types

import torch
from torch import nn


class _ForwardMasked(torch.autograd.Function):
    """``conv(x, W·m)`` forward; backward as for ``conv(x, W)`` (the restored weights)."""

    @staticmethod
    def forward(ctx, x, weight, mask, conv):
        ctx.save_for_backward(x, weight)
        ctx.conv = conv
        return conv._conv_forward(x, weight * mask, None)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        c = ctx.conv
        dt = dy.dtype  # under autocast the forward ran in a lower precision than the weights
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            dy,
            x.to(dt),
            weight.to(dt),
            None,
            list(c.stride),
            list(c.padding),
            list(c.dilation),
            False,
            [0] * (weight.dim() - 2),
            c.groups,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False],
        )
        grad_x = None if grad_x is None else grad_x.to(x.dtype)
        grad_w = None if grad_w is None else grad_w.to(weight.dtype)
        return grad_x, grad_w, None, None


def _masked_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = _ForwardMasked.apply(x, self.weight, self._forward_mask, self)
    if self.bias is None:
        return y
    return y + self.bias.view(1, -1, *([1] * (y.dim() - 2)))


def set_forward_mask(conv: nn.Conv2d | nn.Conv3d, mask: torch.Tensor) -> None:
    """Mask ``conv``'s weight by ``mask`` (broadcastable to it) in the forward pass only, until
    :func:`clear_forward_mask`; a second call replaces the mask."""
    if not isinstance(conv, nn.Conv2d | nn.Conv3d):
        raise ValueError(f"forward masks take Conv2d/Conv3d, got {type(conv).__name__}")
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError("forward masks need numeric zero padding")
    conv._forward_mask = mask
    conv.forward = types.MethodType(_masked_forward, conv)


def clear_forward_mask(conv: nn.Module) -> None:
    """Remove a forward mask (no-op without one)."""
    conv.__dict__.pop("forward", None)
    conv.__dict__.pop("_forward_mask", None)
