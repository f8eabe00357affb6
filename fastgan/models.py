"""The classic MLP GAN (Goodfellow et al. 2014 shape), as plain PyTorch modules.

Both models are an ``nn.Sequential`` of ``nn.Linear`` and activation modules under ``.net``, so users
recognise them, ``fastgan.fuse`` can fuse them, and their ``state_dict`` keys are ``net.<i>.weight``.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .config import _positive_int

__all__ = ["MLPGenerator", "MLPDiscriminator", "BatchNormGenerator", "MaxoutDiscriminator", "pacgan_models",
           "ConditionalMLPGenerator", "ProjectionDiscriminator", "ModelPreset",
           "PRESETS", "DATA_PRESETS", "first_linear", "last_linear", "check_labels", "rejection_sample",
           "metropolis_sample", "calibrate_discriminator",
           "generate", "check_gan_models"]


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

    def __init__(self, latent_dim: int = 100, hidden: Sequence[int] = (128, 128), out_dim: int = 784,
                 negative_slope: float = 0.2, output_activation: str | None = "sigmoid"):
        super().__init__()
        _generator_setup(self, latent_dim, hidden, out_dim, negative_slope, output_activation, extra_inputs=0)

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


def _normal_init_(module: nn.Module, std: float) -> nn.Module:
    """Every Linear's weight from N(0, std), its bias 0 (Blocks' ``IsotropicGaussian(std)``, ``Constant(0)``)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, std)
                if m.bias is not None:
                    m.bias.zero_()
    return module


def _reset_then_normal_(module: nn.Module, std: float) -> None:
    """What constructing ``module`` and ``_normal_init_`` draw, in that order, from the global RNG: every
    submodule's ``reset_parameters()`` (pre-order), then the normal weights."""
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()
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
        from .nn import Maxout
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


def check_labels(labels: torch.Tensor, num_classes: int, rows: int | None = None, what: str = "labels") -> None:
    """``labels`` must be a 1-D integer tensor of class indices in [0, num_classes) (``rows`` of them)."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype.is_floating_point \
            or labels.dtype == torch.bool or labels.is_complex():
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"{what} must be a 1-D tensor of integer class indices, got {shape}"
                         + (f" {labels.dtype}" if isinstance(labels, torch.Tensor) else ""))
    if rows is not None and labels.shape[0] != rows:
        raise ValueError(f"{what} has {labels.shape[0]} entries, expected {rows} (one per sample)")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{what} must lie in [0, {num_classes}), got values from {int(labels.min())} to "
                         f"{int(labels.max())}")


class ConditionalMLPGenerator(nn.Module):
    """G(z, y): the class label ``y`` one-hot, concatenated to the noise, then the MLP (``.net``, as in
    ``MLPGenerator``: its first layer sees ``latent_dim + num_classes`` inputs)."""

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
    ``nn.Embedding(num_classes, h)``. Returns logits ``(N, 1)``.
    """

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

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.head(h) + (self.embed(labels) * h).sum(dim=1, keepdim=True)


@dataclass(frozen=True)
class ModelPreset:
    """A G/D pair by name: G ``latent_dim -> hidden... -> features`` (``output_activation`` head), D
    ``pack * features -> hidden... -> 1``; leaky-ReLU 0.2 hidden layers in both."""
    latent_dim: int
    hidden: tuple[int, ...]
    output_activation: str | None
    description: str = ""

    def build(self, features: int, pack: int = 1, hidden: Sequence[int] | None = None,
              latent_dim: int | None = None, num_classes: int | None = None) -> tuple[nn.Module, nn.Module]:
        """``(G, D)`` for data of ``features`` per sample; ``hidden``/``latent_dim`` override the preset's.
        With ``num_classes``: the conditional pair (``ConditionalMLPGenerator``, ``ProjectionDiscriminator``)."""
        hidden = tuple(hidden) if hidden is not None else self.hidden
        if num_classes is not None:
            if pack != 1:
                raise ValueError("pack > 1 is not available for conditional models")
            return (ConditionalMLPGenerator(latent_dim=latent_dim or self.latent_dim, num_classes=num_classes,
                                            hidden=hidden, out_dim=features, output_activation=self.output_activation),
                    ProjectionDiscriminator(in_dim=features, num_classes=num_classes, hidden=hidden))
        return (MLPGenerator(latent_dim=latent_dim or self.latent_dim, hidden=hidden, out_dim=features,
                             output_activation=self.output_activation),
                MLPDiscriminator(in_dim=pack * features, hidden=hidden))


