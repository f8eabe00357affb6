"""A run in TensorBoard (the optional extra ``pip install "fastgan[tensorboard]"``): the losses at every log point,
a grid of samples at the end of each ``fit`` (image data), and quality metrics when the CLI measures them.
The losses and metrics also stay in ``history`` and metrics.json; this only draws them where people look."""
from __future__ import annotations

import math
import os

import torch

__all__ = ["Board", "image_grid"]

SAMPLES = 64


def image_grid(images: torch.Tensor, columns: int | None = None) -> torch.Tensor:
    """``(N, C, H, W)`` images in [0, 1] tiled into one ``(C, rows * (H + 1) + 1, columns * (W + 1) + 1)`` image
    with 1-pixel white borders."""
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = images.new_ones(c, rows * (h + 1) + 1, columns * (w + 1) + 1)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        canvas[:, 1 + r * (h + 1):(r + 1) * (h + 1), 1 + col * (w + 1):(col + 1) * (w + 1)] = image
    return canvas


class Board:
    """One run's TensorBoard log in ``log_dir`` (``torch.utils.tensorboard``)."""

    def __init__(self, log_dir: str | os.PathLike):
        try:
            from torch.utils.tensorboard import SummaryWriter   # (an optional extra: imported only when asked)
        except ImportError as e:
            raise ImportError('TensorBoard logging needs the tensorboard package: pip install "fastgan[tensorboard]"'
                              ) from e
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def losses(self, rows: list[tuple]) -> None:
        """``history`` rows ``(step, loss_d, loss_g)``; a replica run's lists of K values: their mean (and each)."""
        for step, loss_d, loss_g in rows:
            for name, value in (("D", loss_d), ("G", loss_g)):
                if isinstance(value, (list, tuple)):
                    for k, v in enumerate(value):
                        self.writer.add_scalar(f"loss/{name}/replica_{k}", v, step)
                    value = sum(value) / len(value)
                self.writer.add_scalar(f"loss/{name}", value, step)

    def samples(self, samples: torch.Tensor, shape: tuple[int, ...] | None, step: int) -> None:
        """A grid of ``samples`` (in the data's ``shape``, or square one-channel rows) at ``step``; nothing for
        data that are not images (2-d mixtures)."""
        samples = samples.detach().float().cpu()
        if shape is None:
            side = math.isqrt(samples[0].numel())
            if side * side != samples[0].numel() or side < 4:
                return
            shape = (1, side, side)
        images = samples.reshape(-1, *shape)
        if images.min() < 0:   # a Tanh G's [-1, 1] shown as [0, 1]
            images = (images + 1) / 2
        self.writer.add_image("samples", image_grid(images.clamp(0, 1)), step)

    def metrics(self, metrics: dict, step: int, prefix: str = "quality") -> None:
        """Every number of ``metrics`` (nested dicts flattened into tags)."""
        for key, value in metrics.items():
            if isinstance(value, dict):
                self.metrics(value, step, f"{prefix}/{key}")
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        self.writer.close()
