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

__all__ = ["Augment", "ReplicaAugment", "TRANSFORMS", "parse_transforms", "augment_images"]

TRANSFORMS = ("translation", "cutout", "brightness", "contrast", "flip")
# the uniforms each transform draws per sample after the one that decides whether it applies
PARAMETERS = {"translation": 2, "cutout": 2, "brightness": 1, "contrast": 1, "flip": 0}


def parse_transforms(spec: str | None) -> tuple[str, ...]:
    """``"translation,cutout"`` -> ``("translation", "cutout")``; ValueError naming an unknown one."""
    if not spec:
        return ()
    names = tuple(name.strip() for name in spec.split(",") if name.strip())
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(map(repr, unknown))}; choose from {', '.join(TRANSFORMS)}")
    return names


def _side(features: int) -> int:
    side = math.isqrt(features)
    if side * side != features:
        raise ValueError(f"augmentation transforms images: the data's {features} features per sample are not "
                         "a square one-channel image (2-D mixtures take no augmentation)")
    return side


def augment_images(x: torch.Tensor, u: torch.Tensor, p: torch.Tensor, transforms: tuple[str, ...],
                   side: int) -> torch.Tensor:
    """``x`` ``(B, side^2)`` with each of ``transforms`` applied to each sample where its uniform is below ``p``
    (``()``, or ``(B,)``: each sample's own), its parameters from the sample's next uniforms: ``u`` ``(B, D)``
    in [0, 1), per transform one to decide and ``PARAMETERS[name]`` more. Differentiable in ``x``."""
    b = x.shape[0]
    images = x.reshape(b, 1, side, side)
    column = 0
    for name in transforms:
        chosen = (u[:, column] < p).to(x.dtype).view(b, 1, 1, 1)
        params = u[:, column + 1:column + 1 + PARAMETERS[name]]
        images = images + chosen * (_TRANSFORM[name](images, params) - images)
        column += 1 + PARAMETERS[name]
    return images.reshape(b, -1)


# -- the transforms: (B, 1, S, S) images and (B, parameters) uniforms -> the transformed images -------------
def _brightness(images, u):
    return images + (u.view(-1, 1, 1, 1) - 0.5)


def _contrast(images, u):
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * (u.view(-1, 1, 1, 1) + 0.5) + mean


def _flip(images, u):
    return images.flip(3)


def _whole(u: torch.Tensor, values: int) -> torch.Tensor:
    """Uniforms in [0, 1) as integers in [0, values), ``(parameters, B, 1, 1)``."""
    return (u.t() * values).floor().long().clamp_(max=values - 1).view(u.shape[1], -1, 1, 1)


def _translation(images, u):
    b, _, s, _ = images.shape
    shift = s // 8
    offsets = _whole(u, 2 * shift + 1) - shift   # rows and columns moved by -shift ... shift
    rows = torch.arange(s, device=images.device).view(1, s, 1) + offsets[0]
    cols = torch.arange(s, device=images.device).view(1, 1, s) + offsets[1]
    inside = ((rows >= 0) & (rows < s) & (cols >= 0) & (cols < s)).to(images.dtype)
    index = rows.clamp(0, s - 1) * s + cols.clamp(0, s - 1)  # (B, S, S) source pixel of each pixel
    moved = images.reshape(b, s * s).gather(1, index.reshape(b, s * s)).reshape(b, 1, s, s)
    return moved * inside.unsqueeze(1)


def _cutout(images, u):
    _, _, s, _ = images.shape
    size = s // 2
    corner = _whole(u, s - size + 1)
    rows = torch.arange(s, device=images.device).view(1, s, 1)
    cols = torch.arange(s, device=images.device).view(1, 1, s)
    hole = (rows >= corner[0]) & (rows < corner[0] + size) & (cols >= corner[1]) & (cols < corner[1] + size)
    return images * (~hole).unsqueeze(1).to(images.dtype)


_TRANSFORM = {"translation": _translation, "cutout": _cutout, "brightness": _brightness, "contrast": _contrast,
              "flip": _flip}


def _draws(transforms: tuple[str, ...]) -> int:
    """Uniforms per sample and call: per transform one to decide and its parameters."""
    return sum(1 + PARAMETERS[name] for name in transforms)


