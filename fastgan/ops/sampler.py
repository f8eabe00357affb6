"""The Philox batch sampler: a training batch drawn on the device in one launch (data rows and G's noise).

``sample_batch`` launches ``_sample_kernel``; ``DeviceSampler`` keeps its seed and call counter on the device,
so a CUDA graph replays fresh draws and a checkpoint resumes them exactly. One launch draws K replicas'
batches, each replica's the draws of a single run with its seed.
"""
from __future__ import annotations

import torch

from . import sampler_kernels as kernels
from ._runtime import cdiv, kernel_launches

__all__ = ["sample_batch", "sample_programs", "philox_fill", "DeviceSampler"]

_SAMPLE_BLOCK_M, _SAMPLE_BLOCK_F = 16, 64


def sample_batch(data: torch.Tensor, x: torch.Tensor, z: torch.Tensor, seed: torch.Tensor,
                 counter: torch.Tensor) -> None:
    """One launch: ``x[r] = data[i_r]`` with ``i_r`` uniform over data's rows, and ``z`` standard normal.

    ``seed`` and ``counter`` are int64 device tensors; the counter (one element) advances by the grid size on
    every call (a call reads its number from it), so repeated calls and graph replays draw afresh. K replicas
    in one launch: ``x`` ``(K, batch, features)``, ``z`` ``(K, batch, latent)`` and ``seed`` ``(K,)``, replica
    k drawing what a one-replica call (2-d ``x``, ``z``) with seed ``seed[k]`` draws at the same call number."""
    if x.dim() != z.dim() or x.dim() not in (2, 3):
        raise ValueError(f"sample_batch: x {tuple(x.shape)} and z {tuple(z.shape)} must both be (batch, columns) "
                         "or both (replicas, batch, columns)")
    x3, z3 = (x, z) if x.dim() == 3 else (x.unsqueeze(0), z.unsqueeze(0))
    replicas, batch = x3.shape[:2]
    if z3.shape[:2] != (replicas, batch) or data.shape[1] != x3.shape[2] or x3.stride(2) != 1 or z3.stride(2) != 1:
        raise ValueError(f"sample_batch: x {tuple(x.shape)} and z {tuple(z.shape)} must have the same replicas and "
                         f"rows, x data's {data.shape[1]} features, both unit column stride")
    if seed.numel() != replicas or counter.numel() != 1:
        raise ValueError(f"sample_batch: one seed per replica ({replicas}) and one counter, got {seed.numel()} "
                         f"and {counter.numel()}")
    if data.shape[0] >= 2 ** 32:
        raise ValueError("sample_batch draws 32-bit indices: at most 2^32 - 1 data rows")
    kernels._sample_kernel[_grid(batch, x3.shape[2], z3.shape[2], replicas)](
        data, data.stride(0), data.stride(1), data.shape[0], data.shape[1], x3, x3.stride(0), x3.stride(1),
        z3, z3.stride(0), z3.stride(1), z3.shape[2], batch, seed, counter,
        BLOCK_M=_SAMPLE_BLOCK_M, BLOCK_F=_SAMPLE_BLOCK_F)
    kernel_launches["_sample_kernel"] += 1


def _grid(batch: int, features: int, latent: int, replicas: int = 1) -> tuple[int, int, int]:
    """Row blocks x column blocks of the wider of x (the data's features) and z (the noise) x replicas."""
    return (cdiv(batch, _SAMPLE_BLOCK_M), cdiv(max(features, latent, 1), _SAMPLE_BLOCK_F),
            replicas)


def sample_programs(batch: int, features: int, latent: int, replicas: int = 1) -> int:
    """How much ``sample_batch``'s counter advances per call for ``batch`` rows of ``features`` data columns
    and ``latent`` noise columns (each of ``replicas``): one per program."""
    rows, columns, replicas = _grid(batch, features, latent, replicas)
    return rows * columns * replicas


def philox_fill(out: torch.Tensor, seed: torch.Tensor, counter: torch.Tensor, uniform: bool = False) -> torch.Tensor:
    """One launch: ``out`` (``(rows, columns)``, or ``(K, rows, columns)`` with ``seed`` ``(K,)``) filled with
    standard normal draws (``uniform``: uniform in [0, 1)), replica k's those of a one-replica call with seed
    ``seed[k]`` at the same call number; ``counter`` advances by the grid size. Returns ``out``."""
    out3 = out if out.dim() == 3 else out.unsqueeze(0)
    if out.dim() not in (2, 3) or out.dtype != torch.float32 or out3.stride(2) != 1 or \
            seed.numel() != out3.shape[0] or counter.numel() != 1:
        raise ValueError(f"philox_fill: out must be float32 (rows, columns) or (replicas, rows, columns) with unit "
                         f"column stride and one seed per replica, got {tuple(out.shape)} and {seed.numel()} seeds")
    kernels._fill_kernel[_grid(out3.shape[1], out3.shape[2], 0, out3.shape[0])](
        out3, out3.stride(0), out3.stride(1), out3.shape[1], out3.shape[2], seed, counter, UNIFORM=uniform,
        BLOCK_M=_SAMPLE_BLOCK_M, BLOCK_F=_SAMPLE_BLOCK_F)
    kernel_launches["_fill_kernel"] += 1
    return out


