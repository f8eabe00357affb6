"""FusedLinear and fuse(): drop-in modules over ``fastgan.ops``."""
from __future__ import annotations

import torch
from torch import nn

from .ops import activation_from_name, fused_linear

__all__ = ["FusedLinear", "fuse"]


class FusedLinear(nn.Linear):
    """``nn.Linear`` followed by an activation, computed by one fused kernel.

    A subclass of ``nn.Linear``: the same ``weight`` (out, in) and ``bias`` parameters, names, init and
    ``state_dict``, so checkpoints load both ways. ``activation`` is ``none``, ``relu``, ``leaky_relu``,
    ``sigmoid`` or ``tanh``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "none",
                 negative_slope: float = 0.01, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        activation_from_name(activation)
        if not 0.0 <= negative_slope < float("inf"):
            raise ValueError(f"negative_slope must be a finite number >= 0, got {negative_slope!r}")
        self.activation = activation
        self.negative_slope = float(negative_slope)

    @classmethod
    def from_linear(cls, linear: nn.Linear, activation: str = "none", negative_slope: float = 0.01) -> FusedLinear:
        """A FusedLinear that *shares* ``linear``'s parameters (no copy, no re-initialisation)."""
        fused = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    activation=activation, negative_slope=negative_slope, device="meta")
        fused.weight = linear.weight
        fused.bias = linear.bias
        fused.train(linear.training)
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_linear(x, self.weight, self.bias, self.activation, self.negative_slope)

    def extra_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.activation == "leaky_relu" else ""
        return f"{super().extra_repr()}, activation={self.activation}{slope}"


def _activation_of(module: nn.Module) -> tuple[str, float] | None:
    """The fusable activation a module computes, or None (a LeakyReLU with a negative slope is not)."""
    if type(module) is nn.ReLU:
        return "relu", 0.0
    if type(module) is nn.LeakyReLU and module.negative_slope >= 0:
        return "leaky_relu", float(module.negative_slope)
    if type(module) is nn.Sigmoid:
        return "sigmoid", 0.0
    if type(module) is nn.Tanh:
        return "tanh", 0.0
    return None


def _is_plain_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and not isinstance(module, FusedLinear)


def fuse(module: nn.Module) -> nn.Module:
    """Replace, in place, every ``nn.Linear`` (and the activation module right after it in an
    ``nn.Sequential``: ``ReLU``, ``LeakyReLU``, ``Sigmoid``, ``Tanh``) by one ``FusedLinear``.

    The activation's slot becomes ``nn.Identity`` so ``Sequential`` indices, and thus ``state_dict``
    keys, do not change; parameters are shared, not copied. Nested children are fused too; anything
    not recognised is left as it is and still trains. Returns ``module`` (or a ``FusedLinear`` if
    ``module`` itself is a plain ``nn.Linear``).
    """
    if _is_plain_linear(module):
        return FusedLinear.from_linear(module)
    children = list(module.named_children())
    for i, (name, child) in enumerate(children):
        if not _is_plain_linear(child):
            if not isinstance(child, FusedLinear):
                fuse(child)
            continue
        activation = None
        if isinstance(module, nn.Sequential) and i + 1 < len(children):
            activation = _activation_of(children[i + 1][1])
        if activation is None:
            setattr(module, name, FusedLinear.from_linear(child))
        else:
            setattr(module, name, FusedLinear.from_linear(child, *activation))
            setattr(module, children[i + 1][0], nn.Identity())
    return module
