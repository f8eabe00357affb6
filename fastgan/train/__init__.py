"""Training: the settings (``config``), the backends, the one loop, the single and the replica trainer, the
step builders, CUDA graphs, data parallelism and the checkpoint schemas."""
from . import losses
from .config import TrainConfig
from .loop import NonFiniteLossError, TrainingInterrupted
from .replicas import ReplicaTrainer
from .trainer import GANTrainer

__all__ = ["TrainConfig", "GANTrainer", "ReplicaTrainer", "NonFiniteLossError", "TrainingInterrupted", "losses"]
