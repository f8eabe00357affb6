"""maxout (ops.maxout, nn.Maxout), PacGAN's models, and the simultaneous update PacGAN's code trains with.

The maximum of floats is exact, so the kernel is compared with the float64 reference for equality, value
and gradient, on fresh random inputs with unique maxima (ties have their own test).
"""
import pytest
import torch

from helpers import DEVICE
from fastgan import GANTrainer, data, ops
from fastgan.nn.models import BatchNormGenerator, MaxoutDiscriminator, pacgan_models
from fastgan.sampling import generate
from fastgan.nn import Maxout

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _reference(x64: torch.Tensor, dy64: torch.Tensor, pieces: int):
    """float64 maxout and its input gradient for the incoming ``dy64``: all of it to the first of the
    maximal pieces (``torch.argmax``'s choice; 16-bit inputs often tie)."""
    groups = x64.unflatten(-1, (x64.shape[-1] // pieces, pieces))
    winner = groups.argmax(-1, keepdim=True)
    dx = torch.zeros_like(groups).scatter_(-1, winner, dy64.unsqueeze(-1))
    return groups.amax(-1), dx.flatten(-2)


@pytest.mark.parametrize("rows", [1, 7, 127, 129])
@pytest.mark.parametrize("units,pieces", [(1, 1), (7, 2), (200, 5), (13, 3), (784, 4)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_maxout_equals_the_float64_reference(rows, units, pieces, dtype, poison, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, units * pieces, generator=g).to(dtype).to(DEVICE).requires_grad_()
    dy = torch.randn(rows, units, generator=g).to(dtype).to(DEVICE)
    before = ops.kernel_launches["_maxout_fwd_kernel"], ops.kernel_launches["_maxout_bwd_kernel"]
    y = ops.maxout(x, pieces)
    y.backward(dy)
    if pieces > 1:
        assert (ops.kernel_launches["_maxout_fwd_kernel"], ops.kernel_launches["_maxout_bwd_kernel"]) == (
            before[0] + 1, before[1] + 1), "the Triton kernels did not run"
    y64, dx64 = _reference(x.detach().double().cpu(), dy.double().cpu(), pieces)
    assert y.dtype == dtype and y.shape == (rows, units)
    assert torch.equal(y.double().cpu(), y64), "values"
    assert torch.equal(x.grad.double().cpu(), dx64), "gradients"


def test_maxout_reads_a_strided_2d_input_in_place(poison, seed):
    g = torch.Generator().manual_seed(seed)
    for x in (torch.randn(9, 40, generator=g)[:, 5:35],        # a column slice: row stride 40
              torch.randn(30, 9, generator=g).t()):            # a transpose: column stride 9
        x = x.to(DEVICE).requires_grad_()
        assert not x.is_contiguous()
        y = ops.maxout(x, 3)
        assert y.data_ptr() != x.data_ptr()
        y.backward(torch.ones_like(y))
        y64, dx64 = _reference(x.detach().double().cpu(), torch.ones(9, 10, dtype=torch.float64), 3)
        assert torch.equal(y.double().cpu(), y64) and torch.equal(x.grad.double().cpu(), dx64)


def test_maxout_of_nothing_is_empty():
    for shape in [(4, 0), (0, 10)]:
        x = torch.randn(shape, device=DEVICE, requires_grad=True)
        y = ops.maxout(x, 5)
        assert y.shape == (shape[0], shape[1] // 5)
        y.sum().backward()
        assert x.grad.shape == x.shape


def test_maxout_reads_strided_inputs_and_leading_dimensions(poison, seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(3, 40, 31, generator=g).to(DEVICE)
    x = base[:, ::3, 1:31].requires_grad_()   # (3, 14, 30): row stride 93, column stride 1, not contiguous
    x.retain_grad()
    dy = torch.randn(30, 3, 14, generator=g).to(DEVICE).permute(1, 2, 0)[..., :6]   # strided gradient
    y = ops.maxout(x, 5)
    y.backward(dy)
    y64, dx64 = _reference(x.detach().double().cpu(), dy.double().cpu(), 5)
    assert torch.equal(y.double().cpu(), y64)
    assert torch.equal(x.grad.double().cpu(), dx64)


def test_maxout_nan_inf_and_ties(poison):
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([[1.0, nan, 3.0, -inf, -inf, -inf, inf, 2.0, inf, 4.0, 4.0, 1.0]], device=DEVICE)
    x.requires_grad_()
    y = ops.maxout(x, 3)
    assert torch.isnan(y[0, 0]) and y[0, 1] == -inf and y[0, 2] == inf and y[0, 3] == 4.0
    y.backward(torch.tensor([[10.0, 20.0, 30.0, 40.0]], device=DEVICE))
    # the gradient goes to the winner: the NaN, then the first of equal pieces
    assert x.grad.cpu().tolist() == [[0.0, 10.0, 0.0, 20.0, 0.0, 0.0, 30.0, 0.0, 0.0, 40.0, 0.0, 0.0]]


def test_maxout_bad_input_is_a_clear_error():
    x = torch.randn(4, 10, device=DEVICE)
    with pytest.raises(ValueError, match="not a multiple of pieces"):
        ops.maxout(x, 3)
    with pytest.raises(ValueError, match="pieces must be in"):
        ops.maxout(x, 0)
    with pytest.raises(TypeError, match="pieces must be an int"):
        ops.maxout(x, 2.0)
    with pytest.raises(TypeError, match="float32, float16"):
        ops.maxout(torch.ones(4, 10, dtype=torch.int32, device=DEVICE), 2)
    with pytest.raises(ValueError, match="positive int"):
        Maxout(0)


def test_maxout_compiles_with_no_graph_breaks(seed):
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    layer = torch.nn.Sequential(torch.nn.Linear(6, 20), Maxout(5)).to(DEVICE)
    x = torch.randn(9, 6, device=DEVICE).requires_grad_()
    eager = layer(x)
    eager.sum().backward()
    eager_grad, x.grad = x.grad, None
    before = ops.kernel_launches["_maxout_fwd_kernel"], ops.kernel_launches["_maxout_bwd_kernel"]
    compiled = torch.compile(layer)(x)
    compiled.sum().backward()
    assert dict(counters["graph_break"]) == {}, dict(counters["graph_break"])
    assert ops.kernel_launches["_maxout_fwd_kernel"] > before[0]
    assert ops.kernel_launches["_maxout_bwd_kernel"] > before[1]
    assert torch.equal(compiled, eager) and torch.equal(x.grad, eager_grad)


def test_pacgan_models_are_pacgans_and_sample_from_running_statistics(seed):
    torch.manual_seed(seed)
    g, d = pacgan_models(2, pack=3)
    assert isinstance(g, BatchNormGenerator) and isinstance(d, MaxoutDiscriminator)
    linears = [m for m in g.net if isinstance(m, torch.nn.Linear)]
    assert [m.bias is None for m in linears] == [True] * 4 + [False]
    assert [(m.in_features, m.out_features) for m in linears] == [(2, 400)] + [(400, 400)] * 3 + [(400, 2)]
    d_linears = [m for m in d.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in d_linears] == [(6, 1000), (200, 1000), (200, 1000), (200, 1)]
    weights = torch.cat([m.weight.flatten() for m in linears + d_linears])
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
    assert all(m.bias is None or not m.bias.any() for m in linears + d_linears)
    assert d(torch.randn(4, 6)).shape == (4, 1)
    # drawing samples reads BatchNorm's running statistics and leaves them (and G's mode) untouched
    g.train()
    g(torch.randn(64, 2))   # running statistics away from their initial values
    before = {k: v.clone() for k, v in g.state_dict().items()}
    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(1))
    samples = generate(g, 50, 2, seed=1)
    assert g.training
    with torch.no_grad():
        assert torch.equal(samples, g.eval()(z)), "samples must come from the running statistics (eval mode)"
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in before.items())


def test_simultaneous_update_is_both_gradients_from_one_forward():
    """Two steps of the trainer against a hand-written simultaneous step on the same draws (fp32)."""
    real = data.gaussian_ring(1000, seed=0)
    torch.manual_seed(0)
    g, d = pacgan_models(2, pack=2)
    g_ref, d_ref = pacgan_models(2, pack=2)
    g_ref.load_state_dict(g.state_dict())
    d_ref.load_state_dict(d.state_dict())
    trainer = GANTrainer(g, d, real, batch_size=16, lr=1e-3, betas=(0.8, 0.999), pack=2, pack_convention="rows",
                         update="simultaneous", precision="fp32", seed=3, real_label=0.9)
    opt_g = torch.optim.Adam(g_ref.parameters(), lr=1e-3, betas=(0.8, 0.999))
    opt_d = torch.optim.Adam(d_ref.parameters(), lr=1e-3, betas=(0.8, 0.999))
    rng = torch.Generator().manual_seed(3)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    for _ in range(2):
        loss_d, loss_g = trainer.step()
        x = real[torch.randint(0, 1000, (32,), generator=rng)].reshape(16, 4)
        fake = g_ref(torch.randn(32, 2, generator=rng)).reshape(16, 4)
        real_logits, fake_logits = d_ref(x), d_ref(fake)
        ref_d = bce(real_logits, torch.full_like(real_logits, 0.9)) + bce(fake_logits, torch.zeros_like(fake_logits))
        ref_g = bce(fake_logits, torch.ones_like(fake_logits))
        grads_d = torch.autograd.grad(ref_d, list(d_ref.parameters()), retain_graph=True)
        grads_g = torch.autograd.grad(ref_g, list(g_ref.parameters()))
        for p, grad in zip([*d_ref.parameters(), *g_ref.parameters()], [*grads_d, *grads_g]):
            p.grad = grad
        opt_d.step()
        opt_g.step()
        assert torch.allclose(loss_d, ref_d, rtol=1e-5) and torch.allclose(loss_g, ref_g, rtol=1e-5)
    for mine, ref in zip([*g.state_dict().values(), *d.state_dict().values()],
                         [*g_ref.state_dict().values(), *d_ref.state_dict().values()]):
        assert torch.allclose(mine.float(), ref.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("options", [dict(kernels="triton", fused_optimizer="flat"),
                                     dict(kernels="triton", ema=0.9, spectral_norm=True, instance_noise=0.01)])
def test_simultaneous_update_is_the_same_on_every_path(options):
    """The fused layers and FlatAdam (flat gradient buffers) give the torch path's simultaneous step (fp32)."""
    real = data.gaussian_ring(1000, seed=0)
    runs = []
    for extra in ({k: v for k, v in options.items() if k not in ("kernels", "fused_optimizer")}, options):
        torch.manual_seed(0)   # PacGAN's kinds of layer at a size the interpreter runs quickly
        models = (BatchNormGenerator(latent_dim=2, hidden=24, layers=2, out_dim=2),
                  MaxoutDiscriminator(in_dim=4, hidden=16, layers=2, pieces=3))
        trainer = GANTrainer(*models, real, batch_size=16, lr=1e-3, pack=2, update="simultaneous",
                             precision="fp32", seed=1, **extra)
        trainer.fit(5, log_every=5, progress=False)
        runs.append(trainer)
    for key in ("loss_d", "loss_g"):
        assert torch.allclose(torch.tensor(runs[1].history[key]), torch.tensor(runs[0].history[key]), rtol=1e-5)
    # Adam divides each gradient by its own scale, so rounding in a near-zero gradient can move a weight by up
    # to ~1% of lr a step (seen: one weight in 160,000 off by 7e-6 after 5 steps at lr 1e-3)
    for a, b in zip(runs[0].generator.state_dict().values(), runs[1].generator.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=2e-5)


def test_simultaneous_update_refuses_what_it_cannot_do():
    from fastgan import TrainConfig
    with pytest.raises(ValueError, match="d_steps > 1"):
        TrainConfig(update="simultaneous", d_steps=2)
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(update="simultaneous", compile=True)
    with pytest.raises(ValueError, match="update must be one of"):
        TrainConfig(update="both")
