"""Low-rank conv factorisation (TRP, Xu et al. arXiv 1812.02402): the weight as a matrix, its
SVD, energy ranks, projections and the two-conv replacement — shared, batched, with units.

Schemes (the authors' ``decompose.py``, our own code):

* ``channel`` (TRP1, "NC"): W (N, C, kh, kw) as an N × (C·kh·kw) matrix; rank r becomes
  ``Conv(C→r, kh×kw, stride, padding)`` then ``Conv(r→N, 1×1)`` with ``√S·Vᵀ`` and ``U·√S``.
* ``spatial`` (TRP2, "VH"): W permuted to (C·kh) × (N·kw); rank r becomes ``Conv(C→r, kh×1)`` then
  ``Conv(r→N, 1×kw)``; stride and padding split between the two.
The bias, if any, goes on the second conv.
"""

from __future__ import annotations

import torch
from torch import nn

SCHEMES = ("channel", "spatial")


def as_matrix(w: torch.Tensor, scheme: str) -> torch.Tensor:
    """Weight(s) (…, N, C, kh, kw) → matrix (…, rows, cols) of the scheme."""
    n, c, kh, kw = w.shape[-4:]
    if scheme == "channel":
        return w.reshape(*w.shape[:-4], n, c * kh * kw)
    return w.movedim(-4, -2).reshape(*w.shape[:-4], c * kh, n * kw)  # (C, kh, N, kw)


def from_matrix(m: torch.Tensor, shape: torch.Size, scheme: str) -> torch.Tensor:
    """Inverse of :func:`as_matrix` for weights of ``shape`` (N, C, kh, kw)."""
    n, c, kh, kw = shape
    if scheme == "channel":
        return m.reshape(*m.shape[:-2], n, c, kh, kw)
    return m.reshape(*m.shape[:-2], c, kh, n, kw).movedim(-2, -4)


def energy_rank(s: torch.Tensor, e: float) -> torch.Tensor:
    """Smallest k with Σ_{i≤k} σ_i² / Σ σ_i² ≥ e, per row of ``s`` (descending singular values)."""
    energy = s.double() ** 2
    frac = energy.cumsum(-1) / energy.sum(-1, keepdim=True).clamp(min=1e-300)
    return ((frac < e - 1e-12).sum(-1) + 1).clamp(max=s.shape[-1])


def project(
    w: torch.Tensor, scheme: str, e: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Energy-``e`` low-rank projection of a stack of same-shaped weights (B, N, C, kh, kw).

    Returns:
        (projected weights, nuclear-norm sub-gradients U_k V_kᵀ in weight shape, ranks (B,)),
        from one batched SVD.
    """
    u, s, vh = torch.linalg.svd(as_matrix(w, scheme), full_matrices=False)
    k = energy_rank(s, e)
    keep = (torch.arange(s.shape[-1], device=s.device) < k.unsqueeze(-1)).to(s.dtype)
    proj = (u * (s * keep).unsqueeze(-2)) @ vh
    sub = (u * keep.unsqueeze(-2)) @ vh
    return from_matrix(proj, w.shape[-4:], scheme), from_matrix(sub, w.shape[-4:], scheme), k


def singular_values(w: torch.Tensor, scheme: str) -> torch.Tensor:
    """σ of one weight's matrix, descending."""
    return torch.linalg.svdvals(as_matrix(w.detach().double(), scheme))


def macs_fraction_num_den(shape: tuple[int, ...], rank: int, scheme: str) -> tuple[int, int]:
    """The two-conv form's MACs over the dense conv's, as an integer ratio (stride 1 for spatial).

    channel: r·(C·kh·kw + N) / (N·C·kh·kw); spatial: r·(C·kh + N·kw) / (N·C·kh·kw).
    """
    n, c, kh, kw = shape
    num = rank * (c * kh * kw + n) if scheme == "channel" else rank * (c * kh + n * kw)
    return num, n * c * kh * kw


def decompose(conv: nn.Conv2d, rank: int, scheme: str) -> nn.Sequential:
    """Replace ``conv`` by the rank-``rank`` two-conv form of its current weight."""
    w = conv.weight.detach()
    n, c, kh, kw = w.shape
    u, s, vh = torch.linalg.svd(as_matrix(w.double(), scheme), full_matrices=False)
    root = s[:rank].sqrt()
    first = (root.unsqueeze(1) * vh[:rank]).to(w.dtype)  # √S·Vᵀ: (r, cols)
    second = (u[:, :rank] * root).to(w.dtype)  # U·√S: (rows, r)
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    bias = conv.bias is not None
    if scheme == "channel":
        a = nn.Conv2d(c, rank, (kh, kw), (sh, sw), (ph, pw), (dh, dw), bias=False)
        b = nn.Conv2d(rank, n, 1, bias=bias)
        a.weight.data = first.reshape(rank, c, kh, kw)
        b.weight.data = second.reshape(n, rank, 1, 1)
    else:
        a = nn.Conv2d(c, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=False)
        b = nn.Conv2d(rank, n, (1, kw), (1, sw), (0, pw), (1, dw), bias=bias)
        a.weight.data = second.T.reshape(rank, c, kh, 1)  # rows of the matrix are (C, kh)
        b.weight.data = first.reshape(rank, n, kw).permute(1, 0, 2).reshape(n, rank, 1, kw)
    if bias:
        b.bias.data = conv.bias.detach().clone()
    return nn.Sequential(a, b).to(w.device)
