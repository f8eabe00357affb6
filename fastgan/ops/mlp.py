"""fused_mlp: a whole MLP (Linear + bias + activation, layer after layer) in one kernel, its backward in two.

Forward: ``_mlp_rows_kernel`` runs a block of rows through every layer and saves each hidden layer's output
(as the per-layer op saves its output). Backward: the same kernel runs the gradient chain down the layers
per row block (and to dX), then ``_mlp_weight_grad_kernel`` reduces dW and db of every layer over the batch
in one launch. So one MLP costs 1 launch forward and 2 backward, whatever its depth; the per-layer ops cost
L and 2L. At GAN batch sizes the row blocks alone would occupy a few of a GPU's SMs: ``slice_plan`` cuts
the MLP's wide end (>= 256 columns) into slices, a program each, until the grid reaches the SM count, and
the slices' partial sums meet in a ``Scratch`` (``mlp_slices``; the kernels: ``mlp_kernels``).

The layers' parameters are read from one flat fp32 buffer, in ``module.parameters()`` order (W_0, b_0,
W_1, ...), which is the layout ``fastgan.optim.flatten_parameters`` (and so ``FlatAdam``) gives them; when
they are not laid out like that, the op copies them into one (correct, slower: ``FusedMLP`` keeps them
flat). ``MLPSpec`` names the shape. The trainer's fused step (``fastgan.train.fused_step``) calls the launchers
below directly with its own buffers; everyone else calls ``fused_mlp``.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property, lru_cache

import torch

from . import mlp_kernels as kernels
from ._register import register, register_opaque
from ._runtime import (cdiv, check_float_tensor, check_tuned_for_capture, get_matmul_precision, kernel_launches,
                       use_triton)
from .activations import activation_from_name
from .adam import AdamFold
from .mlp_slices import Scratch, SlicePlan, slice_plan, sms_per_replica

__all__ = ["MLPSpec", "Scratch", "SlicePlan", "slice_plan", "fused_mlp", "fused_mlp_reference", "mlp_forward",
           "mlp_backward", "mlp_weight_grad", "weight_grad_splits", "flat_parameters", "back_to_back"]

_SPLIT_ROWS = 2048   # rows per batch split of the weight-gradient reduction
_MAX_SPLITS = 16


@dataclass(frozen=True)
class MLPSpec:
    """An MLP's shape: widths ``dims`` = (in, hidden..., out), bias or not (all layers alike), the hidden
    layers' activation and the output layer's, and the leaky-ReLU slope (>= 0)."""
    dims: tuple[int, ...]
    has_bias: bool = True
    hidden_activation: str = "leaky_relu"
    output_activation: str = "none"
    negative_slope: float = 0.01

    def __post_init__(self):
        dims = tuple(self.dims)
        if len(dims) < 2 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise ValueError(f"dims must be two or more positive integers (in, hidden..., out), got {self.dims!r}")
        object.__setattr__(self, "dims", dims)
        activation_from_name(self.hidden_activation)
        activation_from_name(self.output_activation)
        slope = self.negative_slope
        if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not 0.0 <= slope < float("inf"):
            raise ValueError(f"negative_slope must be a finite number >= 0, got {slope!r}")
        object.__setattr__(self, "negative_slope", float(slope))

    @property
    def num_layers(self) -> int:
        return len(self.dims) - 1

    def parameter_shapes(self) -> list[tuple[int, ...]]:
        shapes = []
        for d_in, d_out in zip(self.dims[:-1], self.dims[1:]):
            shapes.append((d_out, d_in))
            if self.has_bias:
                shapes.append((d_out,))
        return shapes

    @cached_property   # (the launchers read it on every call)
    def numel(self) -> int:
        return sum(torch.Size(s).numel() for s in self.parameter_shapes())

    @cached_property   # (the launchers read it on every call)
    def hidden_columns(self) -> int:
        """Width of the saved hidden outputs (every layer's output but the last)."""
        return sum(self.dims[1:-1])

    @cached_property   # (the launchers read it on every call)
    def gradient_columns(self) -> int:
        """Width of the per-layer pre-activation gradients (every layer's output)."""
        return sum(self.dims[1:])

    def table(self) -> list[tuple[int, int, int, int]]:
        """``(d_in, d_out, w_offset, column)`` per layer, as the kernels read it."""
        rows, offset, column = [], 0, 0
        for d_in, d_out in zip(self.dims[:-1], self.dims[1:]):
            rows.append((d_in, d_out, offset, column))
            offset += d_in * d_out + (d_out if self.has_bias else 0)
            column += d_out
        return rows

    @cached_property   # (the launchers read it on every call)
    def layout(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Each layer's offset in the flat parameters, and its column in the acts/g buffers (the rows
        kernel's compile-time constants, with ``dims``)."""
        table = self.table()
        return tuple(row[2] for row in table), tuple(row[3] for row in table)

    @cached_property   # (the launchers read it on every call)
    def shape_key(self) -> int:
        return zlib.crc32(repr(self.dims).encode()) & 0x7FFFFFFF

    def activation(self, layer: int) -> str:
        return self.output_activation if layer == self.num_layers - 1 else self.hidden_activation


_tables: dict[tuple, torch.Tensor] = {}


def _table(spec: MLPSpec, device: torch.device) -> torch.Tensor:
    """The spec's int64 table on ``device`` (made once per spec and device; a graph replays the same one)."""
    key = (spec.dims, spec.has_bias, str(device))
    if key not in _tables:
        _tables[key] = torch.tensor(spec.table(), dtype=torch.int64, device=device).reshape(-1)
    return _tables[key]


def _precision(bf16: bool) -> str:
    return "tf32" if bf16 else get_matmul_precision()


def weight_grad_splits(rows: int) -> int:
    """How many batch splits the weight-gradient reduction uses for ``rows`` rows (1 up to 4096)."""
    return 1 if rows <= 2 * _SPLIT_ROWS else min(_MAX_SPLITS, cdiv(rows, _SPLIT_ROWS))


def _loss_args(loss):
    """The loss's scalars for the kernel (target a 0.0 when it is a tensor of per-replica labels)."""
    if loss is None:
        return 0, 0.0, 0.0, 0.0, 0.0
    split_row, target_a, target_b, weight_a, weight_b = loss
    target_a = 0.0 if isinstance(target_a, torch.Tensor) else float(target_a)
    return int(split_row), target_a, float(target_b), float(weight_a), float(weight_b)


def _replica(K: int | None, name: str, t: torch.Tensor | None) -> tuple[torch.Tensor | None, int]:
    """A buffer of K replicas as (replica 0's view, the elements between replicas); one MLP's: (it, 0)."""
    if K is None or t is None:
        return t, 0
    if t.dim() < 2 or t.shape[0] != K:
        raise ValueError(f"{name} must have a leading dimension of {K} replicas (x is {K} replicas' rows), got "
                         f"{tuple(t.shape)}")
    return t[0], t.stride(0)


def _check_buffer(name, t, rows, columns):
    if t.dtype != torch.float32 or t.dim() != 2 or t.shape[0] < rows or t.shape[1] != columns or \
            (t.numel() and t.stride(1) != 1):
        raise ValueError(f"{name} must be a float32 ({rows}, {columns}) buffer with unit column stride, got "
                         f"{tuple(t.shape)} {t.dtype} strides {t.stride()}")


def _check_launch(x, flat, spec, acts, y, g, dy, dx, loss, loss_partials):
    """The launchers' buffers against the spec (host-side only: safe inside a graph capture)."""
    M = x.shape[0]
    if x.dim() != 2 or x.shape[1] != spec.dims[0]:
        raise ValueError(f"x must be (rows, {spec.dims[0]}), got {tuple(x.shape)}")
    if flat.dtype != torch.float32 or flat.dim() != 1 or flat.numel() < spec.numel or not flat.is_contiguous():
        raise ValueError(f"the flat parameters must be a contiguous 1-D float32 buffer of >= {spec.numel} elements "
                         "(K replicas: (K, n) with 3-d rows)")
    _check_buffer("acts", acts, M, spec.hidden_columns)
    _check_buffer("y", y, M, spec.dims[-1])
    if g is not None:
        _check_buffer("g", g, M, spec.gradient_columns)
    if dy is not None and tuple(dy.shape) != (M, spec.dims[-1]):
        raise ValueError(f"dy must be ({M}, {spec.dims[-1]}), got {tuple(dy.shape)}")
    if dx is not None and tuple(dx.shape) != tuple(x.shape):
        raise ValueError(f"dx must have x's shape {tuple(x.shape)}, got {tuple(dx.shape)}")
    if loss is not None:
        if spec.dims[-1] != 1 or spec.output_activation != "none":
            raise ValueError("the loss epilogue needs a last layer Linear(h, 1) without activation (logits)")
        labels = loss[1]
        if isinstance(labels, torch.Tensor) and (labels.dtype != torch.float32 or labels.dim() != 1 or
                                                 not labels.is_contiguous() or labels.device != x.device):
            raise ValueError("per-replica targets must be a contiguous 1-D float32 tensor (one per replica) on x's "
                             "device")
        if loss_partials is None or loss_partials.dtype != torch.float32 or \
                loss_partials.numel() < loss_buffer_size(M) or not loss_partials.is_contiguous():
            raise ValueError(f"loss_partials must be a contiguous float32 buffer of >= {loss_buffer_size(M)} "
                             "elements (loss_buffer_size)")


@lru_cache(maxsize=None)
def _autotune_key(what: tuple) -> int:
    """An autotune key for what a launch's timing depends on (a shape, a pass, a replica count), hashed once."""
    return zlib.crc32(repr(what).encode()) & 0x7FFFFFFF


def _launch_rows(x, flat, spec, *, acts, y, g, dy=None, dy_linear=None, dx=None, loss=None, loss_partials=None,
                 forward=True, backward=False, bf16=False, scratch=None):
    K = x.shape[0] if x.dim() == 3 else None   # K replicas: every buffer (K, ...), flat (K, n)
    all_partials = loss_partials
    dy_g, dy_w = dy_linear if dy_linear is not None else (None, None)
    (x, rep_x), (flat, rep_p), (acts, rep_a), (y, rep_y), (g, rep_g), (dy, rep_dy), (dx, rep_dx), \
        (loss_partials, rep_loss), (dy_g, rep_dyg), (dy_w, rep_dyw) = (_replica(K, name, t) for name, t in (
            ("x", x), ("flat", flat), ("acts", acts), ("y", y), ("g", g), ("dy", dy), ("dx", dx),
            ("loss_partials", loss_partials), ("dy_linear's rows", dy_g), ("dy_linear's matrix", dy_w)))
    _check_launch(x, flat, spec, acts, y, g, dy, dx, loss, loss_partials)
    labels = loss[1] if loss is not None and isinstance(loss[1], torch.Tensor) else None
    if labels is not None and labels.numel() != (K or 1):
        raise ValueError(f"per-replica targets: one per replica ({K or 1}), got {labels.numel()}")
    M = x.shape[0]
    if dy_linear is not None:
        if dy_g.dtype != torch.float32 or dy_g.dim() != 2 or dy_g.shape[0] != M or dy_g.stride(1) != 1 or \
                dy_w.dtype != torch.float32 or tuple(dy_w.shape) != (dy_g.shape[1], spec.dims[-1]) or \
                not dy_w.is_contiguous():
            raise ValueError(f"dy_linear must be float32 ({M}, k) rows with unit column stride and a contiguous "
                             f"(k, {spec.dims[-1]}) matrix, got {tuple(dy_g.shape)} and {tuple(dy_w.shape)}")
    if M == 0:
        if all_partials is not None:
            all_partials[..., :1].zero_()   # no program ran: the loss of no rows is 0
        return
    plan = slice_plan(spec, M, forward, loss is not None, sms_per_replica(x.device, K or 1))
    if plan.split != "none":
        if scratch is None:
            scratch = Scratch(spec, (M,), x.device, K or 1)
        elif M not in scratch.rows or scratch.part.device != x.device or scratch.replicas != (K or 1):
            raise ValueError(f"scratch is for passes of {scratch.replicas} replicas over {scratch.rows} rows on "
                             f"{scratch.part.device}, this one has {K or 1} over {M} on {x.device}")
    key = _autotune_key((spec.dims, forward, loss is not None, backward, dx is not None) + ((K,) if K else ()))
    check_tuned_for_capture("_mlp_rows_kernel", (M, key, plan.slices), x)
    dummy = y
    dy_t = dy if dy is not None else dummy
    dx_t = dx if dx is not None else dummy
    dy_g, dy_w = (dy_g, dy_w) if dy_linear is not None else (dummy, dummy)
    sliced = plan.split != "none"
    part, counts = (scratch.part, scratch.counts) if sliced else (dummy, dummy)
    rep_part, rep_count = (scratch.part_stride, scratch.count_stride) if sliced else (0, 0)
    grid = lambda meta: (cdiv(M, meta["BLOCK_M"]), plan.slices, K or 1)  # noqa: E731
    w_offsets, columns = spec.layout
    kernels._mlp_rows_kernel[grid](
        x, x.stride(0), x.stride(1), flat,
        acts if acts.numel() else dummy, acts.stride(0) if acts.numel() else 0, y, y.stride(0),
        g if g is not None else dummy, g.stride(0) if g is not None else 0,
        dy_t, dy_t.stride(0), dy_t.stride(1), dx_t, dx_t.stride(0), dx_t.stride(1),
        loss_partials if loss_partials is not None else dummy,
        part, M * plan.partial, plan.partial, counts, dy_g, dy_g.stride(0), dy_w, dy_g.shape[1] if dy_linear else 0,
        rep_x, rep_p, rep_a if acts.numel() else 0, rep_y, rep_g, rep_dy, rep_dx, rep_loss, rep_part, rep_count,
        rep_dyg, rep_dyw, labels if labels is not None else dummy,
        M, key, plan.slices, plan.width, *_loss_args(loss), spec.negative_slope,
        DIMS=spec.dims, W_OFFS=w_offsets, COLS=columns,
        NUM_LAYERS=spec.num_layers, HAS_BIAS=spec.has_bias, ACT_HIDDEN=spec.hidden_activation,
        ACT_OUT=spec.output_activation, FORWARD=forward, LOSS=loss is not None, BACKWARD=backward,
        NEED_DX=dx is not None, SPLIT=plan.split, DY_LINEAR=dy_linear is not None, LABELS=labels is not None,
        PRECISION=_precision(bf16), BF16=bf16)
    kernel_launches["_mlp_rows_kernel"] += 1


def loss_buffer_size(rows: int) -> int:
    """Length of the loss buffer of a pass over ``rows`` rows: the count of programs, then one sum each
    (sized for the smallest BLOCK_M of any config)."""
    return 1 + cdiv(rows, 16)


def mlp_forward(x, flat, spec, *, acts, y, bf16=False, scratch=None):
    """Forward only: ``y`` (rows, out) and the hidden outputs ``acts`` (rows, spec.hidden_columns).
    ``scratch``: the MLP's ``Scratch`` (made for the call when None and the pass is sliced).

    K MLPs of one shape in one launch (replicas): ``x`` ``(K, rows, in)``, ``flat`` ``(K, n)`` (one MLP's
    parameters a row), and every other buffer with the same leading K (``loss_partials`` ``(K, size)``; this
    and ``mlp_backward``'s per-replica loss target: a ``(K,)`` tensor as ``loss``'s target a)."""
    _launch_rows(x, flat, spec, acts=acts, y=y, g=None, bf16=bf16, scratch=scratch)


def mlp_backward(x, flat, spec, *, acts, y, g, dy=None, dy_linear=None, dx=None, loss=None, loss_partials=None,
                 forward=False, bf16=False, scratch=None):
    """The gradient chain per row block into ``g`` (rows, spec.gradient_columns), from ``dy``, from
    ``dy_linear = (h, w)`` meaning dy = h @ w (the gradient a next layer w would send down: D's layer-0 g
    and weight, for G), or from the loss (``loss = (split_row, target_a, target_b, weight_a, weight_b)``:
    the last layer must be Linear(h, 1) without activation; each row block's weighted loss sum goes to
    ``loss_partials``), and dX into ``dx`` if given. ``forward=True`` runs the forward first in the same
    launch (writing acts, y)."""
    _launch_rows(x, flat, spec, acts=acts, y=y, g=g, dy=dy, dy_linear=dy_linear, dx=dx, loss=loss,
                 loss_partials=loss_partials, forward=forward, backward=True, bf16=bf16, scratch=scratch)


def mlp_weight_grad(x, spec, *, acts, g, grad, loss_partials=None, loss_out=None, bf16=False,
                    adam: AdamFold | None = None):
    """dW, db of every layer into ``grad`` ((splits, spec.numel), splits = ``weight_grad_splits(rows)``):
    each split's sum over its rows; with ``loss_out``, also the sum of ``loss_partials`` into it. K replicas:
    ``x``, ``acts``, ``g`` ``(K, rows, ...)``, ``grad`` ``(K, splits, spec.numel)``, ``loss_partials``
    ``(K, size)`` and ``loss_out`` ``(K,)``: one launch. ``adam`` (``ops.adam.adam_fold`` /
    ``replica_adam_fold``, one split only): the same launch applies that Adam update with the gradient it
    forms, bit for bit as ``adam_step`` / ``replica_adam_step`` would after it."""
    K = x.shape[0] if x.dim() == 3 else None
    all_grad, all_loss_out = grad, loss_out
    (x, rep_x), (acts, rep_a), (g, rep_g), (grad, rep_grad), (loss_partials, rep_loss) = (
        _replica(K, name, t) for name, t in (("x", x), ("acts", acts), ("g", g), ("grad", grad),
                                             ("loss_partials", loss_partials)))
    M = x.shape[0]
    if grad.dim() != 2 or grad.shape[1] != spec.numel or grad.dtype != torch.float32 or not grad.is_contiguous() \
            or not all_grad.is_contiguous():
        raise ValueError(f"grad must be a contiguous float32 (splits, {spec.numel}) buffer (K replicas: (K, splits, "
                         f"{spec.numel})), got {tuple(all_grad.shape)}")
    _check_buffer("acts", acts, M, spec.hidden_columns)
    _check_buffer("g", g, M, spec.gradient_columns)
    if (loss_out is None) != (loss_partials is None):
        raise ValueError("loss_partials and loss_out go together")
    if loss_out is not None and (loss_out.numel() != (K or 1) or not loss_out.is_contiguous()):
        raise ValueError(f"loss_out must be a contiguous tensor of {K or 1} element(s), one per replica")
    splits = grad.shape[0]
    if adam is not None:
        _check_fold_fits(adam, spec, K, splits, x.device)
    rows_per_split = max(1, cdiv(M, splits))
    key = spec.shape_key if K is None and adam is None else _autotune_key((spec.dims, K, adam is not None))
    check_tuned_for_capture("_mlp_weight_grad_kernel", (M, key, rows_per_split), x)

    def grid(meta):
        tiles = max(cdiv(d_out, meta["BLOCK_N"]) * cdiv(d_in, meta["BLOCK_K"])
                    for d_in, d_out in zip(spec.dims[:-1], spec.dims[1:]))
        return tiles, spec.num_layers, splits * (K or 1)

    has_loss = loss_out is not None
    kernels._mlp_weight_grad_kernel[grid](
        x, x.stride(0), x.stride(1), acts if acts.numel() else g, acts.stride(0) if acts.numel() else 0, g,
        g.stride(0), _table(spec, x.device), grad, grad.stride(0), M, key, rows_per_split,
        loss_partials if has_loss else g, all_loss_out if has_loss else g,
        splits, rep_x, rep_a if acts.numel() else 0, rep_g, rep_grad, rep_loss,
        *(_fold_args(adam) if adam is not None else (grad, grad, grad, 0, grad, grad, 1, grad) + (0.0,) * 10),
        ADAM=adam is not None, HYPER=adam is not None and adam.hyper is not None, HAS_BIAS=spec.has_bias, HAS_LOSS=has_loss, PRECISION=_precision(bf16), BF16=bf16)
    kernel_launches["_mlp_weight_grad_kernel"] += 1


def _check_fold_fits(adam, spec, K, splits, device) -> None:
    if not isinstance(adam, AdamFold):
        raise TypeError(f"adam must be an ops.adam.AdamFold (adam_fold, replica_adam_fold), got {type(adam).__name__}")
    shape = (spec.numel,) if K is None else (K, spec.numel)
    if tuple(adam.param.shape) != shape or adam.param.device != device:
        raise ValueError(f"the folded Adam's parameters must be {shape} on {device}, like the MLP's, got "
                         f"{tuple(adam.param.shape)} on {adam.param.device}")
    if (adam.hyper is not None) != (K is not None):
        raise ValueError("K replicas fold replica_adam_fold's update; one MLP adam_fold's")
    if splits != 1:
        raise ValueError(f"the Adam update folds into a weight gradient of one split, not {splits} (partial sums)")


def _fold_args(adam: AdamFold) -> tuple:
    """The weight-gradient kernel's Adam arguments, from ``param`` to ``l1``."""
    lr, one_minus_beta1, beta2, one_minus_beta2, log_beta1, log_beta2, eps, weight_decay, shrink, l1 = adam.scalars
    return (adam.param, adam.exp_avg, adam.exp_avg_sq, adam.param.stride(0) if adam.param.dim() == 2 else 0,
            adam.counter, adam.arrivals, adam.programs, adam.hyper if adam.hyper is not None else adam.param,
            lr, one_minus_beta1, beta2, one_minus_beta2, log_beta1, log_beta2, eps, weight_decay, shrink, l1)


# -- the op on tensors, with autograd ---------------------------------------------------------------------

def back_to_back(params: list[torch.Tensor]) -> bool:
    """Whether fp32 ``params`` sit one after another in one buffer (``flatten_parameters``' layout, the
    one the whole-MLP kernels read)."""
    first, offset = params[0], 0
    for p in params:
        if p.dtype != torch.float32 or not p.is_contiguous() or p.data_ptr() != first.data_ptr() + 4 * offset \
                or p.untyped_storage().data_ptr() != first.untyped_storage().data_ptr():
            return False
        offset += p.numel()
    return True


def flat_parameters(params: list[torch.Tensor]) -> torch.Tensor:
    """The parameters as one flat fp32 tensor: a view when they are ``back_to_back``, else a copy."""
    if back_to_back(params):
        first = params[0]
        return first.as_strided((sum(p.numel() for p in params),), (1,), first.storage_offset())
    return torch.cat([p.detach().reshape(-1) for p in params])


def fused_mlp_reference(x: torch.Tensor, params: list[torch.Tensor], spec: MLPSpec) -> torch.Tensor:
    """The same MLP with PyTorch ops (``F.linear`` and the activation table), differentiable twice."""
    it = iter(params)
    for layer in range(spec.num_layers):
        weight = next(it)
        bias = next(it) if spec.has_bias else None
        x = activation_from_name(spec.activation(layer)).forward(torch.nn.functional.linear(x, weight, bias),
                                                                 spec.negative_slope)
    return x


def _validate(x, params, spec):
    if not isinstance(spec, MLPSpec):
        raise TypeError(f"spec must be a fastgan.ops.MLPSpec, got {type(spec).__name__}")
    check_float_tensor("x", x)
    if x.dim() != 2 or x.shape[1] != spec.dims[0]:
        raise ValueError(f"x must be 2-D (rows, {spec.dims[0]}) for this MLP, got shape {tuple(x.shape)}")
    shapes = spec.parameter_shapes()
    if len(params) != len(shapes):
        raise ValueError(f"this MLP has {len(shapes)} parameter tensors (dims {spec.dims}, "
                         f"bias={spec.has_bias}), got {len(params)}")
    for i, (p, shape) in enumerate(zip(params, shapes)):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params[{i}] must be a torch.Tensor, got {type(p).__name__}")
        if tuple(p.shape) != shape:
            raise ValueError(f"params[{i}] has shape {tuple(p.shape)}, expected {shape}")
        if p.device != x.device:
            raise ValueError(f"params[{i}] is on {p.device} but x is on {x.device}")
        if p.dtype != torch.float32 and x.dtype != torch.float64:
            raise TypeError(f"params[{i}] must be float32 (master weights), got {p.dtype}")


@lru_cache(maxsize=None)
def _spec_of(dims: tuple, has_bias: bool, act_hidden: str, act_out: str, negative_slope: float) -> MLPSpec:
    """The op's spec from its plain arguments, one object per spec: its cached layout is computed once, not on
    every call (a host cost the launchers would pay each time)."""
    return MLPSpec(dims, has_bias, act_hidden, act_out, negative_slope)


def _forward_tensors(x: torch.Tensor, params: list[torch.Tensor], dims: list[int], has_bias: bool, act_hidden: str,
                     act_out: str, negative_slope: float, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    spec = _spec_of(tuple(dims), has_bias, act_hidden, act_out, negative_slope)
    M = x.shape[0]
    acts = torch.empty((M, spec.hidden_columns), device=x.device, dtype=torch.float32)
    y = torch.empty((M, spec.dims[-1]), device=x.device, dtype=torch.float32)
    mlp_forward(x, flat_parameters(params), spec, acts=acts, y=y, bf16=bf16)
    return y, acts


def _forward_fake(x, params, dims, has_bias, act_hidden, act_out, negative_slope, bf16):
    return (x.new_empty((x.shape[0], dims[-1]), dtype=torch.float32),
            x.new_empty((x.shape[0], sum(dims[1:-1])), dtype=torch.float32))


def _backward_tensors(dy: torch.Tensor, x: torch.Tensor, y: torch.Tensor, acts: torch.Tensor,
                      params: list[torch.Tensor], dims: list[int], has_bias: bool, act_hidden: str, act_out: str,
                      negative_slope: float, bf16: bool, need_dx: bool) -> tuple[torch.Tensor, torch.Tensor]:
    spec = _spec_of(tuple(dims), has_bias, act_hidden, act_out, negative_slope)
    M = x.shape[0]
    g = torch.empty((M, spec.gradient_columns), device=x.device, dtype=torch.float32)
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype) if need_dx else None
    splits = weight_grad_splits(M)
    grad = torch.empty((splits, spec.numel), device=x.device, dtype=torch.float32)
    if M == 0:
        grad.zero_()
    else:
        mlp_backward(x, flat_parameters(params), spec, acts=acts, y=y, g=g, dy=dy, dx=dx, bf16=bf16)
        mlp_weight_grad(x, spec, acts=acts, g=g, grad=grad, bf16=bf16)
    return (dx if need_dx else x.new_empty(0)), (grad[0] if splits == 1 else grad.sum(0))


def _backward_fake(dy, x, y, acts, params, dims, has_bias, act_hidden, act_out, negative_slope, bf16, need_dx):
    spec = _spec_of(tuple(dims), has_bias, act_hidden, act_out, negative_slope)
    return (x.new_empty(x.shape) if need_dx else x.new_empty(0)), x.new_empty((spec.numel,), dtype=torch.float32)


# the backward's kernels as an opaque op of their own, for when torch.compile traces the backward
_backward_op = register_opaque("fastgan::mlp_backward", _backward_tensors, fake=_backward_fake)


def split_gradient(grad, params):
    out, offset = [], 0
    for p in params:
        out.append(grad[offset:offset + p.numel()].view(p.shape))
        offset += p.numel()
    return out


def _setup_context(ctx, inputs, output):
    x, params, *config = inputs
    y, acts = output
    ctx.save_for_backward(x, y, acts, *params)
    ctx.config = config
    ctx.mark_non_differentiable(acts)


def _autograd_backward(ctx, dy, _dacts):
    x, y, acts, *params = ctx.saved_tensors
    need_dx = ctx.needs_input_grad[0]
    dx, grad = _backward_op(dy.contiguous(), x, y, acts, params, *ctx.config, need_dx)
    return (dx if need_dx else None), split_gradient(grad, params), None, None, None, None, None, None


_mlp = register("fastgan::mlp", _forward_tensors, fake=_forward_fake, setup_context=_setup_context,
                backward=_autograd_backward)


def fused_mlp(x: torch.Tensor, params: list[torch.Tensor], spec: MLPSpec) -> torch.Tensor:
    """The whole MLP ``spec`` on ``x`` (rows, in): one kernel forward, two backward; autograd-aware.

    ``params``: W_0, b_0, W_1, b_1, ... (no b with ``has_bias=False``), fp32, in ``nn.Linear``'s shapes.
    Under ``torch.autocast`` the matmul operands are rounded to bf16 (fp32 accumulation, fp32 output);
    otherwise fp32 uses tf32 unless ``set_matmul_precision("ieee")``. CUDA tensors (and CPU tensors under
    TRITON_INTERPRET=1) run the kernels; other CPU tensors and float64 take the reference path. Bad
    shapes, dtypes or devices raise ``ValueError``/``TypeError`` before any kernel runs.
    """
    params = list(params)
    _validate(x, params, spec)
    if x.dtype == torch.float64 or not use_triton(x):
        return fused_mlp_reference(x, params, spec)
    bf16 = torch.is_autocast_enabled(x.device.type)
    config = (list(spec.dims), spec.has_bias, spec.hidden_activation, spec.output_activation, spec.negative_slope,
              bf16)
    return _mlp(x, params, *config)[0]
