"""fused_linear: ``act(x @ weight.T + bias)`` in one Triton kernel, and its backward in two.

Forward: a tiled matmul with fp32 accumulation; bias and activation applied in the epilogue.
Backward, from the saved *output* y (no pre-activation tensor is stored):
  g  = dy * act'(y)                 formed as dy and y tiles are loaded; stored once by the dW kernel when
                                    dX is needed too
  dX = g @ W                        ``_linear_act_bwd_input_kernel``
  dW = g.T @ X,  db = sum_m g       ``_linear_act_bwd_weight_kernel``: db comes from the same g tiles; where
                                    the tiles fill few SMs, batch splits' partial sums added in a fixed order
All kernels take arbitrary strides, so transposed or sliced inputs need no copy, and mask every edge, so
any size works (1, 7, 127, 129, 784 ...).
"""
from __future__ import annotations

import torch

from . import linear_kernels as kernels
from ._register import register, register_opaque
from ._runtime import (cdiv, check_float_tensor, check_same, check_tuned_for_capture, get_matmul_precision,
                       kernel_launches, multiprocessors, use_triton)
from .activations import activation_from_name

__all__ = ["fused_linear", "fused_linear_reference"]


def _precision_for(dtype: torch.dtype) -> str:
    return get_matmul_precision() if dtype == torch.float32 else "tf32"


