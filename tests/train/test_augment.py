"""Differentiable augmentation: each transform does what it says, is differentiable, is off at p = 0, goes
through real and fake alike, adapts p toward its target, and resumes exactly."""
import pytest
import torch

from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, TrainConfig
from fastgan.train.augment import Augment, parse_transforms


def _augment(names, p=1.0, target=None, side=8, seed=0):
    rng = torch.Generator().manual_seed(seed)
    return Augment(parse_transforms(names), side * side, p, target, rng, torch.device("cpu"))


def _images(b=64, side=8, seed=0):
    return torch.rand(b, side * side, generator=torch.Generator().manual_seed(seed)) + 0.5  # no zeros


def test_each_transform_does_what_it_says():
    x = _images()
    images = x.view(-1, 8, 8)
    cut = _augment("cutout")(x).view(-1, 8, 8)
    assert ((cut == 0).sum(dim=(1, 2)) == 16).all()  # a 4 x 4 hole in each 8 x 8 image
    assert torch.equal(cut[cut != 0], images[cut != 0])
    bright = _augment("brightness")(x) - x
    assert (bright.max(dim=1).values - bright.min(dim=1).values < 1e-6).all() and bright.abs().max() <= 0.5
    contrast = _augment("contrast")(x)
    torch.testing.assert_close(contrast.mean(dim=1), x.mean(dim=1))
    assert torch.equal(_augment("flip")(x).view(-1, 8, 8), images.flip(2))
    moved = _augment("translation")(x).view(-1, 8, 8)
    for i in range(len(x)):  # each image is its shift by at most 1 pixel, zeros shifted in
        found = False
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                shifted = torch.zeros(8, 8)
                src = images[i][max(dr, 0):8 + min(dr, 0), max(dc, 0):8 + min(dc, 0)]
                shifted[max(-dr, 0):8 + min(-dr, 0), max(-dc, 0):8 + min(-dc, 0)] = src
                found |= torch.equal(moved[i], shifted)
        assert found, f"image {i} is no shift of its input"


def test_off_at_p_zero_and_differentiable():
    x = _images(16)
    assert torch.equal(_augment("translation,cutout,brightness,contrast", p=0.0)(x), x)
    x64 = x.double().requires_grad_()

    def augmented(inputs):  # the same draws on every evaluation
        return _augment("translation,cutout,brightness,contrast", seed=3)(inputs)

    assert torch.autograd.gradcheck(augmented, (x64,))
    augmented(x64).sum().backward()
    assert x64.grad.abs().sum() > 0


def test_p_is_a_per_sample_probability():
    x = _images(4000)
    changed = (_augment("flip", p=0.3)(x) != x).any(dim=1).float().mean().item()
    assert abs(changed - 0.3) < 0.03


def test_adaptive_p_moves_toward_the_target():
    augment = _augment("translation", p=0.5, target=0.6)
    for _ in range(1000):  # D certain about every real sample: overfitting; r -> 1 > 0.6, p rises to 1
        augment.observe(torch.ones(32, 1))
    assert augment.r.item() > 0.99 and augment.p.item() == 1.0
    for _ in range(1000):  # D wrong about every real sample: p falls to 0
        augment.observe(-torch.ones(32, 1))
    assert augment.r.item() < -0.99 and augment.p.item() == 0.0
    fixed = _augment("translation", p=0.5)
    fixed.observe(torch.ones(32, 1))
    assert fixed.p.item() == 0.5


def _trainer(seed=0, **options):
    torch.manual_seed(seed)
    g = MLPGenerator(latent_dim=4, hidden=(16,), out_dim=64)
    d = MLPDiscriminator(in_dim=64, hidden=(16,))
    return GANTrainer(g, d, _images(256), batch_size=16, lr=1e-3, seed=seed, device="cpu", **options)


@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_real_and_fake_go_through_it_alike_in_both_updates(kernels, monkeypatch):
    trainer = _trainer(kernels=kernels, augment="translation,cutout", augment_target=0.6)
    seen = []
    original = Augment.__call__
    monkeypatch.setattr(Augment, "__call__", lambda self, x, sampler=None: (seen.append(x.shape[0]),
                                                                             original(self, x, sampler))[1])
    trainer.fit(2, log_every=2, progress=False)
    assert seen == [16, 16, 16] * 2  # per step: real and fake for D, fake for G
    assert all(torch.isfinite(torch.tensor(trainer.history["loss_d"])))


def test_resume_is_exact_with_adaptive_augmentation(tmp_path):
    options = dict(augment="translation,cutout,brightness", augment_p=0.2, augment_target=0.0)
    straight = _trainer(seed=2, **options)
    straight.fit(10, log_every=5, progress=False)
    first = _trainer(seed=2, **options)
    first.fit(5, log_every=5, progress=False, checkpoint=tmp_path / "c.pt")
    resumed = _trainer(seed=7, **options)
    resumed.load(tmp_path / "c.pt")
    resumed.fit(5, log_every=5, progress=False)
    assert straight.history == resumed.history
    assert torch.equal(straight.augment.p, resumed.augment.p) and straight.augment.p.item() != 0.2


@pytest.mark.parametrize("settings, message", [
    ({"augment": "rotate"}, "unknown augmentation 'rotate'"),
    ({"augment": "cutout", "augment_p": 1.5}, "augment_p is a probability"),
    ({"augment_target": 0.6}, "name the augmentations"),
    ({"augment": "cutout", "augment_target": 2.0}, "augment_target"),
])
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_mixtures_take_no_augmentation():
    from fastgan import data
    g = MLPGenerator(latent_dim=4, hidden=(16,), out_dim=2, output_activation=None)
    with pytest.raises(ValueError, match="not a square one-channel image"):
        GANTrainer(g, MLPDiscriminator(in_dim=2, hidden=(16,)), data.gaussian_ring(64), batch_size=8, augment="cutout")


def test_adaptive_augmentation_starts_at_zero_unless_told():
    assert TrainConfig(augment="cutout").augment_start_p == 1.0
    assert TrainConfig(augment="cutout", augment_target=0.6).augment_start_p == 0.0
    assert TrainConfig(augment="cutout", augment_target=0.6, augment_p=0.3).augment_start_p == 0.3
    assert _trainer(augment="cutout", augment_target=0.6).augment.p.item() == 0.0
