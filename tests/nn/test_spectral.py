"""Spectral normalisation of D: the kernel against its reference, sigma ~ 1 in training, exact resume."""
import pytest
import torch

from helpers import DEVICE, assert_close
from fastgan import CheckpointError, GANTrainer, MLPDiscriminator, MLPGenerator, ops
from fastgan.ops.spectral import spectral_normalize_, spectral_normalize_reference_

SHAPES = [(1, 1), (7, 13), (129, 5), (128, 784), (1, 33)]


def test_kernel_matches_reference_for_weights_in_one_buffer(seed):
    g = torch.Generator().manual_seed(seed)
    flat = torch.randn(sum(a * b for a, b in SHAPES), generator=g).to(DEVICE)
    u_flat = torch.randn(sum(a for a, _ in SHAPES), generator=g).to(DEVICE)
    weights, offset = [], 0
    for a, b in SHAPES:
        weights.append(flat[offset:offset + a * b].view(a, b))
        offset += a * b
    us = list(u_flat.split([a for a, _ in SHAPES]))
    expected_w = [w.double().clone() for w in weights]
    expected_u = [u.double().clone() for u in us]
    before = ops.kernel_launches["_spectral_normalize_kernel"]
    spectral_normalize_(weights, us)
    assert ops.kernel_launches["_spectral_normalize_kernel"] == before + (1 if ops.use_triton(flat) else 0)
    spectral_normalize_reference_(expected_w, expected_u)
    for i, (w, e) in enumerate(zip(weights, expected_w)):
        assert_close(w, e, 1e-5, f"W {i}")
    for i, (u, e) in enumerate(zip(us, expected_u)):
        assert_close(u, e, 1e-5, f"u {i}")
        assert abs(u.double().norm().item() - 1) < 1e-5


def test_separate_tensors_take_the_reference_path_and_bad_input_is_refused():
    g = torch.Generator().manual_seed(2)
    weights, us = [torch.randn(4, 6, generator=g), torch.randn(3, 4, generator=g)], [torch.randn(4), torch.randn(3)]
    expected_w, expected_u = [w.clone() for w in weights], [u.clone() for u in us]
    before = ops.kernel_launches["_spectral_normalize_kernel"]
    spectral_normalize_(weights, us)     # two buffers: no single launch can take them
    assert ops.kernel_launches["_spectral_normalize_kernel"] == before
    spectral_normalize_reference_(expected_w, expected_u)
    assert all(torch.equal(a, b) for a, b in zip(weights + us, expected_w + expected_u))
    w, u = weights[0], us[0]
    with pytest.raises(ValueError, match="one u per weight"):
        spectral_normalize_([w], [])
    with pytest.raises(ValueError, match="2-D"):
        spectral_normalize_([w], [torch.randn(6)])
    with pytest.raises(TypeError, match="float32"):
        spectral_normalize_([w.double()], [u.double()])


def _trainer(kernels, seed=0, **options):
    torch.manual_seed(seed)
    g = MLPGenerator(latent_dim=8, hidden=(32, 32), out_dim=20)
    d = MLPDiscriminator(in_dim=20, hidden=(32, 32))
    real = torch.rand(256, 20, generator=torch.Generator().manual_seed(1))
    return GANTrainer(g, d, real, batch_size=32, lr=1e-3, seed=seed, device="cpu", kernels=kernels,
                      spectral_norm=True, **options)


@pytest.mark.parametrize("kernels,options", [("torch", {}), ("triton", {"fused_optimizer": "flat"}),
                                             ("triton-mlp", {})], ids=["torch", "triton-flat", "triton-mlp"])
def test_discriminator_weights_keep_spectral_norm_one(kernels, options):
    trainer = _trainer(kernels, **options)
    before = ops.kernel_launches["_spectral_normalize_kernel"]
    trainer.fit(5, log_every=5, progress=False)
    for sigma in trainer.spectral.sigmas():
        assert abs(sigma - 1) < 1e-2, trainer.spectral.sigmas()
    if kernels != "torch":   # D's weights in one buffer: one launch per step for all its layers
        assert ops.kernel_launches["_spectral_normalize_kernel"] - before == 5
    # without it, the same D's weights are far from norm 1
    plain = GANTrainer(MLPGenerator(latent_dim=8, hidden=(32, 32), out_dim=20),
                       MLPDiscriminator(in_dim=20, hidden=(32, 32)), torch.rand(64, 20), device="cpu")
    assert max(abs(torch.linalg.matrix_norm(m.weight.detach(), ord=2).item() - 1)
               for m in plain.discriminator.modules() if isinstance(m, torch.nn.Linear)) > 0.1


def test_resume_with_spectral_norm_is_exact(tmp_path):
    straight = _trainer("torch")
    straight.fit(3, log_every=3, progress=False, checkpoint=tmp_path / "sn.pt")
    straight.fit(3, log_every=3, progress=False)
    resumed = _trainer("torch", seed=5)   # other init, other u: everything must come from the checkpoint
    resumed.load(tmp_path / "sn.pt")
    resumed.fit(3, log_every=3, progress=False)
    assert straight.history == resumed.history
    for a, b in zip(straight.discriminator.state_dict().values(), resumed.discriminator.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(straight.spectral.u, resumed.spectral.u)
    without = GANTrainer(MLPGenerator(latent_dim=8, hidden=(32, 32), out_dim=20),
                         MLPDiscriminator(in_dim=20, hidden=(32, 32)), torch.rand(64, 20), device="cpu")
    without.save(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="spectral-norm state"):
        _trainer("torch").load(tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="spectral_norm must be True or False"):
        GANTrainer(MLPGenerator(latent_dim=8, hidden=(8,), out_dim=20), MLPDiscriminator(in_dim=20, hidden=(8,)),
                   torch.rand(64, 20), device="cpu", spectral_norm="yes")
