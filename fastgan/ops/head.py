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

from . import _math
from ._runtime import HAS_TRITON, check_float_tensor, check_same, kernel_launches, triton, tl, use_triton

__all__ = ["linear_bce_head", "linear_bce_head_reference"]

_REDUCTIONS = ("mean", "sum")
_SINGLE_PROGRAM_LIMIT = 4096
_BLOCK_M = 32
_MAX_PROGRAMS = 256

if HAS_TRITON:
    @triton.jit
    def _linear_bce_head_fwd_kernel(h_ptr, w_ptr, b_ptr, loss_ptr, g_ptr, M, H, stride_hm, stride_hh,
                                    stride_w, target, scale, HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr,
                                    BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr):
        pid = tl.program_id(0)
        programs = tl.num_programs(0)
        total = tl.zeros((BLOCK_M,), dtype=tl.float32)
        offs_h = tl.arange(0, BLOCK_H).to(tl.int64)  # int64 offsets: row * stride can pass 2^31
        for m0 in range(pid * BLOCK_M, M, programs * BLOCK_M):
            m = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
            mask_m = m < M
            z = tl.zeros((BLOCK_M,), dtype=tl.float32)
            for h0 in range(0, H, BLOCK_H):
                hh = h0 + offs_h
                mask_h = hh < H
                h = tl.load(h_ptr + m[:, None] * stride_hm + hh[None, :] * stride_hh,
                            mask=mask_m[:, None] & mask_h[None, :], other=0.0).to(tl.float32)
                w = tl.load(w_ptr + hh * stride_w, mask=mask_h, other=0.0).to(tl.float32)
                z += tl.sum(h * w[None, :], axis=1)
            if HAS_BIAS:
                z += tl.load(b_ptr).to(tl.float32)
            loss, grad = _math.bce_with_logits(z, target)
            total += tl.where(mask_m, loss, 0.0)
            tl.store(g_ptr + m, grad * scale, mask=mask_m)
        s = tl.sum(total, axis=0) * scale
        if ATOMIC:
            tl.atomic_add(loss_ptr, s)
        else:
            tl.store(loss_ptr, s)

    @triton.jit
    def _linear_bce_head_bwd_kernel(g_ptr, go_ptr, h_ptr, w_ptr, dh_ptr, dw_ptr, db_ptr, M, H,
                                    stride_hm, stride_hh, stride_w, stride_dhm, stride_dhh,
                                    NEED_DH: tl.constexpr, NEED_DW: tl.constexpr, NEED_DB: tl.constexpr,
                                    ATOMIC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr):
        pid = tl.program_id(0)
        programs = tl.num_programs(0)
        go = tl.load(go_ptr).to(tl.float32)
        offs_h = tl.arange(0, BLOCK_H).to(tl.int64)  # int64 offsets, as in the forward
        bias_acc = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for h0 in range(0, H, BLOCK_H):
            hh = h0 + offs_h
            mask_h = hh < H
            w = tl.load(w_ptr + hh * stride_w, mask=mask_h, other=0.0).to(tl.float32)
            dw = tl.zeros((BLOCK_H,), dtype=tl.float32)
            for m0 in range(pid * BLOCK_M, M, programs * BLOCK_M):
                m = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
                mask_m = m < M
                g = tl.load(g_ptr + m, mask=mask_m, other=0.0) * go
                mask = mask_m[:, None] & mask_h[None, :]
                if NEED_DH:
                    tl.store(dh_ptr + m[:, None] * stride_dhm + hh[None, :] * stride_dhh,
                             (g[:, None] * w[None, :]).to(dh_ptr.dtype.element_ty), mask=mask)
                if NEED_DW:
                    h = tl.load(h_ptr + m[:, None] * stride_hm + hh[None, :] * stride_hh,
                                mask=mask, other=0.0).to(tl.float32)
                    dw += tl.sum(g[:, None] * h, axis=0)
                if NEED_DB:
                    if h0 == 0:
                        bias_acc += g
            if NEED_DW:
                if ATOMIC:
                    tl.atomic_add(dw_ptr + hh, dw, mask=mask_h)
                else:
                    tl.store(dw_ptr + hh, dw, mask=mask_h)
        if NEED_DB:
            db = tl.sum(bias_acc, axis=0)
            if ATOMIC:
                tl.atomic_add(db_ptr, db)
            else:
                tl.store(db_ptr, db)


def _programs(m: int) -> int:
    return 1 if m <= _SINGLE_PROGRAM_LIMIT else min(triton.cdiv(m, _BLOCK_M), _MAX_PROGRAMS)


def _block_h(h: int) -> int:
    return min(max(triton.next_power_of_2(h), 16), 256)


class _LinearBCEHeadFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, target: float, reduction: str):
        m, width = h.shape
        scale = 1.0 / m if reduction == "mean" else 1.0
        programs = _programs(m)
        atomic = programs > 1
        loss = (torch.zeros if atomic else torch.empty)((), device=h.device, dtype=torch.float32)
        g = torch.empty(m, device=h.device, dtype=torch.float32)
        _linear_bce_head_fwd_kernel[(programs,)](
            h, weight, bias if bias is not None else weight, loss, g, m, width, h.stride(0), h.stride(1),
            weight.stride(1), float(target), scale, HAS_BIAS=bias is not None, ATOMIC=atomic,
            BLOCK_M=_BLOCK_M, BLOCK_H=_block_h(width))
        kernel_launches["_linear_bce_head_fwd_kernel"] += 1
        ctx.save_for_backward(h, weight, g)
        ctx.has_bias = bias is not None
        return loss.to(h.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        h, weight, g = ctx.saved_tensors
        need_dh, need_dw, need_db = ctx.needs_input_grad[:3]
        need_db = need_db and ctx.has_bias
        m, width = h.shape
        programs = _programs(m)
        atomic = programs > 1
        dh = torch.empty_like(h) if need_dh else None
        # dw/db accumulate in fp32 (zeroed when programs add atomically), then take the weight's dtype.
        make = torch.zeros if atomic else torch.empty
        dw = make(width, device=h.device, dtype=torch.float32) if need_dw else None
        db = make((), device=h.device, dtype=torch.float32) if need_db else None
        if need_dh or need_dw or need_db:
            _linear_bce_head_bwd_kernel[(programs,)](
                g, grad_out.float().reshape(()), h, weight, dh if need_dh else g, dw if need_dw else g,
                db if need_db else g, m, width, h.stride(0), h.stride(1), weight.stride(1),
                dh.stride(0) if need_dh else 0, dh.stride(1) if need_dh else 0,
                NEED_DH=need_dh, NEED_DW=need_dw, NEED_DB=need_db, ATOMIC=atomic,
                BLOCK_M=_BLOCK_M, BLOCK_H=_block_h(width))
            kernel_launches["_linear_bce_head_bwd_kernel"] += 1
        dw = dw.to(weight.dtype).view(1, width) if need_dw else None
        db = db.to(weight.dtype).view(1) if need_db else None
        return dh, dw, db, None, None


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
        loss = _LinearBCEHeadFunction.apply(h, weight, bias, float(target), reduction)
    return loss.float() if autocast else loss
