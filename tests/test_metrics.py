import math
import re

import pytest
import torch

from fastgan import data, metrics
from fastgan.metrics import digits, mixture


def _spread_tolerance(n: int) -> float:
    """4.5 standard errors of a spread measured on n samples of the data: r^2 / (2 std^2) is exponential with
    variance about 0.77 after the 3-std cut, so the RMS's relative error is about 0.46 / sqrt(n)."""
    return 4.5 * 0.46 / n ** 0.5


def test_mode_coverage_on_the_true_mixture():
    samples = data.gaussian_ring(20_000, std=0.01, seed=1)
    result = metrics.mode_coverage(samples, data.ring_centers(), 0.01)
    assert result["modes"] == 8
    # in 2-D the share of a Gaussian within 3 std is 1 - exp(-4.5) = 98.89%
    assert result["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.004)
    assert result["kl"] < 0.005
    grid = metrics.evaluate_mixture(data.gaussian_grid(20_000, seed=2), "grid")
    assert grid["modes"] == 25 and grid["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.004)


def test_spread_of_the_data_is_one_and_of_shrunk_modes_their_factor(seed):
    # the data's own figure after the 3-std cut, E[r^2 | r < 3 std] / (2 std^2) = (1 - 5.5 e^-4.5) / (1 - e^-4.5),
    # is what the spread divides by
    assert mixture._trimmed_rms(2) == pytest.approx(((1 - 5.5 * math.exp(-4.5)) / (1 - math.exp(-4.5))) ** 0.5)
    assert mixture._trimmed_rms(2) == pytest.approx(0.974, abs=5e-4)
    for kind, make, centers, std in (("ring", data.gaussian_ring, data.ring_centers(), 0.01),
                                     ("grid", data.gaussian_grid, data.grid_centers(), 0.05)):
        n = 20_000
        samples = make(n, seed=seed)
        result = metrics.mode_coverage(samples, centers, std)
        assert result["spread"] == pytest.approx(1.0, abs=_spread_tolerance(n)), kind
        assert result["spread_excluded"] == 0 and len(result["spread_per_mode"]) == centers.shape[0]
        per_mode = _spread_tolerance(n // centers.shape[0])
        assert all(v == pytest.approx(1.0, abs=per_mode) for v in result["spread_per_mode"]), result
        assert result["offset"] < 0.1 and result["spread_to_centre"] == pytest.approx(1.0, abs=_spread_tolerance(n))
        # each sample pulled halfway to its mode: all within the cut, so half the untrimmed RMS over the trimmed one
        nearest = centers[torch.cdist(samples, centers).argmin(dim=1)]
        shrunk = metrics.mode_coverage(nearest + 0.5 * (samples - nearest), centers, std)
        assert shrunk["high_quality"] == 1.0
        assert shrunk["spread"] == pytest.approx(0.5 / mixture._trimmed_rms(2), abs=_spread_tolerance(n) / 2), kind
        on_centres = metrics.mode_coverage(nearest, centers, std)
        assert (on_centres["spread"], on_centres["high_quality"], on_centres["modes"]) == (0.0, 1.0, centers.shape[0])
    # the figure the issue quotes: samples at 0.37 of the data's std per axis score 0.37 / 0.974
    tight = metrics.mode_coverage(data.gaussian_ring(20_000, std=0.0037, seed=3), data.ring_centers(), 0.01)
    assert tight["spread"] == pytest.approx(0.37 / 0.974, abs=_spread_tolerance(20_000))


def test_a_mode_in_the_wrong_place_is_not_a_wide_one(seed):
    """Spread, offset and the spread to the centre against a float64 loop over the modes (odd counts per mode),
    and a mode of the data's width moved by 1.5 std: its spread stays the data's (but for the cut, which the loop
    applies too), its offset is 1.5, and only the spread to the centre grows."""
    centers, std = data.ring_centers(), 0.01
    g = torch.Generator().manual_seed(seed)
    counts = [3, 50, 7, 200, 2, 31, 120, 9]
    shift = torch.tensor([1.5 * std, 0.0])
    samples = torch.cat([centers[k] + (shift if k == 3 else 0) + std * (0.2 + k / 8) * torch.randn(c, 2, generator=g)
                         for k, c in enumerate(counts)])
    result = metrics.mode_coverage(samples, centers, std)
    scale = std * 2 ** 0.5 * mixture._trimmed_rms(2)
    spreads, offsets, to_centre = [], [], []
    x = samples.double()
    nearest = torch.cdist(x, centers.double()).argmin(dim=1)
    for k in range(8):
        mine = x[nearest == k]
        mine = mine[(mine - centers[k].double()).norm(dim=1) < 3 * std]
        mean = mine.mean(dim=0)
        spreads.append(((mine - mean).square().sum() / (len(mine) - 1)).sqrt().item() / scale)
        offsets.append((mean - centers[k].double()).norm().item() / std)
        to_centre.append((mine - centers[k].double()).square().sum(dim=1).mean().sqrt().item() / scale)
    assert result["spread_per_mode"] == pytest.approx(spreads, rel=1e-12)
    assert result["spread"] == pytest.approx(sum(spreads) / 8, rel=1e-12)
    assert result["offset"] == pytest.approx(sum(offsets) / 8, rel=1e-12)
    assert result["spread_to_centre"] == pytest.approx(sum(to_centre) / 8, rel=1e-12)
    moved = metrics.mode_coverage(centers[3] + shift + std * torch.randn(20_000, 2, generator=g), centers, std)
    # the 3-std cut about the centre trims the moved mode's far side: its spread a little under 1, its offset
    # a little under 1.5 (the cut pulls the mean back)
    assert 0.85 < moved["spread"] < 1.0 and 1.2 < moved["offset"] < 1.5, moved
    assert moved["spread_to_centre"] > moved["spread"] + 0.4, moved


def test_spread_leaves_out_modes_with_too_few_samples_and_counts_them():
    centers = data.ring_centers()
    g = torch.Generator().manual_seed(0)
    one = centers[3] + 0.01 * torch.randn(4000, 2, generator=g)          # mode 3 only, the data's width
    lone = centers[5:6] + torch.tensor([[0.005, 0.0]])                     # one sample at mode 5: left out
    pair = centers[6] + torch.tensor([[0.01, 0.0], [-0.01, 0.0]])          # two at mode 6: RMS 1 std
    result = metrics.mode_coverage(torch.cat([one, lone, pair]), centers, 0.01)
    assert result["modes"] == 3 and result["spread_excluded"] == 6
    per_mode = result["spread_per_mode"]
    assert [i for i, v in enumerate(per_mode) if v is not None] == [3, 6]
    assert per_mode[3] == pytest.approx(1.0, abs=_spread_tolerance(4000))
    assert per_mode[6] == pytest.approx(1 / mixture._trimmed_rms(2))   # (about their mean, with n - 1 = 1)
    assert result["spread"] == pytest.approx((per_mode[3] + per_mode[6]) / 2)


def test_mode_coverage_collapsed_and_far():
    centers = data.ring_centers()
    collapsed = centers[3] + 0.01 * torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    result = metrics.mode_coverage(collapsed, centers, 0.01)
    assert result["modes"] == 1 and result["kl"] == pytest.approx(math.log(8))
    far = metrics.mode_coverage(torch.full((100, 2), 10.0), centers, 0.01)
    # nothing is high quality (KL over high-quality samples: inf); every sample's nearest mode is one mode
    assert far == {"modes": 0, "high_quality": 0.0, "kl": math.inf, "kl_all": pytest.approx(math.log(8)),
                   "spread": math.inf, "spread_per_mode": [None] * 8, "spread_excluded": 8, "offset": math.inf,
                   "spread_to_centre": math.inf}


def test_the_two_kl_definitions_differ_where_far_samples_fall_near_other_modes():
    """Half the samples on mode 0, half far out but nearest to mode 4: PacGAN's KL (high-quality samples
    only) sees one mode, log 8; over every sample's nearest mode, two modes: log 4."""
    centers = data.ring_centers()
    g = torch.Generator().manual_seed(0)
    on = centers[0] + 0.001 * torch.randn(500, 2, generator=g)
    off = centers[4] * 1.2 + 0.001 * torch.randn(500, 2, generator=g)
    result = metrics.mode_coverage(torch.cat([on, off]), centers, 0.01)
    assert result["modes"] == 1 and result["high_quality"] == pytest.approx(0.5)
    assert result["kl"] == pytest.approx(math.log(8)) and result["kl_all"] == pytest.approx(math.log(4))
    with pytest.raises(ValueError):
        metrics.mode_coverage(torch.zeros(3, 3), centers, 0.01)


def test_sliced_wasserstein_known_cases(seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(5000, 2, generator=g, dtype=torch.float64)
    assert metrics.sliced_wasserstein(a, a) == 0.0
    b = torch.randn(5000, 2, generator=g, dtype=torch.float64)
    assert metrics.sliced_wasserstein(a, b) == metrics.sliced_wasserstein(b, a)   # symmetric
    assert metrics.sliced_wasserstein(a, b) == metrics.sliced_wasserstein(a.clone(), b.clone())   # deterministic
    assert metrics.sliced_wasserstein(a, b, seed=1) != metrics.sliced_wasserstein(a, b)   # other directions
    # a shift by v moves every projection by <theta, v>: the mean of |<theta, v>| over the directions, whose
    # expectation for uniform directions in 2-D is |v| 2/pi; the row order does not matter
    v = torch.tensor([3.0, 4.0], dtype=torch.float64)
    shifted = metrics.sliced_wasserstein(a, (a + v)[torch.randperm(5000, generator=g)])
    assert shifted == pytest.approx(5.0 * 2 / math.pi, rel=0.1)
    # float32 points give the float64 figure to float32 rounding
    assert metrics.sliced_wasserstein(a.float(), b.float()) == pytest.approx(metrics.sliced_wasserstein(a, b),
                                                                             rel=1e-5)


def test_sliced_wasserstein_refuses_bad_input():
    x = torch.zeros(10, 2)
    for a, b, words in ((torch.zeros(10), x, "(N, D)"), (x, torch.zeros(10, 3), "one size"),
                        (x, torch.zeros(11, 2), "one size"), (torch.zeros(0, 2), x, "non-empty")):
        with pytest.raises(ValueError, match=re.escape(words)):
            metrics.sliced_wasserstein(a, b)
    bad = x.clone()
    bad[3, 1] = math.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        metrics.sliced_wasserstein(x, bad)
    with pytest.raises(ValueError, match="projections"):
        metrics.sliced_wasserstein(x, x, projections=0)


def test_mixture_distance_real_samples_at_the_floor_and_far_ones_above(seed):
    centers, std = data.ring_centers(), 0.01
    n = 2500
    # samples of the data itself: the floor in expectation (one sample's ratio has a standard deviation of about
    # 0.26 on the ring: the modes' shares in 2,500 points vary)
    ratios = [metrics.evaluate_mixture(data.gaussian_ring(n, seed=seed + k), "ring")["swd_ratio"] for k in range(8)]
    assert sum(ratios) / 8 == pytest.approx(1.0, abs=0.35), ratios
    real = data.gaussian_ring(n, seed=seed)
    result = metrics.mixture_distance(real, centers, std)
    assert result == metrics.mixture_distance(real.clone(), centers, std)   # deterministic
    mixture._mixture_floor.cache_clear()
    assert result == metrics.mixture_distance(real, centers, std)           # the floor too, not only its cache
    # the distance is sliced_wasserstein's to each reference, averaged
    references = [data.mixture(n, centers.double(), std, seed=mixture.REFERENCE_SEED + j) for j in range(4)]
    assert result["swd"] == pytest.approx(sum(metrics.sliced_wasserstein(real, r) for r in references) / (4 * std),
                                          rel=1e-12)
    assert result["swd_floor"] == metrics.mixture_distance(real[:, [1, 0]], centers, std)["swd_floor"]  # N's only
    assert metrics.mixture_distance(real[:1000], centers, std)["swd_floor"] > result["swd_floor"]   # fewer: higher
    # every sample on one mode, half the modes empty, the ring shifted by 10 std: far above the floor (about 39,
    # 6.8 and 5 times it; the largest of 200 real samples' ratios was 2.12)
    nearest_mode = torch.cdist(real, centers).argmin(dim=1)
    nearest = centers[nearest_mode]
    collapsed = real - nearest + centers[0]
    halved = real - nearest + centers[2 * (nearest_mode // 2)]
    for far, above in ((collapsed, 20), (halved, 4), (real + 10 * std, 3.5)):
        assert metrics.mixture_distance(far, centers, std)["swd_ratio"] > above
    # within-mode collapse moves it far less than the modes' shares do: what the spread is for
    squeezed = [metrics.mixture_distance(nearest + s * (real - nearest), centers, std)["swd"] for s in (1.0, 0.5, 0.0)]
    assert squeezed[0] < squeezed[1] < squeezed[2] < 2 * squeezed[0]
    # NaN or inf samples are infinitely far, as they are never high quality; shapes are checked
    broken = real.clone()
    broken[7] = math.inf
    assert metrics.mixture_distance(broken, centers, std)["swd"] == math.inf
    for bad in (real[:, :1], real[0]):
        with pytest.raises(ValueError, match="must be"):
            metrics.mixture_distance(bad, centers, std)
    with pytest.raises(ValueError, match="draws"):
        metrics.mixture_distance(real, centers, std, draws=0)


def test_kernel_distance_is_mmd_to_the_datas_subsets_over_their_own(seed):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(61, 3, generator=g, dtype=torch.float64)
    samples = (torch.randn(7, 3, generator=g, dtype=torch.float64) + 0.5).float()   # float32 taken as float64
    h = 1.3
    result = metrics.kernel_distance(samples, points, bandwidth=h, draws=2, seed=seed)
    order = torch.randperm(61, generator=torch.Generator().manual_seed(seed))
    subsets = [points[order[7 * j:7 * (j + 1)]].tolist() for j in range(4)]   # R_0, R_1, O_0, O_1

    def k(a, b):
        return math.exp(-sum((u - v) ** 2 for u, v in zip(a, b)) / (2 * h * h))

    def mmd2(x, y):   # the biased estimate, one pair at a time
        return (sum(k(a, b) for a in x for b in x) + sum(k(a, b) for a in y for b in y)
                - 2 * sum(k(a, b) for a in x for b in y)) / 49

    x = samples.double().tolist()
    expected = (mmd2(x, subsets[0]) + mmd2(x, subsets[1])) / 2
    floor = (mmd2(subsets[2], subsets[0]) + mmd2(subsets[3], subsets[1])) / 2
    assert result["mmd"] == pytest.approx(expected, rel=1e-12)
    assert result["mmd_floor"] == pytest.approx(floor, rel=1e-12)
    assert result["mmd_ratio"] == pytest.approx(expected / floor, rel=1e-12) and result["bandwidth"] == h
    # the default bandwidth: the median distance between two points of R_0 (21 pairs: the middle one)
    distances = sorted(math.dist(a, b) for i, a in enumerate(subsets[0]) for b in subsets[0][i + 1:])
    assert metrics.kernel_distance(samples, points, draws=2, seed=seed)["bandwidth"] == pytest.approx(distances[10])
    assert metrics.kernel_distance(samples, points, draws=2, seed=seed) == \
        metrics.kernel_distance(samples.clone(), points.clone(), draws=2, seed=seed)   # deterministic


def test_kernel_distance_sees_the_modes_masses_not_their_width(seed):
    """On the grid at the layout's bandwidth: a line of five modes moved onto the next one is far from the data
    (paired with the same samples in place), the modes squeezed to a fifth of their width are not."""
    centers = data.grid_centers()
    points = data.gaussian_grid(16_000, seed=seed)
    real = data.gaussian_grid(1000, seed=seed + 1)
    nearest = centers[torch.cdist(real, centers).argmin(dim=1)]
    moved = real.clone()
    moved[nearest[:, 1] == 0, 1] += 2.0
    ratio = metrics.kernel_distance(real, points)["mmd_ratio"]
    assert 0.1 < ratio < 3.0   # (1 in expectation; 0.36-1.93 over 20 seeds at 1,000 samples)
    assert metrics.kernel_distance(moved, points)["mmd_ratio"] > ratio + 1.5
    squeezed = metrics.kernel_distance(nearest + 0.2 * (real - nearest), points)["mmd_ratio"]
    assert squeezed == pytest.approx(ratio, rel=0.05)


def test_kernel_distance_refuses_bad_input():
    points, x = torch.zeros(100, 2), torch.ones(10, 2)
    for args, kwargs, words in (((x, torch.zeros(79, 2)), {}, "at least"), ((x, torch.zeros(100, 3)), {}, "width"),
                                ((x, points), {"draws": 0}, "draws"), ((x, points), {"bandwidth": 0.0}, "bandwidth"),
                                ((x, points), {"bandwidth": True}, "bandwidth"),
                                ((x, points), {"bandwidth": math.inf}, "bandwidth"),
                                ((x[0], points), {}, "(N, D)")):
        with pytest.raises(ValueError, match=re.escape(words)):
            metrics.kernel_distance(*args, **kwargs)
    bad = x.clone()
    bad[2, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        metrics.kernel_distance(bad, points)


def test_evaluate_mixture_reports_every_figure_once():
    result = metrics.evaluate_mixture(data.gaussian_grid(2500, seed=4), "grid")
    assert set(result) == {"modes", "high_quality", "kl", "kl_all", "spread", "spread_per_mode", "spread_excluded",
                           "offset", "spread_to_centre", "swd", "swd_floor", "swd_ratio"}
    assert result["swd_ratio"] == result["swd"] / result["swd_floor"]
    with pytest.raises(ValueError, match="ring' or 'grid"):
        metrics.evaluate_mixture(data.gaussian_grid(10), "moons")


def test_frechet_distance_known_cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 4, generator=g, dtype=torch.float64)
    assert abs(metrics.frechet_distance(x, x)) < 1e-6
    shifted = torch.randn(20_000, 4, generator=g, dtype=torch.float64) + torch.tensor([1.0, 2.0, 0.0, 0.0])
    assert metrics.frechet_distance(x, shifted) == pytest.approx(5.0, abs=0.1)  # |mu|^2, same covariance
    scaled = 2 * torch.randn(20_000, 4, generator=g, dtype=torch.float64)
    assert metrics.frechet_distance(x, scaled) == pytest.approx(4.0, abs=0.15)  # 4 * (1 + 4 - 2*2)
    noisy = [metrics.frechet_distance(x, x + s * torch.randn(x.shape, generator=g, dtype=torch.float64))
             for s in (0.1, 0.5, 1.0)]
    assert noisy[0] < noisy[1] < noisy[2]


def test_precision_recall_density_coverage_known_cases():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(600, 8, generator=g)
    same = metrics.precision_recall_density_coverage(real, real.clone(), k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = metrics.precision_recall_density_coverage(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # a generator that only makes one half of the data (x0 > 0): precise, but low recall and coverage
    half = real[real[:, 0] > 0.5]
    partial = metrics.precision_recall_density_coverage(real, half, k=5)
    assert partial["precision"] > 0.95 and partial["recall"] < 0.8 and partial["coverage"] < 0.6


def test_class_coverage():
    result = metrics.class_coverage(torch.tensor([0, 0, 1, 9]))
    assert result["classes_seen"] == 3 and result["class_histogram"][0] == 2
    assert metrics.class_coverage(torch.arange(10).repeat(5))["class_kl"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.slow
def test_digits_metrics_real_vs_noise(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path))  # empty cache: evaluate_digits trains it (under no_grad)
    first = metrics.evaluate_digits(data.digits()[:100])
    assert (tmp_path / f"digits-classifier-v{digits.CLASSIFIER_VERSION}.ckpt").exists()
    model, accuracy = metrics.digits_classifier()
    assert first["classifier_held_out_accuracy"] == accuracy
    assert accuracy >= 0.97, f"held-out accuracy {accuracy:.3f}"
    cached, cached_accuracy = metrics.digits_classifier()  # second call: from the cache
    assert cached_accuracy == accuracy
    real = data.digits()
    sample = real[torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(5))[:900]]
    good = metrics.evaluate_digits(sample)
    noise = metrics.evaluate_digits(torch.rand(900, 784, generator=torch.Generator().manual_seed(6)))
    floor = good["real_floor"]
    assert good["generated"]["classes_seen"] == 10 and good["generated"]["class_kl"] < 0.05
    assert good["generated"]["frechet_distance"] < 3 * floor["frechet_distance"] + 1.0
    assert noise["generated"]["frechet_distance"] > 20 * good["generated"]["frechet_distance"]
    assert noise["generated"]["precision@5"] < 0.1 < good["generated"]["precision@5"]
    assert noise["real_floor"] == floor  # the floor does not depend on the samples


def test_digits_figures_are_means_over_draws_of_the_floors_size():
    """Samples in blocks of 899 (the floor's count): each figure the mean of the blocks' own, FD's standard error
    beside it, the histogram of all samples; a count that is not a multiple is one block."""
    real = data.digits()
    gen = torch.Generator().manual_seed(7)
    blocks = [real[torch.randperm(real.shape[0], generator=gen)[:899]] * 0.9 for _ in range(2)]
    apart = [metrics.evaluate_digits(b)["generated"] for b in blocks]
    both = metrics.evaluate_digits(torch.cat(blocks))
    assert both["real_floor"] == metrics.evaluate_digits(blocks[0])["real_floor"]   # the floor: one block, as ever
    fds = [a["frechet_distance"] for a in apart]
    assert both["generated"]["draws"] == 2 and both["samples"] == 1798
    for key in ("frechet_distance", "precision@5", "recall@3", "coverage@5", "class_kl"):
        assert both["generated"][key] == pytest.approx(sum(a[key] for a in apart) / 2, rel=1e-6), key
    assert both["generated"]["frechet_distance_stderr"] == pytest.approx(abs(fds[0] - fds[1]) / 2, rel=1e-6)
    assert both["generated"]["class_histogram"] == [x + y for x, y in zip(*(a["class_histogram"] for a in apart))]
    assert apart[0]["draws"] == 1
    odd = metrics.evaluate_digits(torch.cat(blocks)[:1000])["generated"]
    assert odd["draws"] == 1 and odd["frechet_distance_stderr"] is None
    assert metrics.default_samples("digits") == metrics.DIGITS_DRAWS * 899 and metrics.default_samples("ring") == 2500


def test_non_finite_samples_have_no_metrics_and_the_replica_summary_leaves_them_out():
    """A diverged replica's NaN samples: no metrics (digits' FD would fail in its eigen-solver), and the mean and
    standard error over replicas are those of the others."""
    ring = metrics.evaluate("ring", torch.zeros(100, 2))
    assert metrics.evaluate("ring", torch.full((100, 2), float("nan"))) is None
    assert metrics.evaluate("digits", torch.full((899, 784), float("nan"))) is None
    summary = metrics.replica_summary([ring, None, {**ring, "modes": ring["modes"] + 2}])
    assert summary["replicas"][1] is None
    assert summary["mean"]["modes"] == ring["modes"] + 1 and summary["stderr"]["modes"] == 1.0
    assert metrics.replica_summary([None, None]) is None


def test_the_replica_summary_averages_nested_figures_too():
    """The digits' figures sit in nested dicts (generated, real_floor): their means are ``outer.inner``."""
    per = [{"samples": 899, "generated": {"frechet_distance": fd, "per_class": [1]}} for fd in (4.0, 6.0)]
    summary = metrics.replica_summary(per)
    assert summary["mean"] == {"samples": 899.0, "generated.frechet_distance": 5.0}
    assert summary["stderr"]["generated.frechet_distance"] == 1.0
