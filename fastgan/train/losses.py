"""GAN losses on discriminator *logits* (reference semantics).

``discriminator_loss``: BCE with real -> ``real_label`` (1.0, or e.g. 0.9 for one-sided label smoothing)
and fake -> 0, summed over the two halves (each a mean over its batch), as in the DCGAN reference.
``generator_loss``: the non-saturating loss, BCE of D's logits on fakes against 1 (Goodfellow et al. 2014).

Both take ``bce``, the ``(logits, target: float) -> scalar mean`` function to use, so the fused Triton
loss (``fastgan.ops.sigmoid_bce_with_logits``) and the PyTorch one give the same math.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["bce_with_logits", "discriminator_loss", "generator_loss", "hinge_discriminator_loss",
           "hinge_generator_loss", "check_real_label", "LOSSES"]

Bce = Callable[[torch.Tensor, float], torch.Tensor]


def bce_with_logits(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean sigmoid-BCE of ``logits`` against a constant ``target`` (PyTorch's stable form)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


def check_real_label(real_label: float) -> float:
    if not isinstance(real_label, (int, float)) or not 0.0 < real_label <= 1.0:
        raise ValueError(f"real_label must be a number in (0, 1], got {real_label!r}")
    return float(real_label)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 1.0,
                       bce: Bce = bce_with_logits) -> torch.Tensor:
    """``BCE(D(real), real_label) + BCE(D(fake), 0)``; ``real_label < 1`` is one-sided label smoothing."""
    return bce(real_logits, check_real_label(real_label)) + bce(fake_logits, 0.0)


def generator_loss(fake_logits: torch.Tensor, bce: Bce = bce_with_logits) -> torch.Tensor:
    """Non-saturating generator loss ``BCE(D(G(z)), 1) = -mean(log sigmoid(D(G(z))))``."""
    return bce(fake_logits, 1.0)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss for D (Lim & Ye 2017; SAGAN): ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``."""
    return torch.relu(1.0 - real_logits).mean() + torch.relu(1.0 + fake_logits).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss for G: ``-mean(D(G(z)))``."""
    return -fake_logits.mean()


LOSSES = ("non_saturating", "hinge")
