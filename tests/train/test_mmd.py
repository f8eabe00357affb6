"""The MMD term on G's loss (``fastgan.train.mmd``): the estimator against a float64 loop, its bandwidths from
the real rows, its gradient, and the option through the trainer, the replicas, the fast path and the CLI."""
from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from helpers import assert_close
from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, TrainConfig, data
from fastgan.nn.stacked import replica_models
from fastgan.train.mmd import MMD_BANDWIDTHS, mmd2


def _loop_mmd2(fake, real, bandwidths=MMD_BANDWIDTHS, fine=0.0, shape=None):
    """The unbiased MMD² by its definition, pair by pair in float64; the bandwidths log-spaced from the lower
    median of the real rows' nearest-neighbour distances to the lower median of their pairwise distances, the
    kernel at bandwidth h weighed (widest / h)^fine, or with ``shape`` q (widest / h)^q times the sum of the
    former over the sum of the latter."""
    fake, real = fake.double().tolist(), real.double().tolist()
    dist = math.dist
    nearest = sorted(min(dist(a, b) for j, b in enumerate(real) if j != i) for i, a in enumerate(real))
    pairs = sorted(dist(a, b) for a, b in itertools.combinations(real, 2))
    finest = nearest[(len(nearest) - 1) // 2]
    widest = max(pairs[(len(pairs) - 1) // 2], finest)
    widths = [finest * (widest / finest) ** (i / max(bandwidths - 1, 1)) for i in range(bandwidths)]

    weights = [(widths[-1] / h) ** fine for h in widths]
    if shape is not None:
        shaped = [(widths[-1] / h) ** shape for h in widths]
        weights = [w * sum(weights) / sum(shaped) for w in shaped]

    def k(a, b):
        return sum(w * math.exp(-dist(a, b) ** 2 / (2 * h ** 2)) for w, h in zip(weights, widths))

    def within(rows):
        n = len(rows)
        return sum(k(a, b) for (i, a), (j, b) in itertools.product(enumerate(rows), repeat=2) if i != j) / (n * (n - 1))

    across = sum(k(a, b) for a in fake for b in real) / (len(fake) * len(real))
    return within(fake) + within(real) - 2 * across


@pytest.mark.parametrize("n, m, features", [(7, 9, 2), (12, 5, 3), (2, 2, 1), (3, 40, 2)])
def test_mmd2_equals_its_definition_per_leading_index(n, m, features):
    g = torch.Generator().manual_seed(n * 100 + m)
    fake = torch.randn(3, n, features, generator=g) * torch.tensor([0.5, 1.0, 2.0]).reshape(3, 1, 1)
    real = torch.randn(3, m, features, generator=g) + 0.3
    ours = mmd2(fake, real)
    assert ours.shape == (3,)
    expected = torch.tensor([_loop_mmd2(fake[i], real[i]) for i in range(3)], dtype=torch.float64)
    assert_close(ours, expected, 1e-5, "fp32")
    assert_close(mmd2(fake.double(), real.double()), expected, 1e-12, "fp64")
    for bandwidths in (1, 2, 5):
        expected = torch.tensor(_loop_mmd2(fake[0], real[0], bandwidths), dtype=torch.float64)
        assert_close(mmd2(fake[0].double(), real[0].double(), bandwidths), expected, 1e-12, f"{bandwidths} bandwidths")


@pytest.mark.parametrize("fine", [0.5, 1.0, 2.5])
def test_the_weighed_kernels_equal_their_definition_and_gradient(fine):
    """``fine=p``: each kernel weighs (widest / h)^p, the finest most; value and gradient against float64."""
    g = torch.Generator().manual_seed(int(fine * 10))
    fake = 0.6 * torch.randn(2, 11, 2, generator=g, dtype=torch.float64)
    real = torch.randn(2, 13, 2, generator=g, dtype=torch.float64) + 0.2
    expected = torch.tensor([_loop_mmd2(fake[i], real[i], fine=fine) for i in range(2)], dtype=torch.float64)
    assert_close(mmd2(fake, real, fine=fine), expected, 1e-12, "fp64")
    assert_close(mmd2(fake.float(), real.float(), fine=fine), expected, 1e-5, "fp32")
    assert not torch.allclose(mmd2(fake, real, fine=fine), mmd2(fake, real))
    assert torch.autograd.gradcheck(lambda x: mmd2(x, real[0], fine=fine), (fake[0].clone().requires_grad_(True),))


@pytest.mark.parametrize("fine, shape", [(0.5, 0.75), (1.0, 0.0), (0.5, 0.5), (0.0, 0.75)])
def test_the_shaped_weights_equal_their_definition_and_keep_the_powers_sum(fine, shape):
    """``shape=q``: the weights (widest / h)^q scaled to (widest / h)^fine's sum: value and gradient against
    float64; q = fine is fine's own weighting, q 0 the unweighed kernels scaled up, fine 0 q's shape at the
    unweighed kernels' sum."""
    g = torch.Generator().manual_seed(int(10 * (fine + shape)))
    fake = 0.6 * torch.randn(2, 11, 2, generator=g, dtype=torch.float64)
    real = torch.randn(2, 13, 2, generator=g, dtype=torch.float64) + 0.2
    expected = torch.tensor([_loop_mmd2(fake[i], real[i], fine=fine, shape=shape) for i in range(2)],
                            dtype=torch.float64)
    assert_close(mmd2(fake, real, fine=fine, shape=shape), expected, 1e-12, "fp64")
    assert_close(mmd2(fake.float(), real.float(), fine=fine, shape=shape), expected, 1e-5, "fp32")
    same = torch.equal(mmd2(fake, real, fine=fine, shape=shape), mmd2(fake, real, fine=fine))
    assert same == (shape == fine)
    assert torch.autograd.gradcheck(lambda x: mmd2(x, real[0], fine=fine, shape=shape),
                                    (fake[0].clone().requires_grad_(True),))


def test_mmd2_refuses_a_bad_bandwidth_count_or_power():
    for bandwidths in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="bandwidths must be a positive integer"):
            mmd2(torch.zeros(4, 2), torch.ones(4, 2), bandwidths)
    for fine in (-0.5, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="fine .* must be a finite number >= 0"):
            mmd2(torch.zeros(4, 2), torch.ones(4, 2), fine=fine)
        with pytest.raises(ValueError, match="shape .* must be a finite number >= 0 or None"):
            mmd2(torch.zeros(4, 2), torch.ones(4, 2), fine=0.5, shape=fine)


def test_mmd2_is_blind_to_the_data_units_and_sees_narrow_samples():
    """The bandwidths are the real rows' own: scaling both sets leaves MMD² unchanged. Fakes from the data's
    distribution score near 0 (the estimator is unbiased), fakes at half its width well above."""
    g = torch.Generator().manual_seed(3)
    real, same = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g)
    for scale in (1e-3, 50.0):
        assert_close(mmd2(same * scale, real * scale), mmd2(same, real), 1e-4, f"scale {scale}")
    assert abs(mmd2(same, real).item()) < 0.02
    assert mmd2(0.5 * same, real).item() > 0.1


def test_the_wide_bandwidths_weigh_the_modes_masses():
    """Two modes 40 std apart, fakes well placed in each but three quarters in one: the kernels up to the real
    rows' median distance score the imbalance per bandwidth over ten times what the finest kernel alone does
    (at its scale a mode's mass is seen only through the density inside it)."""
    g = torch.Generator().manual_seed(6)
    centres = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)

    def mode(i, count):
        return centres[i] + 0.05 * torch.randn(count, 2, generator=g, dtype=torch.float64)

    real = torch.cat([mode(0, 40), mode(1, 40)])
    unbalanced, balanced = torch.cat([mode(0, 30), mode(1, 10)]), torch.cat([mode(0, 20), mode(1, 20)])
    seen = {b: (mmd2(unbalanced, real, b) - mmd2(balanced, real, b)).item() / b for b in (1, MMD_BANDWIDTHS)}
    assert seen[MMD_BANDWIDTHS] > 10 * max(seen[1], 1e-3), seen


