"""The GAN models fastgan ships, as plain PyTorch modules, and the checks a trainer runs on any G and D.

The MLP models are an ``nn.Sequential`` of ``nn.Linear`` and activation modules under ``.net``, so users
recognise them, ``fastgan.fuse`` can fuse them, and their ``state_dict`` keys are ``net.<i>.weight``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .fused import Maxout
from .layers import MinibatchStd


__all__ = ["MLPGenerator", "MLPDiscriminator", "BatchNormGenerator", "MaxoutDiscriminator", "pacgan_models",
           "ConditionalMLPGenerator", "ProjectionDiscriminator"]


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


def _generator_setup(g: nn.Module, latent_dim, hidden, out_dim, negative_slope, output_activation,
                     extra_inputs: int) -> None:
    """Checked sizes and ``g.net``: ``latent_dim + extra_inputs -> hidden... -> out_dim`` with the output head."""
    (g.latent_dim,) = _check_sizes("latent_dim", (latent_dim,))
    g.hidden = _check_sizes("hidden", hidden)
    (g.out_dim,) = _check_sizes("out_dim", (out_dim,))
    g.negative_slope = _check_slope(negative_slope)
    heads = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, None: None}
    if output_activation not in heads:
        raise ValueError(f"output_activation must be 'sigmoid', 'tanh' or None, got {output_activation!r}")
    head = heads[output_activation]
    g.net = _mlp((g.latent_dim + extra_inputs, *g.hidden, g.out_dim), g.negative_slope,
                 head() if head is not None else None)


class MLPGenerator(nn.Module):
    """G: ``latent_dim -> hidden... -> out_dim``, leaky-ReLU hidden layers, sigmoid output in [0, 1].

    Input ``(N, latent_dim)`` noise, output ``(N, out_dim)`` (28x28 images flattened, by default).
    For data outside [0, 1] (the Gaussian mixtures) pass ``output_activation=None`` for a linear output.
    """

    forward_is_net = True   # forward(x) is exactly self.net(x): the fused step runs net's kernels directly

    def __init__(self, latent_dim: int = 100, hidden: Sequence[int] = (128, 128), out_dim: int = 784,
                 negative_slope: float = 0.2, output_activation: str | None = "sigmoid"):
        super().__init__()
        _generator_setup(self, latent_dim, hidden, out_dim, negative_slope, output_activation, extra_inputs=0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """D: ``in_dim -> hidden... -> 1``, leaky-ReLU hidden layers, returns *logits* of shape ``(N, 1)``.

    The sigmoid lives in the loss (``sigmoid_bce_with_logits``), where it is numerically stable.
    ``minibatch_std=G`` (a group size >= 2) puts a ``MinibatchStd(G)`` before the last layer, which then reads
    ``hidden[-1] + 1`` features; such a D is not one whole MLP, so it trains with the per-layer kernels.
    """

    forward_is_net = True   # forward(x) is exactly self.net(x): the fused step runs net's kernels directly

    def __init__(self, in_dim: int = 784, hidden: Sequence[int] = (128, 128), negative_slope: float = 0.2,
                 minibatch_std: int = 0):
        super().__init__()
        (self.in_dim,) = _check_sizes("in_dim", (in_dim,))
        self.hidden = _check_sizes("hidden", hidden)
        self.negative_slope = _check_slope(negative_slope)
        self.minibatch_std = minibatch_std
        if not minibatch_std:
            self.net = _mlp((self.in_dim, *self.hidden, 1), self.negative_slope, None)
            return
        if not self.hidden:
            raise ValueError("minibatch_std needs a hidden layer to follow (hidden is empty)")
        body = list(_mlp((self.in_dim, *self.hidden), self.negative_slope, None))
        body += [nn.LeakyReLU(self.negative_slope), MinibatchStd(minibatch_std), nn.Linear(self.hidden[-1] + 1, 1)]
        self.net = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _normal_init_(module: nn.Module, std: float) -> nn.Module:
    """Every Linear's weight from N(0, std), its bias 0 (Blocks' ``IsotropicGaussian(std)``, ``Constant(0)``)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, std)
                if m.bias is not None:
                    m.bias.zero_()
    return module


def _reset_submodules(module: nn.Module) -> None:
    """Every submodule's ``reset_parameters()`` in pre-order: what constructing ``module`` draws."""
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()


def _reset_then_normal_(module: nn.Module, std: float) -> None:
    """What constructing ``module`` and ``_normal_init_`` draw, in that order, from the global RNG: every
    submodule's ``reset_parameters()`` (pre-order), then the normal weights."""
    _reset_submodules(module)
    _normal_init_(module, std)


