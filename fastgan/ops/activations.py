"""The one table of activations, read by the Triton kernels and the PyTorch reference path alike.

A row's ``name`` is what the kernels receive as their ``ACTIVATION`` constexpr (``if ACTIVATION ==
"tanh":`` in ``ops/linear.py``, with the math in ``ops/_math.py``); its two functions are the reference path.

Each activation's derivative is recovered from its *output* y (StyleGAN2-ADA's ``bias_act`` trick), so
the backward pass needs no saved pre-activation tensor:
  relu        y' = [y > 0]
  leaky_relu  y' = 1 if y > 0 else negative_slope   (needs negative_slope >= 0, so sign(y) = sign(x))
  sigmoid     y' = y (1 - y)
  tanh        y' = (1 - |y|)(1 + |y|)           (= 1 - y^2 without its cancellation near |y| = 1)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Activation", "ACTIVATIONS", "activation_from_name"]


@dataclass(frozen=True)
class Activation:
    name: str
    forward: Callable[[torch.Tensor, float], torch.Tensor]         # reference: y = f(x)
    derivative_from_output: Callable[[torch.Tensor, float], torch.Tensor]  # reference: f'(x) given y


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("none", lambda x, s: x, lambda y, s: torch.ones_like(y)),
    Activation("relu", lambda x, s: F.relu(x), lambda y, s: (y > 0).to(y.dtype)),
    Activation("leaky_relu", lambda x, s: F.leaky_relu(x, s),
               lambda y, s: torch.where(y > 0, torch.ones_like(y), torch.full_like(y, s))),
    Activation("sigmoid", lambda x, s: torch.sigmoid(x), lambda y, s: y * (1 - y)),
    Activation("tanh", lambda x, s: torch.tanh(x), lambda y, s: (1 - y.abs()) * (1 + y.abs())),
)}


def activation_from_name(name: str) -> Activation:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]
