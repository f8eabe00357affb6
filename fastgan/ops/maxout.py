"""maxout: the largest of ``pieces`` consecutive features (Goodfellow et al. 2013).

``maxout(x, pieces)`` maps ``(..., units * pieces)`` to ``(..., units)``: output unit ``c`` is
``max(x[..., c * pieces : (c + 1) * pieces])`` — consecutive groups, as Blocks' ``Maxout`` brick (PacGAN's
discriminator) and ``x.unflatten(-1, (units, pieces)).amax(-1)`` group them. Its gradient goes to the
winning piece of each group (the first among equals). A ``Linear(in, units * pieces)`` followed by it is
a maxout layer (``fastgan.nn.Maxout``).

CUDA tensors (and CPU tensors under ``TRITON_INTERPRET=1``) run one Triton kernel forward (values and the
winning piece, int8) and one backward (the whole input gradient, zeros included); float64 and other CPU
tensors take the PyTorch reference path, ``maxout_reference``. A 2-D strided input (a slice, a transpose) is
read in place; more dimensions are viewed as rows where their strides allow, else copied once.
"""
from __future__ import annotations

import torch

from . import maxout_kernels as kernels
from ._register import register, register_opaque
from ._runtime import cdiv, check_float_tensor, kernel_launches, use_triton

__all__ = ["maxout", "maxout_reference"]

_BLOCK = 1024
_MAX_PIECES = 64   # the forward unrolls over the pieces; int8 holds the winner


def maxout_reference(x: torch.Tensor, pieces: int) -> torch.Tensor:
    """The PyTorch path: ``x.unflatten(-1, (units, pieces)).amax(-1)`` (gradient split among equal maxima,
    which the kernel gives to the first; the two agree wherever the maximum is unique)."""
    return x.unflatten(-1, (x.shape[-1] // pieces, pieces)).amax(-1)


def _check(x, pieces):
    check_float_tensor("x", x)
    if isinstance(pieces, bool) or not isinstance(pieces, int):
        raise TypeError(f"pieces must be an int, got {type(pieces).__name__}")
    if not 1 <= pieces <= _MAX_PIECES:
        raise ValueError(f"pieces must be in [1, {_MAX_PIECES}], got {pieces}")
    if x.dim() < 1:
        raise ValueError("maxout needs at least one dimension, got a 0-d tensor")
    if x.shape[-1] % pieces:
        raise ValueError(f"maxout: the last dimension ({x.shape[-1]}) is not a multiple of pieces ({pieces})")


def maxout(x: torch.Tensor, pieces: int) -> torch.Tensor:
    """``(..., units * pieces) -> (..., units)``: the maximum of each group of ``pieces`` consecutive features."""
    _check(x, pieces)
    if x.dtype == torch.float64 or not use_triton(x) or pieces == 1 or x.numel() == 0:
        return maxout_reference(x, pieces)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])   # a view wherever the leading dimensions allow one
    return _maxout(x2, pieces).view(*lead, x.shape[-1] // pieces)


# -- the op, registered once for eager calls and torch.compile (see ops/_register.py) ----------------------

def _forward(x: torch.Tensor, pieces: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows, width = x.shape
    units = width // pieces
    y = torch.empty((rows, units), device=x.device, dtype=x.dtype)
    winner = torch.empty((rows, units), device=x.device, dtype=torch.int8)
    n = rows * units
    if n:
        kernels._maxout_fwd_kernel[(cdiv(n, _BLOCK),)](x, y, winner, n, units, x.stride(0), x.stride(1),
                                                              y.stride(0), y.stride(1), PIECES=pieces, BLOCK=_BLOCK)
        kernel_launches["_maxout_fwd_kernel"] += 1
    return y, winner


def _fake(x, pieces):
    rows, width = x.shape
    return (x.new_empty((rows, width // pieces)),
            torch.empty((rows, width // pieces), device=x.device, dtype=torch.int8))


def _setup_context(ctx, inputs, output):
    ctx.pieces = inputs[1]
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, dy, _dwinner):
    (winner,) = ctx.saved_tensors
    dx = None
    if ctx.needs_input_grad[0]:
        dx = _maxout_backward(dy, winner, ctx.pieces)
    return dx, None


def _launch_backward(dy: torch.Tensor, winner: torch.Tensor, pieces: int) -> torch.Tensor:
    rows, units = winner.shape
    dx = torch.empty((rows, units * pieces), device=dy.device, dtype=dy.dtype)
    n = rows * units
    if n:
        kernels._maxout_bwd_kernel[(cdiv(n, _BLOCK),)](dy, winner, dx, n, units, dy.stride(0), dy.stride(1),
                                                              PIECES=pieces, BLOCK=_BLOCK)
        kernel_launches["_maxout_bwd_kernel"] += 1
    return dx


def _backward_fake(dy, winner, pieces):
    return dy.new_empty((winner.shape[0], winner.shape[1] * pieces))


# the backward's kernel as an opaque op of its own, for when torch.compile traces the backward
_maxout_backward = register_opaque("fastgan::maxout_backward", _launch_backward, fake=_backward_fake)


_maxout_op = register("fastgan::maxout", _forward, fake=_fake, setup_context=_setup_context, backward=_backward)


def _maxout(x, pieces):
    return _maxout_op(x, pieces)[0]