class BatchNormGenerator(nn.Module):
    """G of PacGAN's mixture experiments: ``latent_dim -> hidden x layers -> out_dim``, each hidden layer a
    bias-free Linear, BatchNorm and ReLU; a linear output with bias.

    BatchNorm normalises over the batch while training and uses its running statistics (momentum 0.05,
    eps 1e-4: Blocks' population update and default) in eval mode, which is how ``GANTrainer.sample``
    and ``generate`` draw. Weights are drawn from N(0, ``init_std``), biases 0, at construction.
    """

    def __init__(self, latent_dim: int = 2, hidden: int = 400, layers: int = 4, out_dim: int = 2,
                 init_std: float = 0.02):
        super().__init__()
        (self.latent_dim, self.width, self.layers, self.out_dim) = _check_sizes(
            "latent_dim, hidden, layers, out_dim", (latent_dim, hidden, layers, out_dim))
        blocks: list[nn.Module] = []
        fan_in = self.latent_dim
        for _ in range(self.layers):
            blocks += [nn.Linear(fan_in, self.width, bias=False), nn.BatchNorm1d(self.width, eps=1e-4, momentum=0.05),
                       nn.ReLU()]
            fan_in = self.width
        self.init_std = init_std
        self.net = _normal_init_(nn.Sequential(*blocks, nn.Linear(fan_in, self.out_dim)), init_std)

    def reset_parameters(self) -> None:
        """Fresh weights as construction draws them (each layer's own reset, then N(0, ``init_std``)); the
        BatchNorm statistics start again. ``fastgan.replicas`` initialises each replica with this."""
        _reset_then_normal_(self.net, self.init_std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MaxoutDiscriminator(nn.Module):
    """D of PacGAN's mixture experiments: ``in_dim -> hidden x layers -> 1``, each hidden layer a maxout
    layer (``Linear(fan_in, hidden * pieces)`` then ``fastgan.nn.Maxout(pieces)``); returns logits.
    Weights from N(0, ``init_std``), biases 0."""

    def __init__(self, in_dim: int = 2, hidden: int = 200, layers: int = 3, pieces: int = 5, init_std: float = 0.02):
        super().__init__()
        (self.in_dim, self.width, self.layers, self.pieces) = _check_sizes(
            "in_dim, hidden, layers, pieces", (in_dim, hidden, layers, pieces))
        blocks: list[nn.Module] = []
        fan_in = self.in_dim
        for _ in range(self.layers):
            blocks += [nn.Linear(fan_in, self.width * self.pieces), Maxout(self.pieces)]
            fan_in = self.width
        self.init_std = init_std
        self.net = _normal_init_(nn.Sequential(*blocks, nn.Linear(fan_in, 1)), init_std)

    def reset_parameters(self) -> None:
        """Fresh weights as construction draws them (each layer's own reset, then N(0, ``init_std``))."""
        _reset_then_normal_(self.net, self.init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def pacgan_models(features: int = 2, pack: int = 1) -> tuple[nn.Module, nn.Module]:
    """PacGAN's mixture pair (Lin et al. 2018; its code's ``synthetic_data_experiments``): G 2-d standard
    normal noise -> 4 x 400 (bias-free Linear, BatchNorm, ReLU) -> ``features``; D ``pack * features`` -> 3 x
    200 maxout (5 pieces) -> 1; every weight N(0, 0.02), biases 0. Draws from torch's global RNG."""
    return (BatchNormGenerator(latent_dim=2, hidden=400, layers=4, out_dim=features),
            MaxoutDiscriminator(in_dim=pack * features, hidden=200, layers=3, pieces=5))


def _check_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return num_classes


class ConditionalMLPGenerator(nn.Module):
    """G(z, y): the class label ``y`` one-hot, concatenated to the noise, then the MLP (``.net``, as in
    ``MLPGenerator``: its first layer sees ``latent_dim + num_classes`` inputs)."""

    conditional_form = "onehot_input"   # forward is exactly that: fastgan.nn.stacked stacks K of them

    def __init__(self, latent_dim: int = 100, num_classes: int = 10, hidden: Sequence[int] = (128, 128),
                 out_dim: int = 784, negative_slope: float = 0.2, output_activation: str | None = "sigmoid"):
        super().__init__()
        self.num_classes = _check_classes(num_classes)
        _generator_setup(self, latent_dim, hidden, out_dim, negative_slope, output_activation,
                         extra_inputs=self.num_classes)
        # one-hot rows picked by index: no value check, so no host sync (a CUDA graph can capture it)
        self.register_buffer("onehot", torch.eye(self.num_classes), persistent=False)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.onehot.index_select(0, labels).to(z.dtype)], dim=1))


class ProjectionDiscriminator(nn.Module):
    """D(x, y) = psi(phi(x)) + <embed(y), phi(x)>: the projection discriminator (Miyato & Koyama 2018).

    phi is ``.body`` (Linear + leaky-ReLU per hidden width), psi the ``.head`` Linear(h, 1), ``embed`` an
    ``nn.Embedding(num_classes, h)`` drawn from N(0, 1/h). Returns logits ``(N, 1)``.
    """

    conditional_form = "projection"   # forward is exactly that: fastgan.nn.stacked stacks K of them

    def __init__(self, in_dim: int = 784, num_classes: int = 10, hidden: Sequence[int] = (128, 128),
                 negative_slope: float = 0.2):
        super().__init__()
        (self.in_dim,) = _check_sizes("in_dim", (in_dim,))
        self.num_classes = _check_classes(num_classes)
        self.hidden = _check_sizes("hidden", hidden)
        self.negative_slope = _check_slope(negative_slope)
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip((self.in_dim, *self.hidden[:-1]), self.hidden):
            layers += [nn.Linear(fan_in, fan_out), nn.LeakyReLU(self.negative_slope)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(self.hidden[-1], 1)
        self.embed = nn.Embedding(self.num_classes, self.hidden[-1])
        nn.init.normal_(self.embed.weight, std=self.hidden[-1] ** -0.5)

    def reset_parameters(self) -> None:
        """Fresh weights as construction draws them (each layer's own reset, then the embedding's N(0, 1/h));
        ``fastgan.replicas`` initialises each replica with this."""
        _reset_submodules(self)
        nn.init.normal_(self.embed.weight, std=self.hidden[-1] ** -0.5)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.head(h) + (self.embed(labels) * h).sum(dim=1, keepdim=True)
