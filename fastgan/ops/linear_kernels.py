"""Triton kernels of ``fused_linear`` (``ops/linear.py`` holds the launchers and the autograd glue)."""
from __future__ import annotations

from . import _math
from ._runtime import HAS_TRITON, matmul_configs, triton, tl

if HAS_TRITON:
    @triton.jit
    def _activate(z, ACTIVATION: tl.constexpr, negative_slope):
        if ACTIVATION == "relu":
            z = tl.maximum(z, 0.0)
        elif ACTIVATION == "leaky_relu":
            z = tl.where(z > 0, z, z * negative_slope)
        elif ACTIVATION == "sigmoid":
            z = _math.sigmoid(z)
        elif ACTIVATION == "tanh":
            z = _math.tanh(z)
        return z

    @triton.jit
    def _activation_grad(dy, y, ACTIVATION: tl.constexpr, negative_slope):
        """dy * act'(x), with act'(x) recovered from y = act(x); both in fp32."""
        if ACTIVATION == "relu":
            dy = tl.where(y > 0, dy, 0.0)
        elif ACTIVATION == "leaky_relu":
            dy = tl.where(y > 0, dy, dy * negative_slope)
        elif ACTIVATION == "sigmoid":
            dy = dy * _math.sigmoid_derivative_from_output(y)
        elif ACTIVATION == "tanh":
            dy = dy * _math.tanh_derivative_from_output(y)
        return dy

    _FWD_CONFIGS = matmul_configs(
        gpu=[dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3),
             dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, num_warps=2, num_stages=3),
             dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3),
             dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=32, num_warps=4, num_stages=3),
             dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, num_warps=8, num_stages=3),
             dict(BLOCK_M=128, BLOCK_N=16, BLOCK_K=64, num_warps=4, num_stages=3)],
        interpreter=dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32))

    @triton.autotune(configs=_FWD_CONFIGS, key=["M", "N", "K"])
    @triton.jit
    def _linear_act_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, N, K,
                               stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
                               stride_xr, stride_wr, stride_br, stride_yr, negative_slope,
                               HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, PRECISION: tl.constexpr,
                               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # int64 offsets: row * stride passes 2^31 once M * max(K, N) does (e.g. sampling millions of images)
        pid_m = tl.program_id(0).to(tl.int64)
        pid_n = tl.program_id(1).to(tl.int64)
        # grid axis 2: the replica (K stacked models, fastgan.replicas); its strides are 0 for one model
        pid_r = tl.program_id(2).to(tl.int64)
        x_ptr += pid_r * stride_xr
        w_ptr += pid_r * stride_wr
        b_ptr += pid_r * stride_br
        y_ptr += pid_r * stride_yr
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K).to(tl.int64)
        mask_m = offs_m < M
        mask_n = offs_n < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + offs_k
            mask_k = k < K
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :] * stride_xk,
                        mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            w = tl.load(w_ptr + k[:, None] * stride_wk + offs_n[None, :] * stride_wn,   # W.T tile (K, N)
                        mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(x, w, acc, input_precision=PRECISION)
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        acc = _activate(acc, ACTIVATION, negative_slope)
        tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
                 acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])

    _BWD_CONFIGS = matmul_configs(
        gpu=[dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3),
             dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, num_warps=2, num_stages=3),
             dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=64, num_warps=4, num_stages=3),
             # 2 stages, not 3: with 3, the dW kernel's fp32 tiles need 233-262 KB of shared memory,
             # over the H100's 227 KB per block (found by tools/compile_check.py)
             dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=64, num_warps=8, num_stages=2),
             dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=128, num_warps=4, num_stages=3)],
        interpreter=dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32))

    @triton.autotune(configs=_BWD_CONFIGS, key=["M", "N", "K"])
    @triton.jit
    def _linear_act_bwd_input_kernel(dy_ptr, y_ptr, w_ptr, dx_ptr, M, N, K,
                                     stride_dym, stride_dyn, stride_ym, stride_yn, stride_wn, stride_wk,
                                     stride_dxm, stride_dxk, stride_dyr, stride_yr, stride_wr, stride_dxr,
                                     negative_slope,
                                     ACTIVATION: tl.constexpr, PRECISION: tl.constexpr,
                                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """dX[m, k] = sum_n g[m, n] W[n, k]; grid over (m, k) tiles (and replicas), loop over n."""
        pid_m = tl.program_id(0).to(tl.int64)  # int64 offsets, as in the forward
        pid_k = tl.program_id(1).to(tl.int64)
        pid_r = tl.program_id(2).to(tl.int64)
        dy_ptr += pid_r * stride_dyr
        y_ptr += pid_r * stride_yr
        w_ptr += pid_r * stride_wr
        dx_ptr += pid_r * stride_dxr
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        offs_n = tl.arange(0, BLOCK_N).to(tl.int64)
        mask_m = offs_m < M
        mask_k = offs_k < K
        acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        for n0 in range(0, N, BLOCK_N):
            n = n0 + offs_n
            mask = mask_m[:, None] & (n < N)[None, :]
            dy = tl.load(dy_ptr + offs_m[:, None] * stride_dym + n[None, :] * stride_dyn, mask=mask, other=0.0)
            if ACTIVATION == "none":   # g = dy (also when dy is g, formed by the weight-gradient kernel)
                g = dy.to(tl.float32)
            else:
                y = tl.load(y_ptr + offs_m[:, None] * stride_ym + n[None, :] * stride_yn, mask=mask, other=0.0)
                g = _activation_grad(dy.to(tl.float32), y.to(tl.float32), ACTIVATION, negative_slope)
            w = tl.load(w_ptr + n[:, None] * stride_wn + offs_k[None, :] * stride_wk,
                        mask=(n < N)[:, None] & mask_k[None, :], other=0.0)
            acc = tl.dot(g.to(w.dtype), w, acc, input_precision=PRECISION)
        tl.store(dx_ptr + offs_m[:, None] * stride_dxm + offs_k[None, :] * stride_dxk,
                 acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_k[None, :])

    @triton.autotune(configs=_BWD_CONFIGS, key=["M", "N", "K"])
    @triton.jit
    def _linear_act_bwd_weight_kernel(dy_ptr, y_ptr, x_ptr, dw_ptr, db_ptr, M, N, K,
                                      stride_dym, stride_dyn, stride_ym, stride_yn, stride_xm, stride_xk,
                                      stride_dwn, stride_dwk, stride_dyr, stride_yr, stride_xr, stride_dwr,
                                      stride_dbr, negative_slope, rows_per_split, splits, stride_dws, stride_dbs,
                                      g_ptr, stride_gm, stride_gn, stride_gr,
                                      HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, WRITE_G: tl.constexpr,
                                      PRECISION: tl.constexpr,
                                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """dW[n, k] = sum_m g[m, n] X[m, k] and db[n] = sum_m g[m, n]; grid over (n, k) tiles, loop over m.

        BLOCK_N tiles the output features and BLOCK_M the reduction over the batch here. Grid axis 2 is
        replica x batch split: split s sums rows [s rows_per_split, (s + 1) rows_per_split) into its own
        partial dW and db (``stride_dws``/``stride_dbs`` apart), which the host adds in a fixed order; with one
        split they are dW and db themselves. ``WRITE_G``: the programs of the first k-tile also store the g they
        form (in ``g_ptr``'s dtype, the one dX's dot rounds g to), so the input-gradient kernel reads g once
        instead of forming it from dy and y for every column tile of dX.
        """
        pid_n = tl.program_id(0).to(tl.int64)  # int64 offsets, as in the forward
        pid_k = tl.program_id(1).to(tl.int64)
        pid_r = tl.program_id(2).to(tl.int64) // splits
        pid_s = tl.program_id(2).to(tl.int64) % splits
        dy_ptr += pid_r * stride_dyr
        y_ptr += pid_r * stride_yr
        x_ptr += pid_r * stride_xr
        dw_ptr += pid_r * stride_dwr + pid_s * stride_dws
        db_ptr += pid_r * stride_dbr + pid_s * stride_dbs
        g_ptr += pid_r * stride_gr
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        offs_m = tl.arange(0, BLOCK_M).to(tl.int64)
        mask_n = offs_n < N
        mask_k = offs_k < K
        first = pid_s * rows_per_split
        last = tl.minimum(first + rows_per_split, M)
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        bias_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for m0 in range(first, last, BLOCK_M):
            m = m0 + offs_m
            mask = mask_n[:, None] & (m < last)[None, :]
            dy = tl.load(dy_ptr + m[None, :] * stride_dym + offs_n[:, None] * stride_dyn, mask=mask, other=0.0)
            y = tl.load(y_ptr + m[None, :] * stride_ym + offs_n[:, None] * stride_yn, mask=mask, other=0.0)
            g_t = _activation_grad(dy.to(tl.float32), y.to(tl.float32), ACTIVATION, negative_slope)  # (N, M)
            if WRITE_G:
                if pid_k == 0:
                    tl.store(g_ptr + m[None, :] * stride_gm + offs_n[:, None] * stride_gn,
                             g_t.to(g_ptr.dtype.element_ty), mask=mask)
            if HAS_BIAS:
                bias_acc += tl.sum(g_t, axis=1)
            x = tl.load(x_ptr + m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                        mask=(m < last)[:, None] & mask_k[None, :], other=0.0)
            acc = tl.dot(g_t.to(x.dtype), x, acc, input_precision=PRECISION)
        tl.store(dw_ptr + offs_n[:, None] * stride_dwn + offs_k[None, :] * stride_dwk,
                 acc.to(dw_ptr.dtype.element_ty), mask=mask_n[:, None] & mask_k[None, :])
        if HAS_BIAS:
            # Every k-tile computed the same bias sums; the first one writes them.
            if pid_k == 0:
                tl.store(db_ptr + offs_n, bias_acc.to(db_ptr.dtype.element_ty), mask=mask_n)
