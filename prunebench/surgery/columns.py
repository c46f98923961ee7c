"""Column-sparse convs (SPP, Wang et al. arXiv 1709.06994): the dense computation that remains
when whole columns of the im2col weight matrix are removed.

A *column* is one (input channel, kernel offset…) position across every filter of a conv: for a
Conv2d weight (C_out, C_in, kh, kw) it is ``W[:, c, i, j]``, indexed ``c·kh·kw + i·kw + j`` (the
row-major flattening of ``W[0]``). Removing columns shrinks the inner dimension of the conv's GEMM
(``C_out × C_in·kh·kw`` times ``C_in·kh·kw × L``), so the result stays a dense product.

:class:`ColumnConv` is that product: the kept (c, i, j…) rows of the im2col matrix gathered
straight from the (padded, channels-last) input in one ``index_select`` over precomputed flat
offsets into (B·L, kept) — the pruned rows are never built — then one GEMM with the
``kept × C_out`` weight: the paper's GEMM with a smaller inner dimension.
Its MACs, as ``FlopCounterMode`` counts that GEMM, are ``C_out · kept · L`` per sample — the
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
    any stride, zero padding and dilation; ``groups`` must be 1. The output is a channels-last
    strided view (as a conv returns for channels-last input); making it contiguous cost a third
    more time on ResNet-20.
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
        self._index_cache: dict = {}  # padded input size → gather offsets (not state)

    def extra_repr(self) -> str:
        total = self.in_channels * math.prod(self.kernel_size)
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, columns={self.weight.shape[1]}/{total}"
        )

    def _gather_index(
        self, padded: tuple[int, ...], channels: int, device: torch.device
    ) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Flat offsets into the channels-last padded input (P…, C) of every (output position,
        kept column), position-major; and the output size."""
        key = (padded, channels, str(device))
        if key not in self._index_cache:
            nd = len(padded)
            strides = [math.prod(padded[d + 1 :]) * channels for d in range(nd)]  # C innermost
            out = [
                (p - dil * (k - 1) - 1) // s + 1
                for p, k, s, dil in zip(
                    padded, self.kernel_size, self.stride, self.dilation, strict=True
                )
            ]
            index = self.index.to(device)
            column = index[0]  # channel c, plus its kernel offsets along each axis
            base = torch.zeros((), dtype=torch.long, device=device)
            for d, st in enumerate(strides):
                column = column + index[1 + d] * self.dilation[d] * st
                base = (
                    base.unsqueeze(-1) + torch.arange(out[d], device=device) * self.stride[d] * st
                )
            flat = (base.flatten().unsqueeze(1) + column.unsqueeze(0)).flatten()
            self._index_cache[key] = (flat, tuple(out))
        return self._index_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = len(self.kernel_size)
        if any(self.padding):
            x = F.pad(x, [p for p in reversed(self.padding) for _ in (0, 1)])
        flat, out = self._gather_index(tuple(x.shape[2:]), x.shape[1], x.device)
        # Channels last, so each position's kept channels lie close together: one gather gives
        # the (B·L, kept) im2col rows that survive; then one GEMM with the (kept, C_out) weight.
        x = x.permute(0, *range(2, 2 + nd), 1).reshape(x.shape[0], -1)
        cols = x.index_select(1, flat).view(-1, self.weight.shape[1])
        y = (
            torch.mm(cols, self.weight.T)
            if self.bias is None
            else torch.addmm(self.bias, cols, self.weight.T)
        )
        # (B, out…, C_out) → (B, C_out, out…): a channels-last view, no copy
        return y.view(x.shape[0], *out, -1).permute(0, nd + 1, *range(1, nd + 1))
