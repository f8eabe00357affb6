"""SpectralNorm: the state of D's spectral normalisation (one power-iteration vector per Linear layer).

``GANTrainer(..., spectral_norm=True)`` makes one; after each update of D, ``step()`` runs one power
iteration per layer and divides each weight by its estimated spectral norm (``ops.spectral_normalize_``:
one Triton launch for all layers when D's weights sit in one buffer, as FlatAdam and FusedMLP keep them).
At creation it runs ``warmup`` iterations, so D starts normalised and u has converged. ``ReplicaSpectralNorm``
does the same for K stacked replicas of D, each replica as its own run's ``SpectralNorm`` (seed ``seed + k``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops.spectral import EPS, spectral_normalize_

__all__ = ["SpectralNorm", "ReplicaSpectralNorm"]


class SpectralNorm:
    def __init__(self, module: nn.Module, seed: int = 0, warmup: int = 20):
        self.weights = [m.weight for m in module.modules() if isinstance(m, nn.Linear)]
        if not self.weights:
            raise ValueError("spectral_norm: the discriminator has no nn.Linear layer to normalise")
        device = self.weights[0].device
        sizes = [w.shape[0] for w in self.weights]
        u = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(seed))
        self.u = u.to(device)
        self.us = list(self.u.split(sizes))
        with torch.no_grad():
            for vector in self.us:
                vector.div_(vector.norm())
        for _ in range(warmup):
            self.step()

    def step(self) -> None:
        """One power iteration per layer, then each weight divided by its estimate (no host reads)."""
        spectral_normalize_(self.weights, self.us)

    def sigmas(self) -> list[float]:
        """Each weight's exact largest singular value (reads the device: for inspection and tests)."""
        return [torch.linalg.matrix_norm(w.detach().double(), ord=2).item() for w in self.weights]

    def state_dict(self) -> dict:
        return {"u": self.u.clone()}

    def load_state_dict(self, state: dict) -> None:
        if state["u"].shape != self.u.shape:
            raise ValueError(f"spectral-norm state has {state['u'].numel()} u entries, this D needs {self.u.numel()}")
        self.u.copy_(state["u"])


class ReplicaSpectralNorm(SpectralNorm):
    """``SpectralNorm`` of K stacked discriminators (a ``StackedMLP``): replica k's u drawn, normalised and
    warmed up as ``SpectralNorm(D_k, seed + k)`` does; each power iteration is one batched product per layer
    for all K (the reference update's arithmetic, ``ops.spectral.spectral_normalize_reference_``)."""

    def __init__(self, stacked: nn.Module, seed: int = 0, warmup: int = 20):
        if not callable(getattr(stacked, "weights", None)):
            raise ValueError("spectral_norm with replicas normalises plain MLP discriminators (Linear layers and "
                             f"activations), not {type(stacked).__name__}")
        self.weights = [w for w, _ in stacked.weights()]     # (K, out, in) views of the stacked weights
        sizes = [w.shape[1] for w in self.weights]
        u = torch.stack([torch.randn(sum(sizes), generator=torch.Generator().manual_seed(seed + k))
                         for k in range(stacked.replicas)])
        self.u = u.to(self.weights[0].device)
        self.us = list(self.u.split(sizes, dim=1))
        with torch.no_grad():
            for vector in self.us:
                vector.div_(vector.norm(dim=1, keepdim=True))
        for _ in range(warmup):
            self.step()

    @torch.no_grad()
    def step(self) -> None:
        for w, u in zip(self.weights, self.us):
            v = torch.bmm(u.unsqueeze(1), w)                            # (K, 1, in): (W^T u)^T
            v = v / (v.norm(dim=2, keepdim=True) + EPS)
            s = torch.bmm(w, v.transpose(1, 2)).squeeze(2)              # (K, out)
            sigma = s.norm(dim=1, keepdim=True).clamp_min(EPS)
            u.copy_(s / sigma)
            w.div_(sigma.unsqueeze(2))

    def sigmas(self) -> list[list[float]]:
        """Each replica's (rows) layers' exact largest singular values (reads the device)."""
        return torch.stack([torch.linalg.matrix_norm(w.detach().double(), ord=2) for w in self.weights], 1).tolist()
