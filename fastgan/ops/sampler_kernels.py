"""Triton kernel of the batch sampler (``ops/sampler.py`` holds the launcher and the sampler's state).

``_sample_kernel``: draws a batch on the device — row indices, the gathered data rows and the noise — from
Philox keyed by (seed, call number, element); the call number comes from an int64 counter every program
increments atomically (as ``adam_step``'s step count), so a CUDA graph replays fresh draws.
"""
from __future__ import annotations

from ._runtime import HAS_TRITON, triton, tl

if HAS_TRITON:
    # (sizes not specialised: a value of 1 would become a compile-time constant, with no .to())
    @triton.jit(do_not_specialize=["n_data", "features", "latent", "batch"])
    def _sample_kernel(data_ptr, stride_dm, stride_df, n_data, features, x_ptr, stride_xm, z_ptr, stride_zm, latent,
                       batch, seed_ptr, counter_ptr, BLOCK_M: tl.constexpr, BLOCK_F: tl.constexpr):
        """x[r] = data[idx_r], z[r] ~ N(0, 1)^latent for rows r of this program; idx_r uniform in [0, n_data).

        Philox counters: (element, call number, stream, 0), stream 0 for indices and 1 for noise; the key is
        the seed. idx = (u32 * n_data) >> 32 (Lemire): bias below n_data / 2^32."""
        pid = tl.program_id(0)
        old = tl.atomic_add(counter_ptr, 1)
        call = (old // tl.num_programs(0)).to(tl.uint32)
        seed = tl.load(seed_ptr)
        rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
        mask_m = rows < batch
        zero = tl.zeros((BLOCK_M,), dtype=tl.uint32)
        r, _r1, _r2, _r3 = tl.philox(seed, rows.to(tl.uint32), zero + call, zero, zero)
        idx = tl.umulhi(r, n_data.to(tl.uint32)).to(tl.int64)
        offs_f = tl.arange(0, BLOCK_F).to(tl.int64)
        for f0 in range(0, features, BLOCK_F):
            f = f0 + offs_f
            mask = mask_m[:, None] & (f < features)[None, :]
            v = tl.load(data_ptr + idx[:, None] * stride_dm + f[None, :] * stride_df, mask=mask, other=0.0)
            tl.store(x_ptr + rows[:, None] * stride_xm + f[None, :], v, mask=mask)
        zero2 = tl.zeros((BLOCK_M, BLOCK_F), dtype=tl.uint32)
        for j0 in range(0, latent, BLOCK_F):
            j = j0 + offs_f
            mask = mask_m[:, None] & (j < latent)[None, :]
            element = (rows[:, None] * latent + j[None, :]).to(tl.uint32)
            u0, u1, _u2, _u3 = tl.philox(seed, element, zero2 + call, zero2 + 1, zero2)
            normal, _other = tl.pair_uniform_to_normal(tl.uint_to_uniform_float(u0), tl.uint_to_uniform_float(u1))
            tl.store(z_ptr + rows[:, None] * stride_zm + j[None, :], normal, mask=mask)
