"""K replicas in one trainer (fastgan.replicas): replica k equals its single-GAN run, per-replica settings,
checkpoints, sampling, compile, and the errors for what is not supported."""
import copy

import pytest
import torch

from helpers import ON_CUDA, assert_close
from fastgan import (CheckpointError, ConditionalMLPGenerator, GANTrainer, MLPDiscriminator, MLPGenerator,
                     ProjectionDiscriminator, TrainConfig)
from fastgan.nn.models import BatchNormGenerator, MaxoutDiscriminator
from fastgan.train.replicas import ReplicaTrainer
from fastgan.nn.stacked import StackedConditional, StackedMLP, StackedNet, replica_models

STEPS = 20


def _models(pack=1, features=6, latent=4, width=16):
    return (MLPGenerator(latent_dim=latent, hidden=(width, width), out_dim=features, output_activation=None),
            MLPDiscriminator(in_dim=features * pack, hidden=(width, width)))


def _data(n=300, features=6):
    return torch.randn(n, features, generator=torch.Generator().manual_seed(11))


def _options(**kw):
    return {"batch_size": 16, "precision": "fp32", "device": "cpu", "seed": 5, **kw}


def _single_runs_match(trainer, g, d, data, steps, tolerance=1e-5, samples=True, labels=None):
    """Every replica against the single-GAN run it stands for: same losses each step, same weights and
    samples at the end."""
    trainer.flush_losses()
    for k in range(trainer.replicas):
        single = GANTrainer(*replica_models(g, d, trainer.config.seed, k), data,
                            trainer.config.for_replica(k).replace(compile=False), labels=labels)
        for _ in range(steps):
            single.step()
        single.flush_losses()
        for key in ("loss_d", "loss_g"):
            ours = torch.tensor([row[k] for row in trainer.history[key]])
            assert_close(ours, torch.tensor(single.history[key]), tolerance, f"replica {k} {key}")
        rg, rd = trainer.replica(k)
        for ours, theirs, what in ((rg, single.generator, "G"), (rd, single.discriminator, "D")):
            for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
                assert_close(a, b, tolerance, f"replica {k} {what}.{name}")
        if samples:
            assert_close(trainer.sample(64, replica=k), single.sample(64), tolerance, f"replica {k} samples")


@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_each_replica_equals_its_single_run(kernels):
    """fp32, 20 steps: per-replica lr, TTUR, betas, label smoothing and instance noise, d_steps 2, EMA;
    kernels="triton" runs the fused linear kernel with its replica grid axis (interpreter on the CPU). On
    the torch path the layers are 32 wide over 6 features: the narrow-layer matmul forms of the backward."""
    g, d = _models(width=32 if kernels == "torch" else 16)
    data = _data()
    trainer = GANTrainer(g, d, data, replicas=3, kernels=kernels, **_options(
        lr=[1e-3, 2e-4, 5e-4], lr_d=[1e-3, 4e-4, 5e-4], betas=[(0.5, 0.999), (0.0, 0.9), (0.5, 0.99)],
        real_label=[1.0, 0.9, 1.0], instance_noise=[0.0, 0.1, 0.05], d_steps=2, ema=0.9))
    assert isinstance(trainer, ReplicaTrainer) and trainer.step_path == "replicas"
    assert trainer.kernels_run == ("torch" if kernels == "torch" else "triton-interpreter")
    for _ in range(STEPS):
        losses = trainer.step()
    assert losses.shape == (3, 2)
    _single_runs_match(trainer, g, d, data, STEPS)


@pytest.mark.parametrize("options", [dict(pack=2), dict(pack=2, pack_convention="rows"),
                                     dict(lr=2e-3, betas=(0.0, 0.9)), dict(loss="hinge"),
                                     dict(lr=2e-3, weight_decay_g=0.5, l1_d=1e-2),
                                     dict(lr=[2e-3, 1e-3], weight_decay_d=0.5, l1_g=1e-2),
                                     dict(spectral_norm=True, lr=2e-3, d_steps=2),
                                     dict(spectral_norm=True, update="simultaneous", kernels="triton"),
                                     dict(fused_optimizer="flat", lr=[2e-3, 1e-3], betas=[(0.5, 0.999), (0.0, 0.9)],
                                          weight_decay_g=0.5, l1_d=1e-2, kernels="triton", lr_schedule=((10, 0.5),)),
                                     dict(adam_state="bf16", lr=[2e-3, 1e-3], weight_decay_g=0.5)],
                         ids=["pack", "pack-rows", "uniform-fused-adam", "hinge", "decay-l1-fused-adamw",
                              "decay-l1-per-replica", "spectral-norm", "spectral-norm-simultaneous-triton",
                              "flatadam-per-replica", "bf16-moments"])