class DeviceSampler:
    """The Philox sampler's state: a seed (``replicas`` seeds: ``seed + k`` for replica k) and a counter, int64
    on the device (so a graph replays fresh draws). Each of a call's P programs adds 1 to the counter, and a
    call's number is counter // P, so P (which follows the batch size) is kept too: when it changes, ``realign``
    moves the counter to the next call boundary of the new P, and no call number repeats. ``state_dict`` holds
    all three (exact resume). Replica k of a ``replicas=K`` sampler draws what ``DeviceSampler(seed + k)`` does."""

    def __init__(self, seed: int, device: torch.device, replicas: int | None = None):
        seeds = [(seed + k) & 0x7FFFFFFFFFFFFFFF for k in range(replicas or 1)]
        self.replicas = replicas
        self.seed = torch.tensor(seeds, dtype=torch.int64, device=device)
        self.counter = torch.zeros(1, dtype=torch.int64, device=device)
        self.programs: int | None = None    # P of the calls so far (None: no call yet)
        # instance noise and augmentation's uniforms: calls of their own, each counted apart (a run without
        # them never touches their counters)
        self.noise_counter = torch.zeros(1, dtype=torch.int64, device=device)
        self.noise_programs: int | None = None
        self.uniform_counter = torch.zeros(1, dtype=torch.int64, device=device)
        self.uniform_programs: int | None = None

    def draw(self, data: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> None:
        """``sample_batch`` into ``x`` and ``z`` (2-d; ``(K, batch, columns)`` for K replicas), the counter
        first realigned if the batch size changed (host-side; a no-op inside a graph capture)."""
        self.realign(sample_programs(x.shape[-2], x.shape[-1], z.shape[-1], self.replicas or 1))
        sample_batch(data, x, z, self.seed, self.counter)

    def normal(self, like: torch.Tensor) -> torch.Tensor:
        """Instance noise of ``like``'s shape (``(rows, columns)``; ``(K, rows, columns)`` for K replicas): one
        ``philox_fill`` launch, its counter realigned as ``draw``'s."""
        out = torch.empty(like.shape, device=like.device, dtype=torch.float32)
        programs = sample_programs(out.shape[-2], out.shape[-1], 0, self.replicas or 1)
        self.noise_programs = _realign(self.noise_counter, self.noise_programs, programs)
        return philox_fill(out, self.seed, self.noise_counter)

    def uniform(self, rows: int, columns: int) -> torch.Tensor:
        """Augmentation's uniforms in [0, 1), ``(rows, columns)`` (``(K, rows, columns)`` for K replicas): one
        ``philox_fill`` launch, its own counter realigned as ``draw``'s."""
        shape = (rows, columns) if self.replicas is None else (self.replicas, rows, columns)
        out = torch.empty(shape, device=self.seed.device, dtype=torch.float32)
        programs = sample_programs(rows, columns, 0, self.replicas or 1)
        self.uniform_programs = _realign(self.uniform_counter, self.uniform_programs, programs)
        return philox_fill(out, self.seed, self.uniform_counter, uniform=True)

    def realign(self, programs: int) -> None:
        """Before calls with ``programs`` programs each: a no-op when P is unchanged (the common case, and
        inside a graph capture); otherwise counter = ceil(counter / P_old) * P_new, on the device."""
        self.programs = _realign(self.counter, self.programs, programs)

    def state_dict(self) -> dict:
        return {"seed": self.seed.clone(), "counter": self.counter.clone(), "programs": self.programs,
                "noise_counter": self.noise_counter.clone(), "noise_programs": self.noise_programs,
                "uniform_counter": self.uniform_counter.clone(), "uniform_programs": self.uniform_programs}

    def check_state(self, state) -> None:
        """ValueError unless ``state`` is a state of this sampler (checked before a load changes anything)."""
        ok = isinstance(state, dict) and all(isinstance(state.get(k), torch.Tensor) and state[k].shape == shape
                                             and state[k].dtype == torch.int64
                                             for k, shape in (("seed", self.seed.shape), ("counter", (1,))))
        programs = state.get("programs") if isinstance(state, dict) else None
        if not ok or not (programs is None or (isinstance(programs, int) and programs > 0)):
            raise ValueError("the checkpoint's sampler state is not a Philox sampler state (seed, counter, programs)")

    def load_state_dict(self, state: dict) -> None:
        self.check_state(state)
        self.seed.copy_(state["seed"])
        self.counter.copy_(state["counter"])
        self.programs = state["programs"]
        for name in ("noise", "uniform"):   # (a checkpoint written before they were drawn here: none drawn yet)
            if f"{name}_counter" in state:
                getattr(self, f"{name}_counter").copy_(state[f"{name}_counter"])
                setattr(self, f"{name}_programs", state[f"{name}_programs"])


def _realign(counter: torch.Tensor, old: int | None, programs: int) -> int:
    """``counter`` moved to the next call boundary of ``programs`` per call when that differs from ``old``
    (ceil(counter / old) * programs, on the device; host-side no-op otherwise); returns ``programs``."""
    if old is not None and old != programs:
        counter.copy_((counter + (old - 1)) // old * programs)
    return programs
