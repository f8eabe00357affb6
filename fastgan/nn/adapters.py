"""How a trainer reads GANs written the way popular PyTorch GAN code writes them, leaving the modules as they are.

A discriminator ending in ``nn.Sigmoid`` (for ``nn.BCELoss``): fastgan's losses take logits, so such a D would be
trained with a second sigmoid; instead its final Sigmoid is found (``final_sigmoid``) and skipped while the
losses read D (``Logits``): the sigmoid is folded into the sigmoid-BCE, stable at any logit. Image GANs: the
trainer keeps samples as rows; ``Shaped`` gives a D its samples in the data's shape (packed samples side by side
in channels, as PacGAN packs images) and a DCGAN G its noise as ``(N, nz, 1, 1)``."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["final_sigmoid", "final_activation", "Logits", "Shaped"]


def final_activation(model: nn.Module, *inputs, kinds=(nn.Sigmoid, nn.Tanh)) -> nn.Module | None:
    """The module of one of ``kinds`` whose output ``model(*inputs)`` returns (itself or a view of it: a
    ``.view(-1)``, a ``.squeeze()``), or None. One forward under ``no_grad`` in eval mode (no BatchNorm statistics
    change; the modes are restored)."""
    outputs: dict[nn.Module, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.__setitem__(m, o))
             for m in model.modules() if type(m) in kinds]
    if not hooks:
        return None
    modes = [(m, m.training) for m in model.modules()]
    try:
        with torch.no_grad():
            out = model.eval()(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
        for m, mode in modes:
            m.training = mode
    if not isinstance(out, torch.Tensor):
        return None
    for module, o in outputs.items():
        if (isinstance(o, torch.Tensor) and o.numel() == out.numel()
                and o.untyped_storage().data_ptr() == out.untyped_storage().data_ptr()):
            return module
    return None


def final_sigmoid(discriminator: nn.Module, *inputs) -> nn.Sigmoid | None:
    """The ``nn.Sigmoid`` whose output ``discriminator(*inputs)`` returns, or None (D returns logits)."""
    return final_activation(discriminator, *inputs, kinds=(nn.Sigmoid,))


class Logits(nn.Module):
    """``discriminator`` read as logits: its forward with ``sigmoid`` (its final ``nn.Sigmoid``) passing its
    input through. Parameters and buffers are the discriminator's own."""

    def __init__(self, discriminator: nn.Module, sigmoid: nn.Sigmoid):
        super().__init__()
        self.discriminator = discriminator
        self.sigmoid = sigmoid   # (registered inside discriminator as well; a deep copy keeps the two one)
        self.num_classes = getattr(discriminator, "num_classes", None)

    def forward(self, *inputs) -> torch.Tensor:
        # the hook lives for one call only: a deep copy of this module (a calibrated D) carries none of it
        hook = self.sigmoid.register_forward_hook(lambda module, args, output: args[0])
        try:
            return self.discriminator(*inputs)
        finally:
            hook.remove()


class Shaped(nn.Module):
    """``module`` given its input reshaped to ``(rows, *shape)`` (``shape[0] = -1``: the channels follow from
    the row's size, so ``pack`` samples of ``(C, H, W)`` side by side become ``pack * C`` channels); for a G, the
    noise ``(N, nz)`` as ``(N, nz, 1, 1)``. Its parameters and buffers are the module's own."""

    def __init__(self, module: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.module, self.shape = module, tuple(shape)
        self.num_classes = getattr(module, "num_classes", None)

    def forward(self, x: torch.Tensor, *rest) -> torch.Tensor:
        return self.module(x.reshape(x.shape[0], *self.shape), *rest)
