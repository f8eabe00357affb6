import math

import pytest
import torch

from fastgan import data, metrics


def test_mode_coverage_on_the_true_mixture():
    samples = data.gaussian_ring(20_000, std=0.01, seed=1)
    result = metrics.mode_coverage(samples, data.ring_centers(), 0.01)
    assert result["modes"] == 8
    # in 2-D the share of a Gaussian within 3 std is 1 - exp(-4.5) = 98.89%
    assert result["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.004)
    assert result["kl"] < 0.005
    # spread: E[r^2 | r < 3 std] / (2 std^2) for a 2-D Gaussian is (1 - 5.5 e^-4.5) / (1 - e^-4.5), root 0.974
    truncated = ((1 - 5.5 * math.exp(-4.5)) / (1 - math.exp(-4.5))) ** 0.5
    assert result["spread"] == pytest.approx(truncated, abs=0.01)
    grid = metrics.evaluate_mixture(data.gaussian_grid(20_000, seed=2), "grid")
    assert grid["modes"] == 25 and grid["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.004)
    assert grid["spread"] == pytest.approx(truncated, abs=0.01)
    # samples half as spread as the data's (all within 3 std): half the spread; on the centres: 0
    tight = metrics.mode_coverage(data.gaussian_ring(20_000, std=0.005, seed=3), data.ring_centers(), 0.01)
    assert tight["high_quality"] == 1.0 and tight["spread"] == pytest.approx(0.5, abs=0.01)
    assert metrics.mode_coverage(data.ring_centers(), data.ring_centers(), 0.01)["spread"] == 0.0


def test_mode_coverage_collapsed_and_far():
    centers = data.ring_centers()
    collapsed = centers[3] + 0.01 * torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    result = metrics.mode_coverage(collapsed, centers, 0.01)
    assert result["modes"] == 1 and result["kl"] == pytest.approx(math.log(8))
    far = metrics.mode_coverage(torch.full((100, 2), 10.0), centers, 0.01)
    # nothing is high quality (KL over high-quality samples: inf); every sample's nearest mode is one mode
    assert far == {"modes": 0, "high_quality": 0.0, "kl": math.inf, "kl_all": pytest.approx(math.log(8)),
                   "spread": math.inf}


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
    assert (tmp_path / f"digits-classifier-v{metrics.CLASSIFIER_VERSION}.ckpt").exists()
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
