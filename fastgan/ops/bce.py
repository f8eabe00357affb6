"""sigmoid_bce_with_logits: ``F.binary_cross_entropy_with_logits`` in one Triton kernel.

One pass over the logits writes the loss (per element, or reduced) *and* the gradient
``(sigmoid(x) - t) * scale`` (scale = 1/n for ``mean``); backward only multiplies by the incoming
gradient. The loss uses the softplus form ``max(x, 0) - x t + log1p(exp(-|x|))``, exact for logits of
+-100 and beyond.
"""
from __future__ import annotations

import torch

from . import bce_kernels as kernels
from ._register import register
from ._runtime import cdiv, check_float_tensor, kernel_launches, use_triton
__all__ = ["sigmoid_bce_with_logits", "sigmoid_bce_reference", "replica_sigmoid_bce_reference"]

_REDUCTIONS = ("mean", "sum", "none")
# Up to this many elements one program reduces everything (deterministic, no zero-fill launch);
# beyond it, programs add partial sums atomically.
_SINGLE_PROGRAM_LIMIT = 1 << 16
_BLOCK = 1024


def _launch(logits, target, target_value, reduction):
    x = logits.contiguous().view(-1)  # logits are (N, 1)-sized: a copy of a strided one costs nothing
    t = target.contiguous().view(-1) if target is not None else x
    n = x.numel()
    reduce = reduction != "none"
    scale = 1.0 / n if reduction == "mean" and n > 0 else 1.0
    grad = torch.empty_like(x)
    programs = 1 if n <= _SINGLE_PROGRAM_LIMIT else min(cdiv(n, _BLOCK), 1024)
    atomic = reduce and programs > 1
    if reduce:
        loss = (torch.zeros if atomic else torch.empty)((), device=x.device, dtype=torch.float32)
    else:
        loss = torch.empty_like(x)
    if n == 0:
        if reduce:
            loss.fill_(float("nan") if reduction == "mean" else 0.0)  # as PyTorch: mean of nothing is NaN
        return loss, grad
    kernels._sigmoid_bce_fwd_kernel[(programs,)](x, t, loss, grad, n, float(target_value), scale,
                                                 HAS_TARGET=target is not None, REDUCE=reduce, ATOMIC=atomic,
                                                 BLOCK=_BLOCK)
    kernel_launches["_sigmoid_bce_fwd_kernel"] += 1
    return loss, grad


def _grad_target(logits: torch.Tensor, reduction: str, grad_out: torch.Tensor) -> torch.Tensor:
    """d loss / d target = -logits * scale (scale 1/n for ``mean``), times the incoming gradient."""
    scale = 1.0 / logits.numel() if reduction == "mean" else 1.0
    return -logits * scale * grad_out


def sigmoid_bce_reference(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean sigmoid-BCE of ``logits`` against a constant ``target``: PyTorch's stable form (the loss
    ``kernels="torch"`` trains with)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


def replica_sigmoid_bce_reference(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-replica mean sigmoid-BCE of ``(K, N, 1)`` logits against ``(K, 1, 1)`` targets: ``(K,)``."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, target.expand_as(logits),
                                                                reduction="none").mean(dim=(1, 2))


def sigmoid_bce_with_logits(logits: torch.Tensor, target: torch.Tensor | float,
                            reduction: str = "mean") -> torch.Tensor:
    """Same value and gradient as ``F.binary_cross_entropy_with_logits(logits, target, reduction=...)``.

    ``target`` is a tensor of ``logits``' shape with values in [0, 1], or a Python float broadcast to every
    element (0.9 for one-sided label smoothing). ``reduction`` is ``mean``, ``sum`` or ``none``.
    CUDA tensors (and CPU tensors under ``TRITON_INTERPRET=1``) run one Triton kernel; other CPU tensors
    and float64 take the PyTorch path.
    """
    check_float_tensor("logits", logits)
    if torch.is_autocast_enabled(logits.device.type) and logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # as autocast runs binary_cross_entropy_with_logits: in fp32
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")
    target_value = 0.0
    if isinstance(target, torch.Tensor):
        check_float_tensor("target", target)
        if target.shape != logits.shape:
            raise ValueError(f"target has shape {tuple(target.shape)} but logits have {tuple(logits.shape)}")
        if target.device != logits.device:
            raise ValueError(f"target is on {target.device} but logits are on {logits.device}")
    elif isinstance(target, (int, float)) and not isinstance(target, bool):
        target_value = float(target)
        if not 0.0 <= target_value <= 1.0:
            raise ValueError(f"target must be in [0, 1], got {target_value}")
        target = None
    else:
        raise TypeError(f"target must be a tensor or a float in [0, 1], got {type(target).__name__}")
    if logits.dtype == torch.float64 or not use_triton(logits):
        t = target if target is not None else torch.full_like(logits, target_value)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, t.to(logits.dtype),
                                                                    reduction=reduction)
    return _sigmoid_bce(logits, target, target_value, reduction)[0]


# -- the op, registered once for eager calls and torch.compile (see ops/_register.py) ----------------------

def _forward(logits: torch.Tensor, target: torch.Tensor | None, target_value: float,
             reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, d loss / d logits)``: the kernel writes both in one pass; backward only scales the second."""
    loss, grad = _launch(logits, target, target_value, reduction)
    loss = loss.to(logits.dtype)
    return (loss.view(logits.shape) if reduction == "none" else loss), grad.view(logits.shape)


def _fake(logits, target, target_value, reduction):
    loss = logits.new_empty(logits.shape) if reduction == "none" else logits.new_empty(())
    return loss, logits.new_empty(logits.shape)


def _setup_context(ctx, inputs, output):
    logits, target, _, reduction = inputs
    ctx.save_for_backward(output[1], logits if target is not None else None)
    ctx.reduction = reduction


def _backward(ctx, grad_loss, _grad_of_grad):
    grad, logits = ctx.saved_tensors
    grad_logits = grad * grad_loss if ctx.needs_input_grad[0] else None
    grad_target = _grad_target(logits, ctx.reduction, grad_loss) if ctx.needs_input_grad[1] else None
    return grad_logits, grad_target, None, None


_sigmoid_bce = register("fastgan::sigmoid_bce", _forward, fake=_fake, setup_context=_setup_context,
                        backward=_backward)
