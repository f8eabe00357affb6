"""fused_linear against a float64 PyTorch reference, forward and every gradient (Triton interpreter on CPU).

Comparisons are element-wise (``conftest.assert_close``). The forward is compared with the exact float64
result. The backward is compared with float64 gradients taken *at the kernel's own output y*: by design the
kernels recover act'(x) from y, and at tf32/bf16 a pre-activation near 0 can round to the other side of a
ReLU's kink, which flips that element's mask and changes its gradient by O(1); the forward check already
bounds how far y is from exact, so the backward check asks that nothing else is lost. On a CPU the
interpreter computes dots in full fp32, so ``test_tf32_and_bf16_bounds_hold_for_emulated_gpu_rounding``
proves those bounds against a float64 model of the GPU's operand rounding.
"""
import pytest
import torch

from helpers import BF16_DOT_OK, DEVICE, ON_CUDA, TOLERANCE, assert_close, fp32_sum_rounding, relative_error
from fastgan import ops
from fastgan.ops import fused_linear

ACTIVATIONS = list(ops.ACTIVATIONS)
# (batch M, in_features K, out_features N): odd sizes around the block edges and the GAN's own widths.
SHAPES = [(1, 1, 1), (7, 13, 129), (129, 127, 7), (20, 784, 1), (33, 100, 128)]
SLOPE = 0.2


def _inputs(m, k, n, bias=True, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g, dtype=torch.float64) * scale
    w = torch.randn(n, k, generator=g, dtype=torch.float64) / k ** 0.5
    b = torch.randn(n, generator=g, dtype=torch.float64) if bias else None
    dy = torch.randn(m, n, generator=g, dtype=torch.float64)
    return x, w, b, dy


def expected(x64, w64, b64, dy64, activation, slope=SLOPE, y_at=None):
    """float64 ``y, dx, dw, db``; the gradients taken at ``y_at`` (the kernel's output) when given."""
    act = ops.activation_from_name(activation)
    y = act.forward(torch.nn.functional.linear(x64, w64, b64), slope)
    y_for_grad = y if y_at is None else y_at.detach().double().cpu()
    g = dy64 * act.derivative_from_output(y_for_grad, slope)
    return y, g @ w64, g.t() @ x64, (g.sum(0) if b64 is not None else None)


def fp32_rounding(x64, w64, b64, dy64, activation, y):
    """Per element of ``(y, dx, dw, db)``, what fp32 arithmetic itself may cost: the dot of the forward
    (and the bias add) carried through |act'|, and the sums of dX (over N), dW and db (over the batch) at
    the gradient g = dy act'(y). Inputs of several hundred cancelling to a pre-activation near 0, a 1 x 1
    layer whose x w + b cancels, a db of a single output summing signed rows: all need it; elsewhere the
    tolerance decides."""
    act = ops.activation_from_name(activation)
    z = torch.nn.functional.linear(x64, w64, b64)
    bias = b64.abs() if b64 is not None else 0
    y_allowance = act.derivative_from_output(act.forward(z, SLOPE), SLOPE).abs() * (
        fp32_sum_rounding(x64, w64.t()) + 2.0 ** -22 * bias)
    g = dy64 * act.derivative_from_output(y.detach().double().cpu(), SLOPE)
    ones = torch.ones(g.shape[0], 1, dtype=g.dtype)
    return (y_allowance, fp32_sum_rounding(g, w64), fp32_sum_rounding(g.t(), x64),
            fp32_sum_rounding(g.t(), ones)[:, 0] if b64 is not None else None)


def compare(ours, x64, w64, b64, dy64, activation, tolerance, what="", fp32_allowance=False):
    """``ours = (y, dx, dw, db)`` against float64: y exactly, the gradients at ``ours``' own y; with
    ``fp32_allowance``, each element may be off by what fp32 arithmetic costs there (``fp32_rounding``)."""
    y_exact = expected(x64, w64, b64, dy64, activation)[0]
    reference = expected(x64, w64, b64, dy64, activation, y_at=ours[0])
    allowances = fp32_rounding(x64, w64, b64, dy64, activation, ours[0]) if fp32_allowance else [None] * 4
    for i, name in enumerate(("y", "dx", "dw", "db")):
        if reference[i] is None:
            continue
        assert_close(ours[i], y_exact if i == 0 else reference[i], tolerance, what + name, allowance=allowances[i])


