"""Model presets: every G/D shape the package, its CLI and its benchmarks use, by name."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from .models import ConditionalMLPGenerator, MLPDiscriminator, MLPGenerator, ProjectionDiscriminator

__all__ = ["ModelPreset", "PRESETS", "DATA_PRESETS", "model_description", "build_models"]


@dataclass(frozen=True)
class ModelPreset:
    """A G/D pair by name: G ``latent_dim -> hidden... -> features`` (``output_activation`` head), D
    ``pack * features -> hidden... -> 1``; leaky-ReLU 0.2 hidden layers in both; ``minibatch_std`` > 0: D's
    last layer also reads the minibatch standard deviation over groups of that many rows."""
    latent_dim: int
    hidden: tuple[int, ...]
    output_activation: str | None
    description: str = ""
    minibatch_std: int = 0

    def build(self, features: int, pack: int = 1, hidden: Sequence[int] | None = None,
              latent_dim: int | None = None, num_classes: int | None = None) -> tuple[nn.Module, nn.Module]:
        """``(G, D)`` for data of ``features`` per sample; ``hidden``/``latent_dim`` override the preset's.
        With ``num_classes``: the conditional pair (``ConditionalMLPGenerator``, ``ProjectionDiscriminator``)."""
        hidden = tuple(hidden) if hidden is not None else self.hidden
        if num_classes is not None:
            if pack != 1 or self.minibatch_std:
                raise ValueError("pack > 1 and minibatch_std are not available for conditional models")
            return (ConditionalMLPGenerator(latent_dim=latent_dim or self.latent_dim, num_classes=num_classes,
                                            hidden=hidden, out_dim=features, output_activation=self.output_activation),
                    ProjectionDiscriminator(in_dim=features, num_classes=num_classes, hidden=hidden))
        return (MLPGenerator(latent_dim=latent_dim or self.latent_dim, hidden=hidden, out_dim=features,
                             output_activation=self.output_activation),
                MLPDiscriminator(in_dim=pack * features, hidden=hidden, minibatch_std=self.minibatch_std))


# Every model shape the package, its CLI and its benchmarks use, in one place.
PRESETS: dict[str, ModelPreset] = {
    "classic": ModelPreset(100, (128, 128), "sigmoid", "the classic MLP GAN: G 100-128-128-784, D 784-128-128-1 "
                           "(MLPGenerator/MLPDiscriminator's defaults; fastgan profile, benchmarks)"),
    "digits": ModelPreset(100, (256, 256), "sigmoid", "fastgan train on digits/MNIST: 256 wide, which gives "
                          "recognisable digits in ~3 CPU minutes where 128 gives speckled ones"),
    "mixture-benchmark": ModelPreset(2, (128, 128), None, "the 2-D ring and grid: linear output; the quality "
                                     "benchmarks' models and fastgan train's (its ring/grid recipe was measured "
                                     "with them)"),
}
# The preset `fastgan train` uses for each data set.
DATA_PRESETS = {"digits": "digits", "mnist": "digits", "ring": "mixture-benchmark", "grid": "mixture-benchmark"}


def model_description(data: str, preset: ModelPreset, pack: int) -> dict:
    """A run's model description, what checkpoints keep under extra["model"] (``build_models`` rebuilds G and D
    from it; ``fastgan evaluate`` reads it)."""
    model = {"data": data, "hidden": list(preset.hidden), "pack": pack, "latent_dim": preset.latent_dim,
             "output_activation": preset.output_activation}
    if preset.minibatch_std:   # (absent: none, as in checkpoints written before the option)
        model["minibatch_std"] = preset.minibatch_std
    return model


def build_models(features: int, model: dict):
    """G and D from a run's model description (what checkpoints keep under extra["model"]); conditional
    (``ConditionalMLPGenerator`` / ``ProjectionDiscriminator``) where it has ``num_classes``."""
    preset = ModelPreset(model["latent_dim"], tuple(model["hidden"]), model["output_activation"],
                         minibatch_std=model.get("minibatch_std", 0))
    return preset.build(features, pack=model.get("pack", 1), num_classes=model.get("num_classes"))
