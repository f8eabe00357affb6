"""adam_step: one Adam update of a flat parameter buffer in one Triton kernel, graph-capturable.

The step count lives on the device, so a CUDA graph can replay the update with the right bias
correction every time. A separate ``step += 1`` launch would cost a launch per update, and a kernel
whose first program writes the new count would race with programs still reading it; instead every
program adds 1 to an int64 counter atomically and reads the old value: during update t (1-based)
each of the P programs sees an old value in [(t-1)P, tP), so ``old // P + 1 = t`` exactly, in one
launch. The grid size P depends only on the buffer's length, so it is the same every update.

Math as ``torch.optim.Adam`` (single-tensor path, no amsgrad), with the regularisers of
``torch.optim.Adam`` (``weight_decay``: L2 added to the gradient), ``torch.optim.AdamW``
(``decoupled_weight_decay``: the parameter shrinks by ``lr * wd`` first) and an L1 term:
  g = grad + wd p + l1 sign(p);  p *= 1 - lr dwd;  m = lerp(m, g, 1 - b1);  v = b2 v + (1 - b2) g^2
  p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
"""
from __future__ import annotations

import math

import torch

from . import adam_kernels as kernels
from ._runtime import kernel_launches, use_triton

__all__ = ["adam_step", "adam_programs", "adam_step_reference"]

_BLOCK = 1024
_MAX_PROGRAMS = 1024


def adam_programs(n: int) -> int:
    """The grid size used for a buffer of ``n`` elements (fixed per buffer: the counter relies on it)."""
    return max(1, min(-(-n // _BLOCK), _MAX_PROGRAMS))


def adam_step_reference(param, grad, exp_avg, exp_avg_sq, counter, lr, beta1, beta2, eps, weight_decay,
                        decoupled_weight_decay=0.0, l1=0.0):
    """The same update with PyTorch ops (the counter advances by the grid size, as the kernel's does)."""
    programs = adam_programs(param.numel())
    counter.add_(programs)
    step = counter.div(programs, rounding_mode="floor").to(param.dtype)
    g = grad.add(param, alpha=weight_decay) if weight_decay else grad
    if l1:
        g = g.add(param.sign(), alpha=l1)
    if decoupled_weight_decay:
        param.mul_(1 - lr * decoupled_weight_decay)
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    # 1 - beta^t as -expm1(t log beta), as the kernel does: 1 - pow(beta, t) in fp32 loses ~1e-4 at t = 1
    step_size = lr / -torch.expm1(step * (math.log(beta1) if beta1 > 0 else -math.inf))
    bias_correction2_sqrt = (-torch.expm1(step * (math.log(beta2) if beta2 > 0 else -math.inf))).sqrt()
    param.sub_(step_size * exp_avg / (exp_avg_sq.sqrt() / bias_correction2_sqrt + eps))


def adam_step(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
              counter: torch.Tensor, lr: float, beta1: float, beta2: float, eps: float,
              weight_decay: float = 0.0, decoupled_weight_decay: float = 0.0, l1: float = 0.0,
              partials: int = 1) -> None:
    """Update ``param``, ``exp_avg``, ``exp_avg_sq`` (1-D fp32, same length) and ``counter`` in place.

    ``weight_decay``: L2 in the gradient (``torch.optim.Adam``'s); ``decoupled_weight_decay``: AdamW's;
    ``l1``: ``l1 * sign(p)`` added to the gradient. ``partials``: ``grad`` holds that many partial sums
    of the gradient back to back (``partials * n`` elements), added in order inside the kernel."""
    if isinstance(partials, bool) or not isinstance(partials, int) or partials < 1:
        raise ValueError(f"partials must be a positive int, got {partials!r}")
    n = param.numel()
    for name, t, size in (("param", param, n), ("grad", grad, partials * n), ("exp_avg", exp_avg, n),
                          ("exp_avg_sq", exp_avg_sq, n)):
        if t.dtype != torch.float32 or t.dim() != 1 or not t.is_contiguous() or t.numel() != size:
            raise ValueError(f"{name} must be a contiguous 1-D float32 tensor of {size} elements"
                             + (f" ({partials} partial sums of {n})" if name == "grad" and partials > 1 else ""))
        if t.device != param.device:
            raise ValueError(f"{name} is on {t.device} but param is on {param.device}")
    if counter.dtype != torch.int64 or counter.numel() != 1 or counter.device != param.device:
        raise ValueError("counter must be a one-element int64 tensor on param's device")
    if not (lr > 0 and 0 <= beta1 < 1 and 0 <= beta2 < 1 and eps > 0 and weight_decay >= 0
            and decoupled_weight_decay >= 0 and l1 >= 0):
        raise ValueError(f"bad Adam hyper-parameters: lr={lr}, betas=({beta1}, {beta2}), eps={eps}, "
                         f"weight_decay={weight_decay}, decoupled_weight_decay={decoupled_weight_decay}, l1={l1}")
    if not use_triton(param):
        if partials > 1:
            grad = grad.view(partials, n).sum(0)
        adam_step_reference(param, grad, exp_avg, exp_avg_sq, counter, lr, beta1, beta2, eps, weight_decay,
                            decoupled_weight_decay, l1)
        return
    kernels._adam_step_kernel[(adam_programs(param.numel()),)](
        param, grad, exp_avg, exp_avg_sq, counter, param.numel(), float(lr), 1.0 - float(beta1), float(beta2),
        1.0 - float(beta2), math.log(beta1) if beta1 > 0 else -math.inf, math.log(beta2) if beta2 > 0 else -math.inf,
        float(eps), float(weight_decay), 1.0 - float(lr) * float(decoupled_weight_decay), float(l1), BLOCK=_BLOCK,
        PARTIALS=partials)
    kernel_launches["_adam_step_kernel"] += 1
