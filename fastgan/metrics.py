"""Generation quality, by the protocols the literature uses, offline.

Mixtures of Gaussians (PacGAN / VEEGAN protocol): ``mode_coverage`` (modes, high-quality share, KL, within-mode
spread) and ``mixture_distance`` (sliced Wasserstein to the mixture, with its real-vs-real floor).
Digits: a small classifier trained on scikit-learn's digits (cached in the user's cache folder) whose
penultimate features give ``frechet_distance``, ``precision_recall_density_coverage`` (Kynkäänniemi et
al. 2019; Naeem et al. 2020) and whose predictions give ``class_coverage``. ``evaluate_digits`` reports
them all with a real-vs-real figure beside each: the floor a perfect generator would reach.
Everything is batched torch and runs on CPU or GPU.
"""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import data as datasets
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["evaluate", "default_samples", "replica_summary",
           "mode_coverage", "sliced_wasserstein", "mixture_distance", "kernel_distance", "frechet_distance",
           "precision_recall_density_coverage", "class_coverage",
           "DigitsClassifier", "digits_classifier", "evaluate_digits", "evaluate_mixture"]


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

    def mmd2(x, r, krr) -> float:
        return mean_kernel(x, x) + krr - 2.0 * mean_kernel(x, r)

    mmd = sum(mmd2(samples, r, krr) for r, krr in zip(references, own)) / draws
    floor = sum(mmd2(o, r, krr) for o, r, krr in zip(others, references, own)) / draws
    return {"mmd": mmd, "mmd_floor": floor, "mmd_ratio": mmd / floor, "bandwidth": float(bandwidth)}


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().double()
    mean = x.mean(dim=0)
    centred = x - mean
    return mean, centred.T @ centred / (x.shape[0] - 1)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (N, D) and ``b`` (M, D).

    ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))``, with the trace of the matrix square root
    taken from the eigenvalues of the symmetric ``C_a^(1/2) C_b C_a^(1/2)`` (stable, no complex parts).
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"need two (N>=2, D) feature sets of one width, got {tuple(a.shape)} and {tuple(b.shape)}")
    mean_a, cov_a = _moments(a)
    mean_b, cov_b = _moments(b.to(a.device))
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
    middle = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_root)


def _knn_radii(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row."""
    radii = []
    for start in range(0, x.shape[0], chunk):
        d = torch.cdist(x[start:start + chunk], x)
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # +1: the row itself, at 0
    return torch.cat(radii)


def precision_recall_density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5,
                                      chunk: int = 2048) -> dict:
    """k-NN precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020).

    precision: share of fakes inside some real sample's k-NN ball; recall: share of reals inside some
    fake's k-NN ball; density: mean number of real balls holding a fake, over k; coverage: share of
    real balls that hold at least one fake.
    """
    if real.shape[0] <= k or fake.shape[0] <= k:
        raise ValueError(f"need more than k={k} samples in each set, got {real.shape[0]} and {fake.shape[0]}")
    real, fake = real.detach().float(), fake.detach().float().to(real.device)
    real_radii, fake_radii = _knn_radii(real, k, chunk), _knn_radii(fake, k, chunk)
    in_real_ball = torch.zeros(fake.shape[0], dtype=torch.bool, device=real.device)
    balls_per_fake = torch.zeros(fake.shape[0], device=real.device)
    real_covered = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    real_recalled = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    for start in range(0, fake.shape[0], chunk):
        d = torch.cdist(fake[start:start + chunk], real)              # (chunk, R)
        inside = d <= real_radii[None, :]
        in_real_ball[start:start + chunk] = inside.any(dim=1)
        balls_per_fake[start:start + chunk] = inside.sum(dim=1).float()
        real_covered |= inside.any(dim=0)
        real_recalled |= (d <= fake_radii[start:start + chunk, None]).any(dim=0)
    return {"precision": float(in_real_ball.float().mean()), "recall": float(real_recalled.float().mean()),
            "density": float(balls_per_fake.sum() / (k * fake.shape[0])),
            "coverage": float(real_covered.float().mean())}


def class_coverage(labels: torch.Tensor, classes: int = 10) -> dict:
    """Predicted-label histogram of generated samples: its KL to uniform and the number of classes seen."""
    counts = torch.bincount(labels.detach().flatten().long().cpu(), minlength=classes)
    return {"classes_seen": int((counts > 0).sum()), "class_kl": _kl_to_uniform(counts),
            "class_histogram": counts.tolist()}


# -- the digits classifier ---------------------------------------------------------------------------

class DigitsClassifier(nn.Module):
    """784 -> 256 -> 128 -> 10 MLP; ``features`` returns the 128-wide penultimate activations."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        self.head = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


CLASSIFIER_VERSION = 1


def _cache_dir() -> Path:
    root = os.environ.get("FASTGAN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fastgan")
    return Path(root)


def _digits_split(seed: int = 0):
    from sklearn.datasets import load_digits
    images = datasets.digits()
    labels = torch.from_numpy(load_digits().target).long()
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    cut = images.shape[0] * 3 // 4
    return images, labels, order[:cut], order[cut:]


def _train_classifier(epochs: int = 60) -> tuple[DigitsClassifier, float]:
    images, labels, train, held_out = _digits_split()
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = DigitsClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(train), generator=generator).split(64):
            x = images[train[batch]].view(-1, 1, 28, 28)
            dy, dx = torch.randint(-2, 3, (2,), generator=generator).tolist()  # shift augmentation
            x = torch.roll(x, (dy, dx), (2, 3)).reshape(-1, 784)
            loss = nn.functional.cross_entropy(model(x), labels[train[batch]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(images[held_out]).argmax(dim=1) == labels[held_out]).float().mean())
    return model, accuracy


