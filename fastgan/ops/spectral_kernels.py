"""Triton kernel of ``spectral_normalize_`` (``ops/spectral.py`` holds the launcher, the reference and checks)."""
from __future__ import annotations

from ._runtime import HAS_TRITON, triton, tl

if HAS_TRITON:
    @triton.jit
    def _spectral_normalize_kernel(w_ptr, u_ptr, v_ptr, meta_ptr, eps,
                                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """One program per layer: one power iteration, then the weight divided by its spectral norm.

        meta row (d_out, d_in, w_offset, u_offset, v_offset); W (d_out, d_in) row-major in ``w_ptr``.
          v = W^T u / |W^T u|;   s = W v;   sigma = |s|;   u = s / sigma;   W = W / sigma
        Passes are separated by ``tl.debug_barrier()``: each reads what other warps of the program wrote.
        """
        layer = tl.program_id(0)
        d_out = tl.load(meta_ptr + 5 * layer)
        d_in = tl.load(meta_ptr + 5 * layer + 1)
        w = w_ptr + tl.load(meta_ptr + 5 * layer + 2)
        u = u_ptr + tl.load(meta_ptr + 5 * layer + 3)
        v = v_ptr + tl.load(meta_ptr + 5 * layer + 4)
        offs_n = tl.arange(0, BLOCK_N).to(tl.int64)
        offs_k = tl.arange(0, BLOCK_K).to(tl.int64)
        # pass 1: v = W^T u (unnormalised), and |v|^2
        v_norm2 = tl.zeros((BLOCK_K,), dtype=tl.float32)
        for k0 in range(0, d_in, BLOCK_K):
            k = k0 + offs_k
            mask_k = k < d_in
            acc = tl.zeros((BLOCK_K,), dtype=tl.float32)
            for n0 in range(0, d_out, BLOCK_N):
                n = n0 + offs_n
                mask_n = n < d_out
                tile = tl.load(w + n[:, None] * d_in + k[None, :], mask=mask_n[:, None] & mask_k[None, :], other=0.0)
                acc += tl.sum(tile * tl.load(u + n, mask=mask_n, other=0.0)[:, None], axis=0)
            tl.store(v + k, acc, mask=mask_k)
            v_norm2 += acc * acc
        inverse_v = tl.div_rn(1.0, tl.sqrt_rn(tl.sum(v_norm2, axis=0)) + eps)
        tl.debug_barrier()
        # pass 2: s = W v / |v| into u, and |s|^2
        s_norm2 = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for n0 in range(0, d_out, BLOCK_N):
            n = n0 + offs_n
            mask_n = n < d_out
            acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
            for k0 in range(0, d_in, BLOCK_K):
                k = k0 + offs_k
                mask_k = k < d_in
                tile = tl.load(w + n[:, None] * d_in + k[None, :], mask=mask_n[:, None] & mask_k[None, :], other=0.0)
                acc += tl.sum(tile * tl.load(v + k, mask=mask_k, other=0.0)[None, :], axis=1)
            acc = acc * inverse_v
            tl.store(u + n, acc, mask=mask_n)
            s_norm2 += acc * acc
        sigma = tl.maximum(tl.sqrt_rn(tl.sum(s_norm2, axis=0)), eps)
        inverse_sigma = tl.div_rn(1.0, sigma)
        tl.debug_barrier()
        # pass 3: u = s / sigma, W = W / sigma
        for n0 in range(0, d_out, BLOCK_N):
            n = n0 + offs_n
            mask_n = n < d_out
            tl.store(u + n, tl.load(u + n, mask=mask_n, other=0.0) * inverse_sigma, mask=mask_n)
            for k0 in range(0, d_in, BLOCK_K):
                k = k0 + offs_k
                mask = mask_n[:, None] & (k < d_in)[None, :]
                pointers = w + n[:, None] * d_in + k[None, :]
                tl.store(pointers, tl.load(pointers, mask=mask, other=0.0) * inverse_sigma, mask=mask)
