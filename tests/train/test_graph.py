"""Whole-step CUDA graphs (GPU only): same training as eager, fresh batches every replay, re-capture."""
import copy

import pytest
import torch

from helpers import ON_CUDA, assert_close
from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, data

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not ON_CUDA, reason="CUDA graphs need a CUDA device")]


def _models():
    torch.manual_seed(0)
    return (MLPGenerator(latent_dim=16, hidden=(64, 64), out_dim=2, output_activation=None),
            MLPDiscriminator(in_dim=2, hidden=(64, 64)))


def _train(kernels, steps, **options):
    """``steps`` steps. An eager run's torch.optim.Adam is made capturable, as a graphed run's must be: the
    capturable Adam forms its bias corrections on the device in fp32 (1 - 0.999 there is off by 1e-5
    relative), the other in float64 on the host, and the first GPU run saw that difference (2.5e-5) and
    nothing else. FlatAdam is the same kernel either way."""
    options.setdefault("precision", "fp32")  # exact fp32 in cuBLAS and in the Triton kernels alike
    g, d = _models()
    trainer = GANTrainer(copy.deepcopy(g), copy.deepcopy(d), data.gaussian_ring(4096, device="cuda"),
                         batch_size=64, lr=1e-3, seed=3, device="cuda", kernels=kernels, **options)
    for optimizer in (trainer.optimizer_g, trainer.optimizer_d):
        if isinstance(optimizer, torch.optim.Adam):
            for group in optimizer.param_groups:
                group["capturable"] = True
    trainer.fit(steps, log_every=steps, progress=False)
    return trainer


@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_a_graph_of_whole_r1_periods_trains_like_eager(kernels):
    """R1 every 4 steps, 8 steps a replay: the penalty's steps captured where they fall, each replay the same
    pattern; the losses and weights of 3 warm-up steps and 4 replays equal the eager run's."""
    steps = 3 + 8 * 4
    eager = _train(kernels, steps, r1_gamma=1.0, r1_every=4)
    graphed = _train(kernels, steps, r1_gamma=1.0, r1_every=4, cuda_graph=True, steps_per_replay=8)
    assert graphed.loop.graphed.captured
    for key in ("loss_d", "loss_g"):
        assert_close(torch.tensor(graphed.history[key]), torch.tensor(eager.history[key]), 1e-5, key)
    pairs = zip(eager.discriminator.state_dict().items(), graphed.discriminator.state_dict().items())
    for (name, a), (_, b) in pairs:
        assert_close(b, a, 1e-5, name)


@pytest.mark.parametrize("kernels", ["torch", "triton", "triton-mlp"])
@pytest.mark.parametrize("steps_per_replay", [1, 4])
def test_graph_trains_like_eager(kernels, steps_per_replay):
    steps = 3 + 4 * 5  # 3 warm-up steps, then 20 captured steps
    eager = _train(kernels, steps)
    graphed = _train(kernels, steps, cuda_graph=True, steps_per_replay=steps_per_replay)
    assert graphed.loop.graphed.captured
    assert graphed.history["step"] == list(range(1, steps + 1))
    for key in ("loss_d", "loss_g"):
        assert_close(torch.tensor(graphed.history[key]), torch.tensor(eager.history[key]), 1e-5, key)
    for (name, a), (_, b) in zip(eager.generator.state_dict().items(), graphed.generator.state_dict().items()):
        assert_close(b, a, 1e-5, name)
    # every replay drew new batches and noise: no two steps' losses repeat
    assert len(set(graphed.history["loss_d"])) == steps


def test_fused_optimizer_in_a_graph():
    eager = _train("triton", 11)
    graphed = _train("triton", 11, cuda_graph=True, steps_per_replay=4, fused_optimizer=True)
    for (name, a), (_, b) in zip(eager.discriminator.state_dict().items(),
                                 graphed.discriminator.state_dict().items()):
        assert_close(b, a, 1e-5, name)


def test_new_batch_size_recaptures():
    trainer = _train("triton", 7, cuda_graph=True, steps_per_replay=2)
    trainer.batch_size = 32
    assert not trainer.loop.graphed.captured
    trainer.fit(7, log_every=7, progress=False)
    assert trainer.loop.graphed.captured and trainer.step_count == 14
    assert all(map(torch.isfinite, torch.tensor(trainer.history["loss_g"])))


@pytest.mark.parametrize("kernels", ["triton", "triton-mlp"])
def test_bf16_precision_is_applied_alike(kernels):
    torch_run = _train("torch", 6, precision="bf16")
    options = {"sampler": "torch"} if kernels == "triton-mlp" else {}   # the same batches as torch's
    triton_run = _train(kernels, 6, precision="bf16", **options)
    for key in ("loss_d", "loss_g"):
        assert_close(torch.tensor(triton_run.history[key]), torch.tensor(torch_run.history[key]), 2e-2, key)


def test_conditional_gan_and_spectral_norm_in_a_graph():
    from fastgan import ConditionalMLPGenerator, ProjectionDiscriminator
    x = torch.rand(512, 20, device="cuda")
    y = torch.randint(0, 4, (512,), device="cuda")
    runs = []
    for graph in (False, True):
        torch.manual_seed(0)
        trainer = GANTrainer(ConditionalMLPGenerator(8, 4, (32, 32), 20), ProjectionDiscriminator(20, 4, (32, 32)),
                             x, labels=y, batch_size=64, lr=1e-3, seed=3, device="cuda", kernels="triton",
                             precision="fp32", spectral_norm=True, fused_optimizer=True, cuda_graph=graph,
                             steps_per_replay=4)
        trainer.fit(11, log_every=11, progress=False)
        runs.append(trainer)
    for key in ("loss_d", "loss_g"):
        assert_close(torch.tensor(runs[1].history[key]), torch.tensor(runs[0].history[key]), 1e-5, key)


def test_triton_mlp_fused_step_in_a_graph_matches_torch():
    """The fused step (sampler="torch": PyTorch's draws, registered with the graph) against eager PyTorch."""
    eager = _train("torch", 11, fused_optimizer=True)
    graphed = _train("triton-mlp", 11, cuda_graph=True, steps_per_replay=4, sampler="torch")
    assert graphed.step_path == "fused" and graphed.loop.graphed.captured
    for key in ("loss_d", "loss_g"):
        assert_close(torch.tensor(graphed.history[key]), torch.tensor(eager.history[key]), 1e-5, key)


@pytest.mark.parametrize("mode", ["reduce-overhead"])  # max-autotune takes the same path (and minutes to tune)
def test_cudagraph_compile_modes_keep_every_steps_losses(mode):
    """torch.compile's own CUDA graphs overwrite a call's outputs on the next call: the step marks its
    boundaries and copies its losses out, so flush_losses reads every step's (no "overwritten" error)."""
    eager = _train("torch", 8)
    compiled = _train("torch", 8, compile=mode)
    assert compiled.history["step"] == list(range(1, 9))
    for key in ("loss_d", "loss_g"):
        assert_close(torch.tensor(compiled.history[key]), torch.tensor(eager.history[key]), 1e-4, key)
