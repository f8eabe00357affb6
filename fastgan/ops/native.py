"""kernels="cuda": fastgan's native CUDA kernels (``kernels/``, built by CMake) loaded with ctypes.

The library is optional and loaded lazily, on the first call that needs it: importing fastgan never touches
it. It is found at ``$FASTGAN_KERNELS_LIB`` or in the repository's ``build/`` folder; a missing library is
one ``NativeKernelsUnavailable`` naming the build command. The ops:

* ``cuda_mlp(x, params, spec)``: the whole MLP (``fastgan.ops.MLPSpec``), forward one launch, backward two
  (the gradient chain with dX, then every layer's dW and db), autograd-aware;
* ``cuda_bce_with_logits(logits, target)``: the mean sigmoid-BCE, forward and backward one launch each.

Both are registered like every op (``ops/_register.py``): ``torch.library`` custom ops (``fastgan::cuda_mlp``,
``fastgan::cuda_bce``, and their backward ops) with fake implementations, so ``torch.compile`` treats them
as opaque calls (no graph breaks), and an autograd.Function of the same functions for eager calls. Every
call passes PyTorch's current stream and does nothing but launch kernels (no allocation in the library, no
synchronisation), so a CUDA graph captures it. Arguments are checked in Python, with ``ValueError`` or
``TypeError``, before anything is launched; the library checks them again and its error text becomes a
``RuntimeError``. Precision follows fastgan's: ``fastgan.ops.matmul_precision`` ("ieee" -> exact fp32 FMAs,
"tf32" -> tf32 tensor cores) and ``torch.autocast`` (bf16 tensor cores), fp32 accumulation and weights.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import torch

from ._register import register, register_opaque
from ._runtime import get_matmul_precision
from .activations import ACTIVATIONS as TABLE
from .mlp import MLPSpec, flat_parameters, split_gradient

__all__ = ["NativeKernelsUnavailable", "library_path", "load", "available", "cuda_mlp", "cuda_bce_with_logits",
           "BUILD_COMMAND", "ABI_VERSION"]

ABI_VERSION = 1                     # FG_ABI_VERSION of kernels/fastgan_kernels.h
MAX_LAYERS, MAX_WIDTH = 8, 1024     # FG_MAX_LAYERS, FG_MAX_WIDTH
BUILD_COMMAND = "cmake -S . -B build && cmake --build build"
# fg_activation of kernels/fastgan_kernels.h: the activation table's rows in order (FG_NONE = 0, ..., FG_TANH = 4)
ACTIVATIONS = {name: index for index, name in enumerate(TABLE)}
PRECISIONS = {"fp32": 0, "tf32": 1, "bf16": 2}
REPO = Path(__file__).resolve().parents[2]


class NativeKernelsUnavailable(RuntimeError):
    """The native library cannot be used: not built, not loadable, or built from another ABI version."""


def library_path() -> Path:
    """Where the library is looked for: ``$FASTGAN_KERNELS_LIB``, else ``<repository>/build/libfastgan_kernels.so``."""
    explicit = os.environ.get("FASTGAN_KERNELS_LIB")
    return Path(explicit) if explicit else REPO / "build" / "libfastgan_kernels.so"


_lib: ctypes.CDLL | None = None
_loaded_from: Path | None = None


def load() -> ctypes.CDLL:
    """The library, loaded once (again if ``FASTGAN_KERNELS_LIB`` changed); ``NativeKernelsUnavailable`` if not."""
    global _lib, _loaded_from
    path = library_path()
    if _lib is not None and _loaded_from == path:
        return _lib
    if not path.is_file():
        where = "FASTGAN_KERNELS_LIB points to" if os.environ.get("FASTGAN_KERNELS_LIB") else "there is no"
        raise NativeKernelsUnavailable(
            f"kernels='cuda' needs fastgan's native library, but {where} {path}: build it from the repository with "
            f"`{BUILD_COMMAND}` (needs nvcc), or set FASTGAN_KERNELS_LIB to the built libfastgan_kernels.so")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise NativeKernelsUnavailable(f"{path} cannot be loaded: {e}") from None
    try:
        version = lib.fg_abi_version()
    except AttributeError:
        raise NativeKernelsUnavailable(f"{path} is not fastgan's kernel library (no fg_abi_version)") from None
    if version != ABI_VERSION:
        raise NativeKernelsUnavailable(f"{path} has ABI version {version}, this fastgan needs {ABI_VERSION}: rebuild "
                                       f"it with `{BUILD_COMMAND}`")
    i32, i64, f32, ptr = ctypes.c_int32, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    lib.fg_last_error.restype = ctypes.c_char_p
    lib.fg_mlp_forward.argtypes = [ptr, i64, i64, ptr, ptr, i32, i32, i32, i32, f32, i32, ptr, ptr]
    lib.fg_mlp_backward.argtypes = [ptr, i64, ptr, i64, i64, ptr, ptr, i32, i32, i32, i32, f32, i32, ptr, ptr, ptr,
                                    ptr, ptr]
    lib.fg_bce_forward.argtypes = [ptr, ptr, f32, i64, ptr, ptr]
    lib.fg_bce_backward.argtypes = [ptr, ptr, f32, i64, ptr, ptr, ptr]
    for name in ("fg_mlp_forward", "fg_mlp_backward", "fg_bce_forward", "fg_bce_backward"):
        getattr(lib, name).restype = ctypes.c_int
    _lib, _loaded_from = lib, path
    return lib


def available() -> bool:
    """Whether ``load()`` succeeds (the library is built and loadable)."""
    try:
        load()
        return True
    except NativeKernelsUnavailable:
        return False


def _call(name: str, *args) -> None:
    lib = load()
    status = getattr(lib, name)(*args)
    if status != 0:
        raise RuntimeError(f"fastgan native kernels: {name} failed: {lib.fg_last_error().decode(errors='replace')}")


def _pointer(t: torch.Tensor | None):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else None


def _stream(device: torch.device):
    return ctypes.c_void_p(torch.cuda.current_stream(device).cuda_stream)


def _rows_apart(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``t`` (rows, columns) with adjacent columns, and its row stride as the library reads it (a single
    row may carry any stride: the number of columns then)."""
    if t.stride(1) != 1 or (t.shape[0] > 1 and t.stride(0) < t.shape[1]):
        t = t.contiguous()
    return t, (t.stride(0) if t.shape[0] > 1 else t.shape[1])


