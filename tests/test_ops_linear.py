"""fused_linear against a float64 PyTorch reference, forward and every gradient (Triton interpreter on CPU)."""
import pytest
import torch

from conftest import BF16_DOT_OK, DEVICE, ON_CUDA, TOLERANCE, assert_close, relative_error
from fastgan import ops
from fastgan.ops import fused_linear

ACTIVATIONS = list(ops.ACTIVATIONS)
# (batch M, in_features K, out_features N): odd sizes around the block edges and the GAN's own widths.
SHAPES = [(1, 1, 1), (7, 13, 129), (129, 127, 7), (20, 784, 1), (33, 100, 128)]


def _inputs(m, k, n, dtype, bias=True, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g, dtype=torch.float64) * scale
    w = torch.randn(n, k, generator=g, dtype=torch.float64) / k ** 0.5
    b = torch.randn(n, generator=g, dtype=torch.float64) if bias else None
    dy = torch.randn(m, n, generator=g, dtype=torch.float64)
    return x, w, b, dy


def _check(x64, w64, b64, dy64, activation, dtype, tolerance, slope=0.2, x_transform=None):
    """Run the kernel on dtype copies and the reference in float64; compare y, dx, dw, db.

    sigmoid' and tanh' are recovered from the output (y(1-y), 1-y^2), which loses digits where y rounds
    near its bounds: PyTorch's own fp32 backward does exactly the same. So for fp32 each result must be
    within ``tolerance`` or within twice PyTorch's own fp32 error on the same inputs, whichever is
    larger (on well-conditioned inputs PyTorch's error is ~1e-7 and ``tolerance`` decides).
    """
    def leaf(t, d):
        return None if t is None else t.detach().to(device=DEVICE, dtype=d).clone().requires_grad_()

    def run(fn, d):
        leaves = [leaf(t, d) for t in (x64, w64, b64)]
        x_in = x_transform(leaves[0]) if x_transform else leaves[0]
        y = fn(x_in, leaves[1], leaves[2], activation, slope)
        y.backward(dy64.to(device=DEVICE, dtype=d))
        return [y] + [t.grad if t is not None else None for t in leaves]

    before = dict(ops.kernel_launches)
    ours = run(fused_linear, dtype)
    launched = {k: ops.kernel_launches[k] - before.get(k, 0) for k in ops.kernel_launches}
    exact = run(ops.fused_linear_reference, torch.float64)
    torch_same_dtype = run(ops.fused_linear_reference, dtype) if dtype == torch.float32 else None
    assert launched.get("_linear_act_fwd_kernel") == 1, f"the Triton forward did not run: {launched}"
    assert launched.get("_linear_act_bwd_input_kernel") == 1, f"the Triton dX kernel did not run: {launched}"
    assert launched.get("_linear_act_bwd_weight_kernel") == 1, f"the Triton dW kernel did not run: {launched}"
    assert ours[0].dtype == dtype
    for i, what in enumerate(("y", "dx", "dw", "db")):
        if exact[i] is None:
            continue
        assert torch.isfinite(ours[i]).all(), f"{what} has NaN/inf"
        bound = tolerance
        if torch_same_dtype is not None:
            bound = max(tolerance, 2 * relative_error(torch_same_dtype[i], exact[i]))
        assert_close(ours[i], exact[i], bound, what)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_fp32_exact_matches_float64_reference(shape, activation, bias, ieee, poison):
    x, w, b, dy = _inputs(*shape, torch.float32, bias=bias, seed=hash((shape, activation, bias)) % 2**31)
    _check(x, w, b, dy, activation, torch.float32, TOLERANCE["ieee"])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_tf32_default_within_tf32_tolerance(activation, poison):
    assert ops.get_matmul_precision() == "tf32"
    x, w, b, dy = _inputs(65, 100, 129, torch.float32, seed=3)
    _check(x, w, b, dy, activation, torch.float32, TOLERANCE["tf32"])


@pytest.mark.parametrize("layout", ["transposed", "column_slice", "row_stride"])
def test_non_contiguous_x(layout, ieee, poison):
    x, w, b, dy = _inputs(19, 37, 23, torch.float32, seed=5)
    if layout == "transposed":  # x is the transpose of a (K, M) tensor: stride (1, M)
        base, transform = x.t().contiguous(), lambda t: t.t()
    elif layout == "column_slice":  # every other column of a (M, 2K) tensor
        base = torch.stack([x, torch.zeros_like(x)], dim=2).reshape(19, 74)
        transform = lambda t: t[:, ::2]  # noqa: E731
    else:  # every other row of a (2M, K) tensor
        base = torch.stack([x, torch.zeros_like(x)], dim=1).reshape(38, 37)
        transform = lambda t: t[::2]  # noqa: E731
    assert not transform(base).is_contiguous()
    _check(base, w, b, dy, "leaky_relu", torch.float32, TOLERANCE["ieee"], x_transform=transform)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(7, 13, 129), (33, 100, 128)], ids=lambda s: "x".join(map(str, s)))
def test_fp16(activation, shape, poison):
    x, w, b, dy = _inputs(*shape, torch.float16, seed=11)
    _check(x, w, b, dy, activation, torch.float16, TOLERANCE[torch.float16])


