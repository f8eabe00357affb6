"""fused_linear: ``act(x @ weight.T + bias)`` in one Triton kernel, and its backward in two.

Forward: a tiled matmul with fp32 accumulation; bias and activation applied in the epilogue.
Backward, from the saved *output* y (no pre-activation tensor is stored):
  g  = dy * act'(y)                 formed on the fly as dy and y tiles are loaded, never stored
  dX = g @ W                        ``_linear_act_bwd_input_kernel``
  dW = g.T @ X,  db = sum_m g       ``_linear_act_bwd_weight_kernel``: db comes from the same g tiles
All kernels take arbitrary strides, so transposed or sliced inputs need no copy, and mask every edge, so
any size works (1, 7, 127, 129, 784 ...).
"""
from __future__ import annotations

import torch

from ._runtime import (HAS_TRITON, check_float_tensor, check_same, check_tuned_for_capture, get_matmul_precision,
                       kernel_launches, matmul_configs, triton, tl, use_triton)
from . import _math
from .activations import activation_from_name

__all__ = ["fused_linear", "fused_linear_reference"]

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
                               negative_slope,
                               HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, PRECISION: tl.constexpr,
                               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # int64 offsets: row * stride passes 2^31 once M * max(K, N) does (e.g. sampling millions of images)
        pid_m = tl.program_id(0).to(tl.int64)
        pid_n = tl.program_id(1).to(tl.int64)
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
                                     stride_dxm, stride_dxk, negative_slope,
                                     ACTIVATION: tl.constexpr, PRECISION: tl.constexpr,
                                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """dX[m, k] = sum_n g[m, n] W[n, k]; grid over (m, k) tiles, loop over n."""
        pid_m = tl.program_id(0).to(tl.int64)  # int64 offsets, as in the forward
        pid_k = tl.program_id(1).to(tl.int64)
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
                                      stride_dwn, stride_dwk, negative_slope,
                                      HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
                                      PRECISION: tl.constexpr,
                                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """dW[n, k] = sum_m g[m, n] X[m, k] and db[n] = sum_m g[m, n]; grid over (n, k) tiles, loop over m.

        BLOCK_N tiles the output features and BLOCK_M the reduction over the batch here.
        """
        pid_n = tl.program_id(0).to(tl.int64)  # int64 offsets, as in the forward
        pid_k = tl.program_id(1).to(tl.int64)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        offs_m = tl.arange(0, BLOCK_M).to(tl.int64)
        mask_n = offs_n < N
        mask_k = offs_k < K
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        bias_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for m0 in range(0, M, BLOCK_M):
            m = m0 + offs_m
            mask = mask_n[:, None] & (m < M)[None, :]
            dy = tl.load(dy_ptr + m[None, :] * stride_dym + offs_n[:, None] * stride_dyn, mask=mask, other=0.0)
            y = tl.load(y_ptr + m[None, :] * stride_ym + offs_n[:, None] * stride_yn, mask=mask, other=0.0)
            g_t = _activation_grad(dy.to(tl.float32), y.to(tl.float32), ACTIVATION, negative_slope)  # (N, M)
            if HAS_BIAS:
                bias_acc += tl.sum(g_t, axis=1)
            x = tl.load(x_ptr + m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                        mask=(m < M)[:, None] & mask_k[None, :], other=0.0)
            acc = tl.dot(g_t.to(x.dtype), x, acc, input_precision=PRECISION)
        tl.store(dw_ptr + offs_n[:, None] * stride_dwn + offs_k[None, :] * stride_dwk,
                 acc.to(dw_ptr.dtype.element_ty), mask=mask_n[:, None] & mask_k[None, :])
        if HAS_BIAS:
            # Every k-tile computed the same bias sums; the first one writes them.
            if pid_k == 0:
                tl.store(db_ptr + offs_n, bias_acc.to(db_ptr.dtype.element_ty), mask=mask_n)


def _precision_for(dtype: torch.dtype) -> str:
    return get_matmul_precision() if dtype == torch.float32 else "tf32"


def _launch_forward(x, weight, bias, activation, negative_slope):
    M, K = x.shape
    N = weight.shape[0]
    y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    if M == 0 or N == 0:
        return y
    check_tuned_for_capture("_linear_act_fwd_kernel", (M, N, K), x)
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"]))  # noqa: E731
    _linear_act_fwd_kernel[grid](
        x, weight, bias if bias is not None else x, y, M, N, K,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), y.stride(0), y.stride(1),
        float(negative_slope), HAS_BIAS=bias is not None, ACTIVATION=activation,
        PRECISION=_precision_for(x.dtype))
    kernel_launches["_linear_act_fwd_kernel"] += 1
    return y


