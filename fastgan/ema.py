"""Exponential moving average of a model's weights (the generator's, for sampling and evaluation)."""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """``average = decay * average + (1 - decay) * weights`` after every update, on the device.

    ``module`` is a frozen deep copy of the tracked model (same class, fused layers included); buffers are
    copied as they are. One ``torch._foreach_lerp_`` per update: no host sync.
    """

    def __init__(self, model: nn.Module, decay: float):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be a number in (0, 1), e.g. 0.999; got {decay!r}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).requires_grad_(False).eval()
        from .nn import FusedMLP
        for m in self.module.modules():   # a deep copy gives each parameter its own buffer: one again,
            if isinstance(m, FusedMLP):   # so the whole-MLP op reads them in place rather than copying
                m.keep_flat()
        self._averaged = list(self.module.parameters())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        torch._foreach_lerp_(self._averaged, list(model.parameters()), 1.0 - self.decay)
        for mine, theirs in zip(self.module.buffers(), model.buffers()):
            mine.copy_(theirs)
