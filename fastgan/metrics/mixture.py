"""Mixtures of Gaussians (PacGAN / VEEGAN protocol): ``mode_coverage`` (modes, high-quality share, KL, within-mode
spread), ``mixture_distance`` (sliced Wasserstein to the mixture, with its real-vs-real floor) and
``kernel_distance`` (MMD to a data set, with its data-vs-data floor)."""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .. import data as datasets


def _kl_to_uniform(counts: torch.Tensor) -> float:
    total = counts.sum()
    if total == 0:
        return math.inf
    p = counts.double() / total
    nonzero = p > 0
    return float((p[nonzero] * (p[nonzero] * counts.numel()).log()).sum())


# PacGAN's cut: a sample within this many std of its nearest mode is high quality
HIGH_QUALITY_STDS = 3.0
# a mode's spread is measured from this many high-quality samples on (fewer: left out, and counted)
SPREAD_MIN_SAMPLES = 2


def _trimmed_rms(dim: int) -> float:
    """sqrt(E[r^2 | r < 3 std] / (dim std^2)) for a ``dim``-D Gaussian: the RMS a mode of the data itself keeps
    after the high-quality cut, per axis, in std. r^2 / std^2 is chi-square with ``dim`` degrees of freedom and
    E[X; X < c] = dim P(chi2_{dim+2} < c), so it is the ratio of two regularised incomplete gammas (0.974 in 2-D)."""
    half = torch.tensor(dim / 2, dtype=torch.float64)
    cut = torch.tensor(HIGH_QUALITY_STDS ** 2 / 2, dtype=torch.float64)
    return float((torch.special.gammainc(half + 1, cut) / torch.special.gammainc(half, cut)).sqrt())


def mode_coverage(samples: torch.Tensor, centers: torch.Tensor, std: float) -> dict:
    """Each sample goes to its nearest mode; it is *high quality* if within 3 std of it.

    Returns ``modes`` (modes with at least one high-quality sample), ``high_quality`` (the fraction of
    samples that are), and two KL divergences from uniform of a mode histogram:

    * ``kl``: over the high-quality samples only (``inf`` when there are none). This is what PacGAN's
      code computes: its metric logger counts, per mode, the samples within 3 std of their nearest mode
      and reports that histogram's entropy H (and JSD) against uniform; KL = log(modes) - H.
    * ``kl_all``: over every sample's nearest mode, far ones included (VEEGAN-style reading).

    and the within-mode spread, which HQ and KL cannot see (samples piled on the centres score 100% HQ):

    * ``spread_per_mode``: per mode, the standard deviation of its high-quality samples about their own mean
      (the root of their variance summed over the D axes with n - 1, over ``std * sqrt(D)``), divided by the
      same figure for the data itself after the 3-std cut (``_trimmed_rms``, 0.974 in 2-D), so that samples of
      the data score 1. A mode shrunk towards its centre by a factor s <= 0.5 scores s / 0.974 (its samples no
      longer reach the cut). ``None`` for a mode with fewer than ``SPREAD_MIN_SAMPLES`` high-quality samples.
    * ``spread``: the mean over the modes that have one (``inf`` when none has); ``spread_excluded``: how
      many modes were left out.
    * ``offset``: the mean over those modes of the distance from their samples' mean to the mode's centre, in
      std (the data's own: about 1.25 / sqrt(samples per mode), its sampling noise). A mode in the wrong place
      is not a wide one: the spread does not count it.
    * ``spread_to_centre``: what this project reported as the spread from 2026-12-05 until 2026-12-06: the
      samples' RMS distance to the mode's centre (offset included) over the data's, mean over the same modes.

    ``samples`` (N, D) and ``centers`` (K, D), any float dtype and device; computed in float64.
    """
    if samples.dim() != 2 or centers.dim() != 2 or samples.shape[1] != centers.shape[1]:
        raise ValueError(f"samples {tuple(samples.shape)} and centers {tuple(centers.shape)} must be "
                         "(N, D) and (K, D)")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std!r}")
    samples = samples.detach().double()
    centers = centers.to(samples.device, torch.float64)
    modes, dim = centers.shape
    distance, nearest = torch.cdist(samples, centers).min(dim=1)
    good = distance < HIGH_QUALITY_STDS * std
    counts = torch.bincount(nearest[good], minlength=modes)
    every = torch.bincount(nearest, minlength=modes)
    at = nearest[good]
    zeros = torch.zeros(modes, dtype=torch.float64, device=samples.device)
    scale = std * dim ** 0.5 * _trimmed_rms(dim)
    to_centre = (zeros.index_add(0, at, distance[good].square()) / counts.clamp_min(1)).sqrt() / scale
    means = torch.zeros_like(centers).index_add_(0, at, samples[good]) / counts.clamp_min(1).unsqueeze(1)
    about_mean = zeros.index_add(0, at, (samples[good] - means[at]).square().sum(dim=1))
    per_mode = (about_mean / (counts - 1).clamp_min(1)).sqrt() / scale
    offsets = (means - centers).norm(dim=1) / std
    measured = counts >= SPREAD_MIN_SAMPLES
    spread_per_mode = [float(v) if m else None for v, m in zip(per_mode.tolist(), measured.tolist())]

    def mean(values):
        return float(values[measured].mean()) if measured.any() else math.inf

    return {"modes": int((counts > 0).sum()), "high_quality": float(good.double().mean()) if len(good) else 0.0,
            "kl": _kl_to_uniform(counts), "kl_all": _kl_to_uniform(every), "spread": mean(per_mode),
            "spread_per_mode": spread_per_mode, "spread_excluded": int((~measured).sum()), "offset": mean(offsets),
            "spread_to_centre": mean(to_centre)}