def _on(device: torch.device):
    """The library launches on the current device: make it the tensors' one for the call."""
    return torch.cuda.device(device)


def _dims(spec: MLPSpec):
    return (ctypes.c_int32 * len(spec.dims))(*spec.dims)


def _precision(x: torch.Tensor) -> str:
    if torch.is_autocast_enabled(x.device.type):   # (fp16 autocast too: the kernels' 16-bit path is bf16)
        return "bf16"
    return "fp32" if get_matmul_precision() == "ieee" else "tf32"


def check_spec(spec: MLPSpec) -> None:
    """``ValueError`` for an MLP the native kernels do not take (depth, width, activations)."""
    if not isinstance(spec, MLPSpec):
        raise TypeError(f"spec must be a fastgan.ops.MLPSpec, got {type(spec).__name__}")
    if spec.num_layers > MAX_LAYERS:
        raise ValueError(f"the native kernels take at most {MAX_LAYERS} layers, this MLP has {spec.num_layers}")
    if max(spec.dims) > MAX_WIDTH:
        raise ValueError(f"the native kernels take widths up to {MAX_WIDTH}, this MLP has {max(spec.dims)}")
    for act in (spec.hidden_activation, spec.output_activation):
        if act not in ACTIVATIONS:
            raise ValueError(f"the native kernels have no activation {act!r}")


def _check_input(name: str, t, device: torch.device | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name} must be float32 for the native kernels, got {t.dtype}")
    if t.device.type != "cuda":
        raise ValueError(f"{name} is on {t.device}: the native kernels run on CUDA devices only (kernels='cuda' "
                         "needs a GPU; use kernels='triton' or 'torch' elsewhere)")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the input is on {device}")


