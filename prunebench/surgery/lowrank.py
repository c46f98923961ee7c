"""Low-rank conv factorisation (TRP, Xu et al. arXiv 1812.02402): the weight as a matrix, its
SVD, energy ranks, projections and the two-conv replacement — shared, batched, with units.

Schemes (the authors' ``decompose.py``, our own code):

* ``channel`` (TRP1, "NC"): W (N, C, kh, kw) as an N × (C·kh·kw) matrix; rank r becomes
  ``Conv(C→r, kh×kw, stride, padding)`` then ``Conv(r→N, 1×1)`` with ``√S·Vᵀ`` and ``U·√S``.
  A 3D conv (N, C, kd, kh, kw) the same way, N × (C·kd·kh·kw) — our extension (the paper's nets
  are 2D; PSMNet's cost-volume convs are 3D).
* ``spatial`` (TRP2, "VH"): W permuted to (C·kh) × (N·kw); rank r becomes ``Conv(C→r, kh×1)`` then
  ``Conv(r→N, 1×kw)``; stride and padding split between the two. 2D convs only.
The bias, if any, goes on the second conv. ``kdims`` is the conv's number of kernel dimensions
(2 or 3): the leading dimensions before (N, C, k…) are a batch of weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SCHEMES = ("channel", "spatial")
# How :func:`project` finds the top singular subspace: ``direct`` — LAPACK's SVD of the matrix (the
# authors' ``torch.svd``); ``gram`` — the eigendecomposition of the smaller Gram matrix (W Wᵀ for a
# wide W), the same projection to float32 rounding, several times faster on wide matrices
# (ResNet-18's 512 × 4,608: benchmarks/trp_projection.py).
SOLVERS = ("direct", "gram")


def _check(scheme: str, kdims: int) -> None:
    if kdims not in (2, 3) or (scheme == "spatial" and kdims != 2):
        raise ValueError(f"scheme {scheme!r} with {kdims} kernel dims: spatial is 2D only")


def as_matrix(w: torch.Tensor, scheme: str, kdims: int = 2) -> torch.Tensor:
    """Weight(s) (…, N, C, k…) → matrix (…, rows, cols) of the scheme."""
    _check(scheme, kdims)
    lead = w.shape[: -(kdims + 2)]
    if scheme == "channel":
        return w.reshape(*lead, w.shape[-(kdims + 2)], -1)
    n, c, kh, kw = w.shape[-4:]
    return w.movedim(-4, -2).reshape(*lead, c * kh, n * kw)  # (C, kh, N, kw)


def from_matrix(m: torch.Tensor, shape: torch.Size, scheme: str) -> torch.Tensor:
    """Inverse of :func:`as_matrix` for weights of ``shape`` (N, C, k…)."""
    _check(scheme, len(shape) - 2)
    if scheme == "channel":
        return m.reshape(*m.shape[:-2], *shape)
    n, c, kh, kw = shape
    return m.reshape(*m.shape[:-2], c, kh, n, kw).movedim(-2, -4)


def svd(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reduced SVD of a (batch of) matrix; retried in float64 when LAPACK's divide-and-conquer
    driver does not converge on an ill-conditioned float32 matrix (it stopped a TRP run on
    DeepLab's encoder at the cpu tier); the factors come back in ``m``'s dtype."""
    try:
        return torch.linalg.svd(m, full_matrices=False)
    except torch.linalg.LinAlgError:
        if m.dtype == torch.float64:
            raise
        u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)
        return u.to(m.dtype), s.to(m.dtype), vh.to(m.dtype)


def energy_rank(s: torch.Tensor, e: float) -> torch.Tensor:
    """Smallest k with Σ_{i≤k} σ_i² / Σ σ_i² ≥ e, per row of ``s`` (descending singular values)."""
    energy = s.double() ** 2
    frac = energy.cumsum(-1) / energy.sum(-1, keepdim=True).clamp(min=1e-300)
    return ((frac < e - 1e-12).sum(-1) + 1).clamp(max=s.shape[-1])


