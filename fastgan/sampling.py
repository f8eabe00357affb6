"""Sampling a trained generator: plain draws, and draws its discriminator guides.

``generate`` (G from seeded noise), ``rejection_sample`` (discriminator rejection sampling),
``metropolis_sample`` (Metropolis-Hastings over D's scores, with independent or latent-step proposals),
``calibrate_discriminator`` (D trained further against the G sampled from), ``jacobian_sample`` (G's samples
kept by its own Jacobian: the ones it stretched between modes left out, no D), and ``SampleOptions``: the
validated way a trainer's ``sample`` picks among G's samples.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from . import ops
from .checks import non_negative_int, positive_int
from .nn.checks import check_gan_models, check_labels

__all__ = ["generate", "rejection_sample", "metropolis_sample", "calibrate_discriminator", "jacobian_norms",
           "jacobian_sample", "SampleOptions"]

# jacobian_sample's default: a sample is kept when G's Jacobian norm there is at most this many times the median
JACOBIAN_FACTOR = 8.0


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
    decide = torch.Generator(device=device).manual_seed(seed ^ 0x5EED)
    first = generate(generator, batch, latent_dim, seed, device)
    first_logits = score(first)
    top = first_logits.max()

    def accepted(round_: int) -> torch.Tensor:
        nonlocal top
        candidates = first if round_ == 0 else generate(generator, batch, latent_dim, seed + round_, device)
        logits = first_logits if round_ == 0 else score(candidates)
        top = torch.maximum(top, logits.max())
        gap = logits - top
        f = gap - torch.log1p(-torch.exp(gap - 1e-6))
        f = f - torch.quantile(f, quantile)
        accept = torch.rand(f.shape, device=device, generator=decide, dtype=torch.float64) < torch.sigmoid(f)
        return candidates[accept]

    return _kept_until(n, batch, max_candidates or 200 * n, accepted, "rejection sampling accepted",
                       "lower the quantile or raise max_candidates")


def _kept_until(n: int, batch: int, limit: int, keep, what: str, remedy: str) -> tuple[torch.Tensor, float]:
    """``(n samples, the share of candidates kept)`` from rounds of ``batch`` candidates, ``keep(round)`` the ones
    kept of round ``round``'s (0, 1, ...); past ``limit`` candidates a RuntimeError (``what``: the sampler and
    its verb; ``remedy``: the way out)."""
    kept, count, drawn = [], 0, 0
    while count < n:
        if drawn >= limit:
            raise RuntimeError(f"{what} {count / max(drawn, 1):.2%} of {drawn} candidates, short of {n} samples: "
                               f"{remedy}")
        kept.append(keep(drawn // batch))
        count += kept[-1].shape[0]
        drawn += batch
    return torch.cat(kept)[:n], count / drawn


def _candidate_scorer(generator, discriminator, latent_dim, seed, device, pack, partner_sets):
    """D's score of each candidate (float64): its logit, or with ``pack > 1`` its mean logit packed with
    ``pack - 1`` partners from each of ``partner_sets`` fixed sets drawn from G once (seed ``seed + 2**40``)."""
    positive_int("pack", pack)
    positive_int("partner_sets", partner_sets)
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
    n = positive_int("n", n)
    chain = positive_int("chain", chain)
    sharpen = _check_sharpen(sharpen)
    step_size = _check_step_size(step_size)
    latent_dim = positive_int("latent_dim", latent_dim)
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


def jacobian_norms(generator: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G(z), ||dG/dz||_F per row)``: the Frobenius norm (float64) of G's Jacobian at each latent point, from
    one forward-mode pass per latent dimension (||J||_F^2 = sum_j ||J e_j||^2), on the ops' reference path."""
    total = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    with ops.reference_path(), torch.no_grad():   # (forward mode: dual tensors, no graph kept)
        x = generator(z)   # (a G that cannot take z fails here, as it would drawing plain samples)
        for j in range(z.shape[1]):
            direction = torch.zeros_like(z)
            direction[:, j] = 1.0
            try:
                _, tangent = torch.func.jvp(generator, (z,), (direction,))
            except (NotImplementedError, RuntimeError) as error:
                raise TypeError(f"G ({type(generator).__name__}) cannot be differentiated in forward mode "
                                f"(torch.func.jvp), which its Jacobian norms need: {error}") from error
            total += tangent.reshape(z.shape[0], -1).double().square().sum(dim=1)
    return x, total.sqrt()


