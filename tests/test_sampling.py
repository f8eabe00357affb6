"""Discriminator rejection sampling: D's verdict raises sample quality without retraining."""
import re

import pytest
import torch
from torch import nn

from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, data, metrics
from fastgan.sampling import rejection_sample


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


class _Lopsided(nn.Module):
    """A 'generator' that puts its samples on the ring's modes (their std, 0.01) in unequal shares: mode k
    gets a share proportional to k + 1, so mode 7 has 8 times mode 0's. Noise: 3 numbers, the first picks."""
    latent_dim = 3

    def __init__(self):
        super().__init__()
        shares = torch.arange(1, 9, dtype=torch.float64)
        self.register_buffer("edges", torch.cumsum(shares / shares.sum(), 0)[:-1].float())

    def forward(self, z):
        mode = torch.bucketize(torch.special.ndtr(z[:, 0]).contiguous(), self.edges)
        return data.ring_centers()[mode] + 0.01 * z[:, 1:]


def test_calibrating_d_against_the_generator_corrects_its_mode_shares():
    """A D that knows nothing (fresh weights), trained against G held fixed, learns p_data / p_G: rejection
    sampling with it (quantile 0.95: DRS's sigmoid then follows the ratio over G's range) brings G's lopsided
    modes (1:8) to the data's equal shares. (At low quantiles DRS keeps over half of every candidate: it
    sharpens, and corrects the shares only in part.)"""
    from fastgan.sampling import calibrate_discriminator
    torch.manual_seed(0)
    d = MLPDiscriminator(in_dim=2, hidden=(64, 64))
    before = [p.detach().clone() for p in d.parameters()]
    real = data.gaussian_ring(20_000, seed=1)
    judge = calibrate_discriminator(_Lopsided(), d, real, 3, steps=400, seed=0, lr=3e-3, batch=256)
    assert all(torch.equal(p, q) for p, q in zip(before, d.parameters()))   # a copy: D itself untouched
    assert not judge.training and judge is not d
    plain = metrics.evaluate_mixture(_Lopsided()(torch.randn(4000, 3, generator=torch.Generator().manual_seed(5))),
                                     "ring")
    kept, rate = rejection_sample(_Lopsided(), judge, 4000, 3, seed=5, quantile=0.95, max_candidates=10 ** 7)
    guided = metrics.evaluate_mixture(kept, "ring")
    # with no calibration, the fresh D's verdict is noise: it cannot rebalance anything
    blind = metrics.evaluate_mixture(rejection_sample(_Lopsided(), d, 4000, 3, seed=5, quantile=0.95,
                                                      max_candidates=10 ** 7)[0], "ring")
    assert plain["kl"] > 0.1 and blind["kl"] > plain["kl"], (plain, blind)   # shares 1:2:...:8: KL 0.14
    assert guided["kl"] < 0.1 * plain["kl"] and guided["modes"] == 8 and 0 < rate < 1, (plain, guided)
    # reproducible: the same seed gives the same D
    again = calibrate_discriminator(_Lopsided(), d, real, 3, steps=400, seed=0, lr=3e-3, batch=256)
    assert all(torch.equal(p, q) for p, q in zip(judge.parameters(), again.parameters()))


