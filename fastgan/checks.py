"""Argument checks every layer shares: one message for one mistake, wherever it is made."""
from __future__ import annotations

__all__ = ["positive_int"]


def positive_int(name: str, value) -> int:
    """``value`` if it is an int >= 1 (not a bool); else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