@torch.no_grad()
def jacobian_sample(generator: nn.Module, n: int, latent_dim: int, seed: int = 0, device="cpu",
                    factor: float = JACOBIAN_FACTOR, batch: int = 4096,
                    max_candidates: int | None = None) -> tuple[torch.Tensor, float]:
    """G's samples kept by its own Jacobian (Tanielian et al. 2020, "Learning disconnected manifolds: a no GAN's
    land"): ``(n samples, acceptance rate)``.

    G maps a connected latent space continuously, so to put its mass on separate modes it stretches a thin band
    of latent space across each gap, and that band's samples are the ones between the modes. The norm of G's
    Jacobian, ||dG/dz||_F, sees the stretch: a candidate is kept when its norm is at most ``factor`` times the
    median norm of the first ``batch`` candidates. No D takes part, so the modes keep G's shares, whatever D
    thinks of them; within a mode it drops the edges where G stretches most, so the modes come out a little
    narrower than G draws them. Candidates come from ``generate`` with ``seed`` (then ``seed + 1``, ...), so the
    result is reproducible. Unconditional G; ``max_candidates`` (default 200 n) bounds the work: reaching it
    is a RuntimeError naming the acceptance rate.
    """
    if getattr(generator, "num_classes", None) is not None:
        raise ValueError("Jacobian sampling is for unconditional GANs (this generator takes labels)")
    n, latent_dim, batch = positive_int("n", n), positive_int("latent_dim", latent_dim), positive_int("batch", batch)
    factor = _check_factor(factor)
    threshold = None

    def unstretched(round_: int) -> torch.Tensor:
        nonlocal threshold
        samples, norms = jacobian_norms(generator, _noise(batch, latent_dim, seed + round_, device))
        if not torch.isfinite(norms).all():
            raise FloatingPointError("G's Jacobian is not finite at every candidate: it cannot pick samples")
        if threshold is None:
            threshold = factor * norms.median()
        return samples[norms <= threshold]

    with _eval_mode(generator):
        return _kept_until(n, batch, max_candidates or 200 * n, unstretched, "Jacobian sampling kept",
                           "raise the factor or max_candidates")


def _check_factor(factor) -> float:
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1.0 <= factor < float("inf"):
        raise ValueError(f"the Jacobian factor must be a finite number >= 1 (samples kept up to that many times "
                         f"the median norm), got {factor!r}")
    return float(factor)


def _check_quantile(quantile) -> float:
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be a number in [0, 1), got {quantile!r}")
    return float(quantile)


def _check_sharpen(sharpen) -> float:
    if isinstance(sharpen, bool) or not isinstance(sharpen, (int, float)) or not 1.0 <= sharpen < float("inf"):
        raise ValueError(f"sharpen must be a finite number >= 1 (1: the exact correction), got {sharpen!r}")
    return float(sharpen)


def _check_step_size(step_size, name: str = "step_size") -> float:
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not 0.0 < step_size <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1] (1: independent proposals), got {step_size!r}")
    return float(step_size)


