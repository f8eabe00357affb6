"""The Philox batch sampler: a training batch drawn on the device in one launch (data rows and G's noise).

``sample_batch`` launches ``_sample_kernel``; ``DeviceSampler`` keeps its seed and call counter on the device,
so a CUDA graph replays fresh draws and a checkpoint resumes them exactly.
"""
from __future__ import annotations

import torch

from . import sampler_kernels as kernels
from ._runtime import kernel_launches, triton

__all__ = ["sample_batch", "sample_programs", "DeviceSampler"]

_SAMPLE_BLOCK_M, _SAMPLE_BLOCK_F = 16, 64


def sample_batch(data: torch.Tensor, x: torch.Tensor, z: torch.Tensor, seed: torch.Tensor,
                 counter: torch.Tensor) -> None:
    """One launch: ``x[r] = data[i_r]`` with ``i_r`` uniform over data's rows, and ``z`` standard normal.

    ``seed`` and ``counter`` are one-element int64 device tensors; the counter advances by the grid size on
    every call (a call reads its number from it), so repeated calls and graph replays draw afresh."""
    batch = x.shape[0]
    if z.shape[0] != batch or data.shape[1] != x.shape[1] or x.stride(1) != 1 or z.stride(1) != 1:
        raise ValueError(f"sample_batch: x {tuple(x.shape)} and z {tuple(z.shape)} must have the same rows, "
                         f"x data's {data.shape[1]} features, both unit column stride")
    if data.shape[0] >= 2 ** 32:
        raise ValueError("sample_batch draws 32-bit indices: at most 2^32 - 1 data rows")
    kernels._sample_kernel[_grid(batch, x.shape[1], z.shape[1])](
        data, data.stride(0), data.stride(1), data.shape[0], data.shape[1], x, x.stride(0), z, z.stride(0),
        z.shape[1], batch, seed, counter, BLOCK_M=_SAMPLE_BLOCK_M, BLOCK_F=_SAMPLE_BLOCK_F)
    kernel_launches["_sample_kernel"] += 1


def _grid(batch: int, features: int, latent: int) -> tuple[int, int]:
    """Row blocks x column blocks of the wider of x (the data's features) and z (the noise)."""
    return triton.cdiv(batch, _SAMPLE_BLOCK_M), triton.cdiv(max(features, latent, 1), _SAMPLE_BLOCK_F)


def sample_programs(batch: int, features: int, latent: int) -> int:
    """How much ``sample_batch``'s counter advances per call for ``batch`` rows of ``features`` data columns
    and ``latent`` noise columns: one per program."""
    rows, columns = _grid(batch, features, latent)
    return rows * columns


class DeviceSampler:
    """The Philox sampler's state: a seed and a counter, both int64 on the device (so a graph replays fresh
    draws). Each of a call's P programs adds 1 to the counter, and a call's number is counter // P, so P
    (which follows the batch size) is kept too: when it changes, ``realign`` moves the counter to the next
    call boundary of the new P, and no call number repeats. ``state_dict`` holds all three (exact resume)."""

    def __init__(self, seed: int, device: torch.device):
        self.seed = torch.tensor([seed & 0x7FFFFFFFFFFFFFFF], dtype=torch.int64, device=device)
        self.counter = torch.zeros(1, dtype=torch.int64, device=device)
        self.programs: int | None = None    # P of the calls so far (None: no call yet)

    def realign(self, programs: int) -> None:
        """Before calls with ``programs`` programs each: a no-op when P is unchanged (the common case, and
        inside a graph capture); otherwise counter = ceil(counter / P_old) * P_new, on the device."""
        if self.programs is not None and self.programs != programs:
            calls = (self.counter + (self.programs - 1)) // self.programs
            self.counter.copy_(calls * programs)
        self.programs = programs

    def state_dict(self) -> dict:
        return {"seed": self.seed.clone(), "counter": self.counter.clone(), "programs": self.programs}

    @staticmethod
    def check_state(state) -> None:
        """ValueError unless ``state`` is a sampler state (checked before a load changes anything)."""
        ok = isinstance(state, dict) and all(isinstance(state.get(k), torch.Tensor) and state[k].shape == (1,)
                                             and state[k].dtype == torch.int64 for k in ("seed", "counter"))
        programs = state.get("programs") if isinstance(state, dict) else None
        if not ok or not (programs is None or (isinstance(programs, int) and programs > 0)):
            raise ValueError("the checkpoint's sampler state is not a Philox sampler state (seed, counter, programs)")

    def load_state_dict(self, state: dict) -> None:
        self.check_state(state)
        self.seed.copy_(state["seed"])
        self.counter.copy_(state["counter"])
        self.programs = state["programs"]
