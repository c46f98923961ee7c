"""Column-sparse convs (SPP, Wang et al. arXiv 1709.06994): the dense computation that remains
when whole columns of the im2col weight matrix are removed.

A *column* is one (input channel, kernel offset…) position across every filter of a conv: for a
Conv2d weight (C_out, C_in, kh, kw) it is ``W[:, c, i, j]``, indexed ``c·kh·kw + i·kw + j`` (the
row-major flattening of ``W[0]``). Removing columns shrinks the inner dimension of the conv's GEMM
(``C_out × C_in·kh·kw`` times ``C_in·kh·kw × L``), so the result stays a dense product.

:class:`ColumnConv` is that product: the input's sliding windows as a strided view (no copy),
the kept (c, i, j…) rows gathered from it in one indexing op into (B, kept, out…), then one
1×1 conv with the ``C_out × kept`` weight — the GEMM of the paper with a smaller inner dimension.
Its MACs, as ``FlopCounterMode`` counts that conv, are ``C_out · kept · L`` per sample — the
analytic count (the gather is not a MAC). Conv2d and Conv3d.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def column_shape(conv: nn.Conv2d | nn.Conv3d) -> tuple[int, ...]:
    """(C_in, k…) of ``conv``: the shape of its column mask."""
    return tuple(conv.weight.shape[1:])


class ColumnConv(nn.Module):
    """``conv`` restricted to the columns where ``keep`` (bool (C_in, k…)) is True.

    Computes exactly what ``conv`` computes with the other columns zeroed. ``weight`` is the kept
    columns, (C_out, kept), trainable; the pruned ones are gone for good. Conv2d and Conv3d,
    any stride, zero padding and dilation; ``groups`` must be 1.
    """

    def __init__(self, conv: nn.Conv2d | nn.Conv3d, keep: torch.Tensor) -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("ColumnConv needs groups=1, numeric zero padding")
        keep = keep.to(torch.bool).cpu()
        if tuple(keep.shape) != column_shape(conv):
            raise ValueError(f"column mask {tuple(keep.shape)} ≠ {column_shape(conv)}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = tuple(conv.kernel_size), tuple(conv.stride)
        self.padding, self.dilation = tuple(conv.padding), tuple(conv.dilation)
        # (1 + nd, kept): the (c, i, j…) of each kept column, in the flattened column order
        self.register_buffer("index", torch.nonzero(keep).T.contiguous().to(conv.weight.device))
        self.weight = nn.Parameter(conv.weight.detach()[:, keep.to(conv.weight.device)].clone())
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

    def extra_repr(self) -> str:
        total = self.in_channels * math.prod(self.kernel_size)
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, columns={self.weight.shape[1]}/{total}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = len(self.kernel_size)
        if any(self.padding):
            x = F.pad(x, [p for p in reversed(self.padding) for _ in (0, 1)])
        windows = x
        dims = zip(self.kernel_size, self.stride, self.dilation, strict=True)
        for d, (k, s, dil) in enumerate(dims):
            # dim 2+d → (output positions along d) with a trailing window axis of size dil·(k−1)+1
            windows = windows.unfold(2 + d, dil * (k - 1) + 1, s)
        if any(dil > 1 for dil in self.dilation):
            windows = windows[(Ellipsis, *(slice(None, None, dil) for dil in self.dilation))]
        # (B, C, out…, k…) → (B, C, k…, out…), then gather the kept (c, k…) rows: (B, kept, out…)
        order = [0, 1, *range(2 + nd, 2 + 2 * nd), *range(2, 2 + nd)]
        cols = windows.permute(order)[(slice(None), *self.index)]
        # The smaller GEMM as a 1×1 conv over the gathered rows (faster on CPU than a batched
        # matmul here; see benchmarks/column_slim.py), MACs C_out · kept · L as counted.
        conv = F.conv2d if nd == 2 else F.conv3d
        return conv(cols, self.weight.view(*self.weight.shape, *([1] * nd)), self.bias)
