"""fastgan: the fastest honest way to train small GANs in PyTorch.

Public API: ``MLPGenerator``, ``MLPDiscriminator``, ``GANTrainer`` (its settings: ``TrainConfig``),
``FusedLinear``, ``FusedMLP``, ``fuse`` and the modules ``ops`` (fused Triton kernels with PyTorch reference
paths), ``nn``, ``data``, ``losses``, ``metrics`` (generation quality), ``optim`` (``FlatAdam``), ``sampling``,
``train`` and ``profiling``. docs/architecture.md walks the package.
"""
from . import data, metrics, nn, ops, optim, profiling, sampling, train
from .checkpoint import CheckpointError
from .nn import (ConditionalMLPGenerator, FusedLinear, FusedMLP, MLPDiscriminator, MLPGenerator,
                 ProjectionDiscriminator, fuse)
from .train import GANTrainer, NonFiniteLossError, TrainConfig, TrainingInterrupted, losses

__version__ = "0.1.0"

__all__ = ["MLPGenerator", "MLPDiscriminator", "ConditionalMLPGenerator", "ProjectionDiscriminator", "GANTrainer",
           "TrainConfig", "FusedLinear", "FusedMLP", "fuse", "ops", "nn", "data", "losses", "metrics", "optim",
           "sampling", "train", "profiling", "CheckpointError", "NonFiniteLossError", "TrainingInterrupted",
           "__version__"]
