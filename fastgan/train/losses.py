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

from ..ops.bce import sigmoid_bce_reference
from .values import check_real_label

__all__ = ["discriminator_loss", "generator_loss", "hinge_discriminator_loss", "hinge_generator_loss", "gan_losses"]

Bce = Callable[[torch.Tensor, float], torch.Tensor]


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 1.0,
                       bce: Bce = sigmoid_bce_reference) -> torch.Tensor:
    """``BCE(D(real), real_label) + BCE(D(fake), 0)``; ``real_label < 1`` is one-sided label smoothing."""
    return bce(real_logits, check_real_label(real_label)) + bce(fake_logits, 0.0)


def generator_loss(fake_logits: torch.Tensor, bce: Bce = sigmoid_bce_reference) -> torch.Tensor:
    """Non-saturating generator loss ``BCE(D(G(z)), 1) = -mean(log sigmoid(D(G(z))))``."""
    return bce(fake_logits, 1.0)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, mean=torch.mean) -> torch.Tensor:
    """Hinge loss for D (Lim & Ye 2017; SAGAN): ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``."""
    return mean(torch.relu(1.0 - real_logits)) + mean(torch.relu(1.0 + fake_logits))


def hinge_generator_loss(fake_logits: torch.Tensor, mean=torch.mean) -> torch.Tensor:
    """Hinge loss for G: ``-mean(D(G(z)))``."""
    return -mean(fake_logits)


def gan_losses(loss: str, real_label, bce: Bce, mean=torch.mean, fake_label=0.0, generator_label=1.0):
    """The ``(d_loss(real_logits, fake_logits), g_loss(fake_logits))`` pair every step builder trains with:
    ``loss`` (``"non_saturating"``: ``bce`` against ``real_label``/``fake_label`` for D, ``generator_label`` for G;
    ``"hinge"``: over ``mean``). The replica step passes per-replica forms: a ``(K,)``-valued ``bce`` and ``mean``,
    ``(K, 1, 1)`` labels."""
    if loss == "hinge":
        return (lambda real, fake: hinge_discriminator_loss(real, fake, mean),
                lambda fake: hinge_generator_loss(fake, mean))
    return (lambda real, fake: bce(real, real_label) + bce(fake, fake_label),
            lambda fake: bce(fake, generator_label))
