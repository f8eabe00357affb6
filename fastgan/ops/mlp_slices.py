"""How the whole-MLP kernels cut an MLP's wide end into slices (``ops/mlp.py`` launches them).

At GAN batch sizes the row blocks alone would occupy a few of a GPU's SMs; ``slice_plan`` gives a pass a
second grid axis over the wide end (>= 256 columns: D's inputs, G's outputs), and ``Scratch`` holds what the
slices exchange (see ``mlp_kernels``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ._runtime import cdiv, multiprocessors
from .mlp_kernels import ROWS_BLOCK_MAX

__all__ = ["SlicePlan", "slice_plan", "Scratch", "sms_per_replica"]

_WIDE = 256        # an MLP end this wide (layer 0's inputs, the last layer's outputs) is cut into slices
_SLICE_MIN = 32    # the narrowest slice, in columns


@dataclass(frozen=True)
class SlicePlan:
    """How a pass cuts the MLP's wide end: ``split`` "input" (layer 0's reduction), "output" (the last
    layer's outputs) or "none"; ``slices`` programs per row block, ``width`` columns each; ``partial`` is the
    width of the partial sums they exchange (layer 0's outputs, or the last layer's inputs)."""
    split: str
    slices: int
    width: int
    partial: int


@lru_cache(maxsize=None)
def slice_plan(spec, rows: int, forward: bool, loss: bool, sms: int) -> SlicePlan:
    """For a pass of an ``MLPSpec`` over ``rows`` rows: enough slices that the row blocks of the largest
    BLOCK_M times the slices reach ``sms`` programs; none when the row blocks alone do or the MLP has no wide
    end. The wider end is cut: the output end (a generator: forward by slice, backward's first product reduced
    over the slices; not with the loss, whose output is one column), or the input end when the pass runs the
    forward (a discriminator: layer 0's reduction over the slices)."""
    dims = spec.dims
    ends = [("output", dims[-1], dims[-2])] if not loss else []
    ends += [("input", dims[0], dims[1])] if forward else []
    ends = [end for end in ends if end[1] >= _WIDE]
    if not ends:
        return SlicePlan("none", 1, max(dims[0], dims[-1]), 0)
    split, wide, partial = max(ends, key=lambda end: end[1])   # the wider end; the output end on a tie
    wanted = cdiv(sms, cdiv(max(rows, 1), ROWS_BLOCK_MAX))
    if wanted < 2:
        return SlicePlan("none", 1, wide, 0)
    width = cdiv(cdiv(wide, wanted), _SLICE_MIN) * _SLICE_MIN
    return SlicePlan(split, cdiv(wide, width), width, partial)


def sms_per_replica(device: torch.device, replicas: int) -> int:
    """The SMs one of ``replicas`` MLPs launched together should fill (``slice_plan``'s ``sms``): K replicas'
    row blocks share the GPU (the classic D's 256 rows at K = 32 fill an H100 with no slices)."""
    return cdiv(multiprocessors(device), replicas)


class Scratch:
    """What the slices of the passes over ``rows`` (row counts) exchange: their partial sums and one arrival
    count per row block (zero between launches: the last program to arrive resets it). A step keeps one per
    MLP and reuses it across its passes (they run in order on one stream). ``replicas``: K MLPs of the spec,
    each with its own, ``part_stride`` and ``count_stride`` elements apart."""

    def __init__(self, spec, rows: tuple[int, ...], device: torch.device, replicas: int = 1):
        sms = sms_per_replica(device, replicas)
        plans = [(r, slice_plan(spec, r, forward, loss, sms)) for r in rows
                 for forward, loss in ((True, False), (False, False), (True, True))]
        self.rows, self.replicas = tuple(rows), replicas
        self.part_stride = max(p.slices * r * p.partial for r, p in plans)
        self.count_stride = cdiv(max(rows), 16)
        self.part = torch.empty(replicas * self.part_stride, device=device, dtype=torch.float32)
        self.counts = torch.zeros(replicas * self.count_stride, device=device, dtype=torch.int32)
