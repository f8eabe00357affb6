"""Triton kernel of ``sigmoid_bce_with_logits`` (``ops/bce.py`` holds the launcher and the autograd glue)."""
from __future__ import annotations

from . import _math
from ._runtime import HAS_TRITON, triton, tl

if HAS_TRITON:
    @triton.jit
    def _sigmoid_bce_fwd_kernel(x_ptr, t_ptr, loss_ptr, grad_ptr, n, target_value, scale,
                                HAS_TARGET: tl.constexpr, REDUCE: tl.constexpr, ATOMIC: tl.constexpr,
                                BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        programs = tl.num_programs(0)
        total = tl.zeros((BLOCK,), dtype=tl.float32)
        for start in range(pid * BLOCK, n, programs * BLOCK):
            offs = start + tl.arange(0, BLOCK).to(tl.int64)  # numel can pass 2^31
            mask = offs < n
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if HAS_TARGET:
                t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            else:
                t = tl.zeros((BLOCK,), dtype=tl.float32) + target_value
            loss, grad = _math.bce_with_logits(x, t)
            tl.store(grad_ptr + offs, (grad * scale).to(grad_ptr.dtype.element_ty), mask=mask)
            if REDUCE:
                total += tl.where(mask, loss, 0.0)
            else:
                tl.store(loss_ptr + offs, loss.to(loss_ptr.dtype.element_ty), mask=mask)
        if REDUCE:
            s = tl.sum(total, axis=0) * scale
            if ATOMIC:
                tl.atomic_add(loss_ptr, s)
            else:
                tl.store(loss_ptr, s)
