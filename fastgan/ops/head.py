"""linear_bce_head: a discriminator's last layer ``Linear(h, 1)`` and its sigmoid-BCE loss, fused.

Unfused, one half of a GAN loss costs five launches: the linear forward, the loss forward, and in the
backward the loss gradient, the layer's dX and its dW/db. Fused it costs two:
  forward   ``_linear_bce_head_fwd_kernel``: logits z = h . w + b as row dot products (a width-1 output
            needs no matmul), the loss (softplus form, stable for any z) and the per-row coefficient
            g = (sigmoid(z) - t) * scale, kept for the backward (M floats, not an (M, H) tensor);
  backward  ``_linear_bce_head_bwd_kernel``: dh = go * g w^T, dw = go * sum_m g h, db = go * sum_m g.
Up to ``_SINGLE_PROGRAM_LIMIT`` rows one program does all rows (deterministic sums, nothing to zero);
beyond it, programs add their partial sums atomically.
"""
from __future__ import annotations

import torch

from . import head_kernels as kernels
from ._register import register, register_opaque
from ._runtime import cdiv, check_float_tensor, check_same, kernel_launches, next_power_of_2, use_triton
__all__ = ["linear_bce_head", "linear_bce_head_reference"]

_REDUCTIONS = ("mean", "sum")
_SINGLE_PROGRAM_LIMIT = 4096
_BLOCK_M = 32
_MAX_PROGRAMS = 256


def _programs(m: int) -> int:
    return 1 if m <= _SINGLE_PROGRAM_LIMIT else min(cdiv(m, _BLOCK_M), _MAX_PROGRAMS)


def _block_h(h: int) -> int:
    return min(max(next_power_of_2(h), 16), 256)


def _launch_forward(h, weight, bias, target, reduction):
    """``(loss, g)``: the loss and the per-row coefficient g = (sigmoid(z) - t) * scale the backward uses."""
    m, width = h.shape
    scale = 1.0 / m if reduction == "mean" else 1.0
    programs = _programs(m)
    atomic = programs > 1
    loss = (torch.zeros if atomic else torch.empty)((), device=h.device, dtype=torch.float32)
    g = torch.empty(m, device=h.device, dtype=torch.float32)
    kernels._linear_bce_head_fwd_kernel[(programs,)](
        h, weight, bias if bias is not None else weight, loss, g, m, width, h.stride(0), h.stride(1),
        weight.stride(1), float(target), scale, HAS_BIAS=bias is not None, ATOMIC=atomic,
        BLOCK_M=_BLOCK_M, BLOCK_H=_block_h(width))
    kernel_launches["_linear_bce_head_fwd_kernel"] += 1
    return loss.to(h.dtype), g


