"""The classic MLP GAN (Goodfellow et al. 2014 shape), as plain PyTorch modules.

Both models are an ``nn.Sequential`` of ``nn.Linear`` and activation modules under ``.net``, so users
recognise them, ``fastgan.fuse`` can fuse them, and their ``state_dict`` keys are ``net.<i>.weight``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLPGenerator", "MLPDiscriminator", "first_linear", "last_linear", "generate"]


def _check_sizes(name: str, sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(sizes)
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"{name} must be positive integers, got {sizes!r}")
    return sizes


def _check_slope(negative_slope: float) -> float:
    if not isinstance(negative_slope, (int, float)) or not 0.0 <= negative_slope < 1.0:
        raise ValueError(f"negative_slope must be a number in [0, 1), got {negative_slope!r}")
    return float(negative_slope)


def _mlp(sizes: tuple[int, ...], negative_slope: float, head: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(negative_slope))
    if head is not None:
        layers.append(head)
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """G: ``latent_dim -> hidden... -> out_dim``, leaky-ReLU hidden layers, sigmoid output in [0, 1].

    Input ``(N, latent_dim)`` noise, output ``(N, out_dim)`` (28x28 images flattened, by default).
    For data outside [0, 1] (the Gaussian mixtures) pass ``output_activation=None`` for a linear output.
    """

    def __init__(self, latent_dim: int = 100, hidden: Sequence[int] = (128, 128), out_dim: int = 784,
                 negative_slope: float = 0.2, output_activation: str | None = "sigmoid"):
        super().__init__()
        (self.latent_dim,) = _check_sizes("latent_dim", (latent_dim,))
        self.hidden = _check_sizes("hidden", hidden)
        (self.out_dim,) = _check_sizes("out_dim", (out_dim,))
        self.negative_slope = _check_slope(negative_slope)
        heads = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, None: None}
        if output_activation not in heads:
            raise ValueError(f"output_activation must be 'sigmoid', 'tanh' or None, got {output_activation!r}")
        head = heads[output_activation]
        self.net = _mlp((self.latent_dim, *self.hidden, self.out_dim), self.negative_slope,
                        head() if head is not None else None)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """D: ``in_dim -> hidden... -> 1``, leaky-ReLU hidden layers, returns *logits* of shape ``(N, 1)``.

    The sigmoid lives in the loss (``sigmoid_bce_with_logits``), where it is numerically stable.
    """

    def __init__(self, in_dim: int = 784, hidden: Sequence[int] = (128, 128), negative_slope: float = 0.2):
        super().__init__()
        (self.in_dim,) = _check_sizes("in_dim", (in_dim,))
        self.hidden = _check_sizes("hidden", hidden)
        self.negative_slope = _check_slope(negative_slope)
        self.net = _mlp((self.in_dim, *self.hidden, 1), self.negative_slope, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def first_linear(module: nn.Module) -> nn.Linear | None:
    """The first ``nn.Linear`` in ``module`` (registration order), or None: used to infer input sizes."""
    return next((m for m in module.modules() if isinstance(m, nn.Linear)), None)


def last_linear(module: nn.Module) -> nn.Linear | None:
    """The last ``nn.Linear`` in ``module`` (registration order), or None: used to infer output sizes."""
    found = None
    for m in module.modules():
        if isinstance(m, nn.Linear):
            found = m
    return found


@torch.no_grad()
def generate(generator: nn.Module, n: int, latent_dim: int, seed: int = 0, device="cpu") -> torch.Tensor:
    """``n`` samples of ``generator`` from standard normal noise drawn by its own RNG seeded with ``seed``
    on ``device``. ``GANTrainer.sample`` and ``fastgan evaluate`` both draw this way, so the same weights,
    seed and device give the same samples (CPU and CUDA RNGs draw different noise from one seed)."""
    rng = torch.Generator(device=device).manual_seed(seed)
    return generator(torch.randn(n, latent_dim, device=device, generator=rng))
