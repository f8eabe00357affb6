"""Every stabilisation option trains a few steps under both kernel paths and changes what it should."""
import pytest
import torch

from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, data

KERNELS = ["torch", "triton"]


def make(kernels, pack=1, seed=0, **options):
    torch.manual_seed(seed)
    g = MLPGenerator(latent_dim=4, hidden=(16,), out_dim=2, output_activation=None)
    d = MLPDiscriminator(in_dim=2 * pack, hidden=(16,))
    return GANTrainer(g, d, data.gaussian_ring(512), batch_size=16, lr=1e-3, seed=seed, device="cpu",
                      kernels=kernels, pack=pack, **options)


def run(trainer, steps=3):
    trainer.fit(steps, log_every=steps, progress=False)
    assert all(torch.isfinite(torch.tensor(trainer.history["loss_d"] + trainer.history["loss_g"])))
    return trainer


def weights(module):
    return torch.cat([p.detach().flatten() for p in module.parameters()])


@pytest.mark.parametrize("kernels", KERNELS)
def test_hinge_loss(kernels):
    trainer = run(make(kernels, loss="hinge"), steps=1)
    # at initialisation D's logits are near 0, so the hinge D loss relu(1-r) + relu(1+f) is near 2
    assert trainer.history["loss_d"][0] == pytest.approx(2.0, abs=0.3)
    baseline = run(make(kernels), steps=1)
    assert trainer.history["loss_d"][0] != pytest.approx(baseline.history["loss_d"][0], abs=1e-3)
    with pytest.raises(ValueError, match="not to loss='hinge'"):
        make(kernels, loss="hinge", real_label=0.9)


@pytest.mark.parametrize("kernels", KERNELS)
def test_ttur_learning_rates(kernels):
    trainer = run(make(kernels, lr_g=1e-4, lr_d=4e-4))
    assert trainer.optimizer_g.param_groups[0]["lr"] == 1e-4 and trainer.optimizer_d.param_groups[0]["lr"] == 4e-4


@pytest.mark.parametrize("kernels", KERNELS)
def test_d_steps(kernels):
    trainer = run(make(kernels, d_steps=3), steps=2)
    d_state = next(iter(trainer.optimizer_d.state.values()))
    g_state = next(iter(trainer.optimizer_g.state.values()))
    assert int(d_state["step"]) == 6 and int(g_state["step"]) == 2


@pytest.mark.parametrize("kernels", KERNELS)
def test_ema_of_generator_weights(kernels):
    trainer = make(kernels, ema=0.9)
    initial = weights(trainer.generator)
    run(trainer, steps=1)
    expected = 0.9 * initial + 0.1 * weights(trainer.generator)
    assert torch.allclose(weights(trainer.ema.module), expected, atol=1e-7)
    run(trainer, steps=2)
    assert not torch.allclose(weights(trainer.ema.module), weights(trainer.generator))
    z_seed_samples = trainer.sample(8, seed=3)  # sampling uses the EMA generator by default
    assert torch.equal(z_seed_samples, trainer.sample(8, seed=3, ema=True))
    assert not torch.equal(z_seed_samples, trainer.sample(8, seed=3, ema=False))
    with pytest.raises(ValueError, match="ema decay"):
        make(kernels, ema=1.5)


def test_ema_survives_checkpoints(tmp_path):
    trainer = run(make("torch", ema=0.9))
    trainer.save(tmp_path / "c.pt")
    other = make("torch", ema=0.9, seed=5)
    other.load(tmp_path / "c.pt")
    assert torch.equal(weights(other.ema.module), weights(trainer.ema.module))


@pytest.mark.parametrize("kernels", KERNELS)
def test_pacgan_packing(kernels):
    trainer = run(make(kernels, pack=4))
    assert trainer.discriminator.net[0].in_features == 8
    with pytest.raises(ValueError, match=r"x pack=4 = 8 but the discriminator takes 2"):
        torch.manual_seed(0)
        GANTrainer(MLPGenerator(latent_dim=4, hidden=(16,), out_dim=2, output_activation=None),
                   MLPDiscriminator(in_dim=2, hidden=(16,)), data.gaussian_ring(64), batch_size=16, pack=4)
    with pytest.raises(ValueError, match="multiple of pack=3"):
        make(kernels, pack=3)


