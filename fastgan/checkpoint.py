"""Checkpoint files: atomic writes, no code execution on load, corruption detected before use.

Layout: ``MAGIC`` (16 bytes) + SHA-256 of the payload (32 bytes) + the payload, which is a
``torch.save`` of plain containers and tensors. Loading checks the digest first, then unpickles with
``torch.load(weights_only=True)``. The digest detects *corruption* (a truncated or damaged file is a
``CheckpointError``), not tampering: whoever edits a file can recompute it. What protects a user from a
malicious file is ``weights_only=True``: unpickling builds tensors and plain containers only, never runs
code. Writing goes to a temporary file in the same folder, is fsync'ed, then renamed over the target:
a crash mid-save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "TRAINER_FORMAT", "check_trainer_state"]

MAGIC = b"FASTGAN-CKPT-v1\n"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted: missing, truncated, tampered or of another layout."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(hashlib.sha256(payload).digest())
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """Read and verify a checkpoint written by ``save_checkpoint``; ``CheckpointError`` if untrustworthy."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    raw = path.read_bytes()
    header = len(MAGIC) + 32
    if len(raw) < header or not raw.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a fastgan checkpoint (bad header; truncated or another format)")
    digest, payload = raw[len(MAGIC):header], raw[header:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path} is corrupt: its contents do not match the stored SHA-256 "
                              "(truncated or modified after it was written)")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheckpointError(f"{path} cannot be loaded safely: {e}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


# -- the GANTrainer's checkpoint schema -----------------------------------------------------------------
# {"format": TRAINER_FORMAT, "version": 1, "step": int, "generator"/"discriminator"/"ema": state dicts,
#  "optimizer_g"/"optimizer_d": torch.optim.Adam or FlatAdam state dicts, "rng": the trainer RNG's state,
#  "history": {"step", "loss_d", "loss_g": lists}, "config": TrainConfig.to_dict(), "extra": anything}

TRAINER_FORMAT = "fastgan.GANTrainer"


def check_trainer_state(state: dict, modules: dict, optimizers: dict, rng_state: torch.Tensor) -> None:
    """Raise ``ValueError`` (or KeyError/TypeError) if ``state`` does not fit a trainer made of ``modules``
    (name -> nn.Module: generator, discriminator, ema when kept), ``optimizers`` (name -> optimizer) and an
    RNG whose state looks like ``rng_state``. Nothing is changed: loading happens after this passes."""
    from .optim import FlatAdam
    if state.get("format") != TRAINER_FORMAT:
        raise ValueError(f"format is {state.get('format')!r}, expected {TRAINER_FORMAT!r}")
    if "ema" in modules and state.get("ema") is None:
        raise ValueError("this trainer keeps an EMA generator but the checkpoint has none")
    for name, module in modules.items():
        ours, theirs = module.state_dict(), state[name]
        if set(ours) != set(theirs):
            raise ValueError(f"{name} parameters differ: missing {sorted(set(ours) - set(theirs))}, "
                             f"unexpected {sorted(set(theirs) - set(ours))}")
        for key, value in ours.items():
            if not isinstance(theirs[key], torch.Tensor) or theirs[key].shape != value.shape:
                raise ValueError(f"{name}.{key} has shape {getattr(theirs[key], 'shape', None)}, "
                                 f"expected {tuple(value.shape)}")
    for name, opt in optimizers.items():
        if isinstance(opt, FlatAdam):
            for key in ("exp_avg", "exp_avg_sq"):
                if not isinstance(state[name].get(key), torch.Tensor) or state[name][key].shape != opt.data.shape:
                    raise ValueError(f"{name} is not a FlatAdam state of {opt.data.numel()} parameters "
                                     "(was the checkpoint written with fused_optimizer=False?)")
            continue
        if "param_groups" not in state[name]:
            raise ValueError(f"{name} is not a torch.optim.Adam state (written with fused_optimizer=True?)")
        groups = state[name]["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in opt.param_groups]:
            raise ValueError(f"{name} has a different number of parameters")
        params = [p for g in opt.param_groups for p in g["params"]]
        ids = [i for g in groups for i in g["params"]]
        for index, p in zip(ids, params):
            for key, value in state[name]["state"].get(index, {}).items():
                if key in ("exp_avg", "exp_avg_sq") and value.shape != p.shape:
                    raise ValueError(f"{name} state {key} has shape {tuple(value.shape)}, expected {tuple(p.shape)}")
    rng = state["rng"]
    if not isinstance(rng, torch.Tensor) or rng.shape != rng_state.shape:
        raise ValueError("the RNG state has the wrong size")
    if not isinstance(state["step"], int) or state["step"] < 0:
        raise ValueError(f"step must be a non-negative integer, got {state['step']!r}")
    for k in ("step", "loss_d", "loss_g"):
        if not isinstance(state["history"][k], list):
            raise ValueError(f"history[{k!r}] must be a list")
