"""adam_step: one Adam update of a flat parameter buffer in one Triton kernel, graph-capturable.

The step count lives on the device, so a CUDA graph can replay the update with the right bias
correction every time. A separate ``step += 1`` launch would cost a launch per update, and a kernel
whose first program writes the new count would race with programs still reading it; instead every
program adds 1 to an int64 counter atomically and reads the old value: during update t (1-based)
each of the P programs sees an old value in [(t-1)P, tP), so ``old // P + 1 = t`` exactly, in one
launch. The grid size P depends only on the buffer's length, so it is the same every update.

``AdamFold`` hands the same update to a kernel that forms the gradient (the whole-MLP weight-gradient
kernel, ``ops.mlp.mlp_weight_grad(adam=...)``): each of its programs updates the parameters whose gradient
it has just formed, reading the counter first; the last program to arrive (an atomic arrival count) adds P
(FlatAdam's own grid size, so the counter means the same) and resets the count. One launch fewer per update.

Math as ``torch.optim.Adam`` (single-tensor path, no amsgrad), with the regularisers of
``torch.optim.Adam`` (``weight_decay``: L2 added to the gradient), ``torch.optim.AdamW``
(``decoupled_weight_decay``: the parameter shrinks by ``lr * wd`` first) and an L1 term:
  g = grad + wd p + l1 sign(p);  p *= 1 - lr dwd;  m = lerp(m, g, 1 - b1);  v = b2 v + (1 - b2) g^2
  p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

The moments ``exp_avg``, ``exp_avg_sq`` may be bf16 (both alike): read widened to fp32, updated in fp32, stored
stochastically rounded (``stochastic_round_bf16``): 20 bytes of traffic per parameter and update instead of 28.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import adam_kernels as kernels
from ._runtime import cdiv, kernel_launches, use_triton

__all__ = ["adam_step", "adam_programs", "adam_step_reference", "replica_adam_step", "replica_adam_hyper",
           "replica_adam_step_reference", "AdamFold", "adam_fold", "replica_adam_fold", "stochastic_round_bf16",
           "MOMENT_DTYPES"]

MOMENT_DTYPES = (torch.float32, torch.bfloat16)   # what the moments may be stored in

_BLOCK = 1024
_MAX_PROGRAMS = 1024


def adam_programs(n: int) -> int:
    """The grid size used for a buffer of ``n`` elements (fixed per buffer: the counter relies on it)."""
    return max(1, min(cdiv(n, _BLOCK), _MAX_PROGRAMS))


def _check_partials(partials) -> None:
    if isinstance(partials, bool) or not isinstance(partials, int) or partials < 1:
        raise ValueError(f"partials must be a positive int, got {partials!r}")


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """The kernels' lowbias32 hash of uint32 values held in an int64 tensor (products split in 16-bit halves,
    so none leaves int64)."""
    def times(x, c):   # x * c mod 2^32
        return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & 0xFFFFFFFF
    x = x ^ (x >> 16)
    x = times(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = times(x, 0x846CA68B)
    return x ^ (x >> 16)


def stochastic_round_bf16(x: torch.Tensor, index: torch.Tensor, key) -> torch.Tensor:
    """fp32 ``x`` stochastically rounded to bf16 as the Adam kernels round it: the 16 bits bf16 drops, plus 16
    bits hashed from ``index`` (int64, each element's index in its buffer) and ``key`` (2 x update number + 0 for
    ``exp_avg``, 1 for ``exp_avg_sq``; an int or an int64 tensor), carried into the kept bits. NaN stays NaN."""
    bits = x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    noise = _hash32((index & 0xFFFFFFFF) ^ _hash32(torch.as_tensor(key, device=x.device) & 0xFFFFFFFF)) & 0xFFFF
    kept = (bits + noise) & 0xFFFF0000
    rounded = (kept - (kept >> 31 << 32)).to(torch.int32).view(torch.float32)   # (uint32 -> int32 bits)
    return torch.where(x.isnan(), x, rounded).to(torch.bfloat16)


def _store_moments(exp_avg, exp_avg_sq, m, v, step, index) -> None:
    """``m``, ``v`` (fp32) into the moment buffers: bf16 ones stochastically rounded as the kernels round them
    (fp32 ones were updated in place)."""
    if exp_avg.dtype == torch.bfloat16:
        exp_avg.copy_(stochastic_round_bf16(m, index, step * 2))
        exp_avg_sq.copy_(stochastic_round_bf16(v, index, step * 2 + 1))


def adam_step_reference(param, grad, exp_avg, exp_avg_sq, counter, lr, beta1, beta2, eps, weight_decay,
                        decoupled_weight_decay=0.0, l1=0.0):
    """The same update with PyTorch ops (the counter advances by the grid size, as the kernel's does)."""
    programs = adam_programs(param.numel())
    counter.add_(programs)
    update = counter.div(programs, rounding_mode="floor")
    step = update.to(param.dtype)
    g = grad.add(param, alpha=weight_decay) if weight_decay else grad
    if l1:
        g = g.add(param.sign(), alpha=l1)
    if decoupled_weight_decay:
        param.mul_(1 - lr * decoupled_weight_decay)
    m, v = exp_avg.float(), exp_avg_sq.float()   # (fp32 buffers: themselves, updated in place)
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    # 1 - beta^t as -expm1(t log beta), as the kernel does: 1 - pow(beta, t) in fp32 loses ~1e-4 at t = 1
    step_size = lr / -torch.expm1(step * (math.log(beta1) if beta1 > 0 else -math.inf))
    bias_correction2_sqrt = (-torch.expm1(step * (math.log(beta2) if beta2 > 0 else -math.inf))).sqrt()
    param.sub_(step_size * m / (v.sqrt() / bias_correction2_sqrt + eps))
    _store_moments(exp_avg, exp_avg_sq, m, v, update, torch.arange(param.numel(), device=param.device))


def adam_step(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
              counter: torch.Tensor, lr: float, beta1: float, beta2: float, eps: float,
              weight_decay: float = 0.0, decoupled_weight_decay: float = 0.0, l1: float = 0.0,
              partials: int = 1) -> None:
    """Update ``param``, ``exp_avg``, ``exp_avg_sq`` (1-D, same length; fp32, the moments fp32 or both bf16) and
    ``counter`` in place.

    ``weight_decay``: L2 in the gradient (``torch.optim.Adam``'s); ``decoupled_weight_decay``: AdamW's;
    ``l1``: ``l1 * sign(p)`` added to the gradient. ``partials``: ``grad`` holds that many partial sums
    of the gradient back to back (``partials * n`` elements), added in order inside the kernel."""
    _check_partials(partials)
    n = param.numel()
    _check_moment_dtype(exp_avg)
    for name, t, size in (("param", param, n), ("grad", grad, partials * n), ("exp_avg", exp_avg, n),
                          ("exp_avg_sq", exp_avg_sq, n)):
        if t.dtype != _dtype(name, exp_avg) or t.dim() != 1 or not t.is_contiguous() or t.numel() != size:
            raise ValueError(f"{name} must be a contiguous 1-D {_dtype_words(name)} tensor of {size} elements"
                             + (f" ({partials} partial sums of {n})" if name == "grad" and partials > 1 else ""))
        if t.device != param.device:
            raise ValueError(f"{name} is on {t.device} but param is on {param.device}")
    _check_counter(counter, param)
    scalars = _scalars(lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, l1)
    if not use_triton(param):
        if partials > 1:
            grad = grad.view(partials, n).sum(0)
        adam_step_reference(param, grad, exp_avg, exp_avg_sq, counter, lr, beta1, beta2, eps, weight_decay,
                            decoupled_weight_decay, l1)
        return
    kernels._adam_step_kernel[(adam_programs(n),)](
        param, grad, exp_avg, exp_avg_sq, counter, n, n // _BLOCK * _BLOCK, *scalars, BLOCK=_BLOCK, PARTIALS=partials)
    kernel_launches["_adam_step_kernel"] += 1


def _check_moment_dtype(exp_avg: torch.Tensor) -> None:
    if exp_avg.dtype not in MOMENT_DTYPES:
        raise ValueError(f"exp_avg must be float32 or bfloat16 (the moments' storage), got {exp_avg.dtype}")


def _dtype(name: str, exp_avg: torch.Tensor) -> torch.dtype:
    """The dtype buffer ``name`` must have: the moments exp_avg's (checked first), the rest float32."""
    return exp_avg.dtype if name.startswith("exp_avg") else torch.float32


def _dtype_words(name: str) -> str:
    return {"exp_avg": "float32 or bfloat16", "exp_avg_sq": "float32 or bfloat16 (exp_avg's dtype)"}.get(
        name, "float32")


def _check_counter(counter: torch.Tensor, param: torch.Tensor) -> None:
    if counter.dtype != torch.int64 or counter.numel() != 1 or counter.device != param.device:
        raise ValueError("counter must be a one-element int64 tensor on param's device")


def _scalars(lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, l1) -> tuple[float, ...]:
    """The kernel's scalars, (lr, 1 - beta1, beta2, 1 - beta2, log beta1, log beta2, eps, weight decay,
    1 - lr * decoupled weight decay, l1), formed in float64; ValueError for bad values."""
    if not (lr > 0 and 0 <= beta1 < 1 and 0 <= beta2 < 1 and eps > 0 and weight_decay >= 0
            and decoupled_weight_decay >= 0 and l1 >= 0):
        raise ValueError(f"bad Adam hyper-parameters: lr={lr}, betas=({beta1}, {beta2}), eps={eps}, "
                         f"weight_decay={weight_decay}, decoupled_weight_decay={decoupled_weight_decay}, l1={l1}")
    return (float(lr), 1.0 - float(beta1), float(beta2), 1.0 - float(beta2),
            math.log(beta1) if beta1 > 0 else -math.inf, math.log(beta2) if beta2 > 0 else -math.inf,
            float(eps), float(weight_decay), 1.0 - float(lr) * float(decoupled_weight_decay), float(l1))


@dataclass(frozen=True)
class AdamFold:
    """An Adam update for the kernel that forms the gradient to apply (``adam_step``'s, or with ``hyper``
    ``replica_adam_step``'s, arithmetic): the state ``param``, ``exp_avg``, ``exp_avg_sq`` (1-d, or ``(K, n)``),
    the counter (advanced by ``programs`` per update, as those kernels advance it), ``arrivals`` (one zero
    int32 the kernel counts its programs in and resets), the scalars of ``_scalars`` (a replica run: lr,
    betas and decay from ``hyper``, ``(K, 7)``; eps, weight decay 0 and l1 from the scalars)."""
    param: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    counter: torch.Tensor
    arrivals: torch.Tensor
    programs: int
    scalars: tuple[float, ...]
    hyper: torch.Tensor | None = None


def _check_fold(param, exp_avg, exp_avg_sq, counter, arrivals) -> None:
    _check_moment_dtype(exp_avg)
    for name, t in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if t.shape != param.shape or t.dtype != _dtype(name, exp_avg) or not t.is_contiguous() \
                or t.device != param.device:
            raise ValueError(f"{name} must be a contiguous {_dtype_words(name)} tensor like param "
                             f"{tuple(param.shape)}")
    if param.dtype != torch.float32 or not param.is_contiguous():
        raise ValueError("param must be a contiguous float32 tensor")
    _check_counter(counter, param)
    if arrivals.dtype != torch.int32 or arrivals.numel() != 1 or arrivals.device != param.device:
        raise ValueError("arrivals must be a one-element int32 tensor (zero) on param's device")


def adam_fold(param, exp_avg, exp_avg_sq, counter, arrivals, lr, beta1, beta2, eps, weight_decay=0.0,
              decoupled_weight_decay=0.0, l1=0.0) -> AdamFold:
    """``adam_step(param, <the gradient>, exp_avg, exp_avg_sq, counter, ...)`` as an ``AdamFold``."""
    _check_fold(param, exp_avg, exp_avg_sq, counter, arrivals)
    return AdamFold(param, exp_avg, exp_avg_sq, counter, arrivals, adam_programs(param.numel()),
                    _scalars(lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, l1))


def replica_adam_fold(param, exp_avg, exp_avg_sq, counter, arrivals, hyper, eps, l1=0.0) -> AdamFold:
    """``replica_adam_step(param, <the gradient>, exp_avg, exp_avg_sq, counter, hyper, eps, l1)`` as an
    ``AdamFold``."""
    _check_fold(param, exp_avg, exp_avg_sq, counter, arrivals)
    _check_replica_hyper(hyper, param, eps, l1)
    unused = 0.0   # (lr, betas and decay: the kernel reads each replica's from hyper)
    scalars = (unused,) * 6 + (float(eps), 0.0, unused, float(l1))
    return AdamFold(param, exp_avg, exp_avg_sq, counter, arrivals, adam_programs(param.shape[1]) * param.shape[0],
                    scalars, hyper)


def _check_replica_hyper(hyper: torch.Tensor, param: torch.Tensor, eps: float, l1: float) -> None:
    """ValueError unless ``hyper`` is ``param``'s replicas' ``(K, 7)`` table and eps, l1 are valid."""
    K = param.shape[0] if param.dim() == 2 else 0
    if hyper.dtype != torch.float32 or tuple(hyper.shape) != (K, 7) or not hyper.is_contiguous() or \
            hyper.device != param.device:
        raise ValueError(f"hyper must be a contiguous ({K}, 7) float32 tensor on param's device (replica_adam_hyper)")
    if not (eps > 0 and l1 >= 0):
        raise ValueError(f"bad Adam hyper-parameters: eps={eps}, l1={l1}")


def replica_adam_hyper(lrs, betas, decoupled_weight_decay: float = 0.0) -> torch.Tensor:
    """``replica_adam_step``'s ``(K, 7)`` table from K learning rates and K (beta1, beta2) pairs: each row
    (lr, 1 - beta1, beta2, 1 - beta2, log beta1, log beta2, 1 - lr * decoupled_weight_decay), formed in float64
    and rounded to fp32 once, as ``adam_step`` passes its scalars."""
    rows = [(lr, 1.0 - b1, b2, 1.0 - b2, math.log(b1) if b1 > 0 else -math.inf,
             math.log(b2) if b2 > 0 else -math.inf, 1.0 - lr * decoupled_weight_decay)
            for lr, (b1, b2) in zip(map(float, lrs), (tuple(map(float, b)) for b in betas))]
    return torch.tensor(rows, dtype=torch.float64).float()


def replica_adam_step_reference(param, grad, exp_avg, exp_avg_sq, counter, hyper, eps, l1):
    """``replica_adam_step`` with PyTorch ops (each replica's hyper-parameters a ``(K, 1)`` column)."""
    programs = adam_programs(param.shape[1]) * param.shape[0]
    counter.add_(programs)
    update = counter.div(programs, rounding_mode="floor")
    step = update.to(param.dtype)
    lr, one_minus_beta1, beta2, one_minus_beta2, log_beta1, log_beta2, shrink = hyper.unsqueeze(2).unbind(1)
    g = grad.add(param.sign(), alpha=l1) if l1 else grad
    param.mul_(shrink)
    m, v = exp_avg.float(), exp_avg_sq.float()   # (fp32 buffers: themselves, updated in place)
    m.add_(one_minus_beta1 * (g - m))
    v.mul_(beta2).add_(one_minus_beta2 * g * g)
    step_size = lr / -torch.expm1(step * log_beta1)
    bias_correction2_sqrt = (-torch.expm1(step * log_beta2)).sqrt()
    param.sub_(step_size * m / (v.sqrt() / bias_correction2_sqrt + eps))
    # (each row's elements indexed within it: replica k rounds as its single run does)
    _store_moments(exp_avg, exp_avg_sq, m, v, update, torch.arange(param.shape[1], device=param.device))


def replica_adam_step(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                      counter: torch.Tensor, hyper: torch.Tensor, eps: float, l1: float = 0.0,
                      partials: int = 1) -> None:
    """``adam_step`` (AdamW's decoupled decay, L1) of K replicas' ``(K, n)`` buffers in one launch, replica k
    with row k of ``hyper`` (``replica_adam_hyper``): its arithmetic is ``adam_step``'s with those values.
    The counter advances by the grid size (``adam_programs(n) * K``) per call. ``partials``: ``grad`` holds
    each replica's gradient as that many partial sums, ``(K, partials, n)``, added in order in the kernel."""
    _check_partials(partials)
    _check_moment_dtype(exp_avg)
    K, n = param.shape if param.dim() == 2 else (0, 0)
    grad_shape = param.shape if partials == 1 else torch.Size((K, partials, n))
    for name, t, shape in (("param", param, param.shape), ("grad", grad, grad_shape),
                           ("exp_avg", exp_avg, param.shape), ("exp_avg_sq", exp_avg_sq, param.shape)):
        if t.dtype != _dtype(name, exp_avg) or t.shape != shape or param.dim() != 2 or not t.is_contiguous() \
                or t.device != param.device:
            raise ValueError(f"{name} must be a contiguous {tuple(shape)} {_dtype_words(name)} tensor on param's "
                             f"device (param: (replicas, n); grad with partials: (replicas, partials, n)); got "
                             f"{tuple(t.shape)} {t.dtype}")
    _check_counter(counter, param)
    _check_replica_hyper(hyper, param, eps, l1)
    if not use_triton(param):
        replica_adam_step_reference(param, grad if partials == 1 else grad.sum(1), exp_avg, exp_avg_sq, counter,
                                    hyper, eps, l1)
        return
    kernels._replica_adam_kernel[(adam_programs(n), K)](
        param, grad, exp_avg, exp_avg_sq, counter, hyper, n, n // _BLOCK * _BLOCK, float(eps), float(l1),
        BLOCK=_BLOCK, PARTIALS=partials)
    kernel_launches["_replica_adam_kernel"] += 1
