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

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]

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
