"""A kernel two-sample term for G's loss: MMD² between G's samples and the step's real rows.

A D that sees raw coordinates through an MLP learns where the modes are but not how wide: its logit peaks
inside each mode and G's samples follow it in (the modes narrow to about half the data's width). The term
``mmd_weight * MMD²(fake, real)`` with Gaussian kernels at the batch's own finest scales pulls G's samples
towards the real ones and apart from each other within a mode: a fixed, resolved judge of the fine scale
beside the learned one of the layout (docs/notes/2026-12-07-mmd-term.md has what it measured).

The bandwidths come from the real rows of each step: the median distance from a real row to its nearest
other real row, and ``MMD_OCTAVES - 1`` octaves above it: the finest scale the batch resolves and up,
whatever the data's units (detached: no gradient flows through the bandwidths).
"""
from __future__ import annotations

import torch

__all__ = ["MMD_OCTAVES", "mmd2"]

MMD_OCTAVES = 4   # bandwidths h, 2h, 4h, 8h, h the real rows' median nearest-neighbour distance


def _kernel(sq: torch.Tensor, finest: torch.Tensor, octaves: int) -> torch.Tensor:
    """Sum over the bandwidths ``finest * 2**i`` (i < ``octaves``) of ``exp(-d² / 2h²)`` for squared distances
    ``sq`` (``(..., n, m)``; ``finest``: ``(...,)``). One ``exp``, at the widest: halving h is the 4th power."""
    widest = finest * 2.0 ** (octaves - 1)
    k = torch.exp(-sq * (0.5 / widest.square())[..., None, None])
    total = k
    for _ in range(octaves - 1):
        k = k.square().square()
        total = total + k
    return total


def _off_diagonal_mean(k: torch.Tensor) -> torch.Tensor:
    n = k.shape[-1]
    return (k.sum(dim=(-2, -1)) - k.diagonal(dim1=-2, dim2=-1).sum(dim=-1)) / (n * (n - 1))


def mmd2(fake: torch.Tensor, real: torch.Tensor, octaves: int = MMD_OCTAVES) -> torch.Tensor:
    """The unbiased MMD² between ``fake`` and ``real`` (``(..., n, features)``, any leading dimensions: one
    value each, e.g. ``(K,)`` for K replicas), with Gaussian kernels at ``octaves`` bandwidths h, 2h, 4h, ...,
    h the median distance from a real row to its nearest other real row (of its own leading index)."""
    if fake.shape[-2] < 2 or real.shape[-2] < 2:
        raise ValueError(f"MMD² needs at least 2 fake and 2 real rows, got {fake.shape[-2]} and {real.shape[-2]}")
    dtype = torch.promote_types(torch.promote_types(fake.dtype, real.dtype), torch.float32)   # (bf16: in fp32)
    fake, real = fake.to(dtype), real.to(dtype)
    with torch.no_grad():   # the real rows' term (no gradient) and the finest scale they resolve
        sq_rr = _square_distances(real, real)
        eye = torch.eye(real.shape[-2], dtype=torch.bool, device=real.device)
        finest = sq_rr.masked_fill(eye, float("inf")).amin(dim=-1).median(dim=-1).values.sqrt()
        finest = finest.clamp_min(torch.finfo(finest.dtype).tiny ** 0.25)   # (repeated rows: distance 0)
        rr = _off_diagonal_mean(_kernel(sq_rr, finest, octaves))
    k_ff = _kernel(_square_distances(fake, fake), finest, octaves)
    k_fr = _kernel(_square_distances(fake, real), finest, octaves)
    return _off_diagonal_mean(k_ff) + rr - 2.0 * k_fr.mean(dim=(-2, -1))


def _square_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a_i - b_j|²`` as ``|a|² + |b|² - 2 a·b`` (differentiable at 0, where cdist's square root is not)."""
    a2, b2 = a.square().sum(dim=-1), b.square().sum(dim=-1)
    return (a2[..., :, None] + b2[..., None, :] - 2.0 * a @ b.transpose(-2, -1)).clamp_min(0.0)
