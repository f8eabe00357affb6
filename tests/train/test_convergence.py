"""The real GAN, eager PyTorch vs fused Triton kernels (interpreted) and torch.compile, same seed: same
losses, same weights.

Both runs start from the same initial weights, draw the same batches and noise, and use exact fp32
matmuls. The remaining difference is fp32 rounding order (the kernels sum in another order than
PyTorch's CPU GEMM; Inductor fuses and reorders too), ~1e-7 per op; Adam's normalised updates and the GAN's feedback can grow it over
the steps, so per-step losses and final parameters are compared at a relative 1e-5 (measured after 20
steps: losses ~7e-8, parameters <= 2.2e-7).
"""
import copy

import pytest
import torch

from helpers import assert_close
from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, ops

STEPS = 20


def _setup(output_activation="sigmoid"):
    torch.manual_seed(0)
    generator = MLPGenerator(latent_dim=16, hidden=(32, 32), out_dim=20, output_activation=output_activation)
    discriminator = MLPDiscriminator(in_dim=20, hidden=(32, 32))
    return generator, discriminator, torch.rand(256, 20)


def _run(kernels, generator, discriminator, real, **options):
    """STEPS steps from copies of the given models; returns the trainer and the Triton launches per kernel."""
    trainer = GANTrainer(copy.deepcopy(generator), copy.deepcopy(discriminator), real, batch_size=32, lr=1e-3,
                         seed=7, device="cpu", kernels=kernels, precision="fp32", **options)
    before = dict(ops.kernel_launches)
    trainer.fit(STEPS, log_every=5, progress=False)
    return trainer, {k: v - before.get(k, 0) for k, v in ops.kernel_launches.items() if v != before.get(k, 0)}


LAUNCHES_PER_STEP = 3 + 9 + 3 + 10 + 3 + 5  # see test_eager_and_triton_train_identically


def _assert_same_training(a, b):
    assert a.history["step"] == b.history["step"]
    for key in ("loss_d", "loss_g"):
        assert_close(torch.tensor(b.history[key]), torch.tensor(a.history[key]), 1e-5, key)
    for module in ("generator", "discriminator"):
        pairs = zip(getattr(a, module).state_dict().items(), getattr(b, module).state_dict().items())
        for (name, x), (_, y) in pairs:
            assert_close(y, x, 1e-5, f"{module}.{name}")


@pytest.mark.parametrize("output_activation", ["sigmoid", None])
def test_eager_and_triton_train_identically(output_activation):
    generator, discriminator, real = _setup(output_activation)
    eager, eager_launches = _run("torch", generator, discriminator, real)
    fused, fused_launches = _run("triton", generator, discriminator, real)
    assert eager_launches == {}
    # Per step, every layer ran in Triton: forward G 3 + D 3x3 (real, fake, fake for G) + 3 BCE;
    # D's backward 2x(3 dW + 2 dX; its input needs no grad); G's step: D frozen, 3 dX, then G 3 dW + 2 dX.
    assert sum(fused_launches.values()) == STEPS * LAUNCHES_PER_STEP, fused_launches
    assert eager.history["step"] == list(range(1, STEPS + 1))
    _assert_same_training(eager, fused)
    # and the weights really moved (the comparison is not between two untrained models)
    moved = (eager.generator.net[0].weight - generator.net[0].weight).norm() / generator.net[0].weight.norm()
    assert moved > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_compiled_step_has_no_graph_breaks_and_trains_identically(kernels):
    from torch._dynamo.utils import counters
    generator, discriminator, real = _setup()
    eager, _ = _run("torch", generator, discriminator, real)
    counters.clear()
    compiled, launches = _run(kernels, generator, discriminator, real, compile=True)
    assert dict(counters["graph_break"]) == {}, f"graph breaks: {dict(counters['graph_break'])}"
    assert counters["stats"]["unique_graphs"] == 3  # G forward, D's loss, G's loss through D
    if kernels == "triton":  # the Triton kernels ran inside the compiled graphs
        assert sum(launches.values()) == STEPS * LAUNCHES_PER_STEP
    _assert_same_training(eager, compiled)


@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_fused_optimizer_trains_identically(kernels):
    # FlatAdam's bias corrections come from a device-side fp32 step count (torch's: host float64):
    # measured after 20 steps, parameters differ by ~4e-7 relative.
    generator, discriminator, real = _setup()
    eager, _ = _run("torch", generator, discriminator, real)
    fused, launches = _run(kernels, generator, discriminator, real, fused_optimizer=True)
    assert launches["_adam_step_kernel"] == 2 * STEPS  # one launch per model per step
    _assert_same_training(eager, fused)
