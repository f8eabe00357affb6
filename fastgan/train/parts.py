"""What the step builders share: the parts a step works on, and how its regions are compiled and autocast."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["StepParts", "forward_autocast", "compiled_regions", "packed"]

@dataclass
class StepParts:
    """What one step works on; its settings are the run's ``TrainConfig`` (read at each step, so a new
    ``batch_size`` takes effect at the next one)."""
    generator: nn.Module
    discriminator: nn.Module
    optimizer_g: torch.optim.Optimizer
    optimizer_d: torch.optim.Optimizer
    data: torch.Tensor            # (N, features), on the training device
    latent_dim: int
    rng: torch.Generator          # draws batch indices, noise and instance noise, on the training device
    d_loss: Callable          # (real_logits, fake_logits) -> D's loss (fastgan.train.losses.gan_losses)
    g_loss: Callable          # fake_logits -> G's loss
    config: object                # the run's TrainConfig
    ema: object | None = None     # fastgan.optim.EMA
    augment: object | None = None  # fastgan.train.augment.Augment
    spectral: object | None = None  # fastgan.nn.spectral.SpectralNorm
    labels: torch.Tensor | None = None   # (N,) class of each data row: a conditional GAN (G(z, y), D(x, y))
    parallel: object | None = None       # fastgan.distributed.DataParallel: this rank's slice of each batch


def forward_autocast(precision: str, device: torch.device):
    """The context the forward passes run in: bf16 autocast for ``precision="bf16"`` (fp32 accumulation,
    fp32 master weights), else nothing."""
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def compiled_regions(config, *regions):
    """``regions`` through ``torch.compile`` (with ``config.compile``'s mode) when it is set, else as they are."""
    if not config.compile:
        return regions
    options = {} if config.compile is True else {"mode": config.compile}
    return tuple(torch.compile(region, **options) for region in regions)


def packed(x: torch.Tensor, pack: int, leading: int = 0) -> torch.Tensor:
    """PacGAN's packing: the samples along dimension ``leading`` (after ``leading`` replica dimensions), each a row
    or an image, ``pack`` at a time side by side in one row of ``pack * features`` (unchanged for ``pack == 1``)."""
    return x.reshape(*x.shape[:leading], x.shape[leading] // pack, -1) if pack > 1 else x