def _adapted(r: torch.Tensor, p: torch.Tensor, signs: torch.Tensor, target, speed: float,
             r_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ADA's update, new ``(r, p)``: r the running mean of D's ``signs`` on real data (each an
    E[sign(D(real))]), p moved by ``speed`` toward the side that brings r to ``target``, kept in [0, 1]."""
    r = r.clone().mul_(r_decay).add_(signs, alpha=1 - r_decay)
    return r, p.clone().add_(torch.sign(r - target), alpha=speed).clamp_(0.0, 1.0)


class Augment:
    """Applies ``transforms`` with probability ``p`` per sample and transform; adapts ``p`` toward ``target``.

    ``side``: the image side (features = side^2). ``rng``: the trainer's device RNG: each call draws its
    uniforms from it, ``(B, draws)`` in one ``torch.rand``, so a resumed run draws the same; with the Philox
    sampler (``sampler="philox"``) from that instead. ``speed``: change of ``p`` per step at full imbalance.
    """

    def __init__(self, transforms: tuple[str, ...], features: int, p: float, target: float | None,
                 rng: torch.Generator, device: torch.device, speed: float = 0.005, r_decay: float = 0.99):
        self.transforms, self.side, self.rng = transforms, _side(features), rng
        self.draws = _draws(transforms)
        self.target, self.speed, self.r_decay = target, speed, r_decay
        self.p = torch.full((), float(p), device=device)
        self.r = torch.zeros((), device=device)  # running E[sign(D(real))]

    def __call__(self, x: torch.Tensor, sampler=None) -> torch.Tensor:
        """``x``: (B, side^2) -> the same shape, each transform applied to each sample with probability p; the
        uniforms from ``rng``, or from ``sampler`` (a ``DeviceSampler``: one launch)."""
        u = sampler.uniform(x.shape[0], self.draws) if sampler is not None else \
            torch.rand(x.shape[0], self.draws, device=x.device, generator=self.rng)
        return augment_images(x, u, self.p, self.transforms, self.side)

    def observe(self, real_logits: torch.Tensor) -> None:
        """After a D step: update r, and p when adaptive (device ops only)."""
        if self.target is None:
            return
        with torch.no_grad():
            r, p = _adapted(self.r, self.p, real_logits.detach().float().sign().mean(), self.target, self.speed,
                            self.r_decay)
            self.r.copy_(r)
            self.p.copy_(p)

    def state_dict(self) -> dict:
        return {"p": self.p.clone(), "r": self.r.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.p.copy_(state["p"])
        self.r.copy_(state["r"])


class ReplicaAugment:
    """K replicas' augmentations at once: replica k's start p ``ps[k]`` and ADA target ``targets[k]`` (None: p
    fixed), its p and r entries of ``(K,)`` tensors, its uniforms drawn as its single run draws them (from its
    generator, ``uniforms``, where its single run draws; or with the Philox sampler every replica's in one
    launch), so each replica augments as its single run does; the transforms and the ADA update run once for
    all K."""

    def __init__(self, transforms: tuple[str, ...], features: int, ps: list[float], targets: list[float | None],
                 generators: list[torch.Generator], device: torch.device, speed: float = 0.005,
                 r_decay: float = 0.99):
        if len(ps) != len(generators) or len(targets) != len(generators):
            raise ValueError("one start p, target and generator per replica")
        self.transforms, self.side, self.generators = transforms, _side(features), generators
        self.draws = _draws(transforms)
        self.speed, self.r_decay = speed, r_decay
        self.p = torch.tensor([float(p) for p in ps], device=device)
        self.r = torch.zeros(len(ps), device=device)
        self.target = torch.tensor([t if t is not None else 0.0 for t in targets], device=device)
        self.steered = torch.tensor([t is not None for t in targets], device=device)
        self.adaptive = any(t is not None for t in targets)

    def uniforms(self, k: int, rows: int, device) -> torch.Tensor:
        """Replica ``k``'s uniforms for ``rows`` samples, from its generator (its single run's draw)."""
        return torch.rand(rows, self.draws, device=device, generator=self.generators[k])

    def __call__(self, x: torch.Tensor, sampler=None, u: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: (K, B, features), replica k's rows augmented with its p and uniforms: ``u`` (K, B, draws), or
        drawn here (``sampler``: one Philox launch for every replica; else each replica's generator)."""
        k, b, features = x.shape
        if u is None:
            u = sampler.uniform(b, self.draws) if sampler is not None else \
                torch.stack([self.uniforms(j, b, x.device) for j in range(k)])
        out = augment_images(x.reshape(k * b, features), u.reshape(k * b, self.draws),
                             self.p.repeat_interleave(b), self.transforms, self.side)
        return out.reshape(k, b, features)

    def observe(self, real_logits: torch.Tensor) -> None:
        """``real_logits``: (K, ...), replica k's steering replica k's p: ``Augment.observe``'s update for every
        replica with a target at once (device ops only)."""
        if not self.adaptive:
            return
        with torch.no_grad():
            signs = real_logits.detach().float().sign().flatten(1).mean(dim=1)
            r, p = _adapted(self.r, self.p, signs, self.target, self.speed, self.r_decay)
            self.r.copy_(torch.where(self.steered, r, self.r))
            self.p.copy_(torch.where(self.steered, p, self.p))

    def state_dict(self) -> dict:
        return {"p": self.p.clone(), "r": self.r.clone()}

    def check_state(self, state) -> None:
        k = self.p.shape[0]
        if not isinstance(state, dict) or any(not isinstance(state.get(key), torch.Tensor) or
                                              tuple(state[key].shape) != (k,) for key in ("p", "r")):
            raise ValueError(f"its augmentation state is not {k} replicas' p and r")

    def load_state_dict(self, state: dict) -> None:
        self.p.copy_(state["p"])
        self.r.copy_(state["r"])
