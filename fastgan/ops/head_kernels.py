"""Triton kernels of ``linear_bce_head`` (``ops/head.py`` holds the launchers and the autograd glue)."""
from __future__ import annotations

from . import _math
from ._runtime import HAS_TRITON, triton, tl

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