def _launch_backward(g: torch.Tensor, grad_out: torch.Tensor, h: torch.Tensor, weight: torch.Tensor,
                     need_dh: bool, need_dw: bool, need_db: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dh, dw, db)``, each an empty tensor where not needed (an op cannot return None)."""
    m, width = h.shape
    programs = _programs(m)
    atomic = programs > 1
    dh = torch.empty_like(h) if need_dh else None
    # dw/db accumulate in fp32 (zeroed when programs add atomically), then take the weight's dtype.
    make = torch.zeros if atomic else torch.empty
    dw = make(width, device=h.device, dtype=torch.float32) if need_dw else None
    db = make((), device=h.device, dtype=torch.float32) if need_db else None
    if need_dh or need_dw or need_db:
        kernels._linear_bce_head_bwd_kernel[(programs,)](
            g, grad_out.float().reshape(()), h, weight, dh if need_dh else g, dw if need_dw else g,
            db if need_db else g, m, width, h.stride(0), h.stride(1), weight.stride(1),
            dh.stride(0) if need_dh else 0, dh.stride(1) if need_dh else 0,
            NEED_DH=need_dh, NEED_DW=need_dw, NEED_DB=need_db, ATOMIC=atomic,
            BLOCK_M=_BLOCK_M, BLOCK_H=_block_h(width))
        kernel_launches["_linear_bce_head_bwd_kernel"] += 1
    dw = dw.to(weight.dtype).view(1, width) if need_dw else weight.new_empty(0)
    db = db.to(weight.dtype).view(1) if need_db else weight.new_empty(0)
    return (dh if need_dh else h.new_empty(0)), dw, db


def linear_bce_head_reference(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: float,
                              reduction: str = "mean") -> torch.Tensor:
    """The PyTorch path: ``F.binary_cross_entropy_with_logits(F.linear(h, weight, bias), target)``."""
    logits = torch.nn.functional.linear(h, weight, bias)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)),
                                                                reduction=reduction)


def linear_bce_head(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: float,
                    reduction: str = "mean") -> torch.Tensor:
    """BCE-with-logits of ``F.linear(h, weight, bias)`` (one output) against a constant ``target``.

    Args:
        h: ``(M, H)`` features entering D's last layer, any strides.
        weight: ``(1, H)``; bias: ``(1,)`` or None; same dtype and device as ``h``.
        target: a float in [0, 1] (1 for real, 0 for fake, 0.9 for one-sided label smoothing).
        reduction: ``mean`` or ``sum``.
    Same value and gradients (w.r.t. h, weight, bias) as the reference. Up to 4,096 rows: one Triton
    kernel forward and one backward. Beyond that, programs add partial sums atomically into zeroed
    buffers: add a fill launch for the loss (forward) and one each for dw and db (backward). Under
    ``torch.autocast`` the layer runs in the autocast dtype and the loss comes back in fp32.
    """
    check_float_tensor("h", h)
    check_float_tensor("weight", weight)
    autocast = torch.is_autocast_enabled(h.device.type) and h.dtype != torch.float64
    if autocast:
        # As autocast runs F.linear then BCE: 16-bit operands for the layer, the loss in fp32 (and the casts
        # are autograd ops, so fp32 master weights get fp32 gradients).
        dtype = torch.get_autocast_dtype(h.device.type)
        h, weight = h.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if isinstance(bias, torch.Tensor) else bias
    if h.dim() != 2:
        raise ValueError(f"h must be 2-D (batch, features), got shape {tuple(h.shape)}")
    if weight.shape != (1, h.shape[1]):
        raise ValueError(f"weight must have shape (1, {h.shape[1]}) for h of shape {tuple(h.shape)}, "
                         f"got {tuple(weight.shape)}")
    check_same("weight", weight, "h", h)
    if bias is not None:
        check_float_tensor("bias", bias)
        if bias.shape != (1,):
            raise ValueError(f"bias must have shape (1,), got {tuple(bias.shape)}")
        check_same("bias", bias, "h", h)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be a float in [0, 1], got {target!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if h.dtype == torch.float64 or not use_triton(h) or h.shape[0] == 0:
        with torch.autocast(h.device.type, enabled=False):
            loss = linear_bce_head_reference(h, weight, bias, target, reduction)
    else:
        loss = _linear_bce_head(h, weight, bias, float(target), reduction)[0]
    return loss.float() if autocast else loss


# -- the op, registered once for eager calls and torch.compile (see ops/_register.py) ----------------------

def _forward(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: float,
             reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch_forward(h, weight, bias, target, reduction)


def _fake(h, weight, bias, target, reduction):
    return h.new_empty(()), h.new_empty((h.shape[0],), dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    h, weight, bias = inputs[:3]
    ctx.save_for_backward(h, weight, output[1])
    ctx.has_bias = bias is not None


def _backward_fake(g, grad_out, h, weight, need_dh, need_dw, need_db):
    return (h.new_empty(h.shape) if need_dh else h.new_empty(0),
            weight.new_empty(weight.shape) if need_dw else weight.new_empty(0),
            weight.new_empty((1,)) if need_db else weight.new_empty(0))


# the backward's kernel as an opaque op of its own, for when torch.compile traces the backward
_backward_op = register_opaque("fastgan::linear_bce_head_backward", _launch_backward, fake=_backward_fake)


def _autograd_backward(ctx, grad_out, _grad_g):
    h, weight, g = ctx.saved_tensors
    need_dh, need_dw, need_db = ctx.needs_input_grad[:3]
    need_db = need_db and ctx.has_bias
    dh, dw, db = _backward_op(g, grad_out, h, weight, need_dh, need_dw, need_db)
    return (dh if need_dh else None), (dw if need_dw else None), (db if need_db else None), None, None


_linear_bce_head = register("fastgan::linear_bce_head", _forward, fake=_fake, setup_context=_setup_context,
                            backward=_autograd_backward)
