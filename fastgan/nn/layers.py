"""A layer fastgan's models use beside Linear, activations and Maxout: the minibatch standard deviation."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["MinibatchStd", "minibatch_std"]


def minibatch_std(h: torch.Tensor, group: int) -> torch.Tensor:
    """``h`` ``(..., N, F)`` with one feature appended, ``(..., N, F + 1)``: for each group of ``group``
    consecutive rows, the standard deviation over the group of each feature (population, +1e-8 under the
    root), averaged over the features (Karras et al. 2018's minibatch standard deviation). Where ``N`` is not
    a multiple, the last group takes the rows left over; with ``N < group`` all rows are one group. Leading
    dimensions (replicas) are separate batches."""
    n, features = h.shape[-2], h.shape[-1]
    group = min(group, n)
    lead = h.shape[:-2]

    def spread(x):   # (..., groups, rows, F) -> (..., groups); two passes: CPU's var over a middle dim is slow
        centred = x - x.mean(dim=-2, keepdim=True)
        return centred.square().mean(dim=-2).add(1e-8).sqrt().mean(dim=-1)

    if n % group == 0:   # (a training batch: one reshape, the fewest launches)
        column = spread(h.reshape(*lead, n // group, group, features)).repeat_interleave(group, dim=-1)
    else:                # groups of ``group`` rows, then the last group: the rest
        whole = (n // group - 1) * group
        column = spread(h[..., whole:, :].unsqueeze(-3)).expand(*lead, n - whole)
        if whole:
            head = spread(h[..., :whole, :].reshape(*lead, whole // group, group, features))
            column = torch.cat([head.repeat_interleave(group, dim=-1), column], dim=-1)
    return torch.cat([h, column.unsqueeze(-1).to(h.dtype)], dim=-1)


class MinibatchStd(nn.Module):
    """``minibatch_std``: ``(..., N, F) -> (..., N, F + 1)``, each row given its group's mean standard deviation
    over the batch, so D can tell a batch of near-copies (a collapsed G) from the data's spread. No parameters.
    D's output then depends on which rows share its batch: D-guided samplers score candidates in batches too."""

    def __init__(self, group: int = 4):
        super().__init__()
        if isinstance(group, bool) or not isinstance(group, int) or group < 2:
            raise ValueError(f"the minibatch standard deviation's group must be an integer >= 2, got {group!r}")
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return minibatch_std(x, self.group)

    def extra_repr(self) -> str:
        return f"group={self.group}"
