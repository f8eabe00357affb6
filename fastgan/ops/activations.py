"""The one table of activations, read by the Triton kernels and the PyTorch reference path alike.

A row's ``name`` is what the kernels receive as their ``ACTIVATION`` constexpr (``if ACTIVATION ==
"tanh":`` in ``ops/linear.py``, with the math in ``ops/_math.py``); ``forward`` and ``derivative_from_output``
are the reference path; ``module`` is the ``torch.nn`` module that computes it (what ``fastgan.fuse`` fuses into
the layer before it); ``forward_`` (in place, on a fresh matmul output) and ``backward`` (``g * f'(x)`` from y,
PyTorch's own backward kernels) are the stacked replicas' batched-matmul path.

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
from torch import nn

__all__ = ["Activation", "ACTIVATIONS", "activation_from_name", "activation_of"]

aten = torch.ops.aten


@dataclass(frozen=True)
class Activation:
    name: str
    forward: Callable[[torch.Tensor, float], torch.Tensor]         # reference: y = f(x)
    derivative_from_output: Callable[[torch.Tensor, float], torch.Tensor]  # reference: f'(x) given y
    module: type[nn.Module] | None                                 # the torch.nn module computing it
    forward_: Callable[[torch.Tensor, float], torch.Tensor]        # y = f(x), in place
    backward: Callable[[torch.Tensor, torch.Tensor, float, bool], torch.Tensor]   # g f'(x) from (g, y, slope, in place)


def _leaky_relu_backward(g, y, s, inplace):
    if inplace:
        return aten.leaky_relu_backward.grad_input(g, y, s, True, grad_input=g)
    return aten.leaky_relu_backward(g, y, s, True)


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("none", lambda x, s: x, lambda y, s: torch.ones_like(y), None,
               lambda x, s: x, lambda g, y, s, inplace: g),
    Activation("relu", lambda x, s: F.relu(x), lambda y, s: (y > 0).to(y.dtype), nn.ReLU,
               lambda x, s: x.relu_(), lambda g, y, s, inplace: aten.threshold_backward(g, y, 0.0)),
    Activation("leaky_relu", lambda x, s: F.leaky_relu(x, s),
               lambda y, s: torch.where(y > 0, torch.ones_like(y), torch.full_like(y, s)), nn.LeakyReLU,
               lambda x, s: F.leaky_relu(x, s, inplace=True), _leaky_relu_backward),
    Activation("sigmoid", lambda x, s: torch.sigmoid(x), lambda y, s: y * (1 - y), nn.Sigmoid,
               lambda x, s: x.sigmoid_(), lambda g, y, s, inplace: aten.sigmoid_backward(g, y)),
    Activation("tanh", lambda x, s: torch.tanh(x), lambda y, s: (1 - y.abs()) * (1 + y.abs()), nn.Tanh,
               lambda x, s: x.tanh_(), lambda g, y, s, inplace: aten.tanh_backward(g, y)),
)}


def activation_of(module: nn.Module) -> tuple[str, float] | None:
    """``(name, negative_slope)`` of the table's activation ``module`` computes, or None (a subclass, another
    module, or a LeakyReLU with a negative slope, whose derivative its output cannot give)."""
    for activation in ACTIVATIONS.values():
        if activation.module is not None and type(module) is activation.module:
            slope = float(getattr(module, "negative_slope", 0.0))
            return (activation.name, slope) if slope >= 0 else None
    return None


def activation_from_name(name: str) -> Activation:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]
