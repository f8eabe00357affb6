"""Class-conditional GANs: models, labels in the trainer, sampling by class, the metric, data, the CLI."""
import gzip
import json

import pytest
import torch

from helpers import assert_close
from fastgan import (CheckpointError, ConditionalMLPGenerator, GANTrainer, MLPDiscriminator, MLPGenerator,
                     ProjectionDiscriminator, data, metrics)
from fastgan.app.cli import main


def _pair(hidden=(32, 32), latent=8, features=20, classes=4):
    return (ConditionalMLPGenerator(latent, classes, hidden, features),
            ProjectionDiscriminator(features, classes, hidden))


def _data(n=200, features=20, classes=4):
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_projection_discriminator_is_head_plus_label_projection():
    torch.manual_seed(0)
    d = ProjectionDiscriminator(in_dim=6, num_classes=3, hidden=(5, 4))
    x, y = torch.randn(7, 6), torch.tensor([0, 1, 2, 2, 1, 0, 1])
    h = d.body(x)
    expected = d.head(h) + (d.embed.weight[y] * h).sum(dim=1, keepdim=True)
    assert_close(d(x, y), expected, 1e-6, "D(x, y)")
    assert d(x, y).shape == (7, 1)
    g = ConditionalMLPGenerator(latent_dim=3, num_classes=3, hidden=(8,), out_dim=6)
    assert g.net[0].in_features == 3 + 3
    out = g(torch.randn(7, 3), y)
    assert out.shape == (7, 6) and ((out >= 0) & (out <= 1)).all()
    with pytest.raises(ValueError, match="num_classes"):
        ConditionalMLPGenerator(num_classes=1)


def test_bad_labels_and_mismatched_models_are_clear_errors():
    x, y = _data()
    g, d = _pair()
    with pytest.raises(ValueError, match="no labels were given"):
        GANTrainer(g, d, x, device="cpu")
    with pytest.raises(ValueError, match="discriminator is not conditional"):
        GANTrainer(g, MLPDiscriminator(20, (8,)), x, labels=y, device="cpu")
    with pytest.raises(ValueError, match="generator is not conditional"):
        GANTrainer(MLPGenerator(8, (8,), 20), d, x, labels=y, device="cpu")
    with pytest.raises(ValueError, match="200 entries|entries, expected 200"):
        GANTrainer(g, d, x, labels=y[:10], device="cpu")
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        GANTrainer(g, d, x, labels=y + 1, device="cpu")
    with pytest.raises(ValueError, match="integer class indices"):
        GANTrainer(g, d, x, labels=y.float(), device="cpu")
    with pytest.raises(ValueError, match="5 classes and the discriminator 4"):
        GANTrainer(ConditionalMLPGenerator(8, 5, (8,), 20), d, x, labels=y, device="cpu")
    trainer = GANTrainer(g, d, x, labels=y.numpy(), device="cpu", batch_size=16)   # arrays are fine
    assert trainer.labels.dtype == torch.int64 and trainer.num_classes == 4
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        trainer.sample(5, labels=torch.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match="not conditional"):
        GANTrainer(MLPGenerator(8, (8,), 20), MLPDiscriminator(20, (8,)), x, device="cpu").sample(3, labels=1)


def test_sample_by_class_and_default_labels_cycle():
    x, y = _data()
    g, d = _pair()
    trainer = GANTrainer(g, d, x, labels=y, device="cpu", batch_size=16)
    a = trainer.sample(8)
    b = trainer.sample(8, labels=torch.arange(8) % 4)
    assert torch.equal(a, b)
    c = trainer.sample(8, labels=2)
    assert torch.equal(c, trainer.sample(8, labels=torch.full((8,), 2)))
    assert not torch.equal(a, c)


def test_triton_kernels_train_a_conditional_gan_like_torch():
    x, y = _data()
    runs = {}
    for kernels in ("torch", "triton", "triton-mlp"):
        torch.manual_seed(0)
        g, d = _pair()
        trainer = GANTrainer(g, d, x, labels=y, device="cpu", batch_size=16, lr=1e-3, precision="fp32",
                             kernels=kernels, fused_optimizer="flat", sampler="auto")
        trainer.fit(8, log_every=4, progress=False)
        runs[kernels] = trainer
    assert "conditional" in runs["triton-mlp"].step_path
    for kernels in ("triton", "triton-mlp"):
        for key in ("loss_d", "loss_g"):
            assert_close(torch.tensor(runs[kernels].history[key]), torch.tensor(runs["torch"].history[key]),
                         1e-5, f"{kernels} {key}")


def test_philox_draws_no_labels_so_a_conditional_gan_refuses_it():
    x, y = _data()
    with pytest.raises(ValueError, match="sampler='philox' draws no labels"):
        GANTrainer(*_pair(), x, labels=y, device="cpu", kernels="torch", sampler="philox")


@pytest.mark.slow
def test_compiled_conditional_step_with_spectral_norm_has_no_graph_breaks_and_trains_like_eager():
    from torch._dynamo.utils import counters
    x, y = _data()
    runs = []
    counters.clear()
    for compile_ in (False, True):
        torch.manual_seed(0)
        trainer = GANTrainer(*_pair(), x, labels=y, device="cpu", batch_size=16, lr=1e-3, precision="fp32",
                             kernels="triton", compile=compile_, spectral_norm=True)
        trainer.fit(4, log_every=4, progress=False)
        runs.append(trainer)
    assert dict(counters["graph_break"]) == {}, dict(counters["graph_break"])
    for key in ("loss_d", "loss_g"):
        assert_close(torch.tensor(runs[1].history[key]), torch.tensor(runs[0].history[key]), 1e-5, key)