def test_calibrate_refuses_bad_input_and_the_trainer_uses_it():
    from fastgan.sampling import calibrate_discriminator
    g, d, real = _Lopsided(), MLPDiscriminator(in_dim=2, hidden=(8,)), data.gaussian_ring(100)
    for kwargs, match in (({"steps": 0}, "steps"), ({"pack": 2}, "discriminator takes 2"), ({"lr": -1.0}, "lr"),
                          ({"batch": True}, "batch")):
        with pytest.raises(ValueError, match=match):
            calibrate_discriminator(g, d, real, 3, **kwargs)
    with pytest.raises(TypeError, match="floating-point"):
        calibrate_discriminator(g, d, real.long(), 3)
    with pytest.raises(ValueError, match="first dimension"):
        calibrate_discriminator(g, d, real[0], 3)
    with pytest.raises(ValueError, match="latent"):
        calibrate_discriminator(MLPGenerator(latent_dim=4, hidden=(8,), out_dim=2, output_activation=None), d, real, 3)
    torch.manual_seed(0)
    trainer = GANTrainer(MLPGenerator(latent_dim=4, hidden=(16,), out_dim=2, output_activation=None),
                         MLPDiscriminator(in_dim=4, hidden=(16,)), data.gaussian_ring(1000), device="cpu", pack=2,
                         ema=0.9)
    trainer.fit(5, log_every=5, progress=False)
    with pytest.raises(ValueError, match="rejection"):
        trainer.sample(10, calibrate=5)
    with pytest.raises(ValueError, match=re.escape("calibrate (D's steps) must be an integer >= 0")):
        trainer.sample(10, rejection=0.5, calibrate=-1)
    for bad in (1.5, None, "0.5"):   # refused before the calibration runs
        with pytest.raises(ValueError, match="quantile"):
            trainer.sample(10, rejection=bad, calibrate=10 ** 9)
    state = [p.detach().clone() for p in trainer.discriminator.parameters()]
    kept = trainer.sample(300, seed=2, rejection=0.5, calibrate=300)
    assert all(torch.equal(p, q) for p, q in zip(state, trainer.discriminator.parameters()))
    judge = calibrate_discriminator(trainer.ema.module, trainer.discriminator, trainer.data, 4, 300, 2, pack=2)
    alone, rate = rejection_sample(trainer.ema.module, judge, 300, 4, 2, quantile=0.5, pack=2)
    assert torch.equal(kept, alone) and rate == trainer.last_acceptance
    assert not torch.equal(kept, trainer.sample(300, seed=2, rejection=0.5))   # the calibrated D judged
    # the calibration's own rate and batch reach it
    kept = trainer.sample(300, seed=2, rejection=0.5, calibrate=50, calibrate_lr=3e-5, calibrate_batch=64)
    judge = calibrate_discriminator(trainer.ema.module, trainer.discriminator, trainer.data, 4, 50, 2, pack=2,
                                    lr=3e-5, batch=64)
    assert torch.equal(kept, rejection_sample(trainer.ema.module, judge, 300, 4, 2, quantile=0.5, pack=2)[0])
    for bad, message in (({"calibrate_lr": 0.0}, "calibrate_lr"), ({"calibrate_lr": True}, "calibrate_lr"),
                         ({"calibrate_batch": 0}, "calibrate_batch"), ({"calibrate_batch": 2.5}, "calibrate_batch")):
        with pytest.raises(ValueError, match=message):   # refused before any calibration step
            trainer.sample(10, rejection=0.5, calibrate=10 ** 9, **bad)
    # training goes on as if nothing had been sampled: the same steps as a twin that never sampled
    torch.manual_seed(0)
    twin = GANTrainer(MLPGenerator(latent_dim=4, hidden=(16,), out_dim=2, output_activation=None),
                      MLPDiscriminator(in_dim=4, hidden=(16,)), data.gaussian_ring(1000), device="cpu", pack=2, ema=0.9)
    twin.fit(5, log_every=5, progress=False)
    trainer.fit(5, log_every=5, progress=False)
    twin.fit(5, log_every=5, progress=False)
    assert trainer.discriminator.training
    for mine, theirs in ((trainer.generator, twin.generator), (trainer.discriminator, twin.discriminator)):
        assert all(torch.equal(p, q) for p, q in zip(mine.parameters(), theirs.parameters()))