def project(
    w: torch.Tensor, scheme: str, e: float, kdims: int = 2, solver: str = "direct"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Energy-``e`` low-rank projection of a stack of same-shaped weights (B, N, C, k…).

    Returns:
        (projected weights, nuclear-norm sub-gradients U_k V_kᵀ in weight shape, ranks (B,)),
        from one batched SVD (``solver`` direct) or Gram eigendecomposition (``gram``).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver {solver!r}: choices are {', '.join(SOLVERS)}")
    m = as_matrix(w, scheme, kdims)
    proj, sub, k = (_project_direct if solver == "direct" else _project_gram)(m, e)
    shape = w.shape[-(kdims + 2) :]
    return from_matrix(proj, shape, scheme), from_matrix(sub, shape, scheme), k


def _project_direct(m: torch.Tensor, e: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    u, s, vh = svd(m)
    k = energy_rank(s, e)
    keep = (torch.arange(s.shape[-1], device=s.device) < k.unsqueeze(-1)).to(s.dtype)
    return (u * (s * keep).unsqueeze(-2)) @ vh, (u * keep.unsqueeze(-2)) @ vh, k


def _project_gram(m: torch.Tensor, e: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The projection from the smaller side's Gram matrix: for a wide A (rows ≤ cols), A Aᵀ = U S² Uᵀ
    (eigendecomposition in float64), then U_k S_k V_kᵀ = U_k U_kᵀ A and U_k V_kᵀ = U_k S_k⁻¹ U_kᵀ A
    (a tall matrix through its transpose). Float32 products, so σ below ~3e-4·σ_max are rounding;
    the energy rank keeps the large ones. A kept σ of exactly 0 (an all-zero weight) gets a zero
    sub-gradient where the SVD returns an arbitrary unit direction."""
    tall = m.shape[-2] > m.shape[-1]
    a = m.mT if tall else m
    eigval, eigvec = torch.linalg.eigh((a @ a.mT).double())  # ascending
    s = eigval.flip(-1).clamp(min=0).sqrt()
    k = energy_rank(s, e)
    width = int(k.max())
    keep = torch.arange(width, device=s.device) < k.unsqueeze(-1)
    u_k = (eigvec.flip(-1)[..., :width] * keep.unsqueeze(-2)).to(a.dtype)
    s_k = s[..., :width]
    inv = torch.where(keep & (s_k > 0), 1 / s_k.clamp(min=1e-300), 0.0).to(a.dtype)
    c = u_k.mT @ a  # U_kᵀ A = S_k V_kᵀ
    proj, sub = u_k @ c, u_k @ (inv.unsqueeze(-1) * c)
    return (proj.mT, sub.mT, k) if tall else (proj, sub, k)


def singular_values(w: torch.Tensor, scheme: str) -> torch.Tensor:
    """σ of one weight's matrix (a conv weight (N, C, k…)), descending."""
    return torch.linalg.svdvals(as_matrix(w.detach().double(), scheme, w.dim() - 2))


def macs_fraction_num_den(shape: tuple[int, ...], rank: int, scheme: str) -> tuple[int, int]:
    """The two-conv form's MACs over the dense conv's, as an integer ratio (stride 1 for spatial);
    ``shape`` is (N, C, k…).

    channel: r·(C·Πk + N) / (N·C·Πk); spatial: r·(C·kh + N·kw) / (N·C·kh·kw).
    """
    n, c, *k = shape
    size = math.prod(k)
    if scheme == "channel":
        return rank * (c * size + n), n * c * size
    kh, kw = k
    return rank * (c * kh + n * kw), n * c * size


def decompose(conv: nn.Conv2d | nn.Conv3d, rank: int, scheme: str) -> nn.Sequential:
    """Replace ``conv`` by the rank-``rank`` two-conv form of its current weight."""
    w = conv.weight.detach()
    n, c, *k = w.shape
    u, s, vh = svd(as_matrix(w.double(), scheme, len(k)))
    root = s[:rank].sqrt()
    first = (root.unsqueeze(1) * vh[:rank]).to(w.dtype)  # √S·Vᵀ: (r, cols)
    second = (u[:, :rank] * root).to(w.dtype)  # U·√S: (rows, r)
    bias = conv.bias is not None
    if scheme == "channel":
        conv_type = nn.Conv3d if isinstance(conv, nn.Conv3d) else nn.Conv2d
        a = conv_type(c, rank, k, conv.stride, conv.padding, conv.dilation, bias=False)
        b = conv_type(rank, n, 1, bias=bias)
        a.weight.data = first.reshape(rank, c, *k)
        b.weight.data = second.reshape(n, rank, *[1] * len(k))
    else:
        kh, kw = k
        (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
        a = nn.Conv2d(c, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=False)
        b = nn.Conv2d(rank, n, (1, kw), (1, sw), (0, pw), (1, dw), bias=bias)
        a.weight.data = second.T.reshape(rank, c, kh, 1)  # rows of the matrix are (C, kh)
        b.weight.data = first.reshape(rank, n, kw).permute(1, 0, 2).reshape(n, rank, 1, kw)
    if bias:
        b.bias.data = conv.bias.detach().clone()
    return nn.Sequential(a, b).to(w.device)
