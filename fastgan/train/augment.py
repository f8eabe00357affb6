"""Differentiable augmentation of what D sees (DiffAugment, Zhao et al. 2020; ADA, Karras et al. 2020).

The same random transforms, drawn independently per sample, are applied to real and fake batches before
D, in D's update and in G's update through D: D cannot memorise a small data set, and G still gets
gradients through the transforms. Each transform acts on a sample with probability ``p``; with
``target`` set, ``p`` adapts (ADA): ``r = E[sign(D(real))]``, averaged over steps, drives ``p`` up when
above the target (D overfits) and down when below, by ``speed`` per step. ``p`` and ``r`` live on the
device: no host sync, and a CUDA graph replays the adaptation.

Transforms (for images: the samples are square one-channel images, e.g. 784 = 28 x 28):
  translation  shift by up to 1/8 of the side in each direction, zeros shifted in
  cutout       zero a square of half the side at a random place
  brightness   add a uniform offset in [-0.5, 0.5)
  contrast     scale around the sample's mean by a factor in [0.5, 1.5)
  flip         mirror left-right (only where the data allows: digits do not)
"""
from __future__ import annotations

import math

import torch

__all__ = ["Augment", "ReplicaAugment", "TRANSFORMS", "parse_transforms"]

TRANSFORMS = ("translation", "cutout", "brightness", "contrast", "flip")


def parse_transforms(spec: str | None) -> tuple[str, ...]:
    """``"translation,cutout"`` -> ``("translation", "cutout")``; ValueError naming an unknown one."""
    if not spec:
        return ()
    names = tuple(name.strip() for name in spec.split(",") if name.strip())
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(map(repr, unknown))}; choose from {', '.join(TRANSFORMS)}")
    return names


class Augment:
    """Applies ``transforms`` with probability ``p`` per sample and transform; adapts ``p`` toward ``target``.

    ``side``: the image side (features = side^2). ``rng``: the trainer's device RNG (every draw comes
    from it, so a resumed run draws the same). ``speed``: change of ``p`` per step at full imbalance.
    """

    def __init__(self, transforms: tuple[str, ...], features: int, p: float, target: float | None,
                 rng: torch.Generator, device: torch.device, speed: float = 0.005, r_decay: float = 0.99):
        side = math.isqrt(features)
        if side * side != features:
            raise ValueError(f"augmentation transforms images: the data's {features} features per sample are not "
                             "a square one-channel image (2-D mixtures take no augmentation)")
        self.transforms, self.side, self.rng = transforms, side, rng
        self.target, self.speed, self.r_decay = target, speed, r_decay
        self.p = torch.full((), float(p), device=device)
        self.r = torch.zeros((), device=device)  # running E[sign(D(real))]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, side^2) -> the same shape, each transform applied to each sample with probability p."""
        b = x.shape[0]
        images = x.reshape(b, 1, self.side, self.side)
        for name in self.transforms:
            chosen = (torch.rand(b, 1, 1, 1, device=x.device, generator=self.rng) < self.p).to(x.dtype)
            images = images + chosen * (getattr(self, "_" + name)(images) - images)
        return images.reshape(b, -1)

    def observe(self, real_logits: torch.Tensor) -> None:
        """After a D step: update r, and p when adaptive (device ops only)."""
        if self.target is None:
            return
        with torch.no_grad():
            self.r.mul_(self.r_decay).add_(real_logits.detach().float().sign().mean(), alpha=1 - self.r_decay)
            self.p.add_(torch.sign(self.r - self.target), alpha=self.speed).clamp_(0.0, 1.0)

    # -- the transforms: each returns the transformed images (B, 1, S, S), differentiable in them --------
    def _uniform(self, b: int, device) -> torch.Tensor:
        return torch.rand(b, 1, 1, 1, device=device, generator=self.rng)

    def _brightness(self, images):
        return images + (self._uniform(images.shape[0], images.device) - 0.5)

    def _contrast(self, images):
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        return (images - mean) * (self._uniform(images.shape[0], images.device) + 0.5) + mean

    def _flip(self, images):
        return images.flip(3)

    def _translation(self, images):
        b, _, s, _ = images.shape
        shift = s // 8
        offsets = torch.randint(-shift, shift + 1, (2, b, 1, 1), device=images.device, generator=self.rng)
        rows = torch.arange(s, device=images.device).view(1, s, 1) + offsets[0]
        cols = torch.arange(s, device=images.device).view(1, 1, s) + offsets[1]
        inside = ((rows >= 0) & (rows < s) & (cols >= 0) & (cols < s)).to(images.dtype)
        index = rows.clamp(0, s - 1) * s + cols.clamp(0, s - 1)  # (B, S, S) source pixel of each pixel
        moved = images.reshape(b, s * s).gather(1, index.reshape(b, s * s)).reshape(b, 1, s, s)
        return moved * inside.unsqueeze(1)

    def _cutout(self, images):
        b, _, s, _ = images.shape
        size = s // 2
        corner = torch.randint(0, s - size + 1, (2, b, 1, 1), device=images.device, generator=self.rng)
        rows = torch.arange(s, device=images.device).view(1, s, 1)
        cols = torch.arange(s, device=images.device).view(1, 1, s)
        hole = (rows >= corner[0]) & (rows < corner[0] + size) & (cols >= corner[1]) & (cols < corner[1] + size)
        return images * (~hole).unsqueeze(1).to(images.dtype)

    def state_dict(self) -> dict:
        return {"p": self.p.clone(), "r": self.r.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.p.copy_(state["p"])
        self.r.copy_(state["r"])


class ReplicaAugment:
    """K replicas' augmentations: replica k's own ``Augment`` (its start p ``ps[k]``, ADA target ``targets[k]``,
    its p and r), drawing from replica k's generator in its single run's order, so each replica augments as its
    single run does. Each transform draws per replica: the launches grow with K (PyTorch's generators, as
    ``sampler="torch"``'s draws do)."""

    def __init__(self, transforms: tuple[str, ...], features: int, ps: list[float], targets: list[float | None],
                 generators: list[torch.Generator], device: torch.device):
        self.each = [Augment(transforms, features, p, target, rng, device)
                     for p, target, rng in zip(ps, targets, generators, strict=True)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (K, B, features), replica k's rows augmented by replica k's pipeline."""
        return torch.stack([augment(rows) for augment, rows in zip(self.each, x)])

    def observe(self, real_logits: torch.Tensor) -> None:
        """``real_logits``: (K, ...), replica k's steering replica k's p."""
        for augment, logits in zip(self.each, real_logits):
            augment.observe(logits)

    def state_dict(self) -> dict:
        return {"p": torch.stack([a.p for a in self.each]), "r": torch.stack([a.r for a in self.each])}

    def check_state(self, state) -> None:
        k = len(self.each)
        if not isinstance(state, dict) or any(not isinstance(state.get(key), torch.Tensor) or
                                              tuple(state[key].shape) != (k,) for key in ("p", "r")):
            raise ValueError(f"its augmentation state is not {k} replicas' p and r")

    def load_state_dict(self, state: dict) -> None:
        for k, augment in enumerate(self.each):
            augment.load_state_dict({"p": state["p"][k], "r": state["r"][k]})
