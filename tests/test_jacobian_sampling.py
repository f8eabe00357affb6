"""Jacobian sampling: G's samples where it stretched its latent space (the ones between modes) left out, no D."""
import pytest
import torch
from torch import nn

from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, data
from fastgan.sampling import JACOBIAN_FACTOR, generate, jacobian_norms, jacobian_sample


class _TwoModes(nn.Module):
    """1-d data at -1 and +1 from 1-d noise: a steep step at z = 0 (the bridge, slope up to 10) on a gentle slope
    (0.05): dG/dz = 40 s (1 - s) + 0.05 with s = sigmoid(20 z)."""

    def forward(self, z):
        return 2.0 * torch.sigmoid(20.0 * z) - 1.0 + 0.05 * z

    @staticmethod
    def slope(z):
        s = torch.sigmoid(20.0 * z.double())
        return (40.0 * s * (1 - s) + 0.05).abs().flatten()


def _exact_norms(g, z):
    """||dG/dz||_F per row from torch.autograd.functional.jacobian, one sample at a time, in float64."""
    g = g.double()
    return torch.stack([torch.autograd.functional.jacobian(lambda v: g(v[None])[0], row).norm()
                        for row in z.double()])


@pytest.mark.parametrize("latent_dim,out_dim", [(2, 2), (3, 2), (2, 5)])
def test_norms_match_the_exact_jacobian(latent_dim, out_dim):
    """Forward-mode columns summed in float64 against the full Jacobian, element-wise: an MLP with a tanh output,
    PacGAN's G with BatchNorm (in eval mode: its running statistics), and a linear map whose norm is known in
    closed form."""
    from fastgan.nn import BatchNormGenerator
    torch.manual_seed(latent_dim * 10 + out_dim)
    z = torch.randn(37, latent_dim, generator=torch.Generator().manual_seed(1))
    batch_norm = BatchNormGenerator(latent_dim=latent_dim, hidden=7, layers=2, out_dim=out_dim)
    batch_norm.train()(torch.randn(64, latent_dim))   # running statistics away from their start
    for g in (MLPGenerator(latent_dim=latent_dim, hidden=(7, 5), out_dim=out_dim, output_activation="tanh"),
              batch_norm):
        g.eval()
        x, norms = jacobian_norms(g, z)
        assert norms.dtype == torch.float64 and norms.shape == (37,) and torch.isfinite(norms).all()
        torch.testing.assert_close(x, g(z).detach())
        torch.testing.assert_close(norms, _exact_norms(g, z), rtol=1e-5, atol=1e-7)
    linear = nn.Linear(latent_dim, out_dim)
    _, norms = jacobian_norms(linear, z)
    torch.testing.assert_close(norms, linear.weight.double().norm().expand(37), rtol=1e-6, atol=0)


def test_keeps_the_modes_and_leaves_out_the_bridge():
    """On _TwoModes the kept samples are exactly the candidates whose slope is within the factor of the first
    batch's median slope: none on the bridge, both modes kept as G draws them."""
    g = _TwoModes()
    kept, rate = jacobian_sample(g, 3000, 1, seed=4, batch=1024)
    candidates = torch.cat([generate(g, 1024, 1, seed=4 + i) for i in range(4)])
    slopes = torch.cat([_TwoModes.slope(torch.randn(1024, 1, generator=torch.Generator().manual_seed(4 + i)))
                        for i in range(4)])
    threshold = JACOBIAN_FACTOR * slopes[:1024].median()
    expected = candidates[slopes <= threshold]
    assert kept.shape == (3000, 1) and torch.equal(kept, expected[:3000])
    assert rate == expected.shape[0] / 4096
    # the threshold (8 x a median slope of 0.05) leaves out |z| < 0.24, 19% of the candidates: the bridge
    # (|x| < 0.85 at |z| < 0.13, 10% of G's samples) is gone
    assert (kept.abs() > 0.85).all() and (candidates.abs() < 0.85).double().mean() > 0.07
    assert 0.77 < rate < 0.85, rate
    assert abs((kept > 0).double().mean().item() - 0.5) < 0.03   # the modes keep their shares
    again, again_rate = jacobian_sample(g, 3000, 1, seed=4, batch=1024)
    assert torch.equal(again, kept) and again_rate == rate
    wider, wider_rate = jacobian_sample(g, 3000, 1, seed=4, batch=1024, factor=100.0)
    assert wider_rate > rate


def test_trainer_sample_with_jacobian():
    """``sample(jacobian=...)`` is ``jacobian_sample`` of the trainer's G (the EMA one where kept), its rate in
    ``last_acceptance``; True is the default factor."""
    torch.manual_seed(0)
    trainer = GANTrainer(MLPGenerator(latent_dim=2, hidden=(32, 32), out_dim=2, output_activation=None),
                         MLPDiscriminator(in_dim=2, hidden=(32, 32)), data.gaussian_ring(2000), device="cpu",
                         batch_size=64, ema=0.9)
    trainer.fit(20, log_every=20, progress=False)
    kept = trainer.sample(2000, seed=3, jacobian=True)
    expected, rate = jacobian_sample(trainer.ema.module, 2000, 2, seed=3)
    assert torch.equal(kept, expected) and trainer.last_acceptance == rate
    kept = trainer.sample(500, seed=3, jacobian=1.5, ema=False)
    expected, rate = jacobian_sample(trainer.generator, 500, 2, seed=3, factor=1.5)
    assert torch.equal(kept, expected) and trainer.last_acceptance == rate and 0 < rate < 1


