"""K replicas' draws in one launch (``sampler="philox"``): replica k equals its single run with the same
sampler, checkpoints resume the counter, and a step launches the same kernels for every K."""
import pytest
import torch

from fastgan import CheckpointError, GANTrainer, TrainConfig, ops
from fastgan.profiling import count_launches, stubbed_launches
from fastgan.train.backends import fast_path
from test_replicas import STEPS, _data, _models, _options, _run_and_resume, _single_runs_match


def test_philox_replicas_equal_their_single_runs():
    """Per-replica lr, label smoothing and instance noise (Philox too), d_steps 2, packed rows, EMA: every
    replica against ``GANTrainer(..., config.for_replica(k))``, whose generic step draws with the one-replica
    Philox sampler. (The draws do not depend on the kernels: the triton path's replicas are checked against
    their single runs in test_replicas.py.)"""
    g, d = _models(pack=2)
    data = _data()
    trainer = GANTrainer(g, d, data, replicas=3, kernels="torch", sampler="philox", **_options(
        lr=[1e-3, 2e-4, 5e-4], real_label=[1.0, 0.9, 1.0], instance_noise=[0.0, 0.1, 0.05], d_steps=2, ema=0.9,
        pack=2, pack_convention="rows"))
    assert trainer.sampler is not None and trainer.config.for_replica(1).sampler == "philox"
    for _ in range(STEPS):
        trainer.step()
    _single_runs_match(trainer, g, d, data, STEPS)


def test_philox_replicas_resume_exactly_and_refuse_a_checkpoint_without_the_sampler(tmp_path):
    g, d = _models()
    data = _data()
    opts = _options(replicas=3, lr=[1e-3, 2e-4, 5e-4], instance_noise=[0.0, 0.1, 0.1], sampler="philox")
    a, b = _run_and_resume(g, d, data, opts, tmp_path / "r.pt", 4)
    assert torch.equal(a.sampler.counter, b.sampler.counter) and b.history == a.history
    assert torch.equal(a.sampler.noise_counter, b.sampler.noise_counter) and int(b.sampler.noise_counter) > 0
    for name in ("generator", "discriminator"):
        assert torch.equal(getattr(b, name).flat, getattr(a, name).flat)
    torch_drawn = GANTrainer(g, d, data, **{**opts, "sampler": "torch"}).save(tmp_path / "torch.pt")
    before = b.generator.flat.clone()
    with pytest.raises(CheckpointError, match="no sampler state"):
        b.load(torch_drawn)
    assert torch.equal(b.generator.flat, before)


def _step_launches(replicas: int, sampler: str, kernels: str, **options):
    """One step's kernels (``count_launches``: PyTorch's that would launch one on a GPU, and Triton's), after
    a first step, which creates the optimizers' state."""
    trainer = GANTrainer(*_models(), _data(), replicas=replicas, kernels=kernels, sampler=sampler,
                         **_options(batch_size=8, ema=0.9, **options))
    trainer.step()
    return count_launches(trainer.step)[1]


@pytest.mark.parametrize("kernels, options", [("torch", {}),
                                              ("triton", {"instance_noise": 0.1, "fused_optimizer": "flat"})],
                         ids=["torch", "triton-instance-noise-flatadam"])
def test_a_step_launches_the_same_kernels_for_every_k(kernels, options):
    """K = 1, 8 and 128 with the Philox draws: the same ATen ops and Triton launches a step (the sampler once;
    instance noise one launch for each of D's three inputs; with FlatAdam's kernel, one update launch per model);
    PyTorch's generators (a draw per replica) grow with K, which shows the count sees them."""
    with stubbed_launches():   # counted without the kernels' work (the interpreter's minute at K = 128)
        counts = {k: _step_launches(k, "philox", kernels, **options) for k in (1, 8, 128)}
    assert counts[1] == counts[8] == counts[128] == _step_launches(1, "philox", kernels, **options), counts
    assert counts[1].triton["_sample_kernel"] == 1
    assert counts[1].triton.get("_fill_kernel", 0) == (3 if options else 0)
    assert counts[1].triton.get("_replica_adam_kernel", 0) == (2 if options else 0)
    assert _step_launches(8, "torch", kernels).total > _step_launches(1, "torch", kernels).total


def test_augmentation_draws_every_replicas_uniforms_in_one_launch():
    """8x8 images with translation and cutout at K = 1, 8 and 32: the same launches a step with the Philox draws
    (one uniform fill for each of D's three inputs, the transforms once for all K); with PyTorch's generators a
    draw per replica."""
    def launches(k, sampler):
        trainer = GANTrainer(*_models(features=64), _data(features=64), replicas=k, sampler=sampler,
                             augment="translation,cutout", augment_p=0.5, augment_target=0.6,
                             **_options(batch_size=8))
        trainer.step()
        return count_launches(trainer.step)[1]

    with stubbed_launches():
        counts = {k: launches(k, "philox") for k in (1, 8, 32)}
    assert counts[1] == counts[8] == counts[32], counts
    assert counts[1].triton["_fill_kernel"] == 3
    assert launches(8, "torch").total > launches(1, "torch").total


def test_the_cuda_fast_path_draws_replicas_with_philox_and_updates_them_with_flatadams_kernel():
    config = TrainConfig(replicas=4)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    chosen, line = fast_path(config, cuda)
    assert chosen.sampler == ("philox" if ops.HAS_TRITON else "torch") and chosen.fused_optimizer == "flat"
    assert ops.HAS_TRITON is False or line.endswith("FlatAdam + Philox draws")
    assert fast_path(config, cpu)[0].sampler == "torch"
    assert fast_path(config.replace(fast=False), cuda)[0].sampler == "torch"
    assert fast_path(config.replace(sampler="torch"), cuda)[0].sampler == "torch"