@pytest.mark.parametrize("kernels", [*KERNELS, "triton-mlp"])
@pytest.mark.parametrize("convention,rows_per_half", [("samples", 4), ("rows", 16)])
def test_pack_conventions_count_samples_or_rows(kernels, convention, rows_per_half):
    """batch 16, pack 4: fastgan's convention gives D 16 / 4 = 4 packed rows of real (and of fake) data per
    update; PacGAN's gives it 16 rows, i.e. 64 samples each."""
    trainer = make(kernels, pack=4, pack_convention=convention)
    assert trainer.config.samples_per_step == 4 * rows_per_half
    seen = []
    if kernels == "triton-mlp":   # the fused step calls no module: its D buffers have the rows
        run(trainer, steps=1)
        assert trainer.loop.step_fn.buffers[trainer.config.samples_per_step].y_d.shape[0] == 2 * rows_per_half
        return
    first = trainer.discriminator.net[0]
    first.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    run(trainer, steps=1)
    assert seen[0] == rows_per_half, seen
    with pytest.raises(ValueError, match="pack_convention"):
        make(kernels, pack=4, pack_convention="columns")
    make(kernels, pack=3, pack_convention="rows")   # no divisibility needed when counting rows


@pytest.mark.parametrize("kernels", KERNELS)
def test_instance_noise_changes_what_d_sees(kernels):
    noisy = run(make(kernels, instance_noise=0.5), steps=2)
    clean = run(make(kernels), steps=2)
    assert noisy.history["loss_d"] != pytest.approx(clean.history["loss_d"], abs=1e-4)


@pytest.mark.parametrize("kernels", KERNELS)
def test_r1_penalty_runs_through_the_reference_path(kernels):
    penalised = run(make(kernels, r1_gamma=10.0, r1_every=2), steps=1)
    plain = run(make(kernels), steps=1)
    # step 0 is an R1 step: D's update differs by the penalty's gradient, and the reported loss does not
    assert not torch.allclose(weights(penalised.discriminator), weights(plain.discriminator))
    assert penalised.history["loss_d"][0] == pytest.approx(plain.history["loss_d"][0], rel=1e-5)
    run(penalised, steps=2)



def test_precision_bf16_autocasts_forward_passes_and_keeps_fp32_weights():
    fp32 = run(make("torch", precision="fp32"), steps=3)
    bf16 = run(make("torch", precision="bf16"), steps=3)
    assert all(p.dtype == torch.float32 for p in bf16.generator.parameters())
    assert bf16.history["loss_d"] != pytest.approx(fp32.history["loss_d"], rel=1e-6)  # bf16 rounding shows
    assert bf16.history["loss_d"] == pytest.approx(fp32.history["loss_d"], rel=0.05)   # but it is the same GAN
    with pytest.raises(ValueError, match="precision must be one of"):
        make("torch", precision="fp16")


def test_precision_scope_restores_global_flags():
    from fastgan import ops
    from fastgan.ops import precision_scope
    before = torch.backends.cuda.matmul.allow_tf32
    with precision_scope("fp32"):
        assert ops.get_matmul_precision() == "ieee" and torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.backends.cuda.matmul.allow_tf32 == before and ops.get_matmul_precision() == "tf32"


def test_fused_linear_under_autocast(monkeypatch):
    import fastgan.ops.linear as linear_module
    from fastgan import ops
    monkeypatch.setattr(linear_module, "use_triton", lambda t: False)  # bf16 tl.dot is wrong in the interpreter
    x = torch.randn(5, 8)
    w = torch.randn(3, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ops.fused_linear(x, w, None, "tanh")
        loss = ops.sigmoid_bce_with_logits(y, 1.0)
    assert y.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert w.grad.dtype == torch.float32 and torch.isfinite(w.grad).all()


def test_weight_regularisers_alike_on_both_optimizer_paths_and_they_shrink_weights():
    """weight_decay_* (AdamW's decoupled decay) and l1_* per network: torch.optim (AdamW + an L1 pre-step
    hook) and FlatAdam (inside its kernel) train the same, fp32; and they do shrink the weights."""
    options = dict(weight_decay_d=0.5, l1_g=0.01, precision="fp32")
    torch_path = run(make("triton", **options), steps=6)
    flat_path = run(make("triton", fused_optimizer="flat", **options), steps=6)
    assert isinstance(torch_path.optimizer_d, torch.optim.AdamW)
    for module in ("generator", "discriminator"):
        torch.testing.assert_close(weights(getattr(flat_path, module)), weights(getattr(torch_path, module)),
                                   rtol=1e-5, atol=1e-6)
    plain = run(make("triton", precision="fp32"), steps=6)
    assert weights(torch_path.discriminator).norm() < weights(plain.discriminator).norm()
    assert weights(torch_path.generator).abs().sum() < weights(plain.generator).abs().sum()
    with pytest.raises(ValueError, match="l1_d must be"):
        make("torch", l1_d=-1.0)
