"""Named ranges around the phases of a training step, for Nsight Systems and torch.profiler.

``phase(name)`` marks a phase (``data``, ``G.forward``, ``D.forward.real``, ``D.backward``, ``D.optim``,
...): an NVTX range on CUDA builds (what ``nsys`` shows) and a ``record_function`` range (what
torch.profiler's trace shows). Phases cost nothing unless enabled: ``fastgan.profiling.profile_trainer``
and ``FASTGAN_NVTX=1`` turn them on. The step uses this module; the profiler that drives a trainer lives
above it, in ``fastgan.profiling``.
"""
from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["phase", "enable_phases"]

_enabled = os.environ.get("FASTGAN_NVTX", "0") == "1"


def enable_phases(on: bool = True) -> None:
    global _enabled
    _enabled = on


@contextlib.contextmanager
def _range(name: str):
    nvtx = torch.cuda.is_available()
    if nvtx:
        torch.cuda.nvtx.range_push(name)
    try:
        with torch.profiler.record_function(name):
            yield
    finally:
        if nvtx:
            torch.cuda.nvtx.range_pop()


def phase(name: str):
    """A named range around one phase of the step, or a no-op when phases are off."""
    return _range(name) if _enabled else contextlib.nullcontext()