def test_replicas_equal_single_runs_with_options(options):
    """(hinge: while every logit is inside the margin, D's gradient on some weights cancels exactly between
    the real and the fake pass; the replicas run the two passes apart, as the single step does, or that zero
    would become rounding noise and Adam's first step a move of ~lr)"""
    g, d = _models(pack=options.get("pack", 1))
    data = _data()
    trainer = GANTrainer(g, d, data, replicas=2, **_options(**options))
    for _ in range(STEPS):
        trainer.step()
    _single_runs_match(trainer, g, d, data, STEPS, samples=False)


@pytest.mark.parametrize("sampler, update", [("torch", "alternating"), ("philox", "alternating"),
                                             ("torch", "simultaneous")])
def test_augmented_replicas_equal_their_single_runs_and_resume(sampler, update, tmp_path):
    """8x8 images, translation + cutout + brightness: each replica's own pipeline drawing from its own generator
    (or after the Philox batch), its own p (two adapting, ADA, each steered by its own D; one fixed); packed,
    instance noise, d_steps 2 (alternating)."""
    g, d = _models(pack=2, features=64)
    data = _data(features=64)
    opts = _options(replicas=3, sampler=sampler, augment="translation,cutout,brightness", augment_p=[0.5, 0.3, 0.5],
                    augment_target=[0.0, 0.0, None], pack=2, update=update, d_steps=2 if update == "alternating" else 1,
                    lr=[2e-3, 1e-3, 5e-4], instance_noise=[0.0, 0.1, 0.0])
    trainer = GANTrainer(g, d, data, **opts)
    for _ in range(STEPS):
        trainer.step()
    _single_runs_match(trainer, g, d, data, STEPS, samples=False)
    p = trainer.augment.state_dict()["p"].tolist()
    assert p[0] != 0.5 and p[1] != 0.3 and p[2] == 0.5, p   # two adapted, each its own way; one fixed
    a, b = _run_and_resume(g, d, data, opts, tmp_path / "r.pt", 3)
    assert b.history == a.history and torch.equal(b.augment.state_dict()["p"], a.augment.state_dict()["p"])
    assert torch.equal(b.discriminator.flat, a.discriminator.flat)
    with pytest.raises(ValueError, match="not a square one-channel image"):
        GANTrainer(*_models(), _data(), **_options(replicas=2, augment="translation"))


@pytest.mark.parametrize("kernels,gammas", [("torch", [0.0, 1.0, 10.0]), ("triton", [0.0, 10.0])])
def test_r1_per_replica_equals_single_runs(kernels, gammas):
    """R1 with a weight per replica (0 for one: its single run takes no penalty pass at all), every 3 steps,
    packed, d_steps 2: each replica's losses, weights and samples are its single run's. The triton path
    forms the penalty's double backward on the reference path, as the single step does (2 replicas there:
    the interpreter's time)."""
    g, d = _models(pack=2)
    data = _data()
    trainer = GANTrainer(g, d, data, replicas=len(gammas), kernels=kernels, **_options(
        pack=2, lr=2e-3, r1_gamma=gammas, r1_every=3, d_steps=2))
    assert trainer.config.has_r1 and not trainer.config.for_replica(0).has_r1
    for _ in range(10):
        trainer.step()
    _single_runs_match(trainer, g, d, data, 10)
    # the penalty changes what D learns: the last replica (gamma 10) is not the run without it
    last = len(gammas) - 1
    plain = GANTrainer(*replica_models(g, d, trainer.config.seed, last), data,
                       trainer.config.for_replica(last).replace(r1_gamma=0.0))
    for _ in range(10):
        plain.step()
    _, rd = trainer.replica(last)
    assert not torch.allclose(rd.state_dict()["net.0.weight"], plain.discriminator.state_dict()["net.0.weight"])


def _pacgan_models(pack=1, features=6, latent=4):
    """PacGAN's model classes at test size: BatchNorm G (2 x 24), maxout D (2 x 12, 3 pieces)."""
    return (BatchNormGenerator(latent_dim=latent, hidden=24, layers=2, out_dim=features),
            MaxoutDiscriminator(in_dim=features * pack, hidden=12, layers=2, pieces=3))


@pytest.mark.parametrize("options", [
    dict(update="simultaneous", pack=2, pack_convention="rows", betas=(0.8, 0.999), ema=0.9),
    dict(update="alternating", lr=[1e-3, 3e-4, 1e-3], instance_noise=[0.0, 0.1, 0.0], d_steps=2),
    dict(update="simultaneous", real_label=[0.9, 0.8, 0.95], lr=[1e-3, 1e-3, 2e-4]),
], ids=["simultaneous-pack-rows-ema", "alternating-per-replica", "simultaneous-per-replica"])
def test_pacgan_models_as_replicas_equal_their_single_runs(options):
    """PacGAN's BatchNorm G and maxout D stack (StackedNet): per-replica batch statistics, running statistics,
    maxout and both update rules give each replica its single run (losses, weights, BatchNorm buffers,
    samples from running statistics) — with d_steps 2, G's running statistics see the no-grad passes too."""
    g, d = _pacgan_models(pack=options.get("pack", 1))
    data = _data()
    # real_label < 1: at initialisation D is near constant, so with targets 1 and 0 (gradients -1/2 and +1/2) a
    # maxout bias whose piece wins as many real rows as fake ones gets an exactly cancelling gradient, rounding
    # noise of ~1e-8, and Adam's first step, lr * g / (|g| + eps), turns that noise into differences of ~lr/100
    trainer = GANTrainer(g, d, data, replicas=3, **_options(**{"lr": 1e-3, "real_label": 0.9, **options}))
    assert isinstance(trainer.generator, StackedNet) and isinstance(trainer.discriminator, StackedNet)
    for _ in range(12):
        trainer.step()
    _single_runs_match(trainer, g, d, data, 12)
    rg, _ = trainer.replica(0)
    assert rg.net[1].num_batches_tracked.item() == 12 * options.get("d_steps", 1)