def _launch_backward_input(dy, y, weight, activation, negative_slope):
    M, N = dy.shape
    K = weight.shape[1]
    dx = torch.empty((M, K), device=dy.device, dtype=weight.dtype)
    if M == 0 or K == 0:
        return dx
    check_tuned_for_capture("_linear_act_bwd_input_kernel", (M, N, K), dy)
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(K, meta["BLOCK_K"]))  # noqa: E731
    _linear_act_bwd_input_kernel[grid](
        dy, y, weight, dx, M, N, K, dy.stride(0), dy.stride(1), y.stride(0), y.stride(1),
        weight.stride(0), weight.stride(1), dx.stride(0), dx.stride(1), float(negative_slope),
        ACTIVATION=activation, PRECISION=_precision_for(weight.dtype))
    kernel_launches["_linear_act_bwd_input_kernel"] += 1
    return dx


def _launch_backward_weight(dy, y, x, has_bias, activation, negative_slope):
    M, N = dy.shape
    K = x.shape[1]
    dw = torch.empty((N, K), device=x.device, dtype=x.dtype)
    db = torch.empty((N,), device=x.device, dtype=x.dtype) if has_bias else None
    if N == 0 or (K == 0 and not has_bias):
        return dw, db
    check_tuned_for_capture("_linear_act_bwd_weight_kernel", (M, N, K), x)
    # at least one program along K: with K = 0 it still writes db (the sum of g over the batch)
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_N"]), max(1, triton.cdiv(K, meta["BLOCK_K"])))  # noqa: E731
    _linear_act_bwd_weight_kernel[grid](
        dy, y, x, dw, db if has_bias else dw, M, N, K, dy.stride(0), dy.stride(1), y.stride(0), y.stride(1),
        x.stride(0), x.stride(1), dw.stride(0), dw.stride(1), float(negative_slope),
        HAS_BIAS=has_bias, ACTIVATION=activation, PRECISION=_precision_for(x.dtype))
    kernel_launches["_linear_act_bwd_weight_kernel"] += 1
    return dw, db


def _backward(dy, y, x, weight, has_bias, activation, negative_slope, need_x, need_weight):
    """``(dX or None, dW or None, db or None)``: dX if ``need_x``; dW and db (one kernel) if ``need_weight``."""
    dx = _launch_backward_input(dy, y, weight, activation, negative_slope) if need_x else None
    dw, db = (_launch_backward_weight(dy, y, x, has_bias, activation, negative_slope) if need_weight
              else (None, None))
    return dx, dw, db


class _FusedLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, activation: str, negative_slope: float):
        y = _launch_forward(x, weight, bias, activation, negative_slope)
        ctx.save_for_backward(x, weight, y)
        ctx.activation = activation
        ctx.negative_slope = negative_slope
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, y = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dx, dw, db = _backward(dy, y, x, weight, ctx.has_bias, ctx.activation, ctx.negative_slope, need_x,
                               need_w or (need_b and ctx.has_bias))
        return dx, (dw if need_w else None), (db if need_b else None), None, None


def fused_linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                           activation: str = "none", negative_slope: float = 0.01) -> torch.Tensor:
    """The PyTorch path with the same semantics: ``act(F.linear(x, weight, bias))``."""
    return activation_from_name(activation).forward(torch.nn.functional.linear(x, weight, bias), negative_slope)


def _validate(x, weight, bias, activation, negative_slope):
    check_float_tensor("x", x)
    check_float_tensor("weight", weight)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x has shape {tuple(x.shape)}: its last dimension must equal weight's "
                         f"in_features ({weight.shape[1]}); weight is {tuple(weight.shape)}")
    check_same("weight", weight, "x", x)
    if bias is not None:
        check_float_tensor("bias", bias)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},) to match weight "
                             f"{tuple(weight.shape)}, got {tuple(bias.shape)}")
        check_same("bias", bias, "x", x)
    act = activation_from_name(activation)
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)) \
            or not 0.0 <= negative_slope < float("inf"):
        raise ValueError(f"negative_slope must be a finite number >= 0 (the backward recovers the "
                         f"derivative from the output's sign), got {negative_slope!r}")
    return act