def _projection_directions(dim: int, projections: int, seed: int) -> torch.Tensor:
    """``(projections, dim)`` unit vectors, Gaussian directions from a fixed seed (float64, CPU)."""
    directions = torch.randn(projections, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return directions / directions.norm(dim=1, keepdim=True)


def _sorted_projections(x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``(projections, N)``: each projection of the rows of ``x``, sorted."""
    projected = directions.to(x.device) @ x.T
    if projected.device.type == "cpu":   # numpy's sort: about 14x torch's on a CPU, which also builds indices
        return torch.from_numpy(np.sort(projected.numpy(), axis=1))
    return projected.sort(dim=1).values


def _check_points(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a non-empty (N, D) tensor, got {shape}")
    x = x.detach().to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or inf ({int((~torch.isfinite(x)).sum())} values)")
    return x


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 128, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between two point sets of one size, ``a`` and ``b`` (N, D).

    The mean over ``projections`` unit directions (Gaussian, drawn from ``seed``: the same directions every
    call, so the figure is deterministic) of the 1-D Wasserstein-1 distance between the projected sets: the
    mean absolute difference of their sorted projections. In the units of the points; float64, on ``a``'s
    device, the projections taken in blocks of about 32 MB whatever N. Raises ``ValueError`` for other shapes,
    sets of different sizes (subsample the larger one) or NaN/inf values.
    """
    a, b = _check_points(a, "a"), _check_points(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} must be point sets of one size and width")
    return _mean_distances([a], [b.to(a.device)], projections, seed)[0]


def _mean_distances(sets: list, references: list, projections: int, seed: int) -> list[float]:
    """For each of ``sets``, its sliced Wasserstein-1 to each of ``references`` (all (N, D) float64 on one
    device), averaged over the references: each reference's projections sorted once per block of directions."""
    if not isinstance(projections, int) or projections < 1:
        raise ValueError(f"projections must be a positive integer, got {projections!r}")
    directions = _projection_directions(sets[0].shape[1], projections, seed)
    totals = [0.0] * len(sets)
    for block in directions.split(max(1, 4_000_000 // sets[0].shape[0])):   # about 32 MB per sorted block
        sorted_references = [_sorted_projections(r, block) for r in references]
        for i, x in enumerate(sets):
            ours = _sorted_projections(x, block)
            totals[i] += sum(float((ours - r).abs().mean(dim=1).sum()) for r in sorted_references)
    return [total / (projections * len(references)) for total in totals]


# the mixture's own samples the distance compares with: fixed seeds, apart from any training set's (seed 0)
REFERENCE_SEED, FLOOR_SEED = 1_000_000, 2_000_000
# real sets the floor averages over: one real set's distance varies by about 25% (the modes' shares in N points
# vary), so the floor needs many to be one number
FLOOR_SETS = 32


def _references(n: int, centers: torch.Tensor, std: float, draws: int, device=None) -> list[torch.Tensor]:
    return [datasets.mixture(n, centers, std, seed=REFERENCE_SEED + j, device=device) for j in range(draws)]


@functools.lru_cache(maxsize=32)
def _mixture_floor(n: int, centers: tuple, std: float, draws: int, projections: int, seed: int) -> float:
    """The mean, over ``FLOOR_SETS`` independent n-point sets of the mixture, of their distance to the references
    (``mixture_distance``'s ``swd`` of real samples, in the points' units), on the CPU: the same number whatever
    device the samples are on; cached, as it depends on n, not on the samples."""
    centers = torch.tensor(centers, dtype=torch.float64)
    real = [datasets.mixture(n, centers, std, seed=FLOOR_SEED + i) for i in range(FLOOR_SETS)]
    return sum(_mean_distances(real, _references(n, centers, std, draws), projections, seed)) / FLOOR_SETS


def mixture_distance(samples: torch.Tensor, centers: torch.Tensor, std: float, draws: int = 4,
                     projections: int = 128, seed: int = 0) -> dict:
    """How far ``samples`` (N, D) are from the mixture of equal Gaussians of ``std`` at ``centers`` (K, D), beside
    how far samples of the mixture itself are at that size.

    ``swd``: the mean over ``draws`` reference sets (N points of the mixture each, fixed seeds) of
    ``sliced_wasserstein(samples, reference, projections, seed)``, in units of ``std``; ``swd_floor``: the same
    figure for real samples, the mean over ``FLOOR_SETS`` independent N-point sets of the mixture (fixed seeds
    too): what a perfect generator scores, since finite samples never coincide; ``swd_ratio``:
    ``swd / swd_floor``, 1 in expectation for samples of the data (against these references, so whatever they
    happen to be). The floor falls as N grows (about 1/sqrt(N)): compare ratios, not distances, across sample
    counts. Unlike HQ and KL the distance weighs every sample (far ones, the modes' shares, their width) by how
    far it is; samples with NaN or inf are infinitely far (``swd`` and ``swd_ratio`` inf), as they are never
    high quality.
    """
    if samples.dim() != 2 or centers.dim() != 2 or samples.shape[1] != centers.shape[1] or samples.shape[0] < 1:
        raise ValueError(f"samples {tuple(samples.shape)} and centers {tuple(centers.shape)} must be "
                         "(N >= 1, D) and (K, D)")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std!r}")
    if not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    n = samples.shape[0]
    centers = centers.detach().to("cpu", torch.float64)
    floor = _mixture_floor(n, tuple(map(tuple, centers.tolist())), float(std), draws, projections, seed) / std
    if not bool(torch.isfinite(samples).all()):
        return {"swd": math.inf, "swd_floor": floor, "swd_ratio": math.inf}
    references = _references(n, centers, std, draws, samples.device)
    swd = _mean_distances([samples.detach().to(torch.float64)], references, projections, seed)[0] / std
    return {"swd": swd, "swd_floor": floor, "swd_ratio": swd / floor}


def kernel_distance(samples: torch.Tensor, data: torch.Tensor, bandwidth: float | None = None, draws: int = 4,
                    seed: int = 0) -> dict:
    """How far ``samples`` (N, D) are from a data set ``data`` (M >= 2 draws N points, D), by MMD² with a Gaussian
    kernel, beside how far the data's own N-point subsets are from each other: a distance that needs no
    knowledge of the data's modes, only the data (a training set: what a run may judge itself by).

    The data is cut into 2 ``draws`` disjoint N-point subsets (a permutation from ``seed``), references R_j and
    others O_j. ``mmd``: the mean over j of the biased MMD² ``mean k(x, x') + mean k(r, r') - 2 mean k(x, r)``
    between the samples and R_j, k(x, y) = exp(-|x - y|² / (2 h²)); ``mmd_floor``: the mean of the same between
    O_j and R_j, what samples of the data score (the biased estimate is positive even then); ``mmd_ratio``: their
    ratio, near 1 for samples of the data; ``bandwidth``: h, by default the median distance between two points
    of R_0 (at most 2,000 of them): the layout's scale, at which the kernel weighs whole modes' masses against
    each other. Float64 on ``samples``' device. ``ValueError`` for other shapes, NaN/inf, or too little data.
    """
    samples, data = _check_points(samples, "samples"), _check_points(data, "data").to(samples.device)
    n = samples.shape[0]
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    if data.shape[1] != samples.shape[1] or data.shape[0] < 2 * draws * n:
        raise ValueError(f"data {tuple(data.shape)} must have the samples' width {samples.shape[1]} and at least "
                         f"2 * draws * N = {2 * draws * n} rows: use fewer samples or draws")
    order = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed)).to(data.device)
    subsets = [data[order[j * n:(j + 1) * n]] for j in range(2 * draws)]
    references, others = subsets[:draws], subsets[draws:]
    if bandwidth is None:
        bandwidth = float(torch.pdist(references[0][:2000]).median()) if n > 1 else 0.0
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not 0 < bandwidth < math.inf:
        raise ValueError(f"bandwidth must be a finite number > 0 (N = 1 has no default), got {bandwidth!r}")

    def mean_kernel(x, y) -> float:
        return float(torch.exp(-torch.cdist(x, y).square() / (2.0 * bandwidth ** 2)).mean())

    own = [mean_kernel(r, r) for r in references]
    # biased MMD² of x to each R_j, averaged: mean k(x, x') + mean_j (mean k(r, r') - 2 mean k(x, r))
    mmd = mean_kernel(samples, samples) + sum(krr - 2.0 * mean_kernel(samples, r)
                                              for r, krr in zip(references, own)) / draws
    floor = sum(mean_kernel(o, o) + krr - 2.0 * mean_kernel(o, r) for o, r, krr in zip(others, references, own)) / draws
    return {"mmd": mmd, "mmd_floor": floor, "mmd_ratio": mmd / floor, "bandwidth": float(bandwidth)}


def evaluate_mixture(samples: torch.Tensor, kind: str) -> dict:
    """``mode_coverage`` and ``mixture_distance`` for the ``ring`` (8 modes, std 0.01) or ``grid`` (25 modes,
    std 0.05) protocol."""
    if kind == "ring":
        centers, std = datasets.ring_centers(), 0.01
    elif kind == "grid":
        centers, std = datasets.grid_centers(), 0.05
    else:
        raise ValueError(f"kind must be 'ring' or 'grid', got {kind!r}")
    return {**mode_coverage(samples, centers, std), **mixture_distance(samples, centers, std)}