@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_minibatch_std_replicas_equal_their_single_runs(kernels):
    """A D with a minibatch standard deviation (groups of 4 of each replica's own 8 packed rows, and of 5 of
    them: a short last group) stacks as a StackedNet; each replica is its single run."""
    g = MLPGenerator(latent_dim=4, hidden=(16, 16), out_dim=6, output_activation=None)
    data = _data()
    for group in (4, 5):
        d = MLPDiscriminator(in_dim=12, hidden=(16, 16), minibatch_std=group)
        trainer = GANTrainer(g, d, data, replicas=2, kernels=kernels, **_options(pack=2, lr=[1e-3, 2e-4]))
        assert isinstance(trainer.discriminator, StackedNet)
        for _ in range(10):
            trainer.step()
        _single_runs_match(trainer, g, d, data, 10, samples=False)


@pytest.mark.parametrize("kernels, options", [
    ("torch", dict(d_steps=2, instance_noise=[0.0, 0.1], ema=0.9)),
    ("triton", dict(d_steps=2, instance_noise=[0.0, 0.1], ema=0.9)),
    ("torch", dict(update="simultaneous", real_label=[0.9, 1.0])),
    ("torch", dict(r1_gamma=[0.0, 1.0], r1_every=2, loss="hinge", real_label=1.0)),
], ids=["alternating-torch", "alternating-triton", "simultaneous", "r1-hinge"])
def test_conditional_replicas_equal_their_single_runs_and_resume(kernels, options, tmp_path):
    """ConditionalMLPGenerator and ProjectionDiscriminator as StackedConditionals: each replica draws its real
    rows' classes and the classes G is asked for as its single run does (per-replica lr, instance noise, EMA);
    samples for given classes; exact resume."""
    g = ConditionalMLPGenerator(latent_dim=4, num_classes=3, hidden=(16, 16), out_dim=6, output_activation=None)
    d = ProjectionDiscriminator(in_dim=6, num_classes=3, hidden=(16, 16))
    data, labels = _data(), torch.randint(0, 3, (300,), generator=torch.Generator().manual_seed(2))
    opts = _options(replicas=2, kernels=kernels, lr=[1e-3, 2e-4], **options)
    trainer = GANTrainer(g, d, data, labels=labels, **opts)
    assert isinstance(trainer.generator, StackedConditional) and isinstance(trainer.discriminator, StackedConditional)
    for _ in range(10):
        trainer.step()
    _single_runs_match(trainer, g, d, data, 10, samples=False, labels=labels)
    for k in range(2):
        single = GANTrainer(*trainer.replica(k), data, trainer.config.for_replica(k), labels=labels)
        for classes in (2, torch.tensor([0, 1, 2, 2, 1])):
            n = 5
            assert_close(trainer.sample(n, replica=k, labels=classes, ema=False),
                         single.sample(n, labels=classes), 1e-6, f"replica {k} samples of {classes}")
    a, b = _run_and_resume(g, d, data, opts, tmp_path / "c.pt", 4, labels=labels)
    assert b.history == a.history and torch.equal(b.discriminator.flat, a.discriminator.flat)
    assert torch.equal(b.generator.flat, a.generator.flat)


def test_conditional_replicas_refuse_what_they_cannot_train():
    g = ConditionalMLPGenerator(latent_dim=4, num_classes=3, hidden=(8,), out_dim=6, output_activation=None)
    d = ProjectionDiscriminator(in_dim=6, num_classes=3, hidden=(8,))
    data, labels = _data(), torch.zeros(300, dtype=torch.long)
    with pytest.raises(ValueError, match="sampler='philox' draws no labels"):
        GANTrainer(g, d, data, labels=labels, **_options(replicas=2, sampler="philox"))
    with pytest.raises(ValueError, match="no labels were given"):
        GANTrainer(g, d, data, **_options(replicas=2))
    with pytest.raises(ValueError, match="normalises plain MLP discriminators"):
        GANTrainer(g, d, data, labels=labels, **_options(replicas=2, spectral_norm=True))

    class Reweighted(ProjectionDiscriminator):   # a forward of its own: not stacked as a projection D
        def forward(self, x, labels):
            return 2 * super().forward(x, labels)

    with pytest.raises(ValueError, match="replicas train MLPs"):
        GANTrainer(g, Reweighted(in_dim=6, num_classes=3, hidden=(8,)), data, labels=labels, **_options(replicas=2))


