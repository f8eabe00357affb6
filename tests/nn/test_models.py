import pytest
import torch

from helpers import assert_close
from fastgan import MLPDiscriminator, MLPGenerator
from fastgan.nn.checks import first_linear, last_linear
from fastgan.nn.layers import minibatch_std
from fastgan.train.backends import whole_mlp


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


def _minibatch_std_loop(h, group):
    """The float64 reference: row by row, each group's features' population std (+1e-8 under the root), averaged."""
    n = h.shape[0]
    groups = max(n // group, 1)
    bounds = [(i * group, (i + 1) * group) for i in range(groups - 1)] + [((groups - 1) * group, n)]
    column = torch.full((n, 1), float("nan"), dtype=torch.float64)
    for start, stop in bounds:
        rows = h[start:stop].double()
        column[start:stop] = ((rows - rows.mean(0)).square().mean(0) + 1e-8).sqrt().mean()
    return torch.cat([h.double(), column], dim=1)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 13, 64])
@pytest.mark.parametrize("group", [2, 4, 5])
def test_minibatch_std_against_a_float64_loop(n, group):
    """Odd batch sizes (the last group takes the rest, a batch under the group size is one group), a strided
    input, replicas as a leading dimension (each its own batch), fp32 to 1e-6 of float64 element-wise."""
    gen = torch.Generator().manual_seed(n * 10 + group)
    h = torch.randn(n, 9, generator=gen) * torch.logspace(-3, 3, 9)
    strided = torch.randn(9, n, generator=gen).t()
    for x in (h, strided):
        got = minibatch_std(x, group)
        assert got.shape == (n, 10) and got.dtype == torch.float32
        assert_close(got, _minibatch_std_loop(x, group), 1e-6, f"n {n} group {group}")
    stacked = torch.stack([h, 2 * h + 1, strided])
    got = minibatch_std(stacked, group)
    for k in range(3):
        assert_close(got[k], _minibatch_std_loop(stacked[k], group), 1e-6, f"replica {k}")


def test_minibatch_std_gradient_and_identical_rows():
    h = torch.randn(10, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: minibatch_std(x, 4), (h,))
    same = torch.ones(8, 3).requires_grad_(True)   # a collapsed batch: std 1e-4, a finite gradient
    out = minibatch_std(same, 4)
    # (sqrt(1e-8) to an ulp: PyTorch's vectorised fp32 sqrt is 1 ulp above numpy's on some CPUs, e.g. AVX2 on
    # an AMD EPYC, where an exact comparison failed)
    assert_close(out[:, 3], torch.full((8,), 1e-4), 1e-6, "a collapsed batch's std")
    out.sum().backward()
    assert torch.isfinite(same.grad).all()


def test_minibatch_std_discriminator():
    d = MLPDiscriminator(in_dim=6, hidden=(8, 16), minibatch_std=4)
    assert [type(m).__name__ for m in d.net] == ["Linear", "LeakyReLU", "Linear", "LeakyReLU", "MinibatchStd",
                                                 "Linear"]
    assert d.net[-1].in_features == 17 and d(torch.randn(11, 6)).shape == (11, 1)
    assert whole_mlp(d) is None   # not one whole MLP: trains with the per-layer kernels
    x = torch.randn(8, 6)
    assert torch.equal(d(x)[:4], d(torch.cat([x[:4], torch.randn(4, 6)]))[:4])   # a row's score: its group's
    assert not torch.allclose(d(x)[0], d(x[0].expand(4, 6))[0])                   # among copies, another
    for bad in (1, True, 2.5, -4):
        with pytest.raises(ValueError, match="group"):
            MLPDiscriminator(in_dim=6, minibatch_std=bad)
    with pytest.raises(ValueError, match="hidden"):
        MLPDiscriminator(in_dim=6, hidden=(), minibatch_std=4)
