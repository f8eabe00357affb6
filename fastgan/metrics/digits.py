"""Digits: a small classifier trained on scikit-learn's digits (cached in the user's cache folder) whose
penultimate features give ``frechet_distance``, ``precision_recall_density_coverage`` (Kynkäänniemi et
al. 2019; Naeem et al. 2020) and whose predictions give ``class_coverage``. ``evaluate_digits`` reports
them all with a real-vs-real figure beside each: the floor a perfect generator would reach."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .. import data as datasets
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .mixture import _kl_to_uniform


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
