"""Triton kernel of the batch sampler (``ops/sampler.py`` holds the launcher and the sampler's state).

``_sample_kernel``: draws a batch on the device — row indices, the gathered data rows and the noise — from
Philox keyed by (seed, call number, element); the call number comes from an int64 counter every program
increments atomically (as ``adam_step``'s step count), so a CUDA graph replays fresh draws. A third grid axis
runs K replicas' batches in the same launch, each keyed by its own seed: replica k's draws are those of a
one-replica call with its seed.
"""
from __future__ import annotations

from ._runtime import HAS_TRITON, triton, tl

if HAS_TRITON:
    # (sizes not specialised: a value of 1 would become a compile-time constant, with no .to())
    @triton.jit(do_not_specialize=["n_data", "features", "latent", "batch"])
    def _sample_kernel(data_ptr, stride_dm, stride_df, n_data, features, x_ptr, stride_xk, stride_xm, z_ptr,
                       stride_zk, stride_zm, latent, batch, seed_ptr, counter_ptr,
                       BLOCK_M: tl.constexpr, BLOCK_F: tl.constexpr):
        """x[k, r, cols] = data[idx_kr, cols], z[k, r, cols] ~ N(0, 1) for this program's replica k, rows r
        and BLOCK_F columns (the grid: row blocks x column blocks of the wider of x and z x replicas); idx_kr
        uniform in [0, n_data).

        Philox counters: (element, call number, stream, 0), stream 0 for indices and 1 for noise; the key is
        the replica's seed. idx = (u32 * n_data) >> 32 (Lemire): bias below n_data / 2^32. The call number is
        the counter over the whole grid, so it counts calls alike for one replica and for K."""
        pid = tl.program_id(0)
        chunk = tl.program_id(1).to(tl.int64)   # this program's BLOCK_F columns of x and of z
        replica = tl.program_id(2).to(tl.int64)
        old = tl.atomic_add(counter_ptr, 1)
        call = (old // (tl.num_programs(0) * tl.num_programs(1) * tl.num_programs(2))).to(tl.uint32)
        seed = tl.load(seed_ptr + replica)
        x_ptr += replica * stride_xk
        z_ptr += replica * stride_zk
        rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
        mask_m = rows < batch
        zero = tl.zeros((BLOCK_M,), dtype=tl.uint32)
        r, _r1, _r2, _r3 = tl.philox(seed, rows.to(tl.uint32), zero + call, zero, zero)
        idx = tl.umulhi(r, n_data.to(tl.uint32)).to(tl.int64)
        f = chunk * BLOCK_F + tl.arange(0, BLOCK_F).to(tl.int64)
        mask = mask_m[:, None] & (f < features)[None, :]
        v = tl.load(data_ptr + idx[:, None] * stride_dm + f[None, :] * stride_df, mask=mask, other=0.0)
        tl.store(x_ptr + rows[:, None] * stride_xm + f[None, :], v, mask=mask)
        zero2 = tl.zeros((BLOCK_M, BLOCK_F), dtype=tl.uint32)
        mask = mask_m[:, None] & (f < latent)[None, :]
        element = (rows[:, None] * latent + f[None, :]).to(tl.uint32)
        u0, u1, _u2, _u3 = tl.philox(seed, element, zero2 + call, zero2 + 1, zero2)
        normal, _other = tl.pair_uniform_to_normal(tl.uint_to_uniform_float(u0), tl.uint_to_uniform_float(u1))
        tl.store(z_ptr + rows[:, None] * stride_zm + f[None, :], normal, mask=mask)

    @triton.jit(do_not_specialize=["rows", "columns"])
    def _fill_kernel(out_ptr, stride_ok, stride_om, rows, columns, seed_ptr, counter_ptr, UNIFORM: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_F: tl.constexpr):
        """out[k, r, c] ~ N(0, 1) (instance noise; Philox stream 2) or with ``UNIFORM`` U[0, 1) (augmentation's
        draws; stream 3), replica k keyed by its seed: Philox counters (element, call number, stream, 0), the
        call number from the caller's counter over the whole grid (as ``_sample_kernel``'s), so replica k draws
        what a one-replica call with its seed draws."""
        pid = tl.program_id(0).to(tl.int64)
        chunk = tl.program_id(1).to(tl.int64)
        replica = tl.program_id(2).to(tl.int64)
        old = tl.atomic_add(counter_ptr, 1)
        call = (old // (tl.num_programs(0) * tl.num_programs(1) * tl.num_programs(2))).to(tl.uint32)
        seed = tl.load(seed_ptr + replica)
        r = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        f = chunk * BLOCK_F + tl.arange(0, BLOCK_F).to(tl.int64)
        mask = (r < rows)[:, None] & (f < columns)[None, :]
        element = (r[:, None] * columns + f[None, :]).to(tl.uint32)
        zero = tl.zeros((BLOCK_M, BLOCK_F), dtype=tl.uint32)
        if UNIFORM:
            u0, _u1, _u2, _u3 = tl.philox(seed, element, zero + call, zero + 3, zero)
            value = tl.uint_to_uniform_float(u0)
        else:
            u0, u1, _u2, _u3 = tl.philox(seed, element, zero + call, zero + 2, zero)
            value, _other = tl.pair_uniform_to_normal(tl.uint_to_uniform_float(u0), tl.uint_to_uniform_float(u1))
        tl.store(out_ptr + replica * stride_ok + r[:, None] * stride_om + f[None, :], value, mask=mask)