def fused_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 activation: str = "none", negative_slope: float = 0.01) -> torch.Tensor:
    """``act(x @ weight.T + bias)``, as ``act(F.linear(x, weight, bias))``, autograd-aware.

    Args:
        x: ``(..., in_features)``, float32/float16/bfloat16, any strides.
        weight: ``(out_features, in_features)``, same dtype and device as ``x``.
        bias: ``(out_features,)`` or None.
        activation: ``none``, ``relu``, ``leaky_relu``, ``sigmoid`` or ``tanh``.
        negative_slope: leaky-ReLU slope, >= 0.

    Under ``torch.autocast`` the operands are cast to the autocast dtype first (as ``F.linear`` does).
    CUDA tensors (and CPU tensors under ``TRITON_INTERPRET=1``) run the fused Triton kernels with fp32
    accumulation; fp32 inputs use tf32 tensor cores unless ``fastgan.ops.set_matmul_precision("ieee")``.
    Other CPU tensors, and float64, take the PyTorch reference path. Bad shapes, dtypes, devices or
    activation names raise ``ValueError``/``TypeError`` before any kernel runs.
    """
    check_float_tensor("x", x)
    if torch.is_autocast_enabled(x.device.type) and x.dtype != torch.float64 and isinstance(weight, torch.Tensor):
        # Under autocast (precision="bf16"): 16-bit operands, fp32 accumulation, fp32 master weights; the
        # casts are autograd ops, so the weight's gradient comes back in fp32.
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    act = _validate(x, weight, bias, activation, negative_slope)
    if x.dtype == torch.float64 or not use_triton(x):
        return fused_linear_reference(x, weight, bias, activation, negative_slope)
    leading = x.shape[:-1]
    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    if torch.compiler.is_compiling():
        y = torch.ops.fastgan.linear_act(x2, weight, bias, act.name, float(negative_slope))
    else:
        y = _FusedLinearFunction.apply(x2, weight, bias, act.name, float(negative_slope))
    return y if x.dim() == 2 else y.reshape(*leading, weight.shape[0])


# -- torch.compile: the same kernels as opaque custom ops ------------------------------------------------
# Dynamo cannot trace into Triton kernels launched from an autograd.Function under the interpreter (fake
# tensors reach it), but an opaque custom op with a fake (shape) implementation and a registered
# backward compiles with no graph break and still runs the Triton kernels. Eager calls keep the
# autograd.Function: a custom op adds dispatch overhead a launch-bound step would pay every call.

@torch.library.custom_op("fastgan::linear_act", mutates_args=())
def _linear_act_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str,
                   negative_slope: float) -> torch.Tensor:
    return _launch_forward(x, weight, bias, activation, negative_slope)


@_linear_act_op.register_fake
def _(x, weight, bias, activation, negative_slope):
    return x.new_empty((x.shape[0], weight.shape[0]))


@torch.library.custom_op("fastgan::linear_act_backward", mutates_args=())
def _linear_act_backward_op(dy: torch.Tensor, y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                            has_bias: bool, activation: str, negative_slope: float,
                            need_x: bool, need_weight: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, dw, db = _backward(dy, y, x, weight, has_bias, activation, negative_slope, need_x, need_weight)
    # A custom op cannot return None: empty tensors (distinct ones: outputs may not alias) mean "not computed".
    return tuple(t if t is not None else weight.new_empty(0) for t in (dx, dw, db))


@_linear_act_backward_op.register_fake
def _(dy, y, x, weight, has_bias, activation, negative_slope, need_x, need_weight):
    dx = x.new_empty(x.shape) if need_x else x.new_empty(0)
    dw = weight.new_empty(weight.shape) if need_weight else weight.new_empty(0)
    db = weight.new_empty((weight.shape[0],)) if need_weight and has_bias else weight.new_empty(0)
    return dx, dw, db


def _linear_act_setup_context(ctx, inputs, output):
    x, weight, bias, activation, negative_slope = inputs
    ctx.save_for_backward(x, weight, output)
    ctx.has_bias = bias is not None
    ctx.activation, ctx.negative_slope = activation, negative_slope


def _linear_act_backward(ctx, dy):
    x, weight, y = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    dx, dw, db = torch.ops.fastgan.linear_act_backward(dy, y, x, weight, ctx.has_bias, ctx.activation,
                                                       ctx.negative_slope, need_x, need_w or need_b)
    return (dx if need_x else None, dw if need_w else None, db if need_b and ctx.has_bias else None, None, None)


_linear_act_op.register_autograd(_linear_act_backward, setup_context=_linear_act_setup_context)