def _check(x64, w64, b64, dy64, activation, dtype, tolerance, x_transform=None):
    """Run the kernels on ``dtype`` copies (NaN-poisoned outputs: see the ``poison`` fixture); compare."""
    def leaf(t):
        return None if t is None else t.detach().to(device=DEVICE, dtype=dtype).clone().requires_grad_()

    leaves = [leaf(t) for t in (x64, w64, b64)]
    x_in = x_transform(leaves[0]) if x_transform else leaves[0]
    x_in.retain_grad()  # a view's own gradient, when x_transform made one
    before = dict(ops.kernel_launches)
    y = fused_linear(x_in, leaves[1], leaves[2], activation, SLOPE)
    y.backward(dy64.to(device=DEVICE, dtype=dtype))
    launched = {k: ops.kernel_launches[k] - before.get(k, 0) for k in ops.kernel_launches}
    for kernel in ("_linear_act_fwd_kernel", "_linear_act_bwd_input_kernel", "_linear_act_bwd_weight_kernel"):
        assert launched.get(kernel) == 1, f"{kernel} did not run: {launched}"
    assert y.dtype == dtype
    # the float64 reference rounds the inputs the way the kernels saw them
    x64 = x_transform(x64) if x_transform else x64
    rounded = [None if t is None else t.to(dtype).double() for t in (x64, w64, b64, dy64)]
    grads = [x_in.grad] + [t.grad if t is not None else None for t in leaves[1:]]
    compare([y] + grads, *rounded, activation, tolerance, fp32_allowance=True)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_fp32_exact_matches_float64_reference(shape, activation, bias, ieee, poison, seed):
    x, w, b, dy = _inputs(*shape, bias=bias, seed=seed)
    _check(x, w, b, dy, activation, torch.float32, TOLERANCE["ieee"])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_tf32_default_within_tf32_tolerance(activation, poison, seed):
    assert ops.get_matmul_precision() == "tf32"
    x, w, b, dy = _inputs(65, 100, 129, seed=seed)
    _check(x, w, b, dy, activation, torch.float32, TOLERANCE["tf32"])


def _round_mantissa(t: torch.Tensor, bits: int, truncate: bool) -> torch.Tensor:
    """fp32 values with ``bits`` explicit mantissa bits: tf32 truncates (10 bits: the PTX Triton emits
    for ``input_precision="tf32"`` feeds fp32 registers to wgmma, which drops the low 13 bits); bf16
    rounds to nearest even (7 bits: the cast autocast and ``.to(torch.bfloat16)`` make)."""
    if not truncate:
        return t.to(torch.bfloat16).double() if bits == 7 else t
    drop = 23 - bits
    as_int = t.float().view(torch.int32)
    return (as_int & ~((1 << drop) - 1)).view(torch.float32).double()


def _emulate_gpu(x64, w64, b64, dy64, activation, precision):
    """What the kernels compute on a GPU, modelled in float64: dot operands rounded as the tensor cores
    see them, fp32 (tf32) or bf16 (bf16) outputs, act'(y) from the stored y, g rounded before its dots."""
    if precision == "tf32":
        operand, store = (lambda t: _round_mantissa(t, 10, truncate=True)), torch.float32
    else:
        operand, store = (lambda t: t.to(torch.bfloat16).double()), torch.bfloat16
    x, w = x64.to(store).double(), w64.to(store).double()
    b = b64.to(store).double() if b64 is not None else None
    act = ops.activation_from_name(activation)
    y = act.forward(operand(x) @ operand(w).t() + (b if b is not None else 0), SLOPE).to(store).double()
    g = (dy64.to(store).double() * act.derivative_from_output(y, SLOPE)).float().double()
    dx = (operand(g) @ operand(w)).to(store).double()
    dw = (operand(g).t() @ operand(x)).to(store).double()
    db = g.sum(0).to(store).double() if b is not None else None
    return y, dx, dw, db, (x, w, b, dy64.to(store).double())


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_tf32_and_bf16_bounds_hold_for_emulated_gpu_rounding(precision, activation, seed):
    """The interpreter's dots are exact fp32, so on a CPU the tf32/bf16 tests above cannot fail for the
    GPU's reasons. Here a float64 model of the GPU's rounding is held to the same comparison and
    tolerance the GPU run uses: the bounds are right before a GPU ever runs them (the shape the review
    measured: 65x100x129)."""
    x64, w64, b64, dy64 = _inputs(65, 100, 129, seed=seed)
    # row 0's first 64 pre-activations within 1e-6 of 0, where tf32/bf16 rounding decides their sign
    b64[:64] = -(x64[0] @ w64[:64].t()) + 1e-6
    y, dx, dw, db, inputs = _emulate_gpu(x64, w64, b64, dy64, activation, precision)
    tolerance = TOLERANCE["tf32" if precision == "tf32" else torch.bfloat16]
    compare((y, dx, dw, db), *inputs, activation, tolerance, what=f"{precision} model: ")
    # the model is not exact fp32: its rounding is what the GPU's tests meet
    exact = expected(x64, w64, b64, dy64, activation)
    assert relative_error(dx, exact[1]) > 10 * TOLERANCE["ieee"], "the emulation rounded nothing"
    if precision == "tf32" and activation in ("relu", "leaky_relu"):
        # and it flips activation masks, what broke the old (exact-gradient) check
        flipped = ((y[0] > 0) != (exact[0][0] > 0)).sum().item()
        assert flipped > 0, "the emulation flipped no activation mask: this case tests nothing"


