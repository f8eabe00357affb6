"""A kernel two-sample term for G's loss: MMD² between G's samples and the step's real rows.

A D that sees raw coordinates through an MLP learns where the modes are but not how wide: its logit peaks
inside each mode and G's samples follow it in (the modes narrow to about half the data's width). The term
``mmd_weight * MMD²(fake, real)`` with Gaussian kernels from the batch's finest scale up to its layout's pulls
G's samples towards the real ones and apart from each other within a mode (the fine kernels: the modes' width)
and weighs the modes' masses against each other (the wide ones): a fixed, resolved judge beside the learned one
(docs/notes/2026-12-06-mmd-term.md and docs/notes/2026-12-07-mmd-ladder.md have what it measured).

The bandwidths come from the real rows of each step: ``MMD_BANDWIDTHS`` of them, log-spaced from the median
distance of a real row to its nearest other real row (the finest scale the batch resolves) to the median
distance between two real rows (the layout's scale), whatever the data's units (detached: no gradient flows
through the bandwidths). With ``fine=p`` the kernel at bandwidth h weighs ``(widest / h)^p``: the finest kernels,
which set the modes' width, count more than the wide ones, which place their masses
(docs/notes/2026-12-07-grid-fine-kernels-twenty-seeds.md has what it measured); with ``shape=q`` as well they
share that total weight as ``(widest / h)^q`` does: q's shape at p's strength.
"""
from __future__ import annotations

import math

import torch

from ..checks import positive_int

__all__ = ["MMD_BANDWIDTHS", "mmd2"]

# the number of bandwidths, log-spaced from the real rows' median nearest-neighbour distance to their median distance
MMD_BANDWIDTHS = 8


def _bandwidths(sq_rr: torch.Tensor, count: int) -> torch.Tensor:
    """``(..., count)`` bandwidths log-spaced from the real rows' median nearest-neighbour distance to their
    median pairwise distance (lower medians), from their squared distances ``sq_rr`` (``(..., m, m)``)."""
    m = sq_rr.shape[-1]
    others = sq_rr.clone()
    others.diagonal(dim1=-2, dim2=-1).fill_(float("inf"))
    finest = others.amin(dim=-1).median(dim=-1).values.sqrt()
    i, j = torch.triu_indices(m, m, offset=1, device=sq_rr.device)
    widest = sq_rr[..., i, j].median(dim=-1).values.sqrt()
    finest = finest.clamp_min(torch.finfo(sq_rr.dtype).tiny ** 0.25)   # (repeated rows: distance 0)
    widest = torch.maximum(widest, finest)
    steps = torch.linspace(0.0, 1.0, count, dtype=sq_rr.dtype, device=sq_rr.device)
    return finest[..., None] * (widest / finest)[..., None] ** steps


def _is_power(value) -> bool:
    """Whether ``value`` is a finite number >= 0 (not a bool): a power the kernels' weights may take."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 <= value < math.inf


def _weights(widths: torch.Tensor, fine: float, shape: float | None) -> torch.Tensor | None:
    """The kernels' weights (``(..., count)``) for bandwidths ``widths``: ``(widest / h)^fine``, or with ``shape``
    ``(widest / h)^shape`` scaled to the same sum; None where all weigh 1."""
    if shape == fine:
        shape = None
    if shape is None and not fine:
        return None
    ratio = widths[..., -1:] / widths
    weights = ratio ** fine
    if shape is None:
        return weights
    shaped = ratio ** shape
    return shaped * (weights.sum(dim=-1, keepdim=True) / shaped.sum(dim=-1, keepdim=True))


def _kernel(sq: torch.Tensor, widths: torch.Tensor, weights: torch.Tensor | None,
            slope: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The sum over the bandwidths h (``widths``: ``(..., count)``, the widest last) of
    ``weight_h exp(-d² / 2h²)`` for squared distances ``sq`` (``(..., n, m)``; ``weights`` None: 1 each), and its
    derivative in d² (``None`` when ``slope`` is false)."""
    # exponents floored at half the log of the smallest normal number (fp32: kernels below 1e-19, far below the
    # sums' rounding): exp's subnormal results cost over ten times a normal one on x86
    floor = math.log(torch.finfo(sq.dtype).tiny) / 2
    total, derivative = torch.zeros_like(sq), torch.zeros_like(sq) if slope else None
    for i, h in enumerate(widths.unbind(dim=-1)):
        scale = (0.5 / h.square())[..., None, None]   # 1 / 2h²
        k = torch.exp((-sq * scale).clamp_min(floor))
        if weights is not None:
            k = weights[..., i, None, None] * k
        total = total + k
        if slope:
            derivative = derivative - scale * k
    return total, derivative


def _off_diagonal_mean(k: torch.Tensor) -> torch.Tensor:
    n = k.shape[-1]
    return (k.sum(dim=(-2, -1)) - k.diagonal(dim1=-2, dim2=-1).sum(dim=-1)) / (n * (n - 1))


def _pull(slope: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_j slope_ij (a_i - b_j)``: the gradient in ``a`` of ``sum_ij k(|a_i - b_j|²)``, halved."""
    return slope.sum(dim=-1, keepdim=True) * a - slope @ b


def mmd2(fake: torch.Tensor, real: torch.Tensor, bandwidths: int = MMD_BANDWIDTHS, fine: float = 0.0,
         shape: float | None = None) -> torch.Tensor:
    """The unbiased MMD² between ``fake`` and ``real`` (``(..., n, features)``, any leading dimensions: one
    value each, e.g. ``(K,)`` for K replicas), with Gaussian kernels at ``bandwidths`` bandwidths log-spaced
    from the median distance of a real row to its nearest other real row to the median distance between two
    real rows (of its own leading index); the kernel at bandwidth h weighs ``(widest / h)^fine`` (default 0:
    all alike), or with ``shape`` q ``(widest / h)^q`` scaled to the same sum over the bandwidths.

    Differentiable in ``fake`` (once): the gradient is formed with the value, from the kernels' derivatives,
    rather than by autograd through every kernel matrix."""
    n, m = fake.shape[-2], real.shape[-2]
    positive_int("bandwidths", bandwidths)
    if not _is_power(fine):
        raise ValueError(f"fine (the kernels' weights' power) must be a finite number >= 0, got {fine!r}")
    if shape is not None and not _is_power(shape):
        raise ValueError(f"shape (the power the kernels' weights are shared by) must be a finite number >= 0 or "
                         f"None, got {shape!r}")
    if n < 2 or m < 2:
        raise ValueError(f"MMD² needs at least 2 fake and 2 real rows, got {n} and {m}")
    dtype = torch.promote_types(torch.promote_types(fake.dtype, real.dtype), torch.float32)   # (bf16: in fp32)
    with torch.no_grad():
        x, y = fake.detach().to(dtype), real.detach().to(dtype)
        sq_rr = _square_distances(y, y)
        widths = _bandwidths(sq_rr, bandwidths)
        weights = _weights(widths, fine, shape)
        k_rr, _ = _kernel(sq_rr, widths, weights, slope=False)   # (the value's: no gradient reaches the real rows)
        k_ff, s_ff = _kernel(_square_distances(x, x), widths, weights)
        k_fr, s_fr = _kernel(_square_distances(x, y), widths, weights)
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
