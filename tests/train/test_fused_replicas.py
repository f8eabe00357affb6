"""The fused step for K replicas (``kernels="triton-mlp"``, ``replicas=K``): the whole-MLP kernels (FlatAdam's
replica update folded into the weight gradients') and the Philox draws each one launch for all K. Replica k equals its single fused run; a step
launches the same kernels for every K; what the fused step cannot run falls back to the replica step."""
import pytest
import torch

from fastgan import GANTrainer, ops
from fastgan.profiling import count_launches, stubbed_launches
from helpers import ON_CUDA
from test_replicas import _data, _models, _options, _run_and_resume, _single_runs_match

FUSED_STEP = {"_sample_kernel": 1, "_mlp_rows_kernel": 4, "_mlp_weight_grad_kernel": 2}   # Adam folded in


STEPS = 10


def _equal_their_single_runs(options):
    g, d = _models(pack=options.get("pack", 1))
    data = _data()
    trainer = GANTrainer(g, d, data, replicas=3, kernels="triton-mlp", **_options(**options))
    assert trainer.step_path == "fused replicas" and trainer.config.sampler == "philox"
    for _ in range(STEPS):
        trainer.step()
    _single_runs_match(trainer, g, d, data, STEPS)


def test_fused_replicas_equal_their_single_fused_runs(slicing):
    """Every replica against ``GANTrainer(..., config.for_replica(k))``, which runs the single fused step with
    the one-replica Philox sampler: losses each step, weights and samples at the end (fp32 rounding: the
    replica launch plans its slices for its share of the SMs); per-replica lr and labels, d_steps 2, EMA;
    whole and sliced."""
    _equal_their_single_runs(dict(lr=[1e-3, 2e-4, 5e-4], real_label=[1.0, 0.9, 0.8], d_steps=2, ema=0.9))


@pytest.mark.parametrize("options", [
    dict(lr=1e-3, real_label=0.9, pack=2, pack_convention="rows", spectral_norm=True, weight_decay_d=0.01),
    dict(lr=[1e-3, 2e-4, 5e-4], split_gradients=True),
], ids=["pack2-spectral-decay", "split-gradients"])
def test_fused_replicas_with_options_equal_their_single_fused_runs(options, monkeypatch):
    """As above with pack 2, spectral norm and weight decay; and with the weight gradients in batch splits of
    4 rows (as past 4096 rows) that Adam's replica kernel adds, in both runs."""
    options = dict(options)
    if options.pop("split_gradients", False):
        monkeypatch.setattr(ops.mlp, "_SPLIT_ROWS", 4)
    _equal_their_single_runs(options)


def test_a_fused_replica_step_launches_seven_kernels_for_every_k():
    """K = 1, 8 and 128: the sampler, G forward, D's pass, its weight gradients with Adam, D's pass for G, G's
    backward, its weight gradients with Adam; with the EMA one more PyTorch op. Nothing else."""
    def launches(k):
        trainer = GANTrainer(*_models(), _data(), replicas=k, kernels="triton-mlp", **_options(batch_size=8, ema=0.9))
        trainer.step()   # (the first step makes the buffers)
        return count_launches(trainer.step)[1]

    with stubbed_launches():   # counted without the kernels' work (the interpreter's minute at K = 128)
        counts = {k: launches(k) for k in (1, 8, 128)}
    assert counts[1] == counts[8] == counts[128] == launches(1), counts   # (the last with its kernels run)
    assert counts[1].triton == FUSED_STEP


def test_fused_replicas_resume_exactly(tmp_path):
    g, d = _models()
    data = _data()
    opts = _options(replicas=3, kernels="triton-mlp", lr=[1e-3, 2e-4, 5e-4], real_label=[1.0, 0.9, 1.0], ema=0.9)
    a, b = _run_and_resume(g, d, data, opts, tmp_path / "r.pt", 4)
    assert b.step_path == "fused replicas" and b.history == a.history
    assert torch.equal(a.sampler.counter, b.sampler.counter)
    for ours, theirs in ((b.generator.flat, a.generator.flat), (b.discriminator.flat, a.discriminator.flat),
                         (b.ema_flat, a.ema_flat), (b.optimizer_d.exp_avg_sq, a.optimizer_d.exp_avg_sq)):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("options, why", [
    (dict(instance_noise=[0.0, 0.1]), "instance_noise"),
    (dict(sampler="torch"), "sampler='torch' with replicas"),
    (dict(fused_optimizer="torch"), "fused_optimizer='torch'"),
])
def test_what_the_fused_step_cannot_run_trains_with_the_replica_step_and_says_why(options, why):
    trainer = GANTrainer(*_models(), _data(), replicas=2, kernels="triton-mlp", **_options(**options))
    assert trainer.step_path == f"replicas ({why} not in the fused step)"
    losses = trainer.step()
    assert losses.shape == (2, 2) and torch.isfinite(losses).all()


@pytest.mark.gpu
@pytest.mark.skipif(not ON_CUDA, reason="CUDA graphs need a CUDA device")
def test_fused_replicas_on_a_gpu_replay_in_a_graph_as_eager_and_equal_their_single_runs():
    g, d = _models()
    data = _data().cuda()
    opts = _options(device="cuda", kernels="triton-mlp", replicas=4, lr=[1e-3, 2e-4, 5e-4, 1e-4],
                    real_label=[1.0, 0.9, 1.0, 0.8], ema=0.9)
    graphed = GANTrainer(g, d, data, cuda_graph=True, steps_per_replay=4, graph_warmup=2, **opts)
    eager = GANTrainer(g, d, data, **opts)
    assert graphed.step_path == eager.step_path == "fused replicas"
    while graphed.step_count < 12:
        graphed.step()
    for _ in range(graphed.step_count):
        eager.step()
    for name in ("generator", "discriminator"):
        assert torch.equal(getattr(graphed, name).flat, getattr(eager, name).flat), name
    _single_runs_match(eager, g, d, data, eager.step_count)