@pytest.mark.gpu
@pytest.mark.skipif(not BF16_DOT_OK, reason="bf16 tl.dot is silently wrong in Triton's CPU interpreter "
                                            "(errors ~1e10): bf16 matmuls are checked on a GPU only")
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_bf16_on_gpu(activation):
    x, w, b, dy = _inputs(129, 784, 128, torch.bfloat16, seed=13)
    _check(x, w, b, dy, activation, torch.bfloat16, TOLERANCE[torch.bfloat16])


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "leaky_relu", "relu"])
def test_extreme_pre_activations_saturate_without_nan(activation, ieee, poison):
    # Pre-activations of several hundred: sigmoid/tanh saturate, their derivative is exactly 0, no NaN/inf.
    x, w, b, dy = _inputs(9, 16, 17, torch.float32, seed=17, scale=300.0)
    _check(x, w, b, dy, activation, torch.float32, TOLERANCE["ieee"])


def test_leading_dimensions_and_empty_batch(ieee):
    x = torch.randn(2, 3, 5, 16)
    w = torch.randn(8, 16)
    y = fused_linear(x, w, None, "relu")
    assert y.shape == (2, 3, 5, 8)
    assert_close(y, torch.relu(x.double() @ w.double().t()), TOLERANCE["ieee"])
    empty = torch.randn(0, 16, requires_grad=True)
    we = torch.randn(8, 16, requires_grad=True)
    out = fused_linear(empty, we, torch.zeros(8, requires_grad=True), "tanh")
    assert out.shape == (0, 8)
    out.sum().backward()
    assert torch.equal(we.grad, torch.zeros_like(we))


def test_only_needed_gradients_are_computed():
    x = torch.randn(5, 16)  # no grad wanted for x (like the generator's noise)
    w = torch.randn(8, 16, requires_grad=True)
    before = ops.kernel_launches["_linear_act_bwd_input_kernel"]
    fused_linear(x, w, None, "sigmoid").sum().backward()
    assert ops.kernel_launches["_linear_act_bwd_input_kernel"] == before
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_reference_path_when_triton_is_off(monkeypatch, ieee):
    import fastgan.ops.linear as linear_module
    monkeypatch.setattr(linear_module, "use_triton", lambda t: False)
    before = sum(ops.kernel_launches.values())
    x, w = torch.randn(4, 6), torch.randn(3, 6)
    y = fused_linear(x, w, None, "leaky_relu", 0.3)
    assert sum(ops.kernel_launches.values()) == before
    assert_close(y, torch.nn.functional.leaky_relu(x.double() @ w.double().t(), 0.3), 1e-6)


def test_float64_takes_the_reference_path():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: fused_linear(a, b, None, "tanh"), (x, w))


def test_matmul_precision_switch():
    assert ops.get_matmul_precision() == "tf32"
    with ops.matmul_precision("ieee"):
        assert ops.get_matmul_precision() == "ieee"
    assert ops.get_matmul_precision() == "tf32"
    with pytest.raises(ValueError, match="matmul precision"):
        ops.set_matmul_precision("fp8")


@pytest.mark.parametrize("call, error, message", [
    (lambda: fused_linear(torch.randn(4, 5), torch.randn(3, 6)), ValueError, "last dimension"),
    (lambda: fused_linear(torch.randn(4, 6), torch.randn(3, 6, 1)), ValueError, "weight must be 2-D"),
    (lambda: fused_linear(torch.randn(4, 6), torch.randn(3, 6), torch.randn(4)), ValueError, "bias must have"),
    (lambda: fused_linear(torch.randn(4, 6), torch.randn(3, 6), activation="gelu"), ValueError, "unknown act"),
    (lambda: fused_linear(torch.randn(4, 6), torch.randn(3, 6), activation="leaky_relu", negative_slope=-0.1),
     ValueError, "negative_slope"),
    (lambda: fused_linear(torch.randn(4, 6), torch.randn(3, 6).half()), TypeError, "dtype"),
    (lambda: fused_linear(torch.randn(4, 6).int(), torch.randn(3, 6)), TypeError, "x must be float"),
    (lambda: fused_linear([1.0], torch.randn(3, 6)), TypeError, "x must be a torch.Tensor"),
    (lambda: fused_linear(torch.randn(4, 6), torch.randn(3, 6), torch.randn(3, 1)), ValueError, "bias"),
    (lambda: fused_linear(torch.randn(4, 6), torch.randn(3, 6, device="meta")), ValueError, "is on meta"),
])
def test_bad_input_is_rejected_before_any_kernel(call, error, message):
    before = sum(ops.kernel_launches.values())
    with pytest.raises(error, match=message):
        call()
    assert sum(ops.kernel_launches.values()) == before


@pytest.mark.gpu
@pytest.mark.skipif(not ON_CUDA, reason="CUDA graphs need a CUDA device")
def test_cuda_graph_capture_needs_warm_up_then_replays_exactly():
    x = torch.randn(77, 129, device="cuda")
    w = torch.randn(33, 129, device="cuda")
    b = torch.randn(33, device="cuda")
    graph = torch.cuda.CUDAGraph()
    if ops.AUTOTUNE:
        with pytest.raises(RuntimeError, match="inside a CUDA graph capture"):
            with torch.cuda.graph(graph):
                fused_linear(x, w, b, "tanh")
        graph = torch.cuda.CUDAGraph()
    expected = fused_linear(x, w, b, "tanh")  # warm-up: tunes this shape outside the capture
    with torch.cuda.graph(graph):
        out = fused_linear(x, w, b, "tanh")
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    assert_close(out, torch.tanh(x.double() @ w.double().t() + b.double()), TOLERANCE["tf32"])
    assert not torch.equal(out, expected)
