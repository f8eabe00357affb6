"""A checkpoint saved under one backend or optimizer resumes under another and goes on as the first run would,
to fp32 rounding: the optimizers' state is saved in one form (fastgan.optim.adam_state)."""
import pytest
import torch

from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, data
from fastgan.optim import FlatAdam
from helpers import assert_close

RING = data.gaussian_ring(512, seed=0)


def _trainer(kernels="torch", fused_optimizer=False):
    torch.manual_seed(0)
    g = MLPGenerator(latent_dim=4, hidden=(16, 16), out_dim=2, output_activation=None)
    d = MLPDiscriminator(in_dim=2, hidden=(16, 16))
    # (sampler="torch": triton-mlp's Philox draws are another stream than torch's generator)
    return GANTrainer(g, d, RING, batch_size=32, lr=1e-3, seed=5, kernels=kernels, sampler="torch",
                      fused_optimizer=fused_optimizer, device="cpu")


@pytest.mark.parametrize("saved, resumed", [
    (("torch", False), ("triton", False)), (("triton", False), ("torch", False)),
    (("torch", False), ("triton-mlp", False)), (("triton-mlp", False), ("torch", False)),
    (("torch", False), ("torch", True)), (("torch", True), ("torch", False)),
], ids=lambda case: f"{case[0]}{'+FlatAdam' if case[1] else ''}")
def test_a_checkpoint_resumes_under_another_backend_and_optimizer(saved, resumed, tmp_path):
    first = _trainer(*saved)
    first.fit(6, log_every=3, progress=False)
    first.save(tmp_path / "run.pt")
    first.fit(4, log_every=2, progress=False)

    second = _trainer(*resumed)
    assert isinstance(second.optimizer_d, FlatAdam) != isinstance(first.optimizer_d, FlatAdam) or \
        second.kernels != first.kernels
    second.load(tmp_path / "run.pt")
    second.fit(4, log_every=2, progress=False)
    assert second.step_count == first.step_count == 10
    for name in ("generator", "discriminator"):
        theirs = getattr(second, name).state_dict()
        for key, a in getattr(first, name).state_dict().items():
            assert_close(theirs[key], a, 1e-4, f"{name}.{key}")
    for key in ("loss_d", "loss_g"):
        assert second.history[key] == pytest.approx(first.history[key], rel=1e-4)