# -- the MLP ---------------------------------------------------------------------------------------------------

def _spec_of(dims, has_bias, hidden, output, slope) -> MLPSpec:
    return MLPSpec(tuple(dims), has_bias, hidden, output, slope)


def _mlp_forward(x: torch.Tensor, params: list[torch.Tensor], dims: list[int], has_bias: bool, hidden: str,
                 output: str, slope: float, precision: str) -> torch.Tensor:
    spec = _spec_of(dims, has_bias, hidden, output, slope)
    out = torch.empty((x.shape[0], spec.gradient_columns), device=x.device, dtype=torch.float32)
    if x.shape[0] == 0:
        return out
    flat = flat_parameters(params).contiguous()
    x, x_stride = _rows_apart(x)
    with _on(x.device):
        _call("fg_mlp_forward", _pointer(x), x_stride, x.shape[0], _pointer(flat), _dims(spec), spec.num_layers,
              int(has_bias), ACTIVATIONS[hidden], ACTIVATIONS[output], float(slope), PRECISIONS[precision],
              _pointer(out), _stream(x.device))
    return out


def _mlp_forward_fake(x, params, dims, has_bias, hidden, output, slope, precision):
    return x.new_empty((x.shape[0], sum(dims[1:])), dtype=torch.float32)


def _mlp_backward(dy: torch.Tensor, x: torch.Tensor, params: list[torch.Tensor], out: torch.Tensor, dims: list[int],
                  has_bias: bool, hidden: str, output: str, slope: float, precision: str, need_x: bool,
                  need_params: bool) -> tuple[torch.Tensor, torch.Tensor]:
    spec = _spec_of(dims, has_bias, hidden, output, slope)
    flat = flat_parameters(params).contiguous()
    dx = torch.empty((x.shape[0], dims[0]), device=x.device, dtype=torch.float32) if need_x else None
    dflat = torch.empty((spec.numel,), device=x.device, dtype=torch.float32) if need_params else None
    if x.shape[0] == 0:   # sums over no rows
        dflat = dflat.zero_() if dflat is not None else None
    else:
        dy, dy_stride = _rows_apart(dy)   # (an expanded gradient, too)
        x, x_stride = _rows_apart(x)
        out = out.contiguous()
        grads = torch.empty_like(out)
        with _on(x.device):
            _call("fg_mlp_backward", _pointer(x), x_stride, _pointer(dy), dy_stride, x.shape[0], _pointer(flat),
                  _dims(spec), spec.num_layers, int(has_bias), ACTIVATIONS[hidden], ACTIVATIONS[output],
                  float(slope), PRECISIONS[precision], _pointer(out), _pointer(grads), _pointer(dx), _pointer(dflat),
                  _stream(x.device))
    # an op cannot return None: empty tensors mean "not computed"
    return (dx if dx is not None else x.new_empty(0)), (dflat if dflat is not None else x.new_empty(0))


def _mlp_backward_fake(dy, x, params, out, dims, has_bias, hidden, output, slope, precision, need_x, need_params):
    numel = sum(p.numel() for p in params)
    return (x.new_empty((x.shape[0], dims[0])) if need_x else x.new_empty(0),
            x.new_empty((numel,)) if need_params else x.new_empty(0))


# the backward's launches as an opaque op of their own, for when torch.compile traces the backward
_backward_op = register_opaque("fastgan::cuda_mlp_backward", _mlp_backward, fake=_mlp_backward_fake)


def _mlp_setup(ctx, inputs, output):
    x, params, dims, has_bias, hidden, out_act, slope, precision = inputs
    ctx.save_for_backward(x, output, *params)
    ctx.config = (dims, has_bias, hidden, out_act, slope, precision)


def _mlp_autograd_backward(ctx, d_out):
    x, out, *params = ctx.saved_tensors
    dims = ctx.config[0]
    need_x = bool(ctx.needs_input_grad[0])
    need_params = any(ctx.needs_input_grad[1])   # (a list input: one flag per tensor)
    # only the last dims[-1] columns of out are the MLP's output: the others carry no gradient
    dy = d_out[:, -dims[-1]:]
    dx, dflat = _backward_op(dy, x, params, out, *ctx.config, need_x, need_params)
    if need_params:
        grads = split_gradient(dflat, params)
    else:
        grads = [None] * len(params)
    return (dx if need_x else None), grads, None, None, None, None, None, None


