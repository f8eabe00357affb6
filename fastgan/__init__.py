"""fastgan: the fastest honest way to train small GANs in PyTorch.

Public API: ``MLPGenerator``, ``MLPDiscriminator``, ``GANTrainer``, ``FusedLinear``, ``fuse`` and the
modules ``ops`` (fused Triton kernels with PyTorch reference paths), ``data`` and ``losses``.
"""
from . import data, losses, ops
from .checkpoint import CheckpointError
from .models import MLPDiscriminator, MLPGenerator
from .nn import FusedLinear, fuse
from .trainer import GANTrainer, NonFiniteLossError

__version__ = "0.1.0"

__all__ = ["MLPGenerator", "MLPDiscriminator", "GANTrainer", "FusedLinear", "fuse", "ops", "data", "losses",
           "CheckpointError", "NonFiniteLossError", "__version__"]