def digits_classifier(device=None, retrain: bool = False) -> tuple[DigitsClassifier, float]:
    """The feature network and its held-out accuracy; trained once (~20 s on a CPU), then cached."""
    path = _cache_dir() / f"digits-classifier-v{CLASSIFIER_VERSION}.ckpt"
    model = DigitsClassifier()
    if path.exists() and not retrain:
        try:
            state = load_checkpoint(path)
            model.load_state_dict(state["model"])
            return model.to(device).eval(), float(state["held_out_accuracy"])
        except (CheckpointError, KeyError, RuntimeError):
            pass  # a damaged cache is rebuilt
    with torch.enable_grad():  # callers may hold no_grad (evaluate_digits does)
        model, accuracy = _train_classifier()
    save_checkpoint({"model": model.state_dict(), "held_out_accuracy": accuracy}, path)
    return model.to(device).eval(), accuracy


@torch.no_grad()
def evaluate_digits(samples: torch.Tensor, device=None, k: tuple[int, ...] = (3, 5), batch: int = 4096) -> dict:
    """All digits metrics for ``samples`` (N, 784) in [0, 1], each with its real-vs-real floor.

    The reference set is a fixed random half of the 1,797 real digits; the floor compares it with the
    other half (899 digits), at the same sample count, so FD's small-sample bias is the same on both sides.
    ``N`` a multiple of 899 (``DIGITS_DRAWS`` blocks, ``default_samples``): every figure is the mean over the
    blocks of 899, each compared as the floor is (one block's FD is noisy: the 128 features' covariance from 899
    samples; docs/notes/2026-12-06-minibatch-std-and-fd-noise.md), with FD's standard error over the blocks
    and the class histogram of all samples; any other ``N``: one block of all of them.
    """
    if samples.dim() != 2 or samples.shape[1] != 784:
        raise ValueError(f"digits samples must be (N, 784), got {tuple(samples.shape)}")
    if samples.shape[0] <= max(k):
        raise ValueError(f"need more than {max(k)} samples, got {samples.shape[0]}")
    device = torch.device(device) if device is not None else samples.device
    classifier, accuracy = digits_classifier(device)
    images = datasets.digits(device=device)
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(1)).to(device)
    reference, other = images[order[: images.shape[0] // 2]], images[order[images.shape[0] // 2:]]

    def embed(x):
        feats, labels = [], []
        for part in x.to(device).float().split(batch):
            f = classifier.features(part)
            feats.append(f)
            labels.append(classifier.head(f).argmax(dim=1))
        return torch.cat(feats), torch.cat(labels)

    ref_features, _ = embed(reference)
    block = other.shape[0]

    def figures(features, labels):
        out = {"frechet_distance": frechet_distance(ref_features, features)}
        for kk in k:
            for metric, value in precision_recall_density_coverage(ref_features, features, kk).items():
                out[f"{metric}@{kk}"] = value
        return {**out, **class_coverage(labels)}

    result = {"classifier_held_out_accuracy": accuracy, "samples": samples.shape[0]}
    features, labels = embed(samples)
    blocks = samples.shape[0] // block if samples.shape[0] % block == 0 else 1
    each = [figures(f, y) for f, y in zip(features.chunk(blocks), labels.chunk(blocks))]
    generated = {key: sum(e[key] for e in each) / blocks for key in each[0]
                 if key not in ("classes_seen", "class_histogram")}
    fds = torch.tensor([e["frechet_distance"] for e in each], dtype=torch.float64)
    generated.update(draws=blocks, frechet_distance_stderr=(fds.std() / blocks ** 0.5).item() if blocks > 1 else None)
    whole = class_coverage(labels)   # (classes seen in any draw, and the histogram of all samples)
    generated.update(classes_seen=whole["classes_seen"], class_histogram=whole["class_histogram"])
    result["generated"] = generated
    result["real_floor"] = figures(*embed(other))
    return result


@torch.no_grad()
def conditional_accuracy(samples: torch.Tensor, labels: torch.Tensor, classes: int = 10, device=None) -> dict:
    """How often the digits classifier reads each conditional sample as the class it was asked for.

    ``{"accuracy", "per_class": [...], "chance": 1/classes}``: a generator that ignores its label scores
    about chance; per-class entries are None for classes with no sample.
    """
    if samples.dim() != 2 or samples.shape[1] != 784:
        raise ValueError(f"digits samples must be (N, 784), got {tuple(samples.shape)}")
    labels = torch.as_tensor(labels).flatten().long().cpu()
    if labels.shape[0] != samples.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {samples.shape[0]} samples")
    device = torch.device(device) if device is not None else samples.device
    classifier, _ = digits_classifier(device)
    predicted = torch.cat([classifier(part.to(device).float()).argmax(dim=1).cpu() for part in samples.split(4096)])
    right = predicted == labels
    per_class = [right[labels == c].float().mean().item() if (labels == c).any() else None for c in range(classes)]
    return {"accuracy": right.float().mean().item(), "per_class": per_class, "chance": 1.0 / classes}


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


# -- what `fastgan train` and `fastgan evaluate` report -------------------------------------------------------

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


