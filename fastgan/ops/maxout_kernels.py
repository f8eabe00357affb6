"""Triton kernels of ``maxout`` (``ops/maxout.py`` holds the launcher and the autograd glue).

Output ``(r, c)`` is the largest of the ``PIECES`` inputs ``(r, c * PIECES + j)``. The forward writes it and
the winning piece ``j`` (int8) in one pass; the backward writes the whole input gradient in one pass,
``dy`` at the winner and 0 elsewhere (no zero-fill launch). A NaN piece wins (the output is NaN, as
``torch.max``); among equal values the first piece wins.
"""
from __future__ import annotations

from ._runtime import HAS_TRITON, triton, tl

if HAS_TRITON:
    @triton.jit
    def _maxout_fwd_kernel(x_ptr, y_ptr, idx_ptr, n, units, stride_xr, stride_xc, stride_yr, stride_yc,
                           PIECES: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)  # n can pass 2^31
        mask = offs < n
        row = offs // units
        unit = offs % units
        base = x_ptr + row * stride_xr + unit * PIECES * stride_xc
        best = tl.load(base, mask=mask, other=0.0).to(tl.float32)
        winner = tl.zeros((BLOCK,), dtype=tl.int32)
        for j in tl.static_range(1, PIECES):
            v = tl.load(base + j * stride_xc, mask=mask, other=0.0).to(tl.float32)
            take = (v > best) | ((v != v) & (best == best))   # a NaN wins, and stays
            best = tl.where(take, v, best)
            winner = tl.where(take, j, winner)
        tl.store(y_ptr + row * stride_yr + unit * stride_yc, best.to(y_ptr.dtype.element_ty), mask=mask)
        tl.store(idx_ptr + offs, winner.to(tl.int8), mask=mask)

    @triton.jit
    def _maxout_bwd_kernel(dy_ptr, idx_ptr, dx_ptr, n, units, stride_dyr, stride_dyc,
                           PIECES: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        mask = offs < n
        row = offs // units
        unit = offs % units
        dy = tl.load(dy_ptr + row * stride_dyr + unit * stride_dyc, mask=mask, other=0.0)
        winner = tl.load(idx_ptr + offs, mask=mask, other=0).to(tl.int32)
        base = dx_ptr + offs * PIECES   # dx is a fresh contiguous (rows, units * PIECES)
        for j in tl.static_range(0, PIECES):
            tl.store(base + j, tl.where(winner == j, dy, 0.0).to(dx_ptr.dtype.element_ty), mask=mask)