def test_mmd2_gradient_is_its_float64_gradient_and_widens_narrow_samples():
    g = torch.Generator().manual_seed(4)
    real = torch.randn(30, 2, generator=g, dtype=torch.float64)
    fake = (0.5 * torch.randn(20, 2, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: mmd2(x, real), (fake,))
    (grad,) = torch.autograd.grad(mmd2(fake, real), fake)
    assert torch.isfinite(grad).all()
    # a step down the gradient spreads the narrow fakes out (towards the reals' width)
    moved = fake.detach() - 20.0 * grad
    assert moved.std(dim=0).mean() > fake.detach().std(dim=0).mean()


def test_far_rows_floor_the_kernels_above_subnormals_and_keep_the_definition():
    """Fakes twenty layouts away: every fine kernel underflows; floored (no subnormal exp results, which cost
    x86 over ten times a normal one), the value is still the definition's and the gradient finite."""
    g = torch.Generator().manual_seed(8)
    real, fake = torch.randn(9, 2, generator=g), (torch.randn(7, 2, generator=g) + 30.0).requires_grad_(True)
    value = mmd2(fake, real)
    assert_close(value, torch.tensor(_loop_mmd2(fake.detach(), real), dtype=torch.float64), 1e-5, "far fakes")
    (grad,) = torch.autograd.grad(value, fake)
    assert torch.isfinite(grad).all()


def test_mmd2_with_repeated_rows_stays_finite_and_refuses_too_few_rows():
    real = torch.zeros(6, 2)   # every nearest-neighbour distance 0: the bandwidth is floored, not 0
    fake = torch.zeros(4, 2, requires_grad=True)
    value = mmd2(fake, real)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(fake.grad).all()
    with pytest.raises(ValueError, match="at least 2 fake and 2 real rows"):
        mmd2(torch.zeros(1, 2), torch.zeros(5, 2))


@pytest.mark.parametrize("settings, match", [
    (dict(mmd_weight=-1.0), "mmd_weight must be"),
    (dict(mmd_weight=float("nan")), "mmd_weight must be"),
    (dict(mmd_weight=[0.0, 3.0]), "mmd_weight is a sequence of 2 values"),
    (dict(mmd_weight=3.0, data_parallel=True), "data_parallel does not combine with mmd_weight"),
    (dict(mmd_weight=3.0, mmd_fine=-1.0), "mmd_fine must be"),
    (dict(mmd_fine=0.5), "there is no term: give mmd_weight > 0"),
    (dict(mmd_weight=3.0, mmd_fine=0.5, mmd_fine_from=-1), "mmd_fine_from must be an integer >= 0"),
    (dict(mmd_weight=3.0, mmd_fine=0.5, mmd_fine_from=2.5), "mmd_fine_from must be an integer >= 0"),
    (dict(mmd_from=10), "mmd_from=10 starts the MMD term, but there is no term: give mmd_weight > 0"),
    (dict(mmd_weight=3.0, mmd_from=True), "mmd_from must be an integer >= 0"),
    (dict(mmd_weight=3.0, mmd_fine_shape=0.75), "mmd_fine_shape=0.75 shares the weights mmd_fine gives .* give "
                                                "mmd_fine > 0 too"),
    (dict(mmd_weight=3.0, mmd_fine=0.5, mmd_fine_shape=-1.0), "mmd_fine_shape must be a finite number >= 0"),
])
def test_bad_mmd_settings_are_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**settings)