@pytest.mark.parametrize("layout", ["transposed", "column_slice", "row_stride"])
def test_non_contiguous_x(layout, ieee, poison, seed):
    x, w, b, dy = _inputs(19, 37, 23, seed=seed)
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


def test_weight_gradient_splits_fill_the_sms_only_where_the_tiles_do_not():
    from fastgan.ops.linear import weight_grad_splits
    assert weight_grad_splits(128, 128, 128, 1, 132) == (1, 128)           # the GAN at batch 128: as before
    assert weight_grad_splits(4096, 128, 128, 1, 132) == (8, 512)          # 4 tiles: 8 splits, 32 programs
    assert weight_grad_splits(16384, 1024, 1024, 1, 132) == (1, 16384)    # 256 tiles fill the SMs already
    assert weight_grad_splits(1023, 5, 7, 1, 132) == (1, 1023)             # under two splits' rows
    for rows, n, k, r in ((1500, 5, 7, 1), (4096, 784, 128, 1), (16384, 128, 784, 1), (4096, 128, 128, 8),
                          (10 ** 6, 1, 1, 1)):
        splits, per = weight_grad_splits(rows, n, k, r, 132)
        assert 1 < splits <= 16 and per % 128 == 0 and (splits - 1) * per < rows <= splits * per, (rows, splits)


@pytest.mark.parametrize("activation", ["leaky_relu", "sigmoid"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_weight_gradient_in_batch_splits_matches_float64(activation, bias, dtype, ieee, poison, seed):
    """1,500 rows of a 13 -> 5 layer: dW and db as two splits' partial sums (768 + 732 rows) added by the host."""
    from fastgan.ops.linear import weight_grad_splits
    assert weight_grad_splits(1500, 5, 13, 1, ops._runtime.multiprocessors(torch.device(DEVICE)))[0] > 1
    x, w, b, dy = _inputs(1500, 13, 5, bias=bias, seed=seed)
    _check(x, w, b, dy, activation, dtype, TOLERANCE["ieee"] if dtype == torch.float32 else TOLERANCE[dtype])


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(7, 13, 129), (33, 100, 128)], ids=lambda s: "x".join(map(str, s)))
def test_fp16(activation, shape, poison, seed):
    x, w, b, dy = _inputs(*shape, seed=seed)
    _check(x, w, b, dy, activation, torch.float16, TOLERANCE[torch.float16])