def test_calibrate_trains_a_fused_triton_discriminator_as_the_plain_one():
    """A trainer on Triton kernels (its D fused): the calibrated copy trains through the fused ops and judges
    as the plain module with the same weights would (same draws, fp32 rounding apart)."""
    from fastgan.sampling import calibrate_discriminator
    torch.manual_seed(0)
    g = MLPGenerator(latent_dim=4, hidden=(16,), out_dim=2, output_activation=None)
    d = MLPDiscriminator(in_dim=2, hidden=(16,))
    trainer = GANTrainer(g, d, data.gaussian_ring(1000), device="cpu", batch_size=32, kernels="triton")
    assert any(type(m).__name__ == "FusedLinear" for m in trainer.discriminator.modules())
    plain_d = MLPDiscriminator(in_dim=2, hidden=(16,))
    plain_d.load_state_dict(trainer.discriminator.state_dict())
    fused = calibrate_discriminator(trainer.generator, trainer.discriminator, trainer.data, 4, steps=5, batch=64)
    plain = calibrate_discriminator(trainer.generator, plain_d, trainer.data, 4, steps=5, batch=64)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before, after, reference = plain_d(x), fused(x), plain(x)
    assert not torch.allclose(after, before, atol=1e-4)   # it trained
    torch.testing.assert_close(after, reference, rtol=1e-4, atol=1e-5)


class _LopsidedRatio(nn.Module):
    """The exact log density ratio p_data / p_G for _Lopsided against the ring: within a mode both are the same
    Gaussian, so the ratio is the mode's share in the data (1/8) over its share in G ((k + 1) / 36)."""

    def __init__(self, pack: int = 1):
        super().__init__()
        self.pack = pack

    def forward(self, x):
        x = x.reshape(-1, 2)
        k = torch.cdist(x, data.ring_centers()).argmin(dim=1)
        ratio = torch.log(36.0 / (8.0 * (k + 1).float()))
        return ratio.reshape(-1, self.pack).sum(dim=1, keepdim=True)   # packed: the sum over its samples


def test_metropolis_with_the_exact_ratio_samples_the_data_and_rejection_does_not():
    """MH-GAN's chain weighs G's samples by exp(logit): with the exact ratio its stationary distribution is the
    data's, so G's 1:8 mode shares come out even. DRS at quantile 0.5 (which cuts at D's ranking) with the same
    D corrects them only in part."""
    from fastgan.sampling import metropolis_sample
    plain = metrics.evaluate_mixture(_Lopsided()(torch.randn(4000, 3, generator=torch.Generator().manual_seed(5))),
                                     "ring")
    chained, rate = metropolis_sample(_Lopsided(), _LopsidedRatio(), 4000, 3, seed=5, chain=50)
    mh = metrics.evaluate_mixture(chained, "ring")
    drs = metrics.evaluate_mixture(rejection_sample(_Lopsided(), _LopsidedRatio(), 4000, 3, seed=5, quantile=0.5,
                                                    max_candidates=10 ** 7)[0], "ring")
    assert chained.shape == (4000, 2) and 0.5 < rate < 0.9, rate   # E[min(1, w'/w)] for these shares: ~0.71
    # 4000 samples of 8 even modes: sampling alone gives KL ~ 7 / 8000; G's own shares give 0.14
    assert plain["kl"] > 0.1 and mh["kl"] < 0.005 and drs["kl"] > 5 * mh["kl"], (plain, mh, drs)
    # within a mode the ratio is flat: MH moves mass between modes and leaves each mode's spread as G made it
    assert mh["modes"] == 8 and abs(mh["high_quality"] - plain["high_quality"]) < 0.01, (plain, mh)
    again, again_rate = metropolis_sample(_Lopsided(), _LopsidedRatio(), 4000, 3, seed=5, chain=50)
    assert torch.equal(chained, again) and again_rate == rate
    # a packed D that sums its samples' ratios, scored with fixed partners: the partners' constant cancels in
    # the chain's differences, so it picks what the unpacked D picks (float32 sums apart)
    packed, packed_rate = metropolis_sample(_Lopsided(), _LopsidedRatio(pack=2), 4000, 3, seed=5, chain=50, pack=2)
    same = (packed == chained).all(dim=1).double().mean().item()
    assert same > 0.99 and abs(packed_rate - rate) < 1e-2, (same, packed_rate, rate)
    # sharpen=beta samples p_G r^beta: with beta 2, mode k's share is (k + 1) r_k^2 / Z, proportional to 1 / (k + 1)
    sharper, _ = metropolis_sample(_Lopsided(), _LopsidedRatio(), 4000, 3, seed=5, chain=50, sharpen=2.0)
    counts = torch.bincount(torch.cdist(sharper, data.ring_centers()).argmin(dim=1), minlength=8).double()
    expected = 1.0 / torch.arange(1, 9, dtype=torch.float64)
    torch.testing.assert_close(counts / 4000, expected / expected.sum(), rtol=0, atol=0.025)