def test_the_term_and_its_power_start_at_their_steps():
    config = TrainConfig(mmd_weight=3.0, mmd_from=2, mmd_fine=0.5, mmd_fine_from=4, mmd_fine_shape=0.75)
    plain, weighed = {"fine": 0.0, "shape": None}, {"fine": 0.5, "shape": 0.75}
    assert [config.mmd_at(step) for step in (0, 1, 2, 3, 4, 10**9)] == [None, None, plain, plain, weighed, weighed]
    assert config.schedule_changes_within(1, 2) and config.schedule_changes_within(3, 2)
    assert not config.schedule_changes_within(4, 5) and not config.schedule_changes_within(2, 2)
    assert not TrainConfig(mmd_weight=3.0, mmd_fine_from=4).schedule_changes_within(3, 2)   # (no power: no change)
    assert TrainConfig().mmd_at(0) is None and TrainConfig(mmd_weight=3.0).mmd_at(0) == plain


def _models(features=2, latent=3):
    return (MLPGenerator(latent_dim=latent, hidden=(16, 16), out_dim=features, output_activation=None),
            MLPDiscriminator(in_dim=features * 2, hidden=(16, 16)))


def _options(**kw):
    return {"batch_size": 16, "precision": "fp32", "device": "cpu", "seed": 5, "pack": 2, "lr": 2e-3, **kw}


