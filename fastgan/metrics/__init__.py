"""Generation quality, by the protocols the literature uses, offline: the mixtures' (``mixture``) and the
digits' (``digits``), and ``evaluate``, what ``fastgan train`` and ``fastgan evaluate`` report for a data set.
Everything is batched torch and runs on CPU or GPU.
"""
from __future__ import annotations

import torch

from .digits import (DigitsClassifier, class_coverage, conditional_accuracy, digits_classifier, evaluate_digits,
                     frechet_distance, precision_recall_density_coverage)
from .mixture import evaluate_mixture, kernel_distance, mixture_distance, mode_coverage, sliced_wasserstein

__all__ = ["evaluate", "default_samples", "replica_summary",
           "mode_coverage", "sliced_wasserstein", "mixture_distance", "kernel_distance", "frechet_distance",
           "precision_recall_density_coverage", "class_coverage",
           "DigitsClassifier", "digits_classifier", "evaluate_digits", "evaluate_mixture"]


def _numbers(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The numeric entries of ``metrics``, those of nested dicts as ``outer.inner`` (the digits' ``generated``
    and ``real_floor`` figures)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + key] = float(value)
    return out


def replica_summary(per_replica: list[dict | None]) -> dict | None:
    """Each replica's metrics (None where it has none: a diverged replica) and, for every numeric metric (a
    nested one as ``outer.inner``: ``generated.frechet_distance``), the mean and its standard error over the
    replicas that have them."""
    evaluated = [_numbers(m) for m in per_replica if m is not None]
    if not evaluated:
        return None
    summary = {"replicas": per_replica, "mean": {}, "stderr": {}}
    for key in evaluated[0]:
        values = torch.tensor([m[key] for m in evaluated], dtype=torch.float64)
        summary["mean"][key] = values.mean().item()
        summary["stderr"][key] = (values.std() / len(values) ** 0.5).item() if len(values) > 1 else 0.0
    return summary


# digits: the figures are means over this many draws of the floor's size (899), the noise of one draw cut by sqrt(8)
DIGITS_DRAWS = 8


def default_samples(data_name: str) -> int:
    """How many samples the metrics of ``data_name`` are computed on: the protocol's 2,500 for the mixtures, for
    digits ``DIGITS_DRAWS`` blocks of the floor's size (899)."""
    return 2500 if data_name in ("ring", "grid") else DIGITS_DRAWS * 899


def evaluate(data_name: str, samples: torch.Tensor, labels: torch.Tensor | None = None) -> dict | None:
    """The quality metrics of ``samples`` for their data set, or None where fastgan has none (MNIST) or the
    samples are not finite (a diverged replica's); for a conditional GAN (``labels``: the class each sample
    was asked for) also the classifier's accuracy."""
    if not bool(torch.isfinite(samples).all()):
        return None
    if data_name in ("ring", "grid"):
        return evaluate_mixture(samples, data_name)
    if data_name == "digits":
        result = evaluate_digits(samples)
        if labels is not None:
            result["conditional"] = conditional_accuracy(samples, labels)
        return result
    return None
