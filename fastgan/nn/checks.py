"""What a trainer or a sampler checks of any G and D before using them: sizes against the data, labels against
the classes. Plain module inspection (no ops), so every layer above can ask."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["check_gan_models", "check_labels", "first_linear", "last_linear", "begins_with_convolution"]


def check_labels(labels: torch.Tensor, num_classes: int, rows: int | None = None, what: str = "labels") -> None:
    """``labels`` must be a 1-D integer tensor of class indices in [0, num_classes) (``rows`` of them)."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype.is_floating_point \
            or labels.dtype == torch.bool or labels.is_complex():
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"{what} must be a 1-D tensor of integer class indices, got {shape}"
                         + (f" {labels.dtype}" if isinstance(labels, torch.Tensor) else ""))
    if rows is not None and labels.shape[0] != rows:
        raise ValueError(f"{what} has {labels.shape[0]} entries, expected {rows} (one per sample)")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{what} must lie in [0, {num_classes}), got values from {int(labels.min())} to "
                         f"{int(labels.max())}")


def first_linear(module: nn.Module) -> nn.Linear | None:
    """The first ``nn.Linear`` in ``module`` (registration order), or None: used to infer input sizes."""
    return next((m for m in module.modules() if isinstance(m, nn.Linear)), None)


def last_linear(module: nn.Module) -> nn.Linear | None:
    """The last ``nn.Linear`` in ``module`` (registration order), or None: used to infer output sizes."""
    found = None
    for m in module.modules():
        if isinstance(m, nn.Linear):
            found = m
    return found


def _first_layer(module: nn.Module) -> nn.Module | None:
    """The first module (registration order) that holds parameters of its own."""
    return next((m for m in module.modules() if any(True for _ in m.parameters(recurse=False))), None)


def begins_with_convolution(model: nn.Module) -> bool:
    """Whether ``model``'s first layer is a convolution: a DCGAN G (``ConvTranspose2d(nz, ...)``) takes its noise
    as ``(N, nz, 1, 1)``, a convolutional D its samples as images."""
    return isinstance(_first_layer(model), nn.modules.conv._ConvNd)


def _in_features(module: nn.Module, attribute: str) -> int | None:
    value = getattr(module, attribute, None)
    if isinstance(value, int):
        return value
    first = _first_layer(module)
    if isinstance(first, nn.modules.conv._ConvNd):   # G: the noise's channels; D: its input size is a shape
        return first.in_channels if attribute == "latent_dim" else None
    linear = first_linear(module)
    if linear is None or isinstance(linear, nn.modules.lazy.LazyModuleMixin):
        return None  # unknown until the first forward
    return linear.in_features


def check_gan_models(generator: nn.Module, discriminator: nn.Module, features: int, pack: int,
                     latent_dim: int | None) -> int:
    """Check G's output and D's input against the data (``features`` per sample, D sees ``pack`` of them per
    row) and ``latent_dim`` (if given) against G's input; returns G's latent size. ``ValueError`` if not."""
    g_in = _in_features(generator, "latent_dim")
    if g_in is None:
        raise ValueError("cannot infer the generator's latent size: give it a `latent_dim` attribute, "
                         "or an nn.Linear or convolution first layer")
    if latent_dim is not None and latent_dim != g_in:
        raise ValueError(f"latent_dim={latent_dim} does not match the generator, which takes {g_in} inputs")
    d_in = _in_features(discriminator, "in_dim")
    if d_in is not None and d_in != pack * features:
        packed = f" x pack={pack} = {pack * features}" if pack > 1 else ""
        raise ValueError(f"data has {features} features per sample{packed} but the discriminator takes {d_in}")
    g_out = getattr(generator, "out_dim", None)
    if any(isinstance(m, nn.modules.conv._ConvNd) for m in generator.modules()):
        g_out = None   # a convolutional G's output size is a shape: the step checks it
    elif not isinstance(g_out, int):
        g_out = last_linear(generator).out_features if last_linear(generator) is not None else None
    if g_out is not None and g_out != features:
        raise ValueError(f"the generator makes {g_out} features per sample but the data has {features}")
    return g_in