def _replica_strides(*tensors) -> list[int] | tuple[int, ...]:
    """Each tensor's stride along the replica axis (its first, when it has one more than a single model's
    tensor: ``x``/``y``/``dy``/``dx`` 3-D, ``weight``/``dw`` 3-D, ``bias``/``db`` 2-D); 0 for a single model
    (told by the first tensor, 2-D then: the common case takes no look at the others)."""
    if tensors[0].dim() < tensors[1]:
        return (0,) * (len(tensors) // 2)
    return [0 if t is None or t.dim() < d else t.stride(0) for t, d in zip(tensors[::2], tensors[1::2])]


def _launch_forward(x, weight, bias, activation, negative_slope):
    """``x`` (M, K), ``weight`` (N, K), ``bias`` (N,) -> (M, N); or stacked replicas: (R, M, K), (R, N, K),
    (R, N) -> (R, M, N), one launch with a grid axis over R."""
    R = x.shape[0] if x.dim() == 3 else 1
    M, K = x.shape[-2:]
    N = weight.shape[-2]
    if bias is not None and N > 1 and bias.stride(-1) != 1:   # the kernel reads the bias with unit stride
        bias = bias.contiguous()
    y = torch.empty((*x.shape[:-1], N), device=x.device, dtype=x.dtype)
    if M == 0 or N == 0 or R == 0:
        return y
    check_tuned_for_capture("_linear_act_fwd_kernel", (M, N, K), x)
    grid = lambda meta: (cdiv(M, meta["BLOCK_M"]), cdiv(N, meta["BLOCK_N"]), R)  # noqa: E731
    kernels._linear_act_fwd_kernel[grid](
        x, weight, bias if bias is not None else x, y, M, N, K,
        x.stride(-2), x.stride(-1), weight.stride(-2), weight.stride(-1), y.stride(-2), y.stride(-1),
        *_replica_strides(x, 3, weight, 3, bias, 2, y, 3),
        float(negative_slope), HAS_BIAS=bias is not None, ACTIVATION=activation,
        PRECISION=_precision_for(x.dtype))
    kernel_launches["_linear_act_fwd_kernel"] += 1
    return y


def _launch_backward_input(dy, y, weight, activation, negative_slope):
    R = dy.shape[0] if dy.dim() == 3 else 1
    M, N = dy.shape[-2:]
    K = weight.shape[-1]
    dx = torch.empty((*dy.shape[:-1], K), device=dy.device, dtype=weight.dtype)
    if M == 0 or K == 0 or R == 0:
        return dx
    check_tuned_for_capture("_linear_act_bwd_input_kernel", (M, N, K), dy)
    grid = lambda meta: (cdiv(M, meta["BLOCK_M"]), cdiv(K, meta["BLOCK_K"]), R)  # noqa: E731
    kernels._linear_act_bwd_input_kernel[grid](
        dy, y, weight, dx, M, N, K, dy.stride(-2), dy.stride(-1), y.stride(-2), y.stride(-1),
        weight.stride(-2), weight.stride(-1), dx.stride(-2), dx.stride(-1),
        *_replica_strides(dy, 3, y, 3, weight, 3, dx, 3), float(negative_slope),
        ACTIVATION=activation, PRECISION=_precision_for(weight.dtype))
    kernel_launches["_linear_act_bwd_input_kernel"] += 1
    return dx


# Batch splits of the weight gradient: while the (n, k) tiles of every replica fill under half the SMs, more
# programs each sum a part of the rows (a whole number of any config's row blocks), and the host adds their
# partial sums in a fixed order (deterministic). At batch 4096 a 128 x 128 layer has 4 tiles of 64 x 64: 8 splits.
_SPLIT_ROWS = 512    # the fewest rows a split sums
_MAX_SPLITS = 16
_SPLIT_TILE = 64     # the tile edge the split count plans for (the configs' usual one; autotuning may pick others)
_ROW_ALIGN = 128     # a split's rows are a multiple of every config's BLOCK_M


def weight_grad_splits(rows: int, out_features: int, in_features: int, replicas: int, sms: int) -> tuple[int, int]:
    """``(splits, rows per split)`` of the weight-gradient launch: one split of all rows while the tiles fill at
    least half of ``sms`` or the batch is under two splits' rows; else enough splits to fill the SMs, each of at
    least ``_SPLIT_ROWS`` rows, at most ``_MAX_SPLITS``."""
    tiles = cdiv(out_features, _SPLIT_TILE) * max(1, cdiv(in_features, _SPLIT_TILE)) * replicas
    if rows < 2 * _SPLIT_ROWS or 2 * tiles >= sms:
        return 1, max(rows, 1)
    splits = min(_MAX_SPLITS, cdiv(sms, tiles), rows // _SPLIT_ROWS)
    per = cdiv(cdiv(rows, splits), _ROW_ALIGN) * _ROW_ALIGN
    return cdiv(rows, per), per


def _launch_backward_weight(dy, y, x, has_bias, activation, negative_slope, g=None):
    """dW and db; with ``g`` (a buffer of dy's shape) the kernel also stores g = dy act'(y) there."""
    R = (x.shape[0],) if x.dim() == 3 else ()
    M, N = dy.shape[-2:]
    K = x.shape[-1]
    dw = torch.empty((*R, N, K), device=x.device, dtype=x.dtype)
    db = torch.empty((*R, N), device=x.device, dtype=x.dtype) if has_bias else None
    if N == 0 or (K == 0 and not has_bias) or (R and R[0] == 0):
        return dw, db
    check_tuned_for_capture("_linear_act_bwd_weight_kernel", (M, N, K), x)
    splits, per = weight_grad_splits(M, N, K, R[0] if R else 1, multiprocessors(x.device))
    # the kernel's outputs: dW and db, or each split's fp32 partial sums (a leading split axis)
    out_w = dw if splits == 1 else torch.empty((splits, *R, N, K), device=x.device, dtype=torch.float32)
    out_b = db if splits == 1 or not has_bias else torch.empty((splits, *R, N), device=x.device,
                                                               dtype=torch.float32)
    # at least one program along K: with K = 0 it still writes db (the sum of g over the batch)
    grid = lambda meta: (cdiv(N, meta["BLOCK_N"]), max(1, cdiv(K, meta["BLOCK_K"])),  # noqa: E731
                         (R[0] if R else 1) * splits)
    kernels._linear_act_bwd_weight_kernel[grid](
        dy, y, x, out_w, out_b if has_bias else out_w, M, N, K, dy.stride(-2), dy.stride(-1), y.stride(-2),
        y.stride(-1), x.stride(-2), x.stride(-1), out_w.stride(-2), out_w.stride(-1),
        *_replica_strides(dy, 3, y, 3, x, 3), out_w.stride(-3) if R else 0,
        out_b.stride(-2) if R and has_bias else 0, float(negative_slope), per, splits,
        out_w.stride(0) if splits > 1 else 0, out_b.stride(0) if splits > 1 and has_bias else 0,
        g if g is not None else out_w, g.stride(-2) if g is not None else 0, g.stride(-1) if g is not None else 0,
        g.stride(0) if g is not None and R else 0,
        HAS_BIAS=has_bias, ACTIVATION=activation, WRITE_G=g is not None, PRECISION=_precision_for(x.dtype))
    kernel_launches["_linear_act_bwd_weight_kernel"] += 1
    if splits > 1:
        _add_splits(out_w, dw)
        if has_bias:
            _add_splits(out_b, db)
    return dw, db


def _add_splits(parts: torch.Tensor, out: torch.Tensor) -> None:
    """``out`` = the splits' fp32 partial sums ``parts`` added over its first axis (a fixed order: deterministic);
    one launch for an fp32 ``out``."""
    if out.dtype == torch.float32:
        torch.sum(parts, dim=0, out=out)
    else:
        out.copy_(parts.sum(dim=0))


def _backward(dy, y, x, weight, has_bias, activation, negative_slope, need_x, need_weight):
    """``(dX or None, dW or None, db or None)``: dX if ``need_x``; dW and db (one kernel) if ``need_weight``.
    With both and an activation, the weight-gradient kernel runs first and stores g = dy act'(y) once, and dX
    is g W (g read once per column tile of dX, not formed from dy and y for each)."""
    g = None
    if need_x and need_weight and activation != "none":
        g = torch.empty(dy.shape, device=dy.device, dtype=weight.dtype)   # (dX's dot rounds g to W's dtype)
    dw, db = (_launch_backward_weight(dy, y, x, has_bias, activation, negative_slope, g) if need_weight
              else (None, None))
    if not need_x:
        return None, dw, db
    if g is not None:
        return _launch_backward_input(g, g, weight, "none", negative_slope), dw, db
    return _launch_backward_input(dy, y, weight, activation, negative_slope), dw, db


def fused_linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                           activation: str = "none", negative_slope: float = 0.01) -> torch.Tensor:
    """The PyTorch path with the same semantics: ``act(F.linear(x, weight, bias))`` (stacked replicas: one
    ``torch.baddbmm``)."""
    if weight.dim() == 3:
        z = torch.bmm(x, weight.transpose(1, 2))
        z = z + bias.unsqueeze(1) if bias is not None else z
    else:
        z = torch.nn.functional.linear(x, weight, bias)
    return activation_from_name(activation).forward(z, negative_slope)


def _validate(x, weight, bias, activation, negative_slope):
    check_float_tensor("x", x)
    check_float_tensor("weight", weight)
    if weight.dim() not in (2, 3):
        raise ValueError(f"weight must be 2-D (out_features, in_features), or 3-D (replicas, out_features, "
                         f"in_features) for stacked models, got shape {tuple(weight.shape)}")
    if x.dim() < 1 or x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"x has shape {tuple(x.shape)}: its last dimension must equal weight's "
                         f"in_features ({weight.shape[-1]}); weight is {tuple(weight.shape)}")
    if weight.dim() == 3 and (x.dim() != 3 or x.shape[0] != weight.shape[0]):
        raise ValueError(f"a 3-D weight {tuple(weight.shape)} stacks {weight.shape[0]} models: x must be "
                         f"(replicas={weight.shape[0]}, rows, in_features), got {tuple(x.shape)}")
    check_same("weight", weight, "x", x)
    if bias is not None:
        check_float_tensor("bias", bias)
        if bias.shape != weight.shape[:-1]:
            raise ValueError(f"bias must have shape {tuple(weight.shape[:-1])} to match weight "
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
        weight: ``(out_features, in_features)``, same dtype and device as ``x``. Or R stacked models
            (``fastgan.replicas``): weight ``(R, out, in)``, bias ``(R, out)``, x ``(R, rows, in)`` ->
            ``(R, rows, out)``, one launch per kernel with a grid axis over R.
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
    if weight.dim() == 3:   # stacked replicas: (R, M, K) x (R, N, K) -> (R, M, N)
        return _linear_act(x, weight, bias, act.name, float(negative_slope))
    leading = x.shape[:-1]
    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    y = _linear_act(x2, weight, bias, act.name, float(negative_slope))
    return y if x.dim() == 2 else y.reshape(*leading, weight.shape[0])


# -- the op, registered once for eager calls and torch.compile (see ops/_register.py) ----------------------

def _forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str,
             negative_slope: float) -> torch.Tensor:
    return _launch_forward(x, weight, bias, activation, negative_slope)


