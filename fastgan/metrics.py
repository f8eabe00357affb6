"""Generation quality, by the protocols the literature uses, offline.

Mixtures of Gaussians (PacGAN / VEEGAN protocol): ``mode_coverage``.
Digits: a small classifier trained on scikit-learn's digits (cached in the user's cache folder) whose
penultimate features give ``frechet_distance``, ``precision_recall_density_coverage`` (Kynkäänniemi et
al. 2019; Naeem et al. 2020) and whose predictions give ``class_coverage``. ``evaluate_digits`` reports
them all with a real-vs-real figure beside each: the floor a perfect generator would reach.
Everything is batched torch and runs on CPU or GPU.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from . import data as datasets
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["evaluate", "default_samples", "replica_summary",
           "mode_coverage", "frechet_distance", "precision_recall_density_coverage", "class_coverage",
           "DigitsClassifier", "digits_classifier", "evaluate_digits", "evaluate_mixture"]


def _kl_to_uniform(counts: torch.Tensor) -> float:
    total = counts.sum()
    if total == 0:
        return math.inf
    p = counts.double() / total
    nonzero = p > 0
    return float((p[nonzero] * (p[nonzero] * counts.numel()).log()).sum())


def mode_coverage(samples: torch.Tensor, centers: torch.Tensor, std: float) -> dict:
    """Each sample goes to its nearest mode; it is *high quality* if within 3 std of it.

    Returns ``modes`` (modes with at least one high-quality sample), ``high_quality`` (the fraction of
    samples that are), and two KL divergences from uniform of a mode histogram:

    * ``kl``: over the high-quality samples only (``inf`` when there are none). This is what PacGAN's
      code computes: its metric logger counts, per mode, the samples within 3 std of their nearest mode
      and reports that histogram's entropy H (and JSD) against uniform; KL = log(modes) - H.
    * ``kl_all``: over every sample's nearest mode, far ones included (VEEGAN-style reading).

    and ``spread``: the high-quality samples' RMS distance to their mode over the data's, std * sqrt(D) (``inf``
    when there are none). Samples of the data itself give about 0.97 in 2-D (the 3-std cut trims the tail); a
    sampler that concentrates samples at the modes' centres scores below that, which HQ and KL do not show.
    """
    if samples.dim() != 2 or centers.dim() != 2 or samples.shape[1] != centers.shape[1]:
        raise ValueError(f"samples {tuple(samples.shape)} and centers {tuple(centers.shape)} must be "
                         "(N, D) and (K, D)")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std!r}")
    samples = samples.detach().double()
    centers = centers.to(samples.device, torch.float64)
    distance, nearest = torch.cdist(samples, centers).min(dim=1)
    good = distance < 3 * std
    counts = torch.bincount(nearest[good], minlength=centers.shape[0])
    every = torch.bincount(nearest, minlength=centers.shape[0])
    spread = (float(distance[good].square().mean().sqrt()) / (std * centers.shape[1] ** 0.5) if good.any()
              else math.inf)
    return {"modes": int((counts > 0).sum()), "high_quality": float(good.double().mean()) if len(good) else 0.0,
            "kl": _kl_to_uniform(counts), "kl_all": _kl_to_uniform(every), "spread": spread}


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
    other half, at the same sample count, so FD's small-sample bias is the same on both sides.
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
    result = {"classifier_held_out_accuracy": accuracy, "samples": samples.shape[0]}
    for name, x in (("generated", samples), ("real_floor", other)):
        features, labels = embed(x)
        figures = {"frechet_distance": frechet_distance(ref_features, features)}
        for kk in k:
            for metric, value in precision_recall_density_coverage(ref_features, features, kk).items():
                figures[f"{metric}@{kk}"] = value
        figures.update(class_coverage(labels))
        result[name] = figures
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
    """``mode_coverage`` for the ``ring`` (8 modes, std 0.01) or ``grid`` (25 modes, std 0.05) protocol."""
    if kind == "ring":
        return mode_coverage(samples, datasets.ring_centers(), 0.01)
    if kind == "grid":
        return mode_coverage(samples, datasets.grid_centers(), 0.05)
    raise ValueError(f"kind must be 'ring' or 'grid', got {kind!r}")


# -- what `fastgan train` and `fastgan evaluate` report -------------------------------------------------------

def replica_summary(per_replica: list[dict | None]) -> dict | None:
    """Each replica's metrics and, for every numeric metric, the mean and its standard error over replicas."""
    if not per_replica or per_replica[0] is None:
        return None
    keys = [k for k, v in per_replica[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    summary = {"replicas": per_replica, "mean": {}, "stderr": {}}
    for key in keys:
        values = torch.tensor([float(m[key]) for m in per_replica], dtype=torch.float64)
        summary["mean"][key] = values.mean().item()
        summary["stderr"][key] = (values.std() / len(values) ** 0.5).item() if len(values) > 1 else 0.0
    return summary


def default_samples(data_name: str) -> int:
    """How many samples the metrics of ``data_name`` are computed on."""
    return 2500 if data_name in ("ring", "grid") else 899  # the protocol's count; digits: the floor's size


def evaluate(data_name: str, samples: torch.Tensor, labels: torch.Tensor | None = None) -> dict | None:
    """The quality metrics of ``samples`` for their data set, or None where fastgan has none (MNIST); for
    a conditional GAN (``labels``: the class each sample was asked for) also the classifier's accuracy."""
    if data_name in ("ring", "grid"):
        return evaluate_mixture(samples, data_name)
    if data_name == "digits":
        result = evaluate_digits(samples)
        if labels is not None:
            result["conditional"] = conditional_accuracy(samples, labels)
        return result
    return None


