"""Building one GAN training step: one D update on real + fake, then one G update through D.

The step is a closure over the models, optimizers, device-resident data and the trainer's RNG. It never
reads a tensor value on the host (no ``.item()``), so it queues work without syncing and a CUDA graph
can later capture it whole.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .losses import Bce, discriminator_loss, generator_loss

__all__ = ["StepParts", "make_eager_step"]


@dataclass
class StepParts:
    generator: nn.Module
    discriminator: nn.Module
    optimizer_g: torch.optim.Optimizer
    optimizer_d: torch.optim.Optimizer
    data: torch.Tensor            # (N, features), on the training device
    batch_size: int
    latent_dim: int
    rng: torch.Generator          # draws batch indices and noise, on the training device
    bce: Bce
    real_label: float = 1.0


def make_eager_step(p: StepParts) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """A step function returning ``(loss_d, loss_g)`` as detached 0-d tensors on the device."""
    device = p.data.device
    n = p.data.shape[0]
    d_params = list(p.discriminator.parameters())

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, n, (p.batch_size,), device=device, generator=p.rng)
        real = p.data.index_select(0, index)
        z = torch.randn(p.batch_size, p.latent_dim, device=device, generator=p.rng)
        fake = p.generator(z)

        loss_d = discriminator_loss(p.discriminator(real), p.discriminator(fake.detach()), p.real_label, p.bce)
        p.optimizer_d.zero_grad(set_to_none=True)
        loss_d.backward()
        p.optimizer_d.step()

        # G's update flows through D, but D's weights are not being trained here: freeze them so the
        # backward skips their weight gradients (same G gradient, less work).
        for q in d_params:
            q.requires_grad_(False)
        try:
            loss_g = generator_loss(p.discriminator(fake), p.bce)
            p.optimizer_g.zero_grad(set_to_none=True)
            loss_g.backward()
        finally:
            for q in d_params:
                q.requires_grad_(True)
        p.optimizer_g.step()
        return loss_d.detach(), loss_g.detach()

    return step
