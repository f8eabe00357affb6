"""Training across processes with ``torch.distributed`` (started by ``torchrun``), two ways:

* **Sweeps** (``replicas=K``): the K replicas are split over the ranks, rank r training a contiguous slice
  (``shard``); a slice is the ``ReplicaTrainer`` of ``config.shard(start, stop)``: replica k keeps its seed
  ``seed + k`` and its own per-replica settings, so the union of the ranks' replicas is exactly the K-replica
  run. No collective runs during training; metrics and pictures are gathered on rank 0 at the end.
* **One GAN, data-parallel** (no ``replicas``): every rank draws the whole batch (same seed), keeps its
  slice of the rows, and before each optimizer step the gradients are averaged over the ranks with one
  all-reduce per model (``DataParallel``): the same update as one process with the whole batch, to fp32
  rounding. gloo on CPU, NCCL on CUDA.

Collectives have a timeout (``FASTGAN_DIST_TIMEOUT`` seconds, default 300): a rank that dies makes the
others fail with an error rather than hang. ``check_same_config`` compares the ranks' settings first.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

__all__ = ["init", "is_distributed", "rank", "world_size", "shard", "check_same_config", "broadcast_state",
           "DataParallel", "gather", "DistributedError"]


class DistributedError(RuntimeError):
    """A set-up the ranks cannot train with (differing settings, a world size the work does not fit)."""


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def timeout_seconds() -> float:
    text = os.environ.get("FASTGAN_DIST_TIMEOUT", "300")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"FASTGAN_DIST_TIMEOUT must be a number of seconds, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"FASTGAN_DIST_TIMEOUT must be > 0, got {text!r}")
    return value


def init(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment), with NCCL for
    CUDA and gloo for CPU and a timeout on every collective; each CUDA rank takes its ``LOCAL_RANK``'s
    GPU. Returns whether this is a multi-process run. Without torchrun's variables it does nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if is_distributed():
        return True
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds()))
    return True


def shard(replicas: int, rank_: int, world: int) -> tuple[int, int]:
    """Rank ``rank_``'s replicas ``[start, stop)``: ``replicas / world`` each; the first ``replicas % world``
    ranks take one more (an uneven split is allowed only when ``FASTGAN_UNEVEN_SHARDS=1``: otherwise a
    ``DistributedError`` says how to make it even)."""
    if replicas < world:
        raise DistributedError(f"{replicas} replicas cannot be split over {world} processes: use at most "
                               f"{replicas} processes, or more replicas")
    if replicas % world and os.environ.get("FASTGAN_UNEVEN_SHARDS") != "1":
        raise DistributedError(f"{replicas} replicas do not divide evenly over {world} processes: use a multiple "
                               f"of {world} replicas, or set FASTGAN_UNEVEN_SHARDS=1 to let the first "
                               f"{replicas % world} ranks take one more")
    base, extra = divmod(replicas, world)
    start = rank_ * base + min(rank_, extra)
    return start, start + base + (1 if rank_ < extra else 0)


def gather(value) -> list | None:
    """Every rank's ``value`` (picklable) on rank 0, in rank order; None on the other ranks."""
    if not is_distributed():
        return [value]
    out = [None] * world_size() if rank() == 0 else None
    dist.gather_object(value, out, dst=0)
    return out


def check_same_config(values: dict) -> None:
    """``DistributedError`` naming the settings that differ between ranks (all ranks raise it)."""
    if not is_distributed():
        return
    every = [None] * world_size()
    dist.all_gather_object(every, values)
    differ = sorted({k for other in every for k in set(values) | set(other) if other.get(k) != every[0].get(k)})
    if differ:
        detail = "; ".join(f"{k}: " + ", ".join(f"rank {r} {v.get(k)!r}" for r, v in enumerate(every)) for k in differ)
        raise DistributedError(f"the processes were started with different settings ({detail}): every rank must "
                               "run the same command")


def broadcast_state(modules) -> None:
    """Every parameter and buffer of ``modules`` from rank 0 to every rank (one flattened broadcast per
    dtype), so data-parallel ranks start from the same weights whatever seeded them."""
    if not is_distributed():
        return
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        group = [t for t in tensors if t.dtype == dtype]
        flat = torch.cat([t.detach().reshape(-1) for t in group])
        dist.broadcast(flat, src=0)
        offset = 0
        with torch.no_grad():
            for t in group:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()


class DataParallel:
    """One GAN, its batch split over the ranks: ``rows(t)`` is this rank's slice of a whole-batch tensor;
    ``average(optimizer)`` registers the pre-step hook that all-reduces (sums, then divides by the world
    size) every gradient the optimizer will use, flattened into one buffer: one collective per update."""

    def __init__(self):
        self.rank, self.world = rank(), world_size()

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        size = t.shape[0] // self.world
        return t.narrow(0, self.rank * size, size)

    def average(self, optimizer: torch.optim.Optimizer) -> None:
        world = self.world

        def hook(opt, args, kwargs):
            grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
            if not grads:
                return
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat.div_(world)
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
        optimizer.register_step_pre_hook(hook)

    def mean_losses(self, loss_d: torch.Tensor, loss_g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's losses over the whole batch (the mean of the ranks' equal slices)."""
        both = torch.stack((loss_d, loss_g))
        dist.all_reduce(both)
        both.div_(self.world)
        return both[0], both[1]