def test_metropolis_chain_mechanics_and_refusals():
    from fastgan import ConditionalMLPGenerator
    from fastgan.sampling import generate, metropolis_sample

    class Constant(nn.Module):   # no preference: every proposal is taken, the last one is the sample
        def forward(self, x):
            return torch.zeros(x.shape[0], 1)

    g = _Spread()
    kept, rate = metropolis_sample(g, Constant(), 300, 2, seed=7, chain=12)
    assert rate == 1.0 and torch.equal(kept, generate(g, 300, 2, seed=7 + 12))

    class StartBest(nn.Module):   # the starts scored far above every proposal: no chain ever moves
        calls = 0

        def forward(self, x):
            StartBest.calls += 1
            return torch.zeros(x.shape[0], 1) if StartBest.calls == 1 else torch.full((x.shape[0], 1), -1e4)

    kept, rate = metropolis_sample(g, StartBest(), 300, 2, seed=7, chain=12)
    assert rate == 0.0 and torch.equal(kept, generate(g, 300, 2, seed=7))   # no chain moved: G's own starts

    class Broken(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 1), float("nan"))

    with pytest.raises(FloatingPointError, match="not all finite"):
        metropolis_sample(g, Broken(), 10, 2)
    for kwargs, match in (({"chain": 0}, "chain"), ({"chain": 2.5}, "chain"), ({"n": 0}, "n must"),
                          ({"pack": 0}, "pack"), ({"partner_sets": 0}, "partner_sets"), ({"sharpen": 0.5}, "sharpen"),
                          ({"sharpen": float("inf")}, "sharpen"), ({"sharpen": True}, "sharpen")):
        with pytest.raises(ValueError, match=match):
            metropolis_sample(g, Constant(), **{"n": 10, "latent_dim": 2, **kwargs})
    conditional = ConditionalMLPGenerator(latent_dim=2, num_classes=3, hidden=(8,), out_dim=2, output_activation=None)
    with pytest.raises(ValueError, match="unconditional"):
        metropolis_sample(conditional, Constant(), 10, 2)


class _Identity(nn.Module):   # a "generator" whose samples are its noise
    def forward(self, z):
        return z


class _Tilt(nn.Module):   # logit a * x: p_G exp(beta logit) for G = N(0, 1) is N(beta a, 1)
    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, x):
        return self.a * x


@pytest.mark.parametrize("step_size", [1.0, 0.3])
@pytest.mark.parametrize("sharpen", [1.0, 2.0])
def test_metropolis_latent_steps_sample_the_same_target(step_size, sharpen):
    """pCN proposals z' = sqrt(1 - s^2) z + s e leave the latent prior invariant, so the chain targets
    p_G exp(beta logit) at every step size: for G = N(0, 1) and logit 0.5 x, N(0.5 beta, 1). 20,000 chains of
    200 steps: the mean's standard error is 0.007, the variance's 0.01."""
    from fastgan.sampling import metropolis_sample
    x, rate = metropolis_sample(_Identity(), _Tilt(0.5), 20000, 1, seed=3, chain=200, sharpen=sharpen,
                                step_size=step_size)
    assert x.shape == (20000, 1) and 0.3 < rate < 1.0, rate
    mean, var = x.double().mean().item(), x.double().var().item()
    assert abs(mean - 0.5 * sharpen) < 0.03 and abs(var - 1.0) < 0.05, (mean, var)


