"""Where a call runs (Triton or the PyTorch reference), matmul precision, autotune configs, launch counts."""
from __future__ import annotations

import contextlib
import functools
import os
from collections import Counter

import torch

try:  # triton is a Linux-only dependency; elsewhere every op takes its reference path
    import triton
    import triton.language as tl
    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the platform
    triton = None
    tl = None
    HAS_TRITON = False

# Triton reads TRITON_INTERPRET when it is imported; so do we.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# FASTGAN_AUTOTUNE=0 pins every kernel to its first config (the interpreter always does).
AUTOTUNE = os.environ.get("FASTGAN_AUTOTUNE", "1") != "0" and not INTERPRET

# Launch counts per kernel name, so tests can prove the Triton path really ran.
kernel_launches: Counter[str] = Counter()

_PRECISIONS = ("tf32", "ieee")
_matmul_precision = "tf32"


def set_matmul_precision(precision: str) -> None:
    """How fp32 matmuls use the tensor cores: ``"tf32"`` (default, as Triton does) or ``"ieee"`` (exact fp32).

    Applies to fp32 inputs of every fastgan op; 16-bit inputs always use their own tensor-core path.
    """
    global _matmul_precision
    if precision not in _PRECISIONS:
        raise ValueError(f"matmul precision must be one of {', '.join(_PRECISIONS)}, got {precision!r}")
    _matmul_precision = precision


def get_matmul_precision() -> str:
    return _matmul_precision


@contextlib.contextmanager
def matmul_precision(precision: str):
    """Context manager form of ``set_matmul_precision``: ``with fastgan.ops.matmul_precision("ieee"): ...``."""
    previous = _matmul_precision
    set_matmul_precision(precision)
    try:
        yield
    finally:
        set_matmul_precision(previous)


_reference_only = False


@contextlib.contextmanager
def precision_scope(precision: str):
    """Matmul precision for PyTorch's and fastgan's kernels alike, for the duration of a step.

    fp32: exact fp32 (``ieee``, no TF32 in cuBLAS); tf32: TF32 tensor cores in both; bf16: the same plus
    autocast of the forward passes (the step builders' ``forward_autocast``).
    """
    tf32 = precision != "fp32"
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        with matmul_precision("tf32" if tf32 else "ieee"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def with_precision(step, precision: str):
    """``step`` run inside ``precision_scope(precision)``."""
    def step_with_precision(index: int):
        with precision_scope(precision):
            return step(index)
    return step_with_precision


@contextlib.contextmanager
def reference_path():
    """Inside this block every fastgan op takes its PyTorch reference path (differentiable twice: the
    trainer computes the R1 penalty, a gradient of a gradient, this way)."""
    global _reference_only
    previous = _reference_only
    _reference_only = True
    try:
        yield
    finally:
        _reference_only = previous


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for launch grids, on the host. ``triton.cdiv`` is a constexpr function (for kernels): a host
    call costs ~3 µs against ~0.2 µs (triton 3.9, this CPU), and a fused-linear forward + backward made six."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of 2 >= ``n`` >= 1, on the host (``triton.next_power_of_2``'s host cost, as ``cdiv``)."""
    return 1 << (n - 1).bit_length()


def reference_only() -> bool:
    """Whether a ``reference_path()`` block is open (modules with a backward of their own step aside too)."""
    return _reference_only


def use_triton(tensor: torch.Tensor) -> bool:
    """CUDA tensors run Triton; CPU tensors run it under TRITON_INTERPRET=1, else the reference path."""
    if not HAS_TRITON or _reference_only:
        return False
    return tensor.is_cuda or (INTERPRET and tensor.device.type == "cpu")


@functools.lru_cache(maxsize=None)
def multiprocessors(device: torch.device) -> int:
    """The SM count a launch on ``device`` should fill: the GPU's own, or an H100/H200's 132 for the CPU
    (the interpreter and the compile lane plan the GPU's grids)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132


def matmul_configs(gpu: list[dict], interpreter: dict) -> list:
    """Autotune configs: the explicit GPU list, or one pinned config (interpreter / FASTGAN_AUTOTUNE=0).

    Each dict holds the block sizes plus ``num_warps``/``num_stages``. Every BLOCK_K is >= 16: the NVIDIA
    compiler needs K >= 16 for ``tl.dot`` (triton 3.6), though the interpreter accepts less.
    """
    chosen = gpu if AUTOTUNE else ([interpreter] if INTERPRET else gpu[:1])
    configs = []
    for c in chosen:
        c = dict(c)
        warps, stages = c.pop("num_warps", 4), c.pop("num_stages", 2)
        configs.append(triton.Config(c, num_warps=warps, num_stages=stages))
    return configs


# Autotune keys each kernel has already been tuned for (tuned = launched once outside a graph capture).
_tuned: set[tuple] = set()


def check_tuned_for_capture(kernel: str, key: tuple, tensor: torch.Tensor) -> None:
    """Refuse to autotune inside a CUDA graph capture: tuning times many launches and syncs, which a
    capture cannot hold. The first launch of each shape must happen before capture (warm-up)."""
    if not tensor.is_cuda:
        return
    full_key = (kernel, *key, tensor.dtype)
    if full_key in _tuned:
        return
    if AUTOTUNE and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(f"{kernel} would autotune for shape {key} ({tensor.dtype}) inside a CUDA graph "
                           "capture; run the same step once before capturing (warm-up), or set "
                           "FASTGAN_AUTOTUNE=0")
    _tuned.add(full_key)


def check_float_tensor(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {t.dtype}")


def check_same(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}")