@pytest.mark.gpu
@pytest.mark.skipif(not BF16_DOT_OK, reason="bf16 tl.dot is silently wrong in Triton's CPU interpreter "
                                            "(errors ~1e10): bf16 matmuls are checked on a GPU only")
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_bf16_on_gpu(activation, seed):
    x, w, b, dy = _inputs(129, 784, 128, seed=seed)
    _check(x, w, b, dy, activation, torch.bfloat16, TOLERANCE[torch.bfloat16])


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "leaky_relu", "relu"])
def test_extreme_pre_activations_saturate_without_nan(activation, ieee, poison, seed):
    # Pre-activations of several hundred: sigmoid/tanh saturate, their derivative is exactly 0, no NaN/inf.
    # The few that cancel to near 0 carry fp32 summation error of the large products (fp32_rounding).
    x, w, b, dy = _inputs(9, 16, 17, seed=seed, scale=300.0)
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
    (lambda: fused_linear(torch.randn(4, 6), torch.randn(3, 6, 1, 1)), ValueError, "weight must be 2-D"),
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
    w = torch.randn(33, 129, device="cuda") / 129 ** 0.5   # unit pre-activations, as a trained layer's:
    b = torch.randn(33, device="cuda")                       # tf32's error grows with |x| |w| (the first
    graph = torch.cuda.CUDAGraph()                           # GPU run: 12 of 2541 past the bound at |w| ~ 1)
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


def test_no_input_features_still_gives_the_bias_gradient(poison):
    """K = 0: y = act(b) on every row, and db is the sum of dy * act'(y) (it was never written)."""
    x = torch.randn(5, 0, device=DEVICE, requires_grad=True)
    w = torch.randn(3, 0, device=DEVICE, requires_grad=True)
    b = torch.randn(3, device=DEVICE, requires_grad=True)
    dy = torch.randn(5, 3, device=DEVICE)
    y = fused_linear(x, w, b, "tanh")
    y.backward(dy)
    b64 = b.detach().double()
    assert_close(y, torch.tanh(b64).expand(5, 3), TOLERANCE["ieee"], "y")
    assert_close(b.grad, (dy.double() * (1 - torch.tanh(b64) ** 2)).sum(0), TOLERANCE["ieee"], "db")
    assert w.grad.shape == (3, 0) and x.grad.shape == (5, 0)


_OFFSETS_SCRIPT = r"""
import torch
from fastgan import ops
big = 2**30  # row stride in elements: row 2 starts at element 2^31, past int32
def rows(columns, seed):  # 6 GiB of address space each; only its 4 rows get touched
    t = torch.empty(3 * big + columns, dtype=torch.float16).as_strided((4, columns), (big, 1))
    t.copy_(torch.randn(4, columns, generator=torch.Generator().manual_seed(seed)).half())
    return t
x, w, b = rows(16, 0), torch.randn(8, 16).half(), torch.randn(8).half()
x.requires_grad_(True), w.requires_grad_(True)
y = ops.fused_linear(x, w, b, "leaky_relu", 0.2)
dy = rows(8, 1)  # the incoming gradient strided the same way
y.backward(dy)
x64, w64, b64, dy64 = (t.detach().double() for t in (x, w, b, dy))
z = x64 @ w64.t() + b64
g = dy64 * torch.where(z > 0, 1.0, 0.2)
for name, got, want in (("y", y, torch.nn.functional.leaky_relu(z, 0.2)), ("dx", x.grad, g @ w64),
                        ("dw", w.grad, g.t() @ x64)):
    torch.testing.assert_close(got.double(), want, rtol=5e-3, atol=5e-3, msg=lambda m: name + ": " + m)
h = rows(128, 2).requires_grad_(True)
hw = (torch.randn(1, 128) / 12).half().requires_grad_(True)
loss = ops.linear_bce_head(h, hw, None, 0.9)
loss.backward()
h64 = h.detach().double()
ref = ops.linear_bce_head_reference(h64.requires_grad_(), hw.detach().double(), None, 0.9)
ref.backward()
torch.testing.assert_close(loss.double(), ref.detach(), rtol=5e-3, atol=5e-3)
torch.testing.assert_close(h.grad.double(), h64.grad, rtol=5e-3, atol=5e-3)
print("OK", ops.kernel_launches["_linear_act_fwd_kernel"], ops.kernel_launches["_linear_bce_head_fwd_kernel"])
"""


