"""Discriminator rejection sampling: D's verdict raises sample quality without retraining."""
import pytest
import torch
from torch import nn

from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, data, metrics
from fastgan.models import rejection_sample


class _Spread(nn.Module):
    """A 'generator' that puts its samples anywhere in [-1.5, 1.5]^2: few are near a ring mode."""
    latent_dim = 2

    def forward(self, z):
        return 1.5 * torch.tanh(z)


class _KnowsTheRing(nn.Module):
    """A 'discriminator' whose logit is the log-density of the nearest ring mode (std 0.01), up to a constant."""

    def forward(self, x):
        return -5000.0 * torch.cdist(x, data.ring_centers()).min(dim=1, keepdim=True).values.square()


def test_rejection_keeps_what_d_prefers_and_is_reproducible():
    candidates = _Spread()(torch.randn(2500, 2, generator=torch.Generator().manual_seed(0)))
    plain = metrics.evaluate_mixture(candidates, "ring")
    kept, rate = rejection_sample(_Spread(), _KnowsTheRing(), 2500, 2, seed=0, quantile=0.8, max_candidates=10 ** 7)
    guided = metrics.evaluate_mixture(kept, "ring")
    assert kept.shape == (2500, 2) and 0 < rate < 1

    def distance(x):
        return torch.cdist(x, data.ring_centers()).min(dim=1).values.mean().item()

    # gamma at the 0.8 quantile keeps roughly D's best fifth to third: much closer to the modes, and
    # (HQ needs 3 std = 0.03 of a mode, a sliver of this spread) several times as many high-quality ones
    assert distance(kept) < 0.6 * distance(candidates), (distance(kept), distance(candidates))
    assert guided["high_quality"] > 3 * plain["high_quality"] and guided["modes"] == 8, (plain, guided)
    again, _ = rejection_sample(_Spread(), _KnowsTheRing(), 2500, 2, seed=0, quantile=0.8, max_candidates=10 ** 7)
    assert torch.equal(kept, again)
    stricter, stricter_rate = rejection_sample(_Spread(), _KnowsTheRing(), 500, 2, seed=0, quantile=0.95,
                                               max_candidates=10 ** 7)
    assert stricter_rate < rate
    with pytest.raises(RuntimeError, match="accepted"):
        rejection_sample(_Spread(), _KnowsTheRing(), 2500, 2, seed=0, batch=64, max_candidates=100)
    with pytest.raises(ValueError, match="quantile"):
        rejection_sample(_Spread(), _KnowsTheRing(), 10, 2, quantile=1.0)


def test_trainer_sample_with_rejection_and_its_limits():
    torch.manual_seed(0)
    g = MLPGenerator(latent_dim=4, hidden=(16,), out_dim=2, output_activation=None)
    trainer = GANTrainer(g, MLPDiscriminator(in_dim=2, hidden=(16,)), data.gaussian_ring(1000), device="cpu",
                         batch_size=32)
    trainer.fit(5, log_every=5, progress=False)
    samples = trainer.sample(300, rejection=True)
    assert samples.shape == (300, 2) and 0 < trainer.last_acceptance <= 1
    assert trainer.discriminator.training   # left as it was
    assert not torch.equal(samples, trainer.sample(300))
    packed = GANTrainer(MLPGenerator(latent_dim=4, hidden=(16,), out_dim=2, output_activation=None),
                        MLPDiscriminator(in_dim=4, hidden=(16,)), data.gaussian_ring(1000), device="cpu", pack=2)
    packed.fit(5, log_every=5, progress=False)
    assert packed.sample(300, rejection=True).shape == (300, 2) and 0 < packed.last_acceptance <= 1
    with pytest.raises(ValueError, match="partner_sets"):
        rejection_sample(packed.generator, packed.discriminator, 10, 4, pack=2, partner_sets=0)


class _KnowsTheRingPacked(nn.Module):
    """A packed D (``pack`` samples back to back) as the optimal one is: the sum of its samples' log density
    ratios (here _KnowsTheRing's logit per sample)."""

    def __init__(self, pack):
        super().__init__()
        self.pack = pack

    def forward(self, x):
        return _KnowsTheRing()(x.reshape(-1, 2)).reshape(-1, self.pack).sum(dim=1, keepdim=True)


@pytest.mark.parametrize("pack", [2, 3])
def test_rejection_with_a_packed_d_keeps_what_unpacked_keeps(pack):
    """Fixed partners add one constant to every candidate's score, which DRS's max and quantile absorb: a
    packed D that sums per-sample logits keeps the samples the per-sample D keeps (to rounding)."""
    single, single_rate = rejection_sample(_Spread(), _KnowsTheRing(), 1000, 2, seed=3, quantile=0.8,
                                           max_candidates=10 ** 7)
    packed, packed_rate = rejection_sample(_Spread(), _KnowsTheRingPacked(pack), 1000, 2, seed=3, quantile=0.8,
                                           max_candidates=10 ** 7, pack=pack)
    assert packed.shape == (1000, 2) and abs(packed_rate - single_rate) < 1e-3, (packed_rate, single_rate)
    same = (packed == single).all(dim=1).double().mean().item()
    assert same > 0.99, same
