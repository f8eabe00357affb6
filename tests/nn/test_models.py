import pytest
import torch

from fastgan import MLPDiscriminator, MLPGenerator
from fastgan.nn.checks import first_linear, last_linear


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_classic_shapes_and_parameter_counts():
    g, d = MLPGenerator(), MLPDiscriminator()
    # G: 100*128+128 + 128*128+128 + 128*784+784; D: 784*128+128 + 128*128+128 + 128+1 (= 247,697)
    assert count(g) == 130_576
    assert count(d) == 117_121
    assert count(g) + count(d) == 247_697
    z = torch.randn(5, 100)
    x = g(z)
    assert x.shape == (5, 784) and bool(((x >= 0) & (x <= 1)).all())
    assert d(x).shape == (5, 1)
    assert [type(m).__name__ for m in g.net] == ["Linear", "LeakyReLU", "Linear", "LeakyReLU", "Linear", "Sigmoid"]
    assert [type(m).__name__ for m in d.net] == ["Linear", "LeakyReLU", "Linear", "LeakyReLU", "Linear"]
    assert g.net[1].negative_slope == 0.2
    assert first_linear(g).in_features == 100 and last_linear(d).out_features == 1


def test_custom_sizes_and_linear_output():
    g = MLPGenerator(latent_dim=3, hidden=(7,), out_dim=2, output_activation=None)
    assert g(torch.randn(4, 3)).shape == (4, 2)
    assert type(g.net[-1]).__name__ == "Linear"


@pytest.mark.parametrize("kwargs", [{"latent_dim": 0}, {"hidden": (128, -1)}, {"out_dim": 2.5},
                                    {"negative_slope": -0.1}, {"output_activation": "relu"}])
def test_bad_model_arguments(kwargs):
    with pytest.raises(ValueError):
        MLPGenerator(**kwargs)