_forward_op = register("fastgan::cuda_mlp", _mlp_forward, fake=_mlp_forward_fake, setup_context=_mlp_setup,
                       backward=_mlp_autograd_backward)


def cuda_mlp(x: torch.Tensor, params, spec: MLPSpec) -> torch.Tensor:
    """The whole MLP ``spec`` on ``x`` (rows, in) with the native kernels; ``params`` W_0, b_0, W_1, ... in
    ``nn.Linear``'s shapes, fp32 (back to back in one buffer, as ``FusedMLP`` keeps them, they are read in
    place; otherwise copied into one per call). Returns (rows, out); autograd-aware."""
    check_spec(spec)
    _check_input("x", x)
    if x.dim() != 2 or x.shape[1] != spec.dims[0]:
        raise ValueError(f"x must be 2-D (rows, {spec.dims[0]}) for this MLP, got shape {tuple(x.shape)}")
    params = list(params)
    shapes = spec.parameter_shapes()
    if len(params) != len(shapes):
        raise ValueError(f"this MLP has {len(shapes)} parameter tensors, got {len(params)}")
    for i, (p, shape) in enumerate(zip(params, shapes)):
        _check_input(f"params[{i}]", p, x.device)
        if tuple(p.shape) != shape:
            raise ValueError(f"params[{i}] has shape {tuple(p.shape)}, expected {shape}")
    out = _forward_op(x, params, list(spec.dims), spec.has_bias, spec.hidden_activation, spec.output_activation,
                      spec.negative_slope, _precision(x))
    return out[:, -spec.dims[-1]:]


# -- sigmoid-BCE -----------------------------------------------------------------------------------------------

def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    if logits.numel() == 0:   # the mean of nothing, as torch has it
        return torch.full((), float("nan"), device=logits.device, dtype=torch.float32)
    logits = logits.contiguous()
    loss = torch.empty((), device=logits.device, dtype=torch.float32)
    with _on(logits.device):
        _call("fg_bce_forward", _pointer(logits), None, float(target), logits.numel(), _pointer(loss),
              _stream(logits.device))
    return loss


def _bce_backward(d_loss: torch.Tensor, logits: torch.Tensor, target: float) -> torch.Tensor:
    d_logits = torch.empty(logits.shape, device=logits.device, dtype=torch.float32)
    if logits.numel() == 0:
        return d_logits
    logits = logits.contiguous()
    d_loss = d_loss.reshape(()).contiguous()
    with _on(logits.device):
        _call("fg_bce_backward", _pointer(logits), None, float(target), logits.numel(), _pointer(d_loss),
              _pointer(d_logits), _stream(logits.device))
    return d_logits


# the backward's launch as an opaque op of its own, for when torch.compile traces the backward
_bce_backward_op = register_opaque("fastgan::cuda_bce_backward", _bce_backward,
                                   fake=lambda d_loss, logits, target: torch.empty_like(logits))


def _bce_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.target = inputs[1]


def _bce_autograd_backward(ctx, d_loss):
    (logits,) = ctx.saved_tensors
    return _bce_backward_op(d_loss, logits, ctx.target), None


_bce_op = register("fastgan::cuda_bce", _bce, fake=lambda logits, target: logits.new_empty((), dtype=torch.float32),
                   setup_context=_bce_setup, backward=_bce_autograd_backward)


def cuda_bce_with_logits(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean sigmoid-BCE of ``logits`` against the constant ``target`` in [0, 1]: the ``Bce`` signature of
    ``fastgan.losses`` (``F.binary_cross_entropy_with_logits(logits, full_like(logits, target))``)."""
    _check_input("logits", logits)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.0 <= float(target) <= 1.0:
        raise ValueError(f"target must be a number in [0, 1], got {target!r}")
    return _bce_op(logits if logits.is_contiguous() else logits.contiguous(), float(target))
