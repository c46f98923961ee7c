"""Column-sparse convs (SPP, Wang et al. arXiv 1709.06994): the dense computation that remains
when whole columns of the im2col weight matrix are removed.

A *column* is one (input channel, kernel offset…) position across every filter of a conv: for a
Conv2d weight (C_out, C_in, kh, kw) it is ``W[:, c, i, j]``, indexed ``c·kh·kw + i·kw + j`` (the
row-major flattening of ``W[0]``). Removing columns shrinks the inner dimension of the conv's GEMM
(``C_out × C_in·kh·kw`` times ``C_in·kh·kw × L``), so the result stays a dense product.

:class:`ColumnConv` is that product: the kept (c, i, j…) rows of the im2col matrix gathered
straight from the (padded) input in one ``index_select`` over precomputed flat offsets into
(B, kept, out…) — the pruned rows are never built — then one 1×1 conv with the ``C_out × kept`` weight — the GEMM of the paper with a smaller inner dimension.
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
        self._index_cache: dict = {}  # padded input size → gather offsets (not state)

    def extra_repr(self) -> str:
        total = self.in_channels * math.prod(self.kernel_size)
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, columns={self.weight.shape[1]}/{total}"
        )

    def _gather_index(self, padded: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Flat offsets into the padded input (C·P…) of every (kept column, output position)."""
        key = (padded, str(device))
        if key not in self._index_cache:
            strides = [math.prod(padded[d + 1 :]) for d in range(len(padded))]  # of each axis
            out = [
                (p - dil * (k - 1) - 1) // s + 1
                for p, k, s, dil in zip(
                    padded, self.kernel_size, self.stride, self.dilation, strict=True
                )
            ]
            index = self.index.to(device)
            column = index[0] * math.prod(padded)  # channel c, then its kernel offsets
            base = torch.zeros((), dtype=torch.long, device=device)
            for d, st in enumerate(strides):
                column = column + index[1 + d] * self.dilation[d] * st
                pos = torch.arange(out[d], device=device) * self.stride[d] * st
                base = base.unsqueeze(-1) + pos  # output positions, row-major
            flat = (column.view(-1, *([1] * len(out))) + base).flatten()
            self._index_cache[key] = (flat, tuple(out))
        return self._index_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = len(self.kernel_size)
        if any(self.padding):
            x = F.pad(x, [p for p in reversed(self.padding) for _ in (0, 1)])
        flat, out = self._gather_index(tuple(x.shape[2:]), x.device)
        # one gather of the kept columns at every output position: (B, kept, out…)
        cols = x.flatten(1).index_select(1, flat).view(x.shape[0], -1, *out)
        # The smaller GEMM as a 1×1 conv over the gathered rows (faster on CPU than a batched
        # matmul here; see benchmarks/column_slim.py), MACs C_out · kept · L as counted.
        conv = F.conv2d if nd == 2 else F.conv3d
        return conv(cols, self.weight.view(*self.weight.shape, *([1] * nd)), self.bias)
