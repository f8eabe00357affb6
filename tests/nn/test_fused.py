"""FusedLinear and fuse(): drop-in for nn.Linear, same outputs, shared parameters, state_dict both ways."""
import copy

import pytest
import torch
from torch import nn

from helpers import TOLERANCE, assert_close
from fastgan import FusedLinear, MLPDiscriminator, MLPGenerator, fuse, ops


def test_fused_linear_is_an_nn_linear_with_the_same_state_dict():
    torch.manual_seed(0)
    plain = nn.Linear(10, 7)
    torch.manual_seed(0)
    fused = FusedLinear(10, 7, activation="tanh")
    assert isinstance(fused, nn.Linear)
    assert [n for n, _ in fused.named_parameters()] == ["weight", "bias"]
    assert fused.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(fused.state_dict().values(), plain.state_dict().values())), \
        "same seed must give nn.Linear's init"
    plain.load_state_dict(fused.state_dict())
    fused.load_state_dict(plain.state_dict())
    assert "activation=tanh" in repr(fused)
    with pytest.raises(ValueError, match="unknown activation"):
        FusedLinear(3, 4, activation="swish")


class Block(nn.Module):
    """A user module that is not an nn.Sequential: its Linear is fused (activation stays a call)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(12, 12)
        self.norm = nn.LayerNorm(12)

    def forward(self, x):
        return torch.nn.functional.gelu(self.norm(self.proj(x)))


def _nested():
    return nn.Sequential(
        nn.Linear(9, 12), nn.LeakyReLU(0.2),
        Block(),
        nn.Sequential(nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 12), nn.ReLU()),
        nn.Linear(12, 12), nn.LeakyReLU(-0.5),  # negative slope: not fusable, left as it is
        nn.Linear(12, 5), nn.Sigmoid(),
        nn.Dropout(0.0),
    )


def test_fuse_nested_model_same_outputs_shared_parameters_state_dict(ieee):
    torch.manual_seed(1)
    model = _nested()
    reference = copy.deepcopy(model).double()
    keys = list(model.state_dict())
    parameters = {id(p) for p in model.parameters()}
    fused = fuse(model)
    assert fused is model
    kinds = [(type(m).__name__, getattr(m, "activation", None)) for m in model.modules()
             if isinstance(m, nn.Linear)]
    assert kinds == [("FusedLinear", "leaky_relu"), ("FusedLinear", "none"), ("FusedLinear", "tanh"),
                     ("FusedLinear", "relu"), ("FusedLinear", "none"), ("FusedLinear", "sigmoid")]
    assert isinstance(model[5], nn.LeakyReLU), "a LeakyReLU with a negative slope must be left in place"
    assert list(model.state_dict()) == keys
    assert {id(p) for p in model.parameters()} == parameters, "fuse must share, not copy, parameters"
    x = torch.randn(17, 9, dtype=torch.float64)
    before = ops.kernel_launches["_linear_act_fwd_kernel"]
    y = model(x.float())
    assert ops.kernel_launches["_linear_act_fwd_kernel"] - before == 6
    assert_close(y, reference(x), TOLERANCE["ieee"])
    # and it still trains: every parameter gets a finite gradient
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # state_dict round trip with an unfused twin
    twin = _nested()
    twin.load_state_dict(model.state_dict())
    assert_close(twin(x.float()).detach(), reference(x), TOLERANCE["ieee"])


def test_fuse_on_a_bare_linear_and_idempotence():
    linear = nn.Linear(4, 3)
    fused = fuse(linear)
    assert isinstance(fused, FusedLinear) and fused.weight is linear.weight
    model = fuse(MLPDiscriminator(in_dim=6, hidden=(8,)))
    again = fuse(model)
    assert [type(m).__name__ for m in again.net] == ["FusedLinear", "Identity", "FusedLinear"]


@pytest.mark.parametrize("make", [lambda: MLPGenerator(latent_dim=10, hidden=(16, 16), out_dim=20),
                                  lambda: MLPDiscriminator(in_dim=20, hidden=(16, 16))],
                         ids=["generator", "discriminator"])
def test_fuse_the_seed_models(make, ieee):
    torch.manual_seed(2)
    model = make()
    reference = copy.deepcopy(model)
    fuse(model)
    assert sum(isinstance(m, FusedLinear) for m in model.modules()) == 3
    x = torch.randn(5, model.net[0].in_features)
    assert_close(model(x), reference(x), TOLERANCE["ieee"])