def test_metropolis_small_latent_steps_keep_the_modes_shares():
    """With the exact ratio, independent proposals even _Lopsided's 1:8 mode shares out; small latent steps make
    local moves: in a short chain most samples stay in their start's mode, so the shares stay G's (a G
    whose shares are sound keeps them while sharpen > 1 works within each mode)."""
    from fastgan.sampling import generate, metropolis_sample
    g, ratio = _Lopsided(), _LopsidedRatio()

    def modes(x):
        return torch.cdist(x, data.ring_centers()).argmin(dim=1)

    start = modes(generate(g, 4000, 3, seed=5))
    local, rate = metropolis_sample(g, ratio, 4000, 3, seed=5, chain=20, step_size=0.01)
    far, _ = metropolis_sample(g, ratio, 4000, 3, seed=5, chain=20)
    stayed = (modes(local) == start).double().mean().item()
    assert stayed > 0.9 and 0.9 < rate <= 1.0, (stayed, rate)   # (a start near a mode boundary may cross)
    kl_local, kl_far = (metrics.evaluate_mixture(x, "ring")["kl"] for x in (local, far))
    assert kl_local > 0.1 and kl_far < 0.01, (kl_local, kl_far)
    # reproducible; step 1 is the independence sampler, draw for draw
    again, again_rate = metropolis_sample(g, ratio, 4000, 3, seed=5, chain=20, step_size=0.01)
    assert torch.equal(local, again) and again_rate == rate
    assert torch.equal(far, metropolis_sample(g, ratio, 4000, 3, seed=5, chain=20, step_size=1)[0])
    for bad in (0, 0.0, -0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="step_size"):
            metropolis_sample(g, ratio, 10, 3, step_size=bad)


def test_trainer_sample_with_metropolis():
    from fastgan.sampling import calibrate_discriminator, metropolis_sample
    torch.manual_seed(0)
    trainer = GANTrainer(MLPGenerator(latent_dim=4, hidden=(16,), out_dim=2, output_activation=None),
                         MLPDiscriminator(in_dim=4, hidden=(16,)), data.gaussian_ring(1000), device="cpu", pack=2,
                         ema=0.9)
    trainer.fit(5, log_every=5, progress=False)
    for bad, match in (({"metropolis": -1}, "metropolis"), ({"metropolis": 2.5}, "metropolis"),
                       ({"metropolis": True}, "metropolis"), ({"metropolis": 5, "rejection": 0.5}, "pass one"),
                       ({"metropolis": 5, "labels": 1}, "unconditional"), ({"sharpen": 2.0}, "metropolis=CHAIN"),
                       ({"metropolis": 5, "sharpen": 0.9}, "sharpen"),
                       ({"metropolis_step": 0.5}, "metropolis=CHAIN"),
                       ({"metropolis": 5, "metropolis_step": 0}, "metropolis_step must")):
        with pytest.raises(ValueError, match=match):   # refused before any calibration step
            trainer.sample(10, calibrate=10 ** 9 if "labels" not in bad else 0, **bad)
    state = [p.detach().clone() for p in trainer.discriminator.parameters()]
    kept = trainer.sample(300, seed=2, metropolis=25, calibrate=50)
    assert all(torch.equal(p, q) for p, q in zip(state, trainer.discriminator.parameters()))
    assert trainer.discriminator.training   # left as it was
    judge = calibrate_discriminator(trainer.ema.module, trainer.discriminator, trainer.data, 4, 50, 2, pack=2)
    alone, rate = metropolis_sample(trainer.ema.module, judge, 300, 4, 2, chain=25, pack=2)
    assert torch.equal(kept, alone) and rate == trainer.last_acceptance and 0 < rate < 1
    sharper = trainer.sample(300, seed=2, metropolis=25, calibrate=50, sharpen=3.0)
    assert torch.equal(sharper, metropolis_sample(trainer.ema.module, judge, 300, 4, 2, chain=25, pack=2,
                                                  sharpen=3.0)[0])
    local = trainer.sample(300, seed=2, metropolis=25, calibrate=50, sharpen=3.0, metropolis_step=0.2)
    assert torch.equal(local, metropolis_sample(trainer.ema.module, judge, 300, 4, 2, chain=25, pack=2,
                                                sharpen=3.0, step_size=0.2)[0])
    assert not torch.equal(local, sharper)
    # metropolis=0 is plain sampling
    assert torch.equal(trainer.sample(300, seed=2, metropolis=0), trainer.sample(300, seed=2))
