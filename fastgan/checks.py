"""Argument checks every layer shares: one message for one mistake, wherever it is made."""
from __future__ import annotations

__all__ = ["non_negative_int", "positive_int"]


def positive_int(name: str, value) -> int:
    """``value`` if it is an int >= 1 (not a bool); else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def non_negative_int(name: str, value) -> int:
    """``value`` if it is an int >= 0 (not a bool): a step, a count that may be none; else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value