@pytest.mark.skipif(ON_CUDA, reason="the interpreter's int32 arithmetic is what this checks")
def test_offsets_past_2_31_are_64_bit():
    """Rows 2^30 elements apart: row index x stride passes 2^31 at row 2. With int32 offsets the kernels
    read and write out of bounds (the interpreter wraps like the GPU; it crashes), so it runs in a
    subprocess. Only a few pages of the 6 GiB reservation are touched."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, TRITON_INTERPRET="1", FASTGAN_AUTOTUNE="0")
    result = subprocess.run([sys.executable, "-c", _OFFSETS_SCRIPT], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.startswith("OK 1 1"), \
        f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


# -- stacked replicas: (R, M, K) x (R, N, K), one launch with a grid axis over R (fastgan.replicas) --------

@pytest.mark.parametrize("replicas,m,k,n", [(1, 7, 13, 129), (3, 1, 1, 1), (3, 129, 127, 7), (2, 33, 784, 1),
                                            (2, 1100, 13, 5)])   # (the last: dW in batch splits)
@pytest.mark.parametrize("activation", ["leaky_relu", "sigmoid", "none"])
@pytest.mark.parametrize("bias", [True, False])
def test_stacked_replicas_match_float64_per_replica(replicas, m, k, n, activation, bias, seed, poison, ieee):
    """Each replica's y, dx, dW and db against float64 of that replica alone; the weights are strided views
    of one (R, P) buffer (as StackedMLP holds them) and x is non-contiguous."""
    cases = [_inputs(m, k, n, bias=bias, seed=seed + r) for r in range(replicas)]
    size = n * k + (n if bias else 0)
    flat = torch.full((replicas, size + 3), float("nan"), dtype=torch.float64)
    for r, (_, w, b, _) in enumerate(cases):
        flat[r, :n * k] = w.reshape(-1)
        if bias:
            flat[r, n * k:size] = b
    flat = flat.to(DEVICE, torch.float32).requires_grad_()
    weight = flat[:, :n * k].view(replicas, n, k)
    b = flat[:, n * k:size] if bias else None
    x_store = torch.stack([c[0] for c in cases]).transpose(1, 2).contiguous().to(DEVICE, torch.float32)
    x = x_store.transpose(1, 2).requires_grad_()          # (R, M, K), non-contiguous
    assert not x.is_contiguous() or m == k == 1
    before = ops.kernel_launches["_linear_act_fwd_kernel"]
    y = fused_linear(x, weight, b, activation, SLOPE)
    assert ops.kernel_launches["_linear_act_fwd_kernel"] == before + 1, "one launch for every replica"
    dy = torch.stack([c[3] for c in cases]).to(DEVICE, torch.float32)
    dx, dflat = torch.autograd.grad(y, (x, flat), dy)
    for r, (x64, w64, b64, dy64) in enumerate(cases):
        db = dflat[r, n * k:size] if bias else None
        ours = (y[r], dx[r], dflat[r, :n * k].view(n, k), db)
        compare(ours, x64, w64, b64, dy64, activation, TOLERANCE["ieee"], f"replica {r} ", fp32_allowance=True)
    assert torch.isnan(dflat[:, size:]).sum() == 0 and (dflat[:, size:] == 0).all(), "padding got a gradient"


@pytest.mark.parametrize("stacked", [False, True])
def test_a_strided_bias_is_read_as_it_is(stacked, ieee):
    """A bias whose elements are not adjacent (a column of a matrix) gives the same y as its copy."""
    r, m, k, n = 2, 5, 7, 9
    holder = torch.randn(n, 3, device=DEVICE)
    if stacked:
        x, w = torch.randn(r, m, k, device=DEVICE), torch.randn(r, n, k, device=DEVICE)
        b = torch.randn(n, r, device=DEVICE).t()           # (R, N) with stride (1, R)
    else:
        x, w = torch.randn(m, k, device=DEVICE), torch.randn(n, k, device=DEVICE)
        b = holder[:, 1]                                   # stride 3
    assert b.stride(-1) != 1
    assert_close(fused_linear(x, w, b, "tanh"), fused_linear(x, w, b.contiguous(), "tanh"), 1e-6, "y")


def test_stacked_replicas_reject_mismatched_shapes():
    w = torch.randn(3, 4, 5)
    with pytest.raises(ValueError, match="replicas=3"):
        fused_linear(torch.randn(2, 7, 5), w)
    with pytest.raises(ValueError, match="replicas=3"):
        fused_linear(torch.randn(7, 5), w)
    with pytest.raises(ValueError, match=r"bias must have shape \(3, 4\)"):
        fused_linear(torch.randn(3, 7, 5), w, torch.randn(4))
    with pytest.raises(ValueError, match="2-D .* or 3-D"):
        fused_linear(torch.randn(3, 7, 5), torch.randn(1, 3, 4, 5))