def test_pacgan_replicas_keep_the_templates_mode():
    """A template G in eval mode normalises by its running statistics in its single run: so do its replicas."""
    g, d = _pacgan_models()
    g.eval()
    data = _data()
    trainer = GANTrainer(g, d, data, replicas=2, **_options(lr=1e-3, real_label=0.9))
    assert not trainer.generator.training and trainer.discriminator.training
    for _ in range(4):
        trainer.step()
    _single_runs_match(trainer, g, d, data, 4)


def test_simultaneous_mlp_replicas_equal_their_single_runs():
    """The hand-written StackedMLP backward under the simultaneous update (two backward passes, inputs=)."""
    g, d = _models(pack=2)
    data = _data()
    trainer = GANTrainer(g, d, data, replicas=2, **_options(update="simultaneous", pack=2, lr=[1e-3, 5e-4]))
    assert isinstance(trainer.generator, StackedMLP)
    for _ in range(STEPS):
        trainer.step()
    _single_runs_match(trainer, g, d, data, STEPS)


def test_stacked_net_matches_each_model_in_train_and_eval_mode():
    """Forward of K BatchNorm generators and maxout discriminators at once against each model alone: batch
    statistics and running-statistics updates per replica in train mode, running statistics in eval mode;
    non-contiguous input; load_into copies weights and statistics."""
    pairs = [replica_models(*_pacgan_models(), 0, k) for k in range(3)]
    for models, x in (([g for g, _ in pairs], torch.randn(3, 9, 8)[..., ::2]),
                      ([d for _, d in pairs], torch.randn(3, 6, 9).transpose(1, 2))):
        stacked = StackedNet(models)
        assert not x.is_contiguous()
        out = stacked(x)   # train mode: each replica's own batch statistics
        for k, m in enumerate(models):
            assert_close(out[k], m(x[k]), 1e-5, f"replica {k} (train)")
        stacked.eval()
        out = stacked(x)
        for k, m in enumerate(models):
            m.eval()
            assert_close(out[k], m(x[k]), 1e-5, f"replica {k} (eval)")
            fresh = stacked.load_into(copy.deepcopy(models[0]), k).eval()
            for (name, a), (_, b) in zip(fresh.state_dict().items(), m.state_dict().items()):
                # weights are copied (bit-equal); the running statistics were computed by each side's own
                # batch-norm reduction (the stacked one over an (N, K*F) layout), which round in another order
                tolerance = 1e-6 if "running" in name else 0
                assert_close(a, b, tolerance, f"load_into: replica {k} {name}")


def test_stacked_net_triton_kernels_equal_its_torch_path():
    """kernels="triton" (the fused linear kernel with its replica axis, maxout's kernel; the interpreter on
    the CPU) against the torch path: outputs, the input's gradient and every weight's, one pass (training
    through Adam would amplify rounding in near-zero gradients: a first Adam step is lr * g / (|g| + eps))."""
    pairs = [replica_models(*_pacgan_models(), 3, k) for k in range(2)]
    for models, x in (([g for g, _ in pairs], torch.randn(2, 9, 4)), ([d for _, d in pairs], torch.randn(2, 9, 6))):
        from fastgan.ops import kernel_launches
        outs = []
        for kernels in ("torch", "triton"):
            stacked = StackedNet(models, kernels)
            before = dict(kernel_launches)
            xk = x.clone().requires_grad_(True)
            y = stacked(xk)
            y.backward(torch.linspace(-1, 1, y.numel()).view_as(y))
            outs.append((y.detach(), xk.grad, stacked.flat.grad))
            ran = {name for name, count in kernel_launches.items()
                   if "linear" in name and count > before.get(name, 0)}
            assert bool(ran) == (kernels == "triton"), f"{kernels}: linear kernels launched {sorted(ran)}"
        for what, a, b in zip(("output", "input grad", "weight grad"), outs[1], outs[0]):
            assert_close(a, b, 1e-5, f"{type(models[0]).__name__} {what}")