@dataclass(frozen=True)
class SampleOptions:
    """How a trainer's ``sample`` picks among G's samples, validated once (``from_arguments`` takes ``sample``'s
    keywords).

    ``quantile``: rejection sampling at that quantile; ``chain``: Metropolis-Hastings with chains of that length,
    ``sharpen`` its beta and ``step_size`` its proposals' latent step; ``jacobian``: ``jacobian_sample`` with that
    factor (no D); at most one of the three, or none (plain draws). ``calibrate``: steps of
    ``calibrate_discriminator`` (Adam ``calibrate_lr``, ``calibrate_batch`` rows) before D judges."""
    quantile: float | None = None
    chain: int | None = None
    sharpen: float = 1.0
    step_size: float = 1.0
    calibrate: int = 0
    calibrate_lr: float = 1e-4
    calibrate_batch: int = 500
    jacobian: float | None = None

    @classmethod
    def from_arguments(cls, rejection=False, metropolis=0, sharpen=1.0, metropolis_step=1.0, calibrate=0,
                       calibrate_lr=1e-4, calibrate_batch=500, jacobian=False) -> SampleOptions:
        """``sample``'s keywords: ``rejection`` False / True (quantile 0.8) / a quantile in [0, 1); ``metropolis``
        0 / a chain length; ``sharpen`` >= 1 and ``metropolis_step`` in (0, 1] only with a chain; ``calibrate``
        only with one of the two; ``jacobian`` False / True (factor ``JACOBIAN_FACTOR``) / a factor >= 1, alone.
        ``ValueError`` naming the keyword otherwise."""
        quantile = None if rejection is False else 0.8 if rejection is True else _check_quantile(rejection)
        if isinstance(metropolis, bool) and metropolis is not False or not isinstance(metropolis, int) \
                or metropolis < 0:
            raise ValueError(f"metropolis must be a chain length (a positive int) or 0, got {metropolis!r}")
        chain = metropolis or None
        sharpen, step_size = _check_sharpen(sharpen), _check_step_size(metropolis_step, "metropolis_step")
        if quantile is not None and chain is not None:
            raise ValueError("rejection and metropolis are two ways for D to pick the samples: pass one of them")
        if sharpen != 1.0 and chain is None:
            raise ValueError("sharpen is Metropolis-Hastings' beta: pass metropolis=CHAIN with it")
        if step_size != 1.0 and chain is None:
            raise ValueError("metropolis_step is Metropolis-Hastings' proposal step: pass metropolis=CHAIN with it")
        non_negative_int("calibrate (D's steps)", calibrate)
        if calibrate and quantile is None and chain is None:
            raise ValueError("calibrate calibrates D for rejection or Metropolis-Hastings sampling: pass "
                             "rejection=QUANTILE or metropolis=CHAIN with it")
        check_calibration_settings(calibrate_lr, calibrate_batch, "calibrate_")
        factor = None if jacobian is False else JACOBIAN_FACTOR if jacobian is True else _check_factor(jacobian)
        if factor is not None and (quantile is not None or chain is not None):
            raise ValueError("jacobian picks G's samples without D: pass it without rejection or metropolis")
        return cls(quantile, chain, sharpen, step_size, calibrate, calibrate_lr, calibrate_batch, factor)

    @property
    def guided(self) -> bool:
        """Whether D picks the samples (rejection or Metropolis-Hastings)."""
        return self.quantile is not None or self.chain is not None

    @property
    def picked(self) -> bool:
        """Whether the samples are picked among G's candidates (an acceptance rate comes with them)."""
        return self.guided or self.jacobian is not None

    def draw(self, generator: nn.Module, discriminator: nn.Module, real: torch.Tensor, n: int, latent_dim: int,
             seed: int, device, pack: int, labels=None) -> tuple[torch.Tensor, float | None]:
        """``(samples, acceptance)``: ``n`` of ``generator``'s samples, picked by ``discriminator`` (calibrated
        on ``real`` first when asked) or by G's Jacobian as these options say; plain draws (acceptance None)
        when neither picks."""
        if not self.picked:
            return generate(generator, n, latent_dim, seed, device, labels=labels), None
        if labels is not None:
            raise ValueError("rejection, Metropolis-Hastings and Jacobian sampling are for unconditional GANs")
        if self.jacobian is not None:
            return jacobian_sample(generator, n, latent_dim, seed, device, self.jacobian)
        with _eval_mode(discriminator):
            judge = discriminator if not self.calibrate else calibrate_discriminator(
                generator, discriminator, real, latent_dim, self.calibrate, seed, device, pack,
                lr=self.calibrate_lr, batch=self.calibrate_batch)
            if self.chain is not None:
                return metropolis_sample(generator, judge, n, latent_dim, seed, device, self.chain, pack=pack,
                                         sharpen=self.sharpen, step_size=self.step_size)
            return rejection_sample(generator, judge, n, latent_dim, seed, device, self.quantile, pack=pack)


def check_calibration_settings(lr, batch, prefix: str = "") -> None:
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
    if getattr(generator, "num_classes", None) is not None:
        raise ValueError("calibration is for unconditional GANs (this generator takes labels)")
    for name, value in (("steps", steps), ("pack", pack), ("latent_dim", latent_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    check_calibration_settings(lr, batch)
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

