"""Checks of one training setting's value: each returns the value as TrainConfig keeps it, or raises
``ValueError`` naming the setting and what it got."""
from __future__ import annotations

import math

__all__ = ["check_augment_p", "check_augment_target", "check_betas", "check_lr_schedule", "check_real_label",
           "finite"]


def check_augment_p(p):
    if p is None:
        return None
    p = finite("augment_p", p, 0.0, strict=False)
    if p > 1.0:
        raise ValueError(f"augment_p is a probability in [0, 1], got {p}")
    return p


def check_augment_target(target):
    if target is None:
        return None
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not -1.0 < target < 1.0:
        raise ValueError(f"augment_target is a target for E[sign(D(real))], in (-1, 1) (ADA uses 0.6), "
                         f"got {target!r}")
    return float(target)


def check_real_label(real_label: float) -> float:
    if not isinstance(real_label, (int, float)) or not 0.0 < real_label <= 1.0:
        raise ValueError(f"real_label must be a number in (0, 1], got {real_label!r}")
    return float(real_label)


def check_betas(value) -> tuple[float, float]:
    betas = tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0
                                  for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {value!r}")
    return (float(betas[0]), float(betas[1]))


def finite(name: str, value, minimum: float, strict: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
        value > minimum if strict else value >= minimum)
    if not ok:
        raise ValueError(f"{name} must be a {'positive' if strict and minimum == 0 else 'finite'} number"
                         f"{'' if strict and minimum == 0 else f' >= {minimum}'}, got {value!r}")
    return float(value)


def check_lr_schedule(value) -> tuple[tuple[int, float], ...]:
    """``value`` as a tuple of ``(step, factor)`` pairs, steps positive and increasing, factors positive."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"lr_schedule must be a sequence of (step, factor) pairs, e.g. ((200000, 0.5),), "
                         f"got {value!r}")
    pairs, last = [], 0
    for pair in value:
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], int) and \
            not isinstance(pair[0], bool) and isinstance(pair[1], (int, float)) and not isinstance(pair[1], bool) \
            and math.isfinite(pair[1]) and pair[1] > 0
        if not ok:
            raise ValueError(f"lr_schedule: each entry is a (step, factor) pair, a positive integer step and a "
                             f"positive factor, got {pair!r}")
        if pair[0] <= last:
            raise ValueError(f"lr_schedule: steps must be positive and increasing, got {pair[0]} after {last}")
        pairs.append((pair[0], float(pair[1])))
        last = pair[0]
    return tuple(pairs)
