"""SpectralNorm: the state of D's spectral normalisation (one power-iteration vector per Linear layer).

``GANTrainer(..., spectral_norm=True)`` makes one; after each update of D, ``step()`` runs one power
iteration per layer and divides each weight by its estimated spectral norm (``ops.spectral_normalize_``:
one Triton launch for all layers when D's weights sit in one buffer, as FlatAdam and FusedMLP keep them).
At creation it runs ``warmup`` iterations, so D starts normalised and u has converged.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops.spectral import spectral_normalize_

__all__ = ["SpectralNorm"]


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