def _fake(x, weight, bias, activation, negative_slope):
    return x.new_empty((*x.shape[:-1], weight.shape[-2]))


def _setup_context(ctx, inputs, output):
    x, weight, bias, activation, negative_slope = inputs
    ctx.save_for_backward(x, weight, output)
    ctx.has_bias = bias is not None
    ctx.activation, ctx.negative_slope = activation, negative_slope


def _backward_tensors(dy: torch.Tensor, y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, has_bias: bool,
                      activation: str, negative_slope: float, need_x: bool,
                      need_weight: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, dw, db = _backward(dy, y, x, weight, has_bias, activation, negative_slope, need_x, need_weight)
    # An op cannot return None: empty tensors (distinct ones: outputs may not alias) mean "not computed".
    return tuple(t if t is not None else weight.new_empty(0) for t in (dx, dw, db))


def _backward_fake(dy, y, x, weight, has_bias, activation, negative_slope, need_x, need_weight):
    dx = x.new_empty(x.shape) if need_x else x.new_empty(0)
    dw = weight.new_empty(weight.shape) if need_weight else weight.new_empty(0)
    db = weight.new_empty(weight.shape[:-1]) if need_weight and has_bias else weight.new_empty(0)
    return dx, dw, db


# the backward's kernels as an opaque op of their own, for when torch.compile traces the backward
_backward_op = register_opaque("fastgan::linear_act_backward", _backward_tensors, fake=_backward_fake)


def _autograd_backward(ctx, dy):
    x, weight, y = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    dx, dw, db = _backward_op(dy, y, x, weight, ctx.has_bias, ctx.activation, ctx.negative_slope, need_x,
                              need_w or (need_b and ctx.has_bias))
    return (dx if need_x else None, dw if need_w else None, db if need_b and ctx.has_bias else None, None, None)


_linear_act = register("fastgan::linear_act", _forward, fake=_fake, setup_context=_setup_context,
                       backward=_autograd_backward)