def test_refusals():
    from fastgan import ConditionalMLPGenerator
    g = _TwoModes()
    for kwargs, match in (({"factor": 0.5}, "factor"), ({"factor": float("inf")}, "factor"),
                          ({"factor": float("nan")}, "factor"), ({"factor": True}, "factor"),
                          ({"n": 0}, "n must"), ({"batch": 0}, "batch"), ({"latent_dim": 0}, "latent_dim")):
        with pytest.raises(ValueError, match=match):
            jacobian_sample(g, **{"n": 10, "latent_dim": 1, **kwargs})
    with pytest.raises(RuntimeError, match="kept"):   # a factor of 1 keeps about half: 100 candidates are few
        jacobian_sample(g, 100, 1, factor=1.0, batch=64, max_candidates=100)

    class Broken(nn.Module):
        def forward(self, z):
            return z * float("nan")

    with pytest.raises(FloatingPointError, match="not finite"):
        jacobian_sample(Broken(), 10, 1)
    conditional = ConditionalMLPGenerator(latent_dim=2, num_classes=3, hidden=(8,), out_dim=2, output_activation=None)
    with pytest.raises(ValueError, match="unconditional"):
        jacobian_sample(conditional, 10, 2)
    torch.manual_seed(0)
    trainer = GANTrainer(MLPGenerator(latent_dim=2, hidden=(8,), out_dim=2, output_activation=None),
                         MLPDiscriminator(in_dim=2, hidden=(8,)), data.gaussian_ring(500), device="cpu",
                         batch_size=16)
    for bad, match in (({"jacobian": 0.5}, "factor"), ({"jacobian": True, "metropolis": 5}, "without D"),
                       ({"jacobian": True, "rejection": 0.5}, "without D"),
                       ({"jacobian": True, "calibrate": 5}, "calibrate"),
                       ({"jacobian": True, "labels": 1}, "unconditional")):
        with pytest.raises(ValueError, match=match):
            trainer.sample(10, **bad)


def test_replicas_pick_by_their_own_generator():
    """Replica k's Jacobian samples are its own G's (``replica(k)``), and the rates come one per replica."""
    torch.manual_seed(0)
    trainer = GANTrainer(MLPGenerator(latent_dim=2, hidden=(16,), out_dim=2, output_activation=None),
                         MLPDiscriminator(in_dim=2, hidden=(16,)), data.gaussian_ring(500), device="cpu",
                         batch_size=16, replicas=3)
    trainer.fit(20, log_every=20, progress=False)
    every = trainer.sample(400, seed=5, jacobian=True)
    rates = trainer.last_acceptance
    assert every.shape == (3, 400, 2) and len(rates) == 3
    for k in range(3):
        g, _ = trainer.replica(k)
        kept, rate = jacobian_sample(g, 400, 2, seed=5)
        assert torch.equal(every[k], kept) and rate == rates[k]
        assert torch.equal(trainer.sample(400, seed=5, jacobian=True, replica=k), kept)


def test_a_fused_triton_generator_gives_the_plain_modules_samples():
    """On Triton kernels (G's layers fused ops) the Jacobian comes from the ops' reference path: the same
    samples as the plain module with the same weights (fp32 rounding apart: the same ones kept)."""
    torch.manual_seed(0)
    trainer = GANTrainer(MLPGenerator(latent_dim=2, hidden=(16,), out_dim=2, output_activation=None),
                         MLPDiscriminator(in_dim=2, hidden=(16,)), data.gaussian_ring(500), device="cpu",
                         batch_size=16, kernels="triton")
    trainer.fit(3, log_every=3, progress=False)
    assert any(type(m).__name__ == "FusedLinear" for m in trainer.generator.modules())
    plain = MLPGenerator(latent_dim=2, hidden=(16,), out_dim=2, output_activation=None)
    plain.load_state_dict(trainer.generator.state_dict())
    kept = trainer.sample(300, seed=1, jacobian=1.5)
    expected, rate = jacobian_sample(plain, 300, 2, seed=1, factor=1.5)
    assert trainer.last_acceptance == rate and 0 < rate < 1
    torch.testing.assert_close(kept, expected, rtol=1e-5, atol=1e-6)


def test_a_generator_without_forward_mode_autodiff_is_refused_clearly():
    class Backward(torch.autograd.Function):   # a custom op with a backward and no forward-mode rule
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * 2

    class Custom(nn.Module):
        def forward(self, z):
            return Backward.apply(z)

    with pytest.raises(TypeError, match="forward mode"):
        jacobian_sample(Custom(), 10, 2)


def test_a_latent_size_g_cannot_take_fails_as_plain_sampling_does():
    g = MLPGenerator(latent_dim=3, hidden=(4,), out_dim=2, output_activation=None)
    with pytest.raises(RuntimeError, match="shape"):
        generate(g, 10, 2)
    with pytest.raises(RuntimeError, match="shape"):   # not the forward-mode TypeError
        jacobian_sample(g, 10, 2)