# Every model shape the package, its CLI and its benchmarks use, in one place.
PRESETS: dict[str, ModelPreset] = {
    "classic": ModelPreset(100, (128, 128), "sigmoid", "the classic MLP GAN: G 100-128-128-784, D 784-128-128-1 "
                           "(MLPGenerator/MLPDiscriminator's defaults; fastgan profile, benchmarks)"),
    "digits": ModelPreset(100, (256, 256), "sigmoid", "fastgan train on digits/MNIST: 256 wide, which gives "
                          "recognisable digits in ~3 CPU minutes where 128 gives speckled ones"),
    "mixture": ModelPreset(16, (256, 256), None, "fastgan train on the 2-D ring and grid: linear output"),
    "mixture-benchmark": ModelPreset(2, (128, 128), None, "benchmarks/quality.py's ring/grid GAN"),
}
# The preset `fastgan train` uses for each data set.
DATA_PRESETS = {"digits": "digits", "mnist": "digits", "ring": "mixture", "grid": "mixture"}


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
def generate(generator: nn.Module, n: int, latent_dim: int, seed: int = 0, device="cpu",
             labels: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` samples of ``generator`` from standard normal noise drawn by its own RNG seeded with ``seed``
    on ``device``. ``GANTrainer.sample`` and ``fastgan evaluate`` both draw this way, so the same weights,
    seed and device give the same samples (CPU and CUDA RNGs draw different noise from one seed).
    A conditional generator (one with ``num_classes``) gets ``labels`` (default: 0, 1, ..., C-1, 0, ...)."""
    with _eval_mode(generator):
        return _generate(generator, n, latent_dim, seed, device, labels)


@contextlib.contextmanager
def _eval_mode(*modules: nn.Module):
    """Modules in eval mode for the block (BatchNorm reads its running statistics and leaves them as they
    are; dropout is off), then back to the mode each was in."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def _noise(n, latent_dim, seed, device) -> torch.Tensor:
    """The standard normal noise ``generate`` feeds G: its own RNG seeded with ``seed`` on ``device``."""
    return torch.randn(n, latent_dim, device=device, generator=torch.Generator(device=device).manual_seed(seed))


def _generate(generator, n, latent_dim, seed, device, labels):
    z = _noise(n, latent_dim, seed, device)
    classes = getattr(generator, "num_classes", None)
    if classes is None:
        if labels is not None:
            raise ValueError("labels given, but this generator is not conditional (it has no num_classes)")
        return generator(z)
    if labels is None:
        labels = torch.arange(n, device=device) % classes
    elif isinstance(labels, int) and not isinstance(labels, bool):
        labels = torch.full((n,), labels, device=device, dtype=torch.int64)
    else:
        labels = torch.as_tensor(labels, device=device)
    check_labels(labels, classes, n)
    return generator(z, labels.long())


@torch.no_grad()
def rejection_sample(generator: nn.Module, discriminator: nn.Module, n: int, latent_dim: int, seed: int = 0,
                     device="cpu", quantile: float = 0.8, batch: int = 4096, max_candidates: int | None = None,
                     pack: int = 1, partner_sets: int = 8) -> tuple[torch.Tensor, float]:
    """Discriminator rejection sampling (Azadi et al. 2019): ``(n samples, acceptance rate)``.

    With an optimal D, p_data / p_G = exp(logit), so accepting a candidate with probability
    exp(logit - max logit) turns G's samples into data samples. DRS softens it: with M the largest logit
    seen so far, F = logit - M - log(1 - exp(logit - M - 1e-6)) - gamma, and a candidate is accepted with
    probability sigmoid(F); gamma is the ``quantile`` of F over each batch of candidates (higher: stricter).
    Candidates come from ``generate`` with ``seed`` (then seed + 1, ...), decisions from their own RNG, so the
    result is reproducible. Unconditional D only. ``max_candidates`` (default 200 n) bounds the work:
    reaching it is a RuntimeError naming the acceptance rate.

    ``pack > 1`` (a PacGAN D, which judges ``pack`` samples at once): a candidate's score is D's logit for the
    candidate packed with ``pack - 1`` partners, averaged over ``partner_sets`` fixed partner sets drawn from G
    once (seed ``seed + 2**40``). The optimal packed D's logit (standard loss, real label 1) is the sum of its
    samples' log density ratios, so fixed partners shift every candidate's score by one constant, which M and
    gamma absorb: with such a D this keeps what unpacked DRS keeps (to rounding). With label smoothing or
    hinge the logit still rises with the ratio: the ranking gamma cuts at holds, the exact correction does not.
    """
    if getattr(generator, "num_classes", None) is not None:
        raise ValueError("rejection sampling is for unconditional GANs (this generator takes labels)")
    quantile = _check_quantile(quantile)
    score = _candidate_scorer(generator, discriminator, latent_dim, seed, device, pack, partner_sets)
    limit = max_candidates or 200 * n
    decide = torch.Generator(device=device).manual_seed(seed ^ 0x5EED)
    first = generate(generator, batch, latent_dim, seed, device)
    top = score(first).max()
    kept, drawn, round_ = [], 0, 0
    candidates = first
    while sum(k.shape[0] for k in kept) < n:
        if drawn >= limit:
            rate = sum(k.shape[0] for k in kept) / max(drawn, 1)
            raise RuntimeError(f"rejection sampling accepted {rate:.2%} of {drawn} candidates, short of {n} "
                               "samples: lower the quantile or raise max_candidates")
        logits = score(candidates)
        top = torch.maximum(top, logits.max())
        gap = logits - top
        f = gap - torch.log1p(-torch.exp(gap - 1e-6))
        f = f - torch.quantile(f, quantile)
        accept = torch.rand(f.shape, device=device, generator=decide, dtype=torch.float64) < torch.sigmoid(f)
        kept.append(candidates[accept])
        drawn += candidates.shape[0]
        round_ += 1
        candidates = generate(generator, batch, latent_dim, seed + round_, device)
    samples = torch.cat(kept)[:n]
    return samples, sum(k.shape[0] for k in kept) / drawn


def _candidate_scorer(generator, discriminator, latent_dim, seed, device, pack, partner_sets):
    """D's score of each candidate (float64): its logit, or with ``pack > 1`` its mean logit packed with
    ``pack - 1`` partners from each of ``partner_sets`` fixed sets drawn from G once (seed ``seed + 2**40``)."""
    _positive_int("pack", pack)
    _positive_int("partner_sets", partner_sets)
    if pack == 1:
        return lambda candidates: discriminator(candidates).flatten().double()
    partners = generate(generator, partner_sets * (pack - 1), latent_dim, seed + 2 ** 40, device)
    partners = partners.reshape(partner_sets, -1)   # a row: pack - 1 samples back to back, as D's packs are

    def score(candidates: torch.Tensor) -> torch.Tensor:
        flat = candidates.reshape(candidates.shape[0], -1)
        total = sum(discriminator(torch.cat([flat, row.expand(flat.shape[0], -1)], dim=1)).flatten().double()
                    for row in partners)
        return total / partner_sets
    return score


@torch.no_grad()
def metropolis_sample(generator: nn.Module, discriminator: nn.Module, n: int, latent_dim: int, seed: int = 0,
                      device="cpu", chain: int = 100, pack: int = 1, partner_sets: int = 8,
                      sharpen: float = 1.0, step_size: float = 1.0) -> tuple[torch.Tensor, float]:
    """Metropolis-Hastings over D's scores (Turner et al. 2019, MH-GAN): ``(n samples, acceptance rate)``.

    ``n`` independent chains, each started at a sample of G; each of ``chain`` steps proposes a fresh sample
    of G and moves there with probability min(1, exp(logit' - logit)). With an optimal D (standard loss, real
    label 1), exp(logit) = p_data / p_G, so this independence sampler's stationary distribution is the data's
    and each chain's last state is the sample: unlike rejection sampling's quantile cut, which keeps D's
    best-scored candidates whatever their share, MH weighs them by the ratio itself (a mode D scores evenly
    keeps its share). It needs D's logit to be that ratio: calibrate D first (``calibrate_discriminator``).
    Unlike MH-GAN's, no chain starts at a real sample (a chain that never moves returns G's own sample); the
    acceptance rate is the share of proposals taken. Proposals come from ``generate`` with ``seed + 1``, ...,
    ``seed + chain`` (the starts: ``seed``), decisions from their own RNG, so the result is reproducible.
    ``pack > 1``: scores as ``rejection_sample`` gives them (fixed partners shift every logit by one constant,
    which the chain's differences cancel). Unconditional D only.

    ``sharpen`` (beta >= 1): move with probability min(1, exp(beta (logit' - logit))), so the chain samples
    p_G exp(beta logit) / Z: 1 is the exact correction; above 1 it favours what D scores best, for a D whose
    logit is flatter than the true ratio (a finite net underestimates its peaks), at the cost of the modes'
    balance, as a stricter rejection quantile does.

    ``step_size`` (s in (0, 1]): proposals in G's latent space, z' = sqrt(1 - s^2) z + s e with e fresh
    standard normal noise (preconditioned Crank-Nicolson: it leaves the latent prior invariant, so the move
    probability stays min(1, exp(beta (logit' - logit))) and the target is the same). s = 1 is the independence
    sampler above, draw for draw; a small s makes local moves: a chain of ``chain`` steps refines its start
    within the start's mode and rarely reaches another, so the modes keep G's shares (sound when G's balance
    is sound, as it often is where D's verdict across modes is not) while sharpen > 1 sharpens each mode.
    """
    if getattr(generator, "num_classes", None) is not None:
        raise ValueError("Metropolis-Hastings sampling is for unconditional GANs (this generator takes labels)")
    n = _positive_int("n", n)
    chain = _positive_int("chain", chain)
    sharpen = _check_sharpen(sharpen)
    step_size = _check_step_size(step_size)
    latent_dim = _positive_int("latent_dim", latent_dim)
    score = _candidate_scorer(generator, discriminator, latent_dim, seed, device, pack, partner_sets)
    decide = torch.Generator(device=device).manual_seed(seed ^ 0x3E7A)
    keep = math.sqrt(1.0 - step_size * step_size)

    def finite(logits: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(logits).all():
            raise FloatingPointError("the discriminator's scores are not all finite: it cannot guide sampling")
        return logits

    with _eval_mode(generator):
        z = _noise(n, latent_dim, seed, device)
        state = generator(z)
        logits = finite(score(state))
        taken = 0
        for step in range(1, chain + 1):
            fresh = _noise(n, latent_dim, seed + step, device)
            proposal_z = fresh if step_size == 1.0 else keep * z + step_size * fresh
            proposal = generator(proposal_z)
            proposed = finite(score(proposal))
            u = torch.rand(n, device=device, generator=decide, dtype=torch.float64)
            move = torch.log(u) < sharpen * (proposed - logits)
            state = torch.where(move.view(-1, *[1] * (state.dim() - 1)), proposal, state)
            z = torch.where(move.view(-1, 1), proposal_z, z)
            logits = torch.where(move, proposed, logits)
            taken += int(move.sum())
    return state, taken / (n * chain)


def _check_quantile(quantile) -> float:
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be a number in [0, 1), got {quantile!r}")
    return float(quantile)


def _sample_quantile(rejection) -> float | None:
    """``sample``'s ``rejection``: False (none), True (quantile 0.8) or a quantile in [0, 1)."""
    if rejection is False:
        return None
    return 0.8 if rejection is True else _check_quantile(rejection)


def _check_sharpen(sharpen) -> float:
    if isinstance(sharpen, bool) or not isinstance(sharpen, (int, float)) or not 1.0 <= sharpen < float("inf"):
        raise ValueError(f"sharpen must be a finite number >= 1 (1: the exact correction), got {sharpen!r}")
    return float(sharpen)


def _check_step_size(step_size, name: str = "step_size") -> float:
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not 0.0 < step_size <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1] (1: independent proposals), got {step_size!r}")
    return float(step_size)


def _sample_chain(metropolis) -> int | None:
    """``sample``'s ``metropolis``: 0 / False (none) or a chain length (a positive int)."""
    if metropolis is False:
        return None
    if isinstance(metropolis, bool) or not isinstance(metropolis, int) or metropolis < 0:
        raise ValueError(f"metropolis must be a chain length (a positive int) or 0, got {metropolis!r}")
    return metropolis or None


def _sample_guide(rejection, metropolis, sharpen=1.0, metropolis_step=1.0) -> dict:
    """``sample``'s way of letting D guide it: ``{"quantile", "chain", "sharpen", "step_size"}``, at most one of
    the first two not None; ``sharpen`` (Metropolis-Hastings' beta) and ``metropolis_step`` (its proposals'
    ``step_size``) other than 1 only with a chain."""
    quantile, chain, sharpen = _sample_quantile(rejection), _sample_chain(metropolis), _check_sharpen(sharpen)
    step_size = _check_step_size(metropolis_step, "metropolis_step")
    if quantile is not None and chain is not None:
        raise ValueError("rejection and metropolis are two ways for D to pick the samples: pass one of them")
    if sharpen != 1.0 and chain is None:
        raise ValueError("sharpen is Metropolis-Hastings' beta: pass metropolis=CHAIN with it")
    if step_size != 1.0 and chain is None:
        raise ValueError("metropolis_step is Metropolis-Hastings' proposal step: pass metropolis=CHAIN with it")
    return {"quantile": quantile, "chain": chain, "sharpen": sharpen, "step_size": step_size}


def _guided_sample(generator, judge, n, latent_dim, seed, device, guide: dict, pack):
    """``(samples, acceptance)`` by rejection (``guide["quantile"]``) or Metropolis-Hastings (``guide["chain"]``,
    ``"sharpen"``, ``"step_size"``): ``guide`` as ``_sample_guide`` gives it."""
    if guide["chain"] is not None:
        return metropolis_sample(generator, judge, n, latent_dim, seed, device, guide["chain"], pack=pack,
                                 sharpen=guide["sharpen"], step_size=guide["step_size"])
    return rejection_sample(generator, judge, n, latent_dim, seed, device, guide["quantile"], pack=pack)


def _check_calibrate(calibrate, guided: bool, lr=1e-4, batch=500) -> int:
    """``sample``'s ``calibrate``: a non-negative int, and only when D guides the sampling (``guided``); its
    ``calibrate_lr`` (a positive number) and ``calibrate_batch`` (a positive int)."""
    if isinstance(calibrate, bool) or not isinstance(calibrate, int) or calibrate < 0:
        raise ValueError(f"calibrate must be a non-negative int (steps), got {calibrate!r}")
    if calibrate and not guided:
        raise ValueError("calibrate calibrates D for rejection or Metropolis-Hastings sampling: pass "
                         "rejection=QUANTILE or metropolis=CHAIN with it")
    _check_calibration_settings(lr, batch, "calibrate_")
    return calibrate


def _check_calibration_settings(lr, batch, prefix: str = "") -> None:
    """``calibrate_discriminator``'s Adam rate (a finite positive number) and batch (a positive int); ``prefix``
    names them as the caller's arguments (``sample``'s ``calibrate_lr``)."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
        raise ValueError(f"{prefix}lr must be a positive number, got {lr!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"{prefix}batch must be a positive int, got {batch!r}")


def calibrate_discriminator(generator: nn.Module, discriminator: nn.Module, real: torch.Tensor, latent_dim: int,
                            steps: int = 2000, seed: int = 0, device="cpu", pack: int = 1, lr: float = 1e-4,
                            batch: int = 500) -> nn.Module:
    """A copy of ``discriminator`` trained ``steps`` more steps against ``generator`` held fixed: the
    calibration step of discriminator rejection sampling (Azadi et al. 2019 train D further, G frozen, so its
    logit approaches log p_data / p_G). Pass the result to ``rejection_sample``; the trained D is untouched.

    Why: at the end of training D judges the G it was last trained against, and rejection sampling applies
    its verdict to another one (the EMA generator, or a G that has moved since): the correction it makes is
    for the wrong G and skews the modes. Here D learns the generator that is sampled from, with the standard
    loss and real label 1 whatever the run trained with (hinge, label smoothing), so its logit is the log
    density ratio ``rejection_sample`` assumes (towards it: D is a finite net trained a finite time). Each
    step: ``batch`` real rows and ``batch`` rows of G's samples (``pack`` samples side by side per row, as a
    PacGAN D sees them), Adam ``lr`` with betas (0.5, 0.999); the rows are drawn on ``device`` by an RNG seeded
    with ``seed``, G's noise by one seeded with ``seed + 2**41``. Plain Adam steps: a run's spectral norm or R1
    penalty is not applied (the copy estimates a ratio; it is not trained on). Unconditional GANs only.
    """
    import copy
    if getattr(generator, "num_classes", None) is not None:
        raise ValueError("calibration is for unconditional GANs (this generator takes labels)")
    for name, value in (("steps", steps), ("pack", pack), ("latent_dim", latent_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    _check_calibration_settings(lr, batch)
    if not isinstance(real, torch.Tensor) or not real.is_floating_point():
        raise TypeError(f"real must be a floating-point tensor of data samples, got {type(real).__name__}")
    if real.dim() < 2 or real.shape[0] < 1:
        raise ValueError(f"real must hold samples along its first dimension, got shape {tuple(real.shape)}")
    real = real.reshape(real.shape[0], -1)
    check_gan_models(generator, discriminator, real.shape[1], pack, latent_dim)
    real = real.to(device)
    d = copy.deepcopy(discriminator).to(device).train()
    for p in d.parameters():
        p.requires_grad_(True)
    rng = torch.Generator(device=device).manual_seed(seed)   # on the device: no host round trip per step
    noise = torch.Generator(device=device).manual_seed(seed + 2 ** 41)
    optimizer = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999))
    loss_fn = nn.BCEWithLogitsLoss()
    with torch.enable_grad(), _eval_mode(generator):
        for _ in range(steps):
            index = torch.randint(0, real.shape[0], (batch * pack,), generator=rng, device=device)
            rows = real[index].reshape(batch, -1)
            with torch.no_grad():
                z = torch.randn(batch * pack, latent_dim, device=device, generator=noise)
                fake = generator(z).reshape(batch, -1)
            real_logits, fake_logits = d(rows).flatten(), d(fake).flatten()
            loss = (loss_fn(real_logits, torch.ones_like(real_logits))
                    + loss_fn(fake_logits, torch.zeros_like(fake_logits)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    if not torch.isfinite(loss) or not all(torch.isfinite(p).all() for p in d.parameters()):
        raise FloatingPointError(f"calibrating the discriminator diverged (last loss {loss.item()}): fewer steps, "
                                 "or calibrate_discriminator with a lower lr")
    return d.eval()


def _in_features(module: nn.Module, attribute: str) -> int | None:
    value = getattr(module, attribute, None)
    if isinstance(value, int):
        return value
    linear = first_linear(module)
    if linear is None or isinstance(linear, nn.modules.lazy.LazyModuleMixin):
        return None  # unknown until the first forward
    return linear.in_features


def check_gan_models(generator: nn.Module, discriminator: nn.Module, features: int, pack: int,
                     latent_dim: int | None) -> int:
    """Check G's output and D's input against the data (``features`` per sample, D sees ``pack`` of them per
    row) and ``latent_dim`` (if given) against G's input; returns G's latent size. ``ValueError`` if not."""
    g_in = _in_features(generator, "latent_dim")
    if g_in is None:
        raise ValueError("cannot infer the generator's latent size: give it a `latent_dim` attribute "
                         "or an nn.Linear first layer")
    if latent_dim is not None and latent_dim != g_in:
        raise ValueError(f"latent_dim={latent_dim} does not match the generator, which takes {g_in} inputs")
    d_in = _in_features(discriminator, "in_dim")
    if d_in is not None and d_in != pack * features:
        packed = f" x pack={pack} = {pack * features}" if pack > 1 else ""
        raise ValueError(f"data has {features} features per sample{packed} but the discriminator takes {d_in}")
    g_out = getattr(generator, "out_dim", None)
    if not isinstance(g_out, int):
        g_out = last_linear(generator).out_features if last_linear(generator) is not None else None
    if g_out is not None and g_out != features:
        raise ValueError(f"the generator makes {g_out} features per sample but the data has {features}")
    return g_in
