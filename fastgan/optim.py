"""FlatAdam: a model's parameters and gradients as views into two flat buffers, Adam in one kernel.

Zeroing the gradients is one fill of the flat gradient buffer (autograd accumulates into the views),
and the update is one ``fastgan.ops.adam_step`` launch per model, with its step count on the device:
what a captured CUDA graph needs. Same update as ``torch.optim.Adam``.
"""
from __future__ import annotations

import torch
from torch import nn

from .ops.adam import adam_programs, adam_step

__all__ = ["FlatAdam", "flatten_parameters"]


def flatten_parameters(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Move ``module``'s parameters into one flat fp32 buffer (and their ``.grad`` into another), in place.

    Each parameter keeps its identity (same ``nn.Parameter`` object, so optimisers, hooks and
    ``state_dict`` keep working) but its ``.data`` and ``.grad`` become views. Moving the module to
    another device or dtype afterwards would detach them: flatten on the final device.
    """
    params = list(module.parameters())
    if not params:
        raise ValueError("the module has no parameters to flatten")
    device = params[0].device
    for p in params:
        if p.dtype != torch.float32 or p.device != device:
            raise ValueError("flatten_parameters needs float32 parameters on one device, got "
                             f"{p.dtype} on {p.device}")
    total = sum(p.numel() for p in params)
    data = torch.empty(total, device=device, dtype=torch.float32)
    grad = torch.zeros(total, device=device, dtype=torch.float32)
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            data[offset:offset + n].copy_(p.reshape(-1))
            p.data = data[offset:offset + n].view_as(p)
            p.grad = grad[offset:offset + n].view_as(p)
            offset += n
    return data, grad


class FlatAdam:
    """Adam over one flat buffer per model: ``torch.optim.Adam`` semantics, with ``weight_decay`` (L2 in the
    gradient, as Adam's), ``decoupled_weight_decay`` (as ``torch.optim.AdamW``'s) and ``l1`` (``l1 sign(p)``
    added to the gradient)."""

    def __init__(self, module: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled_weight_decay: float = 0.0,
                 l1: float = 0.0):
        self.params = list(module.parameters())
        self.data, self.grad = flatten_parameters(module)
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), (float(betas[0]), float(betas[1])), \
            float(eps), float(weight_decay)
        self.decoupled_weight_decay, self.l1 = float(decoupled_weight_decay), float(l1)
        self.exp_avg = torch.zeros_like(self.data)
        self.exp_avg_sq = torch.zeros_like(self.data)
        self.counter = torch.zeros((), dtype=torch.int64, device=self.data.device)

    def zero_grad(self, set_to_none: bool = False) -> None:
        """One fill of the flat gradient buffer (the views stay: ``set_to_none`` is ignored)."""
        self.grad.zero_()
        self._reattach_gradients()

    @torch.no_grad()
    def step(self) -> None:
        self._reattach_gradients()
        adam_step(self.data, self.grad, self.exp_avg, self.exp_avg_sq, self.counter, self.lr, *self.betas,
                  self.eps, self.weight_decay, self.decoupled_weight_decay, self.l1)

    @torch.no_grad()
    def step_with(self, grad: torch.Tensor, partials: int = 1) -> None:
        """The update from ``grad`` instead of ``self.grad``: ``partials`` partial sums back to back
        (``partials * n`` elements, added in the kernel), as a split gradient reduction writes them."""
        adam_step(self.data, grad, self.exp_avg, self.exp_avg_sq, self.counter, self.lr, *self.betas, self.eps,
                  self.weight_decay, self.decoupled_weight_decay, self.l1, partials=partials)

    def _reattach_gradients(self) -> None:
        """Autograd accumulates into the gradient views in place, except where it cannot (a backward with
        ``create_graph=True``, or ``.grad`` set to None or replaced by the user): such gradients are copied
        back into the flat buffer, so the update never reads a stale one. Host-side checks only."""
        offset = 0
        for p in self.params:
            n = p.numel()
            view = self.grad[offset:offset + n]
            if p.grad is None:
                view.zero_()
                p.grad = view.view_as(p)
            elif p.grad.data_ptr() != view.data_ptr():
                view.copy_(p.grad.reshape(-1))
                p.grad = view.view_as(p)
            offset += n

    @property
    def steps_taken(self) -> int:
        """Updates so far (reads the device: for inspection, not inside a step)."""
        return int(self.counter) // adam_programs(self.data.numel())

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone(),
                "counter": self.counter.clone(), "lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay, "decoupled_weight_decay": self.decoupled_weight_decay,
                "l1": self.l1}

    def load_state_dict(self, state: dict) -> None:
        for key in ("exp_avg", "exp_avg_sq"):
            if state[key].shape != self.data.shape:
                raise ValueError(f"{key} has shape {tuple(state[key].shape)}, expected {tuple(self.data.shape)}")
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.counter.copy_(state["counter"])
        self.lr, self.betas = float(state["lr"]), tuple(state["betas"])
        self.eps, self.weight_decay = float(state["eps"]), float(state["weight_decay"])
        # (checkpoints written before these existed had neither)
        self.decoupled_weight_decay = float(state.get("decoupled_weight_decay", 0.0))
        self.l1 = float(state.get("l1", 0.0))