@pytest.mark.parametrize("update", ["alternating", "simultaneous"])
def test_the_term_joins_g_loss_and_only_g_loss(update):
    """With the term, G's reported loss is the GAN loss plus the weight times MMD² (the same D losses on the
    first step, where D has not yet seen a different G), and G trains to other weights."""
    ring, models = data.gaussian_ring(500), _models()
    runs = {}
    for weight in (0.0, 3.0):
        trainer = GANTrainer(*copy.deepcopy(models), ring, **_options(mmd_weight=weight, update=update))
        assert trainer.step_path is None or "fused" not in trainer.step_path
        for _ in range(3):
            trainer.step()
        trainer.flush_losses()
        runs[weight] = trainer
    plain, term = runs[0.0], runs[3.0]
    assert term.history["loss_d"][0] == pytest.approx(plain.history["loss_d"][0], abs=1e-6)
    assert all(b > a for a, b in zip(plain.history["loss_g"][:1], term.history["loss_g"][:1]))
    assert not torch.allclose(term.generator.state_dict()["net.0.weight"],
                              plain.generator.state_dict()["net.0.weight"])


@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_mmd_per_replica_equals_single_runs(kernels):
    g, d = _models()
    ring = data.gaussian_ring(500)
    trainer = GANTrainer(g, d, ring, replicas=2, kernels=kernels, **_options(mmd_weight=[0.0, 3.0], d_steps=2,
                                                                                  mmd_from=1, mmd_fine=0.5,
                                                                                  mmd_fine_from=3, mmd_fine_shape=0.75))
    assert trainer.config.has_mmd and not trainer.config.for_replica(0).has_mmd
    # (replica 0 has no term, so no start or power for it; replica 1 keeps them)
    assert [(trainer.config.for_replica(k).mmd_fine, trainer.config.for_replica(k).mmd_from) for k in (0, 1)] == \
        [(0.0, 0), (0.5, 1)]
    assert trainer.config.shard(0, 1).mmd_fine == 0.0 and trainer.config.shard(1, 2).mmd_fine_from == 3
    assert trainer.config.for_replica(0).mmd_fine_shape is None and trainer.config.shard(1, 2).mmd_fine_shape == 0.75
    for _ in range(6):
        trainer.step()
    trainer.flush_losses()
    for k in range(2):
        single = GANTrainer(*replica_models(g, d, trainer.config.seed, k), ring, trainer.config.for_replica(k))
        for _ in range(6):
            single.step()
        single.flush_losses()
        for key in ("loss_d", "loss_g"):
            assert_close(torch.tensor([row[k] for row in trainer.history[key]]), torch.tensor(single.history[key]),
                         1e-5, f"replica {k} {key}")
        assert_close(trainer.sample(64, replica=k), single.sample(64), 1e-5, f"replica {k} samples")


@pytest.mark.parametrize("replicas", [None, 2])
@pytest.mark.parametrize("later, before", [
    ({"mmd_fine": 1.0, "mmd_fine_from": 3}, {}),   # the weighed kernels from 3 on, the unweighed term before
    ({"mmd_from": 3}, {"mmd_weight": 0.0}),   # the term from 3 on, none before
    ({"mmd_fine": 1.0, "mmd_fine_from": 3, "mmd_fine_shape": 0.5}, {"mmd_fine": 0.7, "mmd_fine_from": 3,
                                                                     "mmd_fine_shape": 0.5}),   # (the weights' sum)
])
def test_the_term_changes_at_its_step_and_resumes_exactly(tmp_path, replicas, later, before):
    """The first 3 steps equal the run with the setting before its step, the 4th differs; a run saved at step 2
    and resumed equals the uninterrupted one (the term is a function of the step)."""
    ring, models = data.gaussian_ring(500), _models()

    def trainer(**kw):
        return GANTrainer(*copy.deepcopy(models), ring, **_options(**{"mmd_weight": 3.0, "replicas": replicas, **kw}))

    changed, plain = trainer(**later), trainer(**before)
    for t in (changed, plain):
        t.fit(5, progress=False)
    assert changed.history["loss_g"][:3] == plain.history["loss_g"][:3]
    assert changed.history["loss_g"][3] != plain.history["loss_g"][3]
    first = trainer(**later)
    first.fit(2, progress=False)
    resumed = trainer(**later)
    resumed.load(first.save(tmp_path / "c.pt"))
    resumed.fit(3, progress=False)
    assert resumed.history == changed.history


def test_the_fused_replica_step_hands_the_term_to_the_replica_step_and_says_why():
    trainer = GANTrainer(*_models(), data.gaussian_ring(500), replicas=2, kernels="triton-mlp",
                         **_options(mmd_weight=3.0))
    assert trainer.step_path == "replicas (mmd_weight not in the fused step)"

