"""fastgan: the fastest honest way to train small GANs in PyTorch.

Public API: ``MLPGenerator``, ``MLPDiscriminator``, ``GANTrainer`` (its settings: ``TrainConfig``),
``FusedLinear``, ``FusedMLP``, ``fuse`` and the
modules ``ops`` (fused Triton kernels with PyTorch reference paths), ``data``, ``losses``, ``metrics``
(generation quality), ``optim`` (``FlatAdam``) and ``profiling``.
"""
from . import data, losses, metrics, ops, optim, profiling
from .checkpoint import CheckpointError
from .config import TrainConfig
from .models import ConditionalMLPGenerator, MLPDiscriminator, MLPGenerator, ProjectionDiscriminator
from .nn import FusedLinear, FusedMLP, fuse
from .trainer import GANTrainer, NonFiniteLossError, TrainingInterrupted

__version__ = "0.1.0"

__all__ = ["MLPGenerator", "MLPDiscriminator", "ConditionalMLPGenerator", "ProjectionDiscriminator", "GANTrainer",
           "TrainConfig", "FusedLinear", "FusedMLP", "fuse", "ops",
           "data", "losses",
           "metrics", "optim", "profiling",
           "CheckpointError", "NonFiniteLossError", "TrainingInterrupted", "__version__"]