def test_pacgan_models_reset_as_constructed():
    """A model with a reset_parameters() of its own (PacGAN's: N(0, 0.02)) is reset by it, so replica k of
    seed s starts from the weights the model has when built under torch.manual_seed(s + k)."""
    torch.manual_seed(7)
    g, d = _pacgan_models()
    g0, d0 = replica_models(*_pacgan_models(), 7, 0)
    for a, b in ((g, g0), (d, d0)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name
    assert g0.net[0].weight.std().item() < 0.05, "N(0, 0.02) weights, not the layers' default init"


def _run_and_resume(g, d, data, opts, path, steps, labels=None):
    """``a``: 2 x ``steps`` steps, saved to ``path`` halfway; ``b``: loaded from there, then ``steps`` steps."""
    a = GANTrainer(g, d, data, labels=labels, **opts)
    for _ in range(steps):
        a.step()
    a.save(path)
    for _ in range(steps):
        a.step()
    b = GANTrainer(g, d, data, labels=labels, **opts)
    b.load(path)
    assert b.step_count == steps
    for _ in range(steps):
        b.step()
    return a, b


def test_pacgan_replica_checkpoints_keep_batchnorm_statistics(tmp_path):
    g, d = _pacgan_models()
    data = _data()
    opts = _options(replicas=2, update="simultaneous", ema=0.9, lr=1e-3)
    path = tmp_path / "r.pt"
    a, b = _run_and_resume(g, d, data, opts, path, 4)
    for name in ("generator", "discriminator"):
        for (key, x), (_, y) in zip(getattr(a, name).state_dict().items(), getattr(b, name).state_dict().items()):
            assert torch.equal(x, y), f"{name}.{key}"
    assert_close(b.sample(32), a.sample(32), 0, "samples")
    from fastgan.checkpoint import load_checkpoint, save_checkpoint
    state = load_checkpoint(path)
    del state["buffers"]
    with pytest.raises(CheckpointError, match="BatchNorm statistics do not fit"):
        b.load(save_checkpoint(state, tmp_path / "no-buffers.pt"))


def test_replica_k_is_the_run_with_seed_plus_k():
    """replicas=3, seed=s trains the runs seed=s, s+1, s+2: replica 1 of seed 5 is replica 0 of seed 6."""
    g, d = _models()
    data = _data()
    a = GANTrainer(g, d, data, replicas=3, **_options(seed=5))
    b = GANTrainer(g, d, data, replicas=1, **_options(seed=6))
    for _ in range(5):
        a.step(), b.step()
    torch.testing.assert_close(a.generator.flat[1], b.generator.flat[0], rtol=0, atol=0)


def test_replica_models_are_deterministic_distinct_and_leave_the_global_rng_alone():
    g, d = _models()
    state = torch.get_rng_state()
    g0, d0 = replica_models(g, d, 3, 0)
    g0b, _ = replica_models(g, d, 3, 0)
    g1, _ = replica_models(g, d, 3, 1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(g0.net[0].weight, g0b.net[0].weight)
    assert not torch.equal(g0.net[0].weight, g1.net[0].weight)
    assert not torch.equal(g0.net[0].weight, g.net[0].weight), "the template's own weights are not used"
    assert type(g0) is type(g) and type(d0) is type(d)


def test_stacked_forward_matches_each_model():
    models = [replica_models(*_models(), 0, k)[1] for k in range(3)]
    stacked = StackedMLP(models)
    x = torch.randn(3, 9, 6, dtype=torch.float32)
    out = stacked(x)
    for k, m in enumerate(models):
        assert_close(out[k], m(x[k]), 1e-6, f"replica {k}")
    fresh = stacked.load_into(copy.deepcopy(models[0]), 2)
    assert_close(fresh(x[2]), models[2](x[2]), 0, "load_into")


def test_histories_and_losses_are_per_replica():
    g, d = _models()
    trainer = GANTrainer(g, d, _data(), replicas=4, **_options())
    history = trainer.fit(6, log_every=3, progress=False)
    assert history["step"] == list(range(1, 7))
    assert all(len(v) == 4 for v in history["loss_d"] + history["loss_g"])
    assert all(torch.isfinite(torch.tensor(history["loss_d"])).reshape(-1))


def test_save_and_load_resume_exactly(tmp_path):
    g, d = _models()
    data = _data()
    opts = _options(replicas=3, lr=[1e-3, 2e-4, 5e-4], instance_noise=[0.0, 0.1, 0.0], ema=0.9)
    path = tmp_path / "r.pt"
    a, b = _run_and_resume(g, d, data, opts, path, 5)
    for name in ("generator", "discriminator"):
        torch.testing.assert_close(getattr(b, name).flat, getattr(a, name).flat, rtol=0, atol=0)
    torch.testing.assert_close(b.ema_flat, a.ema_flat, rtol=0, atol=0)
    assert b.history == a.history
    with pytest.raises(CheckpointError, match="holds 3 replicas, this trainer 2"):
        GANTrainer(g, d, data, **{**opts, "replicas": 2, "lr": 1e-3, "instance_noise": 0.0}).load(path)
    single = GANTrainer(g, d, data, **_options())
    with pytest.raises(CheckpointError, match="ReplicaTrainer"):
        single.load(path)
    with pytest.raises(CheckpointError, match="single-GAN"):
        b.load(single.save(tmp_path / "single.pt"))
    # RNG states of another kind of device (a CUDA generator's state is 16 bytes, a CPU one's thousands): a
    # clear refusal before anything is copied, not a RuntimeError from set_state
    from fastgan.checkpoint import load_checkpoint, save_checkpoint
    state = load_checkpoint(path)
    state["rng"] = [torch.zeros(16, dtype=torch.uint8) for _ in state["rng"]]
    before = b.generator.flat.clone()
    with pytest.raises(CheckpointError, match="not those of cpu generators"):
        b.load(save_checkpoint(state, tmp_path / "other-device.pt"))
    assert torch.equal(b.generator.flat, before)


@pytest.mark.parametrize("first, then", [("flat", "flat"), ("flat", False), (False, "flat")])
def test_flatadam_replicas_resume_exactly_and_their_checkpoints_load_under_either_adam(tmp_path, first, then):
    """ReplicaAdam's state holds the update count, not its kernel's counter: a checkpoint written with FlatAdam's
    kernel resumes under PyTorch's arithmetic and back (to fp32 rounding), and under its own exactly."""
    g, d = _models()
    data = _data()
    opts = _options(replicas=2, lr=[1e-3, 2e-3], fused_optimizer=first)
    a = GANTrainer(g, d, data, **opts)
    a.fit(3, log_every=3, progress=False)
    path = a.save(tmp_path / "a.pt")
    a.fit(3, log_every=3, progress=False)
    b = GANTrainer(g, d, data, **{**opts, "fused_optimizer": then})
    b.load(path)
    assert b.optimizer_g.state_dict()["step"].item() == 3
    b.fit(3, log_every=3, progress=False)
    assert b.optimizer_g.state_dict()["step"].item() == 6
    for name in ("generator", "discriminator"):
        ours, theirs = getattr(b, name).flat, getattr(a, name).flat
        assert torch.equal(ours, theirs) if first == then else torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_spectral_norm_replicas_stay_normalised_and_resume_exactly(tmp_path):
    g, d = _models()
    data = _data()
    opts = _options(replicas=3, spectral_norm=True, lr=[1e-3, 2e-3, 5e-4])
    a, b = _run_and_resume(g, d, data, opts, tmp_path / "sn.pt", 4)
    assert torch.equal(a.spectral.u, b.spectral.u) and torch.equal(a.discriminator.flat, b.discriminator.flat)
    sigmas = torch.tensor(a.spectral.sigmas())   # (replicas, layers): each weight just divided by its estimate
    assert sigmas.shape == (3, 3) and torch.allclose(sigmas, torch.ones_like(sigmas), atol=0.05), sigmas
    without = GANTrainer(g, d, data, **{**opts, "spectral_norm": False}).save(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="no spectral-norm state"):
        b.load(without)
    with pytest.raises(ValueError, match="spectral_norm with replicas normalises plain MLP discriminators"):
        GANTrainer(*_pacgan_models(), data, **opts)


def test_a_diverged_replica_trains_on_alone_and_the_run_stops_only_when_all_have():
    """Replica 1's D poisoned with NaN after 3 steps: the run goes on, ``diverged`` names it at step 4, and
    replicas 0 and 2 train exactly as in a run without it (nothing mixes replicas)."""
    from fastgan.train.trainer import NonFiniteLossError
    g, d = _models()
    data = _data()
    opts = _options(replicas=3, lr=[1e-3, 2e-3, 5e-4])
    clean, poisoned = GANTrainer(g, d, data, **opts), GANTrainer(g, d, data, **opts)
    for trainer in (clean, poisoned):
        trainer.fit(3, log_every=3, progress=False)
    with torch.no_grad():
        poisoned.discriminator.flat[1] = float("nan")
    for trainer in (clean, poisoned):
        trainer.fit(5, log_every=1, progress=False)
    assert poisoned.diverged == {1: 4} and clean.diverged == {}
    for k in (0, 2):
        assert [row[k] for row in poisoned.history["loss_d"]] == [row[k] for row in clean.history["loss_d"]]
        assert torch.equal(poisoned.generator.flat[k], clean.generator.flat[k])
    assert torch.isnan(poisoned.sample(8, replica=1)).all() and torch.isfinite(poisoned.sample(8, replica=0)).all()
    with torch.no_grad():
        poisoned.discriminator.flat[:] = float("nan")
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        poisoned.fit(2, log_every=1, progress=False)


def test_sample_and_replica_modules():
    g, d = _models()
    trainer = GANTrainer(g, d, _data(), replicas=3, **_options(ema=0.5))
    for _ in range(3):
        trainer.step()
    every = trainer.sample(10)
    assert every.shape == (3, 10, 6)
    assert_close(every[1], trainer.sample(10, replica=1), 0, "one replica")
    raw = trainer.sample(10, replica=1, ema=False)
    rg, _ = trainer.replica(1)
    assert_close(raw, rg(torch.randn(10, 4, generator=torch.Generator().manual_seed(0))), 1e-6, "raw G")
    assert not torch.equal(raw, every[1]), "EMA samples by default"
    rg.net[0].weight.data.zero_()
    assert trainer.generator.flat.abs().sum() > 0, "replica() returns copies"
    with pytest.raises(ValueError, match=r"replica must be an integer in \[0, 3\)"):
        trainer.sample(4, replica=3)
    with pytest.raises(ValueError, match="replica must be"):
        trainer.replica(-1)


def test_compile_has_no_graph_breaks_and_equals_eager():
    torch._dynamo.reset()
    from torch._dynamo.utils import counters
    counters.clear()
    g, d = _models()
    data = _data()
    compiled = GANTrainer(g, d, data, replicas=2, compile=True, **_options())
    eager = GANTrainer(g, d, data, replicas=2, **_options())
    for _ in range(3):
        compiled.step(), eager.step()
    assert dict(counters["graph_break"]) == {}
    assert_close(compiled.generator.flat, eager.generator.flat, 1e-5, "G weights")


@pytest.mark.parametrize("settings,message", [
    (dict(lr=[1e-3, 2e-3]), "lr is a sequence of 2 values: one value per replica needs replicas=K"),
    (dict(replicas=3, lr=[1e-3, 2e-3]), "lr has 2 values but replicas=3"),
    (dict(replicas=2, betas=[(0.5, 0.9), (0.5, 1.5)]), "betas must be two numbers"),
    (dict(replicas=2, real_label=[1.0, 1.2]), "real_label must be a number in"),
    (dict(replicas=2, loss="hinge", real_label=[1.0, 0.9]), "applies to the BCE loss"),
    (dict(replicas=0), "replicas must be a positive integer"),
    (dict(replicas=2, r1_gamma=[1.0, -1.0]), "r1_gamma must be"),
    (dict(replicas=2, augment="cutout", augment_p=[0.5, 1.5]), "augment_p is a probability in"),
    (dict(replicas=2, augment="cutout", augment_target=[0.6, 1.0]), "augment_target is a target"),
    (dict(replicas=2, augment_target=[0.6, None]), "name the augmentations too"),
    (dict(replicas=2, r1_gamma=[0.0, 1.0], cuda_graph=True, steps_per_replay=4), "r1_gamma > 0 with cuda_graph=True"),
])
def test_bad_replica_settings_are_clear_errors(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**settings)


def test_backends_without_replicas_refuse_them():
    with pytest.raises(ValueError, match="with replicas, these settings are not available yet: kernels='cuda'"):
        GANTrainer(*_models(), _data(), replicas=2, kernels="cuda", **_options())


def test_for_replica_gives_the_single_runs_config():
    config = TrainConfig(replicas=3, seed=10, lr=[1e-3, 2e-3, 3e-3], betas=[(0.5, 0.9)] * 3, real_label=0.9)
    one = config.for_replica(2)
    assert (one.replicas, one.seed, one.lr, one.betas, one.real_label) == (None, 12, 3e-3, (0.5, 0.9), 0.9)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="replica must be"):
        config.for_replica(3)


def test_a_subclass_of_gantrainer_refuses_replicas_instead_of_training_one_gan():
    class Mine(GANTrainer):
        pass

    with pytest.raises(ValueError, match="trains with fastgan.train.ReplicaTrainer"):
        Mine(*_models(), _data(), replicas=2, **_options())

    class MyReplicas(ReplicaTrainer):
        pass

    assert MyReplicas(*_models(), _data(), replicas=2, **_options()).replicas == 2


def test_cli_sweeps_a_flag_and_evaluates_each_replica_with_its_own_d(tmp_path):
    from fastgan.app.cli import main
    assert main(["train", "--data", "ring", "--real-label", "0.9", "1.0", "--lr", "1e-3", "--instance-noise", "0.05",
                 "--hidden", "8", "--steps", "3", "--no-progress", "--out", str(tmp_path)]) == 0
    import json
    config = json.loads((tmp_path / "metrics.json").read_text())["config"]
    assert (config["real_label"], config["lr"], config["instance_noise"]) == ([0.9, 1.0], 1e-3, 0.05)
    assert len(json.loads((tmp_path / "metrics.json").read_text())["quality"]["replicas"]) == 2
    # evaluate with rejection sampling: each replica's own D judges its own G's candidates
    assert main(["evaluate", str(tmp_path), "--rejection", "0.5", "--samples", "200",
                 "--out", str(tmp_path / "e.json")]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    rates = report["sampling"]["acceptance"]
    assert report["sampling"]["rejection_quantile"] == 0.5 and len(rates) == 2 and all(0 < r <= 1 for r in rates)
    assert len(report["metrics"]["replicas"]) == 2
    # each replica judged by its own D: what the replica trainer, loaded from the checkpoint, samples
    from fastgan import data, metrics
    from fastgan.checkpoint import load_checkpoint
    from fastgan.nn.presets import build_models
    from fastgan.train.config import TrainConfig
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    config = TrainConfig.from_dict({**state["config"], "device": "cpu"})
    trainer = GANTrainer(*build_models(2, state["extra"]["model"]), data.load("ring"), config)   # the run's data
    trainer.load(tmp_path / "checkpoint.pt")
    for k in range(2):
        kept = trainer.sample(200, seed=report["seed"], replica=k, rejection=0.5)
        assert metrics.evaluate_mixture(kept, "ring") == report["metrics"]["replicas"][k]
        assert trainer.last_acceptance == rates[k]
    trainer.sample(200, seed=report["seed"], rejection=0.5)   # every replica: one rate each
    assert trainer.last_acceptance == rates
    # with each D calibrated against its own G first: what the replica trainer's sample(calibrate=) gives
    assert main(["evaluate", str(tmp_path), "--rejection", "0.5", "--calibrate", "30", "--samples", "200",
                 "--out", str(tmp_path / "c.json")]) == 0
    calibrated = json.loads((tmp_path / "c.json").read_text())
    assert calibrated["sampling"]["calibrate"] == 30 and report["sampling"]["calibrate"] == 0
    for k in range(2):
        kept = trainer.sample(200, seed=report["seed"], replica=k, rejection=0.5, calibrate=30)
        assert metrics.evaluate_mixture(kept, "ring") == calibrated["metrics"]["replicas"][k]
        assert trainer.last_acceptance == calibrated["sampling"]["acceptance"][k]
    # Metropolis-Hastings instead, each D calibrated: the same as the replica trainer's sample(metropolis=)
    assert main(["evaluate", str(tmp_path), "--metropolis", "20", "--calibrate", "30", "--samples", "200",
                 "--out", str(tmp_path / "m.json")]) == 0
    chained = json.loads((tmp_path / "m.json").read_text())
    assert chained["sampling"]["metropolis_chain"] == 20 and "rejection_quantile" not in chained["sampling"]
    for k in range(2):
        kept = trainer.sample(200, seed=report["seed"], replica=k, metropolis=20, calibrate=30)
        assert metrics.evaluate_mixture(kept, "ring") == chained["metrics"]["replicas"][k]
        assert trainer.last_acceptance == chained["sampling"]["acceptance"][k]


def test_models_replicas_cannot_stack_are_refused():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(6, 1)

        def forward(self, x):
            return self.a(x)

    g, _ = _models()
    with pytest.raises(ValueError, match="replicas train MLPs"):
        GANTrainer(g, Odd(), _data(), replicas=2, **_options())
    dropout = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))
    with pytest.raises(ValueError, match=r"'1' \(Dropout\) is not a Linear, BatchNorm1d, Maxout, MinibatchStd or one"):
        GANTrainer(g, dropout, _data(), replicas=2, **_options())
    plain_norm = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8, affine=False),
                                     torch.nn.Linear(8, 1))
    with pytest.raises(ValueError, match="BatchNorm1d with affine weights"):
        GANTrainer(g, plain_norm, _data(), replicas=2, **_options())
    leading_norm = torch.nn.Sequential(torch.nn.BatchNorm1d(5), torch.nn.Linear(6, 1))
    with pytest.raises(ValueError, match="widths do not chain at '1' \\(5 -> 6\\)"):
        GANTrainer(g, leading_norm, _data(), replicas=2, **_options())
    with pytest.raises(ValueError, match="replicas stack fp32 parameters"):
        GANTrainer(g, _pacgan_models()[1].double(), _data(), replicas=2, **_options())
    with pytest.raises(ValueError, match="conditional"):
        GANTrainer(g, _models()[1], _data(), replicas=2, labels=torch.zeros(300, dtype=torch.long), **_options())


@pytest.mark.gpu
@pytest.mark.skipif(not ON_CUDA, reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.parametrize("models", ["mlp", "pacgan"])
def test_cuda_graph_replays_equal_eager_replicas(kernels, models):
    """(pacgan: StackedNet, the simultaneous update, BatchNorm's running statistics updated inside the graph)"""
    g, d = _models() if models == "mlp" else _pacgan_models()
    data = _data().cuda()
    opts = _options(device="cuda", kernels=kernels, replicas=4, lr=[1e-3, 2e-4, 5e-4, 1e-4],
                    instance_noise=[0.0, 0.1, 0.0, 0.05],
                    **({} if models == "mlp" else {"update": "simultaneous", "real_label": 0.9}))
    graphed = GANTrainer(g, d, data, cuda_graph=True, steps_per_replay=4, graph_warmup=2, **opts)
    eager = GANTrainer(g, d, data, **opts)
    while graphed.step_count < 10:
        graphed.step()
    for _ in range(graphed.step_count):
        eager.step()
    for name in ("generator", "discriminator"):
        for (key, a), (_, b) in zip(getattr(graphed, name).state_dict().items(),
                                    getattr(eager, name).state_dict().items()):
            assert_close(a, b, 1e-5, f"{name}.{key}")
