"""Training data as one tensor on the training device.

Every loader returns a float32 tensor of shape ``(N, features)``. The trainer samples a batch per step
by drawing random indices on the device and gathering rows: no DataLoader, no host copy per step, and
a step that a CUDA graph can capture.
"""
from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["digits", "mnist", "gaussian_ring", "gaussian_grid", "mixture", "ring_centers", "grid_centers",
           "from_tensor", "load"]


def from_tensor(x, device=None) -> torch.Tensor:
    """The user's own data: any array-like of shape ``(N, ...)``, flattened to ``(N, features)`` float32.

    Raises ``ValueError`` for fewer than one sample, an empty feature axis or non-finite values.
    """
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.dim() < 2:
        raise ValueError(f"data must have shape (N, features...), got shape {tuple(x.shape)}")
    if not (x.dtype.is_floating_point or x.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32,
                                                     torch.int64, torch.bool)):
        raise TypeError(f"data must be real numbers, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"data is empty: shape {tuple(x.shape)}")
    x = x.reshape(x.shape[0], -1).to(device=device, dtype=torch.float32)
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        row = int(bad.any(dim=1).nonzero()[0, 0])
        raise ValueError(f"data contains NaN or inf ({int(bad.sum())} values; first in sample {row})")
    return x.contiguous()


def digits(size: int = 28, device=None, labels: bool = False):
    """scikit-learn's bundled handwritten digits (1,797 images, 8x8), in [0, 1], resized to ``size``.

    The embedded default: real data, no download. Returns ``(1797, size*size)``; with ``labels=True``
    also their classes, ``(1797,)`` int64 in 0..9.
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("fastgan.data.digits needs scikit-learn: pip install 'fastgan[app]'") from e
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)  # (N, 8, 8), in [0, 1]
    if size != 8:
        images = F.interpolate(images[:, None], size=(size, size), mode="bilinear", align_corners=False)
    x = from_tensor(images.clamp_(0.0, 1.0), device=device)
    if labels:
        return x, torch.from_numpy(bunch.target.astype(np.int64)).to(x.device)
    return x


_MNIST_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
_MNIST_LABELS = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}


def _read_idx_labels(path: Path, count: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read MNIST file {path}: {e} (truncated or corrupt? download it again)") from e
    if len(raw) < 8 or int.from_bytes(raw[:4], "big") != 0x00000801:
        raise ValueError(f"{path} is not an IDX label file (bad header): expected magic 0x00000801")
    n = int.from_bytes(raw[4:8], "big")
    if n != count or len(raw) != 8 + n:
        raise ValueError(f"{path} holds {n} labels in {len(raw) - 8} bytes, expected {count} (one per image)")
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)
    if labels.max(initial=0) > 9:
        raise ValueError(f"{path} has labels above 9: not MNIST")
    return labels


def _read_idx_images(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # a truncated gzip stream raises EOFError
        raise ValueError(f"cannot read MNIST file {path}: {e} (truncated or corrupt? download it again)") from e
    if len(raw) < 16 or int.from_bytes(raw[:4], "big") != 0x00000803:
        raise ValueError(f"{path} is not an IDX image file (bad header): expected magic 0x00000803")
    n, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    expected = 16 + n * rows * cols
    if len(raw) != expected:
        raise ValueError(f"{path} is truncated or corrupt: header says {n} images of {rows}x{cols} "
                         f"({expected} bytes), file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows * cols)


def mnist(root, split: str = "train", device=None, labels: bool = False):
    """MNIST images in [0, 1], ``(60000, 784)`` for ``split="train"``, ``(10000, 784)`` for ``"test"``.

    Reads the standard IDX file (``train-images-idx3-ubyte``, gzipped or not) from ``root``, or from a
    torchvision root (``root/MNIST/raw``). Nothing is downloaded: a missing file is a
    ``FileNotFoundError`` saying where to put it; a truncated one a ``ValueError``. ``labels=True`` also
    reads ``train-labels-idx1-ubyte`` (or ``t10k-...``) beside it and returns ``(images, labels)``.
    """
    if split not in _MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root).expanduser()
    name = _MNIST_FILES[split]
    candidates = [d / f for d in (root, root / "MNIST" / "raw", root / "raw") for f in (name, name + ".gz")]
    for path in candidates:
        if path.is_file():
            images = _read_idx_images(path)
            x = from_tensor(torch.from_numpy(images.astype(np.float32) / 255.0), device=device)
            if not labels:
                return x
            label_name = _MNIST_LABELS[split]
            for label_path in (path.with_name(label_name), path.with_name(label_name + ".gz")):
                if label_path.is_file():
                    return x, torch.from_numpy(_read_idx_labels(label_path, x.shape[0])).to(x.device)
            raise FileNotFoundError(f"MNIST labels {label_name}[.gz] not found beside {path}: conditional "
                                    "training needs them (fastgan never downloads data)")
    raise FileNotFoundError(
        f"MNIST file {name}[.gz] not found under {root}. Put the standard IDX file there "
        f"(e.g. {root / (name + '.gz')}) or pass a torchvision root containing MNIST/raw/. "
        "fastgan never downloads data; `--data digits` works offline.")


def ring_centers(modes: int = 8, radius: float = 1.0) -> torch.Tensor:
    """``(modes, 2)`` centres evenly spaced on a circle: angles ``2*pi*k/modes`` for k < modes.

    (The classic bug is ``linspace(0, 2*pi, modes)``, whose last angle equals the first: 7 distinct modes.)
    """
    if not isinstance(modes, int) or modes < 1:
        raise ValueError(f"modes must be a positive integer, got {modes!r}")
    angles = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def grid_centers(side: int = 5, spacing: float = 2.0) -> torch.Tensor:
    """``(side**2, 2)`` centres of a square grid centred on 0 (side 5, spacing 2: {-4,-2,0,2,4}^2)."""
    if not isinstance(side, int) or side < 1:
        raise ValueError(f"side must be a positive integer, got {side!r}")
    axis = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * spacing
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).float()


def mixture(n: int, centers: torch.Tensor, std: float, seed: int = 0, device=None) -> torch.Tensor:
    """``(n, D)`` points from equal Gaussians of ``std`` at ``centers`` (K, D): each point's mode drawn
    uniformly, then its offset, both from ``seed``. The ring and the grid are this mixture."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not std >= 0:
        raise ValueError(f"std must be >= 0, got {std!r}")
    if centers.dim() != 2 or centers.shape[0] < 1:
        raise ValueError(f"centers must be (K >= 1, D), got {tuple(centers.shape)}")
    gen = torch.Generator().manual_seed(seed)
    which = torch.randint(0, centers.shape[0], (n,), generator=gen)
    points = centers[which] + std * torch.randn(n, centers.shape[1], generator=gen)
    return points.to(device)


def gaussian_ring(n: int = 100_000, modes: int = 8, radius: float = 1.0, std: float = 0.01, seed: int = 0,
                  device=None) -> torch.Tensor:
    """``(n, 2)`` points from ``modes`` equal Gaussians on a ring (the PacGAN/VEEGAN ring-8 protocol)."""
    return mixture(n, ring_centers(modes, radius), std, seed, device)


def gaussian_grid(n: int = 100_000, side: int = 5, spacing: float = 2.0, std: float = 0.05, seed: int = 0,
                  device=None) -> torch.Tensor:
    """``(n, 2)`` points from ``side**2`` equal Gaussians on a grid (the PacGAN grid-25 protocol)."""
    return mixture(n, grid_centers(side, spacing), std, seed, device)


DATASETS = ("digits", "mnist", "ring", "grid")


def load(name: str, root: str | os.PathLike | None = None, device=None, labels: bool = False):
    """A data set by CLI name: ``digits`` (default, offline), ``mnist`` (needs ``root``), ``ring``, ``grid``.
    ``labels=True`` (digits and MNIST): ``(data, labels)``."""
    if labels and name not in ("digits", "mnist"):
        raise ValueError(f"--data {name} has no class labels: conditional training needs digits or mnist")
    if name == "digits":
        return digits(device=device, labels=labels)
    if name == "mnist":
        if root is None:
            raise ValueError("--data mnist needs --data-root DIR holding train-images-idx3-ubyte[.gz]")
        return mnist(root, device=device, labels=labels)
    if name == "ring":
        return gaussian_ring(device=device)
    if name == "grid":
        return gaussian_grid(device=device)
    raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
