"""``fastgan train --starts N``: N GANs of one setting trained at once as replicas (seeds ``--seed`` to
``--seed + N - 1``), and the one whose samples lie nearest its training data kept.

A run of the grid's recipe now and then loses a line of modes (3 of 60 fresh seeds); its samples are then far
from its training data by ``fastgan.metrics.kernel_distance``, a distance that needs only the data. Training two
starts and keeping the nearer at the end is what docs/notes/2026-12-08-two-starts-kept-at-the-end.md measured.
"""
from __future__ import annotations

import math

import torch

from .. import metrics

__all__ = ["SCORE_SEED", "SCORE_SAMPLES", "score_starts"]

# the noise the starts are scored on: not the quality metrics' (QUALITY_SEED), so metrics.json does not judge the
# kept GAN on the very samples it was chosen by
SCORE_SEED = 30_000
# samples each start is scored on (the count the two starts were measured with), fewer where the data has fewer
# than 2 * DRAWS times as many rows: kernel_distance compares them with DRAWS disjoint subsets of the data
SCORE_SAMPLES = 5000
DRAWS = 4


def score_samples(rows: int) -> int:
    """How many samples a start is scored on, for training data of ``rows`` rows."""
    return min(SCORE_SAMPLES, rows // (2 * DRAWS))


def score_starts(trainer) -> dict:
    """Each replica of ``trainer`` (a ``ReplicaTrainer``, one start each) scored by ``kernel_distance`` of its
    samples to the training data, MMD / floor (None where its samples are not finite: a diverged start), and the
    index of the nearest: ``{"kept", "seeds", "data_mmd_ratio", "samples", "noise_seed"}``; ``kept`` is None when
    no start has finite samples."""
    data = trainer.data
    n = score_samples(data.shape[0])
    labels = torch.arange(n) % trainer.num_classes if trainer.num_classes else None   # (each class in turn)
    ratios = []
    for k in range(trainer.replicas):
        samples = trainer.sample(n, seed=SCORE_SEED, labels=labels, replica=k)
        finite = bool(torch.isfinite(samples).all())
        ratios.append(metrics.kernel_distance(samples, data, draws=DRAWS)["mmd_ratio"] if finite else None)
    scored = [k for k, r in enumerate(ratios) if r is not None and math.isfinite(r)]
    kept = min(scored, key=ratios.__getitem__) if scored else None
    return {"kept": kept, "seeds": [trainer.config.seed + k for k in range(trainer.replicas)],
            "data_mmd_ratio": ratios, "samples": n, "noise_seed": SCORE_SEED}
