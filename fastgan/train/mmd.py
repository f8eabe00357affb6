"""A kernel two-sample term for G's loss: MMD² between G's samples and the step's real rows.

A D that sees raw coordinates through an MLP learns where the modes are but not how wide: its logit peaks
inside each mode and G's samples follow it in (the modes narrow to about half the data's width). The term
``mmd_weight * MMD²(fake, real)`` with Gaussian kernels at the batch's own finest scales pulls G's samples
towards the real ones and apart from each other within a mode: a fixed, resolved judge of the fine scale
beside the learned one of the layout (docs/notes/2026-12-06-mmd-term.md has what it measured).

The bandwidths come from the real rows of each step: the median distance from a real row to its nearest
other real row, and ``MMD_OCTAVES - 1`` octaves above it: the finest scale the batch resolves and up,
whatever the data's units (detached: no gradient flows through the bandwidths).
"""
from __future__ import annotations

import torch

__all__ = ["MMD_FINEST", "MMD_OCTAVES", "mmd2"]

# bandwidths h, 2h, 4h, 8h (MMD_OCTAVES), h MMD_FINEST times the real rows' median nearest-neighbour distance
MMD_OCTAVES, MMD_FINEST = 4, 1.0


def _kernel(sq: torch.Tensor, finest: torch.Tensor, octaves: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sum over the bandwidths h = ``finest * 2**i`` (i < ``octaves``) of ``exp(-d² / 2h²)`` for squared
    distances ``sq`` (``(..., n, m)``; ``finest``: ``(...,)``), and its derivative in d². One ``exp``, at the
    widest bandwidth: halving h raises the kernel to the 4th power."""
    scale = (0.5 / (finest * 2.0 ** (octaves - 1)).square())[..., None, None]   # 1 / 2h² at the widest
    k = torch.exp(-sq * scale)
    total, slope = k, -scale * k
    for _ in range(octaves - 1):
        k, scale = k.square().square(), 4.0 * scale
        total, slope = total + k, slope - scale * k
    return total, slope


def _off_diagonal_mean(k: torch.Tensor) -> torch.Tensor:
    n = k.shape[-1]
    return (k.sum(dim=(-2, -1)) - k.diagonal(dim1=-2, dim2=-1).sum(dim=-1)) / (n * (n - 1))


def _pull(slope: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_j slope_ij (a_i - b_j)``: the gradient in ``a`` of ``sum_ij k(|a_i - b_j|²)``, halved."""
    return slope.sum(dim=-1, keepdim=True) * a - slope @ b


def mmd2(fake: torch.Tensor, real: torch.Tensor, octaves: int = MMD_OCTAVES,
         finest: float = MMD_FINEST) -> torch.Tensor:
    """The unbiased MMD² between ``fake`` and ``real`` (``(..., n, features)``, any leading dimensions: one
    value each, e.g. ``(K,)`` for K replicas), with Gaussian kernels at ``octaves`` bandwidths h, 2h, 4h, ...,
    h ``finest`` times the median distance from a real row to its nearest other real row (of its own leading
    index).

    Differentiable in ``fake`` (once): the gradient is formed with the value, from the kernels' derivatives,
    rather than by autograd through every kernel matrix."""
    n, m = fake.shape[-2], real.shape[-2]
    if n < 2 or m < 2:
        raise ValueError(f"MMD² needs at least 2 fake and 2 real rows, got {n} and {m}")
    dtype = torch.promote_types(torch.promote_types(fake.dtype, real.dtype), torch.float32)   # (bf16: in fp32)
    with torch.no_grad():
        x, y = fake.detach().to(dtype), real.detach().to(dtype)
        sq_rr = _square_distances(y, y)
        others = sq_rr.clone()   # the finest scale the real rows resolve: median nearest-neighbour distance
        others.diagonal(dim1=-2, dim2=-1).fill_(float("inf"))
        h = finest * others.amin(dim=-1).median(dim=-1).values.sqrt()
        h = h.clamp_min(torch.finfo(dtype).tiny ** 0.25)   # (repeated rows: distance 0)
        (k_rr, _), (k_ff, s_ff), (k_fr, s_fr) = (_kernel(sq, h, octaves) for sq in
                                                  (sq_rr, _square_distances(x, x), _square_distances(x, y)))
        value = _off_diagonal_mean(k_ff) + _off_diagonal_mean(k_rr) - 2.0 * k_fr.mean(dim=(-2, -1))
        # d/dx_i: each fake pair counted twice, 2(x_i - x_j) per d², the cross term -2/(nm) times 2(x_i - y_j)
        grad = (4.0 / (n * (n - 1))) * _pull(s_ff, x, x) - (4.0 / (n * m)) * _pull(s_fr, x, y)
    if not fake.requires_grad:
        return value
    grad = grad.to(fake.dtype)   # value + <fake, grad> - <fake, grad>: the value, and ``grad`` as its gradient
    return value + (fake * grad).sum(dim=(-2, -1)) - (fake.detach() * grad).sum(dim=(-2, -1))


def _square_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a_i - b_j|²`` as ``|a|² + |b|² - 2 a·b``."""
    a2, b2 = a.square().sum(dim=-1), b.square().sum(dim=-1)
    return (a2[..., :, None] + b2[..., None, :] - 2.0 * a @ b.transpose(-2, -1)).clamp_min(0.0)
