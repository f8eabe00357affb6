"""Pictures people look at: sample grids, 2-D sample scatters over mode centres, loss curves (PNG)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

__all__ = ["save_image_grid", "save_scatter", "save_scatter_panels", "save_loss_curve", "pyplot", "save_figure"]


def pyplot():
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("plots need matplotlib: pip install 'fastgan[app]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_image_grid(samples: torch.Tensor, path: str | os.PathLike, columns: int | None = None,
                    title: str | None = None) -> Path:
    """Save ``(N, side*side)`` samples in [0, 1] as a square grid of grayscale images."""
    plt = pyplot()
    samples = samples.detach().float().cpu()
    n, features = samples.shape
    side = math.isqrt(features)
    if side * side != features:
        raise ValueError(f"samples of {features} features are not square images")
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = torch.ones(rows * (side + 1) + 1, columns * (side + 1) + 1)
    for i, image in enumerate(samples.clamp(0, 1).reshape(n, side, side)):
        r, c = divmod(i, columns)
        canvas[1 + r * (side + 1):(r + 1) * (side + 1), 1 + c * (side + 1):(c + 1) * (side + 1)] = image
    fig, ax = plt.subplots(figsize=(columns * 0.6 + 0.4, rows * 0.6 + (0.8 if title else 0.4)))
    ax.imshow(canvas.numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def save_scatter(samples: torch.Tensor | dict[str, torch.Tensor], path: str | os.PathLike,
                 centers: torch.Tensor | None = None, real: torch.Tensor | None = None, title: str | None = None) -> Path:
    """Scatter of 2-D samples, with the real data faintly behind and the mode centres marked; ``samples`` a dict
    ``{panel title: samples}``: a panel each, side by side over the same axes."""
    plt = pyplot()
    panels = samples if isinstance(samples, dict) else {None: samples}
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5 + 0.3 * (len(panels) > 1)), squeeze=False,
                             sharex=True, sharey=True)
    r = real.detach().float().cpu()[:5000] if real is not None else None
    c = centers.detach().float().cpu() if centers is not None else None
    for i, (ax, (name, panel)) in enumerate(zip(axes.flat, panels.items())):
        if r is not None:
            ax.scatter(r[:, 0], r[:, 1], s=2, c="0.8", label="real")
        s = panel.detach().float().cpu()
        ax.scatter(s[:, 0], s[:, 1], s=3, c="tab:blue", alpha=0.6, label="generated")
        if c is not None:
            ax.scatter(c[:, 0], c[:, 1], marker="x", s=60, c="tab:red", label="mode centres")
        ax.set_aspect("equal")
        if i == 0:
            ax.legend(loc="upper right", fontsize=8)
        if name:
            ax.set_title(name, fontsize=10)
    if title and len(panels) > 1:
        fig.suptitle(title, fontsize=11)
    elif title:
        axes[0, 0].set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def save_scatter_panels(samples: torch.Tensor, path: str | os.PathLike, centers: torch.Tensor | None = None,
                        real: torch.Tensor | None = None, title: str | None = None) -> Path:
    """``(K, N, 2)`` samples of K models, a small scatter panel each (numbered), over the same axes."""
    plt = pyplot()
    s = samples.detach().float().cpu()
    k = s.shape[0]
    columns = min(k, 4)
    rows = math.ceil(k / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.6 * rows + 0.4), squeeze=False,
                             sharex=True, sharey=True)
    r = real.detach().float().cpu()[:3000] if real is not None else None
    c = centers.detach().float().cpu() if centers is not None else None
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.set_axis_off()
            continue
        if r is not None:
            ax.scatter(r[:, 0], r[:, 1], s=1, c="0.85")
        ax.scatter(s[i, :, 0], s[i, :, 1], s=1, c="tab:blue", alpha=0.5)
        if c is not None:
            ax.scatter(c[:, 0], c[:, 1], marker="x", s=20, c="tab:red")
        ax.set_title(f"replica {i}", fontsize=8)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def save_loss_curve(history: dict, path: str | os.PathLike, title: str | None = None) -> Path:
    """D and G losses per step, raw (faint) and smoothed over a moving window."""
    plt = pyplot()
    steps = torch.tensor(history["step"], dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, color, label in (("loss_d", "tab:red", "D loss"), ("loss_g", "tab:blue", "G loss")):
        values = torch.tensor(history[key], dtype=torch.float64)
        if values.numel() == 0:
            continue
        ax.plot(steps, values, color=color, alpha=0.2, linewidth=0.6)
        window = max(1, values.numel() // 50)
        smooth = torch.nn.functional.avg_pool1d(values[None, None], window, stride=1).flatten()
        ax.plot(steps[window - 1:], smooth, color=color, label=f"{label} (mean of {window})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "training losses")
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path) -> Path:
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