def test_resume_of_a_conditional_run_is_exact(tmp_path):
    x, y = _data()

    def make(seed):
        torch.manual_seed(seed)
        return GANTrainer(*_pair(), x, labels=y, device="cpu", batch_size=16, seed=seed, spectral_norm=True)

    straight = make(0)
    straight.fit(3, log_every=3, progress=False, checkpoint=tmp_path / "c.pt")
    straight.fit(3, log_every=3, progress=False)
    resumed = make(9)
    resumed.load(tmp_path / "c.pt")
    resumed.fit(3, log_every=3, progress=False)
    assert straight.history == resumed.history
    for a, b in zip(straight.discriminator.state_dict().values(), resumed.discriminator.state_dict().values()):
        assert torch.equal(a, b)
    unconditional = GANTrainer(MLPGenerator(8, (32, 32), 20), MLPDiscriminator(20, (32, 32)), x, device="cpu")
    with pytest.raises(CheckpointError):
        unconditional.load(tmp_path / "c.pt")


@pytest.mark.slow
def test_conditional_digits_follow_their_label_and_a_label_blind_generator_scores_chance():
    """After 1,500 CPU steps a conditional sample of class k is read as k by the digits classifier for most
    samples (measured 83% at 1,200 steps); the same samples judged against shuffled labels (a generator that
    ignored its label would look like this) score about chance."""
    x, y = data.digits(labels=True)
    torch.manual_seed(0)
    trainer = GANTrainer(ConditionalMLPGenerator(32, 10, (128, 128), 784), ProjectionDiscriminator(784, 10, (128, 128)),
                         x, labels=y, batch_size=64, lr=5e-4, betas=(0.5, 0.999), real_label=0.9, device="cpu", seed=0)
    trainer.fit(1500, log_every=500, progress=False)
    labels = torch.arange(1000) % 10
    samples = trainer.sample(1000, labels=labels)
    result = metrics.conditional_accuracy(samples, labels)
    assert result["accuracy"] > 0.5, result
    assert sum(a > 0.3 for a in result["per_class"]) >= 8, result   # not one or two classes carrying the mean
    shuffled = labels[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    blind = metrics.conditional_accuracy(samples, shuffled)
    assert blind["accuracy"] < 0.2, blind


def test_digits_and_mnist_load_labels(tmp_path):
    images, labels = data.digits(labels=True)
    assert images.shape == (1797, 784) and labels.shape == (1797,) and labels.dtype == torch.int64
    assert set(labels.tolist()) == set(range(10))
    n = 5
    (tmp_path / "train-images-idx3-ubyte").write_bytes(
        (0x803).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(n * 784))
    with pytest.raises(FileNotFoundError, match="labels"):
        data.mnist(tmp_path, labels=True)
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write((0x801).to_bytes(4, "big") + n.to_bytes(4, "big") + bytes([3, 1, 4, 1, 5]))
    x, y = data.mnist(tmp_path, labels=True)
    assert x.shape == (5, 784) and y.tolist() == [3, 1, 4, 1, 5]
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write((0x801).to_bytes(4, "big") + (4).to_bytes(4, "big") + bytes([3, 1, 4, 1]))
    with pytest.raises(ValueError, match="expected 5"):
        data.mnist(tmp_path, labels=True)
    with pytest.raises(ValueError, match="no class labels"):
        data.load("ring", labels=True)


def test_cli_conditional_run_writes_a_row_per_class_and_the_accuracy(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--conditional", "--steps", "4", "--hidden", "16", "--batch-size", "8", "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["config"]["num_classes"] == 10
    conditional = result["quality"]["conditional"]
    assert len(conditional["per_class"]) == 10 and 0 <= conditional["accuracy"] <= 1
    assert (out / "samples.png").stat().st_size > 0
    assert main(["evaluate", str(out), "--samples", "100"]) == 0
    assert '"conditional"' in capsys.readouterr().out
    assert main(["train", "--conditional", "--data", "ring", "--steps", "2", "--out", str(tmp_path / "r")]) == 2
    assert "needs class labels" in capsys.readouterr().err


def test_cli_conditional_sweep_reports_each_replicas_class_accuracy_and_resumes(tmp_path, capsys):
    """``--conditional --seeds 2 --lr ...``: four conditional GANs as replicas; each replica's metrics with the
    classifier's accuracy on the classes asked for, a sweep table with it, evaluate reading it back, a resume."""
    out = tmp_path / "sweep"
    args = ["train", "--conditional", "--seeds", "2", "--lr", "1e-3", "2e-4", "--hidden", "16", "--batch-size", "8",
            "--log-every", "2", "--no-progress", "--device", "cpu", "--out", str(out)]
    assert main([*args, "--steps", "2"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["config"]["replicas"] == 4 and result["config"]["num_classes"] == 10
    per_replica = result["quality"]["replicas"]
    assert len(per_replica) == 4 and all(0 <= q["conditional"]["accuracy"] <= 1 for q in per_replica)
    assert "class_accuracy" in (out / "sweep.md").read_text()
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)["metrics"]["replicas"]
    assert [q["conditional"] for q in evaluated] == [q["conditional"] for q in per_replica]
    assert main([*args, "--steps", "4", "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4

