"""The whole-MLP kernels against float64 (Triton interpreter on CPU; compiled on a GPU).

Forward: every hidden output and the output against the float64 forward. Backward: the per-layer
gradients, dX and every dW/db against float64 taken at the kernel's own saved outputs (the kernels recover
act' from them, as the per-layer op does: see test_ops_linear.py), element-wise, with the fp32 rounding of
each sum as an allowance. Outputs are poisoned (NaN) before the kernels run, so an element never written
fails. Exact fp32 matmuls (``ieee``); tf32/bf16 are bounded in test_ops_linear.py for the same tiles.
"""
import pytest
import torch

from helpers import DEVICE, assert_close, fp32_sum_rounding
from fastgan import ops
from fastgan.ops import mlp as M
from fastgan.ops import mlp_slices, sampler
from fastgan.ops.mlp import MLPSpec, fused_mlp, fused_mlp_reference

TOL = 2e-6
# (dims, bias, hidden activation, output activation): 1-4 layers, odd widths around the block edges,
# a 784-wide input and output, every activation in both places.
CASES = [
    ((1, 1), True, "none", "none"),
    ((7, 129), False, "relu", "sigmoid"),
    ((13, 33, 1), True, "leaky_relu", "none"),
    ((5, 17, 9, 3), False, "tanh", "tanh"),
    ((3, 40, 7, 33, 2), True, "sigmoid", "relu"),
    ((784, 16, 1), True, "leaky_relu", "none"),
    ((9, 16, 784), True, "relu", "sigmoid"),
    ((6, 8, 5, 4), True, "none", "leaky_relu"),
]
ROWS = [1, 7, 37]


def _nan(*shape):
    return torch.full(shape, float("nan"), device=DEVICE)


def _make(spec, rows, seed, noncontiguous=False):
    g = torch.Generator().manual_seed(seed)
    params = []
    for shape in spec.parameter_shapes():
        scale = shape[1] ** -0.5 if len(shape) == 2 else 0.5
        params.append(torch.randn(shape, generator=g, dtype=torch.float64) * scale)
    x = torch.randn(rows, spec.dims[0] * (2 if noncontiguous else 1), generator=g, dtype=torch.float64)
    if noncontiguous:
        x = x[:, ::2]
    dy = torch.randn(rows, spec.dims[-1], generator=g, dtype=torch.float64)
    return x, params, dy


def _columns(spec, t, layer):
    start = sum(spec.dims[1:layer + 1])
    return t[:, start:start + spec.dims[layer + 1]]


def _expected_backward(spec, x64, params64, outs, dy64):
    """float64 per-layer g, dX and the flat gradient, at the kernel's own outputs ``outs`` (one per layer)."""
    slope = spec.negative_slope
    weights = params64[::2] if spec.has_bias else params64
    gs, grads = [None] * spec.num_layers, [None] * spec.num_layers
    allow_g = [None] * spec.num_layers
    g = dy64 * ops.activation_from_name(spec.output_activation).derivative_from_output(outs[-1], slope)
    allow = torch.zeros_like(g)
    for layer in reversed(range(spec.num_layers)):
        gs[layer], allow_g[layer] = g, allow
        inp = x64 if layer == 0 else outs[layer - 1]
        grads[layer] = (g.t() @ inp, g.sum(0), fp32_sum_rounding(g.t(), inp),
                        fp32_sum_rounding(g.t(), torch.ones(g.shape[0], 1, dtype=g.dtype))[:, 0])
        below = g @ weights[layer]
        allow_below = fp32_sum_rounding(g, weights[layer])
        if layer > 0:
            d = ops.activation_from_name(spec.hidden_activation).derivative_from_output(outs[layer - 1], slope)
            g, allow = below * d, allow_below * d.abs()
        else:
            dx, allow_dx = below, allow_below
    return gs, allow_g, dx, allow_dx, grads


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[0])) + f"-{c[2]}-{c[3]}-b{int(c[1])}")
@pytest.mark.parametrize("rows", ROWS)
def test_kernels_match_float64(case, rows, seed, ieee, slicing):
    dims, bias, hidden, out = case
    spec = MLPSpec(dims, bias, hidden, out, 0.2)
    if slicing == "sliced" and max(dims[0], dims[-1]) > 8:
        assert M.slice_plan(spec, rows, True, False, 132).slices > 1
    x64, p64, dy64 = _make(spec, rows, seed, noncontiguous=rows == 7)
    x = x64.float().to(DEVICE)
    flat = torch.cat([p.reshape(-1) for p in p64]).float().to(DEVICE)
    acts, y = _nan(rows, spec.hidden_columns), _nan(rows, dims[-1])
    M.mlp_forward(x, flat, spec, acts=acts, y=y)

    # forward, layer by layer from float64 inputs (each layer's own rounding, not the chain's)
    params_f = [p.float().double() for p in p64]
    weights = params_f[::2] if bias else params_f
    biases = params_f[1::2] if bias else [None] * len(weights)
    outs = [_columns(spec, acts, i).double().cpu() for i in range(spec.num_layers - 1)] + [y.double().cpu()]
    inp = x.double().cpu()
    for layer in range(spec.num_layers):
        z = torch.nn.functional.linear(inp, weights[layer], biases[layer])
        act = ops.activation_from_name(spec.activation(layer))
        expect = act.forward(z, 0.2)
        slope_bound = act.derivative_from_output(expect, 0.2).abs().clamp_min(1.0)
        allowance = slope_bound * (fp32_sum_rounding(inp, weights[layer].t()) + 2.0 ** -22 *
                                   (biases[layer].abs() if bias else 0))
        assert_close(outs[layer], expect, TOL, f"layer {layer} output", allowance=allowance)
        inp = outs[layer]

    # backward from dy, with dX, then the weight gradients
    g_buf, dx = _nan(rows, spec.gradient_columns), _nan(*x.shape)
    dy = dy64.float().to(DEVICE)
    M.mlp_backward(x, flat, spec, acts=acts, y=y, g=g_buf, dy=dy, dx=dx)
    # the same from dy = h @ w, formed inside the kernel (how G's backward takes D's layer-0 gradient)
    h, w = torch.randn(rows, 5, device=DEVICE), torch.randn(5, dims[-1], device=DEVICE)
    g_linear = _nan(rows, spec.gradient_columns)
    M.mlp_backward(x, flat, spec, acts=acts, y=y, g=g_linear, dy_linear=(h, w))
    g_expect = _nan(rows, spec.gradient_columns)
    M.mlp_backward(x, flat, spec, acts=acts, y=y, g=g_expect, dy=h @ w)
    assert_close(g_linear, g_expect, 1e-5, "g from dy_linear")
    grad = _nan(1, spec.numel)
    M.mlp_weight_grad(x, spec, acts=acts, g=g_buf, grad=grad)
    gs, allow_g, dx64, allow_dx, grads = _expected_backward(spec, x.double().cpu(), params_f, outs, dy.double().cpu())
    for layer in range(spec.num_layers):
        assert_close(_columns(spec, g_buf, layer), gs[layer], TOL, f"g of layer {layer}", allowance=allow_g[layer])
    assert_close(dx, dx64, TOL, "dX", allowance=allow_dx)
    offset = 0
    for layer, (dw, db, allow_dw, allow_db) in enumerate(grads):
        n = dw.numel()
        assert_close(grad[0, offset:offset + n].view(dw.shape), dw, TOL, f"dW {layer}", allowance=allow_dw)
        offset += n
        if bias:
            assert_close(grad[0, offset:offset + db.numel()], db, TOL, f"db {layer}", allowance=allow_db)
            offset += db.numel()
    assert offset == spec.numel


def test_loss_epilogue_and_split_reduction(seed, ieee, monkeypatch, slicing):
    """D's pass: BCE of the logits against per-row targets (real_label for the first rows, 0 after) and
    weights, its gradient as the last layer's g, the loss summed by the weight-gradient kernel; the weight
    gradient reduced in batch splits whose sum is the whole gradient."""
    monkeypatch.setattr(M, "_SPLIT_ROWS", 8)   # 40 rows -> 5 splits
    spec = MLPSpec((11, 16, 9, 1), True, "leaky_relu", "none", 0.2)
    rows, split = 40, 24
    x64, p64, _ = _make(spec, rows, seed)
    x = x64.float().to(DEVICE)
    flat = torch.cat([p.reshape(-1) for p in p64]).float().to(DEVICE)
    acts, y, g = _nan(rows, spec.hidden_columns), _nan(rows, 1), _nan(rows, spec.gradient_columns)
    partials = _nan(M.loss_buffer_size(rows))
    M.mlp_backward(x, flat, spec, acts=acts, y=y, g=g, forward=True, loss=(split, 0.9, 0.0, 1 / split, 1 / 16),
                   loss_partials=partials)
    splits = M.weight_grad_splits(rows)
    assert splits == 5
    grad, loss = _nan(splits, spec.numel), _nan()
    M.mlp_weight_grad(x, spec, acts=acts, g=g, grad=grad, loss_partials=partials, loss_out=loss)

    # the same with autograd in float64, from the same parameters
    p = [t.float().double().requires_grad_(True) for t in p64]
    logits = fused_mlp_reference(x.double().cpu(), p, spec)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expect_loss = bce(logits[:split], torch.full((split, 1), 0.9, dtype=torch.float64)) + \
        bce(logits[split:], torch.zeros(rows - split, 1, dtype=torch.float64))
    expect_grad = torch.cat([t.reshape(-1) for t in torch.autograd.grad(expect_loss, p)])
    assert_close(y, logits.detach(), 1e-5, "logits")
    assert_close(loss, expect_loss.detach(), 1e-5, "loss")
    assert_close(grad.sum(0), expect_grad, 1e-5, "gradient, summed over the splits")
    # each split holds the gradient of its own 8 rows' loss terms, and of no other row's
    xd = x.double().cpu()
    targets = torch.tensor([0.9] * split + [0.0] * (rows - split), dtype=torch.float64)[:, None]
    weights = torch.tensor([1 / split] * split + [1 / 16] * (rows - split), dtype=torch.float64)[:, None]
    for s in range(splits):
        part = slice(8 * s, 8 * s + 8)
        terms = bce(fused_mlp_reference(xd[part], p, spec), targets[part], reduction="none") * weights[part]
        expect_part = torch.cat([t.reshape(-1) for t in torch.autograd.grad(terms.sum(), p)])
        assert_close(grad[s], expect_part, 1e-5, f"split {s}", allowance=torch.full_like(expect_part, 1e-7))
    assert not torch.isnan(grad).any()
    with pytest.raises(ValueError, match="Linear\\(h, 1\\)"):
        M.mlp_backward(x, torch.zeros(MLPSpec((11, 3)).numel), MLPSpec((11, 3)), acts=_nan(rows, 0), y=_nan(rows, 3),
                       g=_nan(rows, 3), loss=(1, 1.0, 1.0, 1.0, 1.0), loss_partials=partials)
    with pytest.raises(ValueError, match="loss_partials"):
        M.mlp_backward(x, flat, spec, acts=acts, y=y, g=g, forward=True, loss=(1, 1.0, 1.0, 1.0, 1.0),
                       loss_partials=_nan(2))
    with pytest.raises(ValueError, match="unit column stride"):
        M.mlp_forward(x, flat, spec, acts=_nan(rows, 2 * spec.hidden_columns)[:, ::2], y=y)


@pytest.mark.parametrize("dims", [(13, 33, 1), (9, 16, 40)], ids=["D-like", "G-like"])
def test_replicas_in_one_launch_are_each_mlp_alone(dims, seed, ieee, monkeypatch, slicing):
    """K MLPs of one shape in one launch of each kernel (the grid's replica axis, ``(K, ...)`` buffers):
    every output, gradient and loss bit for bit what the MLP's own launch gives. The slices are planned for
    the whole GPU here so both launches cut alike (a replica launch plans for its share: tested apart).
    D-like: forward + BCE loss with a label per replica + backward to dX, dW in 2 batch splits; G-like:
    forward, then the backward from dy = h @ w formed in the kernel, and from dy."""
    monkeypatch.setattr(M, "sms_per_replica", lambda device, replicas: 132)
    monkeypatch.setattr(mlp_slices, "sms_per_replica", lambda device, replicas: 132)
    K, rows = 3, 37
    spec = MLPSpec(dims, True, "leaky_relu", "none", 0.2)
    made = [_make(spec, rows, seed + k) for k in range(K)]
    x = torch.stack([x64.float() for x64, _, _ in made]).to(DEVICE)
    flat = torch.stack([torch.cat([p.reshape(-1) for p in p64]).float() for _, p64, _ in made]).to(DEVICE)
    h, w = torch.randn(K, rows, 5, device=DEVICE), torch.randn(K, 5, dims[-1], device=DEVICE)
    labels = torch.tensor([0.9, 1.0, 0.7], device=DEVICE)

    def run(x, flat, h, w, label):   # one launch each: K MLPs (3-d x) or one
        lead = tuple(x.shape[:-2])
        acts, y = _nan(*lead, rows, spec.hidden_columns), _nan(*lead, rows, dims[-1])
        g, dx = _nan(*lead, rows, spec.gradient_columns), _nan(*x.shape)
        grad = _nan(*lead, 2, spec.numel)
        if dims[-1] == 1:
            partials, loss = _nan(*lead, M.loss_buffer_size(rows)), _nan(*lead)
            M.mlp_backward(x, flat, spec, acts=acts, y=y, g=g, dx=dx, forward=True,
                           loss=(20, label, 0.0, 1 / 20, 1 / 17), loss_partials=partials)
            M.mlp_weight_grad(x, spec, acts=acts, g=g, grad=grad, loss_partials=partials, loss_out=loss)
            return acts, y, g, dx, grad, loss
        M.mlp_forward(x, flat, spec, acts=acts, y=y)
        g_dy = _nan(*lead, rows, spec.gradient_columns)
        M.mlp_backward(x, flat, spec, acts=acts, y=y, g=g, dy_linear=(h, w), dx=dx)
        M.mlp_backward(x, flat, spec, acts=acts, y=y, g=g_dy, dy=torch.randn(*lead, rows, dims[-1],
                                                                          generator=torch.Generator().manual_seed(1)))
        M.mlp_weight_grad(x, spec, acts=acts, g=g, grad=grad)
        return acts, y, g, dx, grad, g_dy

    before = dict(ops.kernel_launches)
    together = run(x, flat, h, w, labels)
    launched = {name: n - before.get(name, 0) for name, n in ops.kernel_launches.items()}
    assert launched["_mlp_rows_kernel"] == (1 if dims[-1] == 1 else 3) and launched["_mlp_weight_grad_kernel"] == 1
    for k in range(K):
        dy_k = torch.randn(K, rows, dims[-1], generator=torch.Generator().manual_seed(1))[k]
        alone = run(x[k], flat[k], h[k], w[k], float(labels[k]))
        if dims[-1] != 1:   # (the dy draw of a 2-d run is replica 0's rows: compare with this replica's own)
            g_dy = _nan(rows, spec.gradient_columns)
            M.mlp_backward(x[k], flat[k], spec, acts=alone[0], y=alone[1], g=g_dy, dy=dy_k)
            alone = alone[:-1] + (g_dy,)
        for name, ours, theirs in zip(("acts", "y", "g", "dx", "grad", "loss or g from dy"), together, alone):
            assert not torch.isnan(ours[k]).any(), (k, name)
            assert torch.equal(ours[k], theirs), (k, name)


@pytest.mark.parametrize("moments", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("replicas", [None, 3], ids=["one", "replicas"])
def test_adam_folded_into_the_weight_gradient_is_adam_step_after_it(replicas, moments, seed, ieee):
    """``mlp_weight_grad(adam=...)``: the gradient as without it, and the parameters, moments (fp32, or bf16
    rounded with the same bits) and counter bit for bit what ``adam_step`` (one MLP: L2, decoupled decay and L1)
    or ``replica_adam_step`` (a replica table: lr, betas and decay per replica) gives after it; three updates in
    a row (the count, read by every program before the last to arrive advances it); the arrival count back at
    zero."""
    K, rows = replicas or 1, 37
    spec = MLPSpec((13, 33, 9, 1), True, "leaky_relu", "none", 0.2)
    made = [_make(spec, rows, seed + k) for k in range(K)]
    lead = () if replicas is None else (K,)
    x = torch.stack([x64.float() for x64, _, _ in made]).reshape(*lead, rows, 13).to(DEVICE)
    flat = torch.stack([torch.cat([p.reshape(-1) for p in p64]).float() for _, p64, _ in made]).reshape(
        *lead, spec.numel).to(DEVICE)
    hyper = ops.adam.replica_adam_hyper([1e-2, 3e-3, 5e-2], [(0.5, 0.999), (0.0, 0.9), (0.8, 0.99)], 0.1).to(DEVICE)
    state = {way: [flat.clone(), torch.zeros_like(flat, dtype=moments), torch.zeros_like(flat, dtype=moments),
                   torch.zeros(lead[:1] or (), dtype=torch.int64, device=DEVICE).reshape(-1)[:1].reshape(
                       (1,) if replicas else ())] for way in ("folded", "after")}
    arrivals = torch.zeros(1, dtype=torch.int32, device=DEVICE)
    before = dict(ops.kernel_launches)
    for update in range(3):
        for way, (param, m, v, counter) in state.items():
            acts, y = _nan(*lead, rows, spec.hidden_columns), _nan(*lead, rows, 1)
            g, grad = _nan(*lead, rows, spec.gradient_columns), _nan(*lead, 1, spec.numel)
            M.mlp_backward(x, param, spec, acts=acts, y=y, g=g, forward=True,
                           loss=(20, 0.9, 0.0, 1 / 20, 1 / 17), loss_partials=_nan(*lead, M.loss_buffer_size(rows)))
            if way == "folded":
                fold = ops.adam.replica_adam_fold(param, m, v, counter, arrivals, hyper, 1e-8, 0.01) if replicas \
                    else ops.adam.adam_fold(param, m, v, counter, arrivals, 1e-2, 0.5, 0.999, 1e-8, 0.05, 0.1, 0.01)
                M.mlp_weight_grad(x, spec, acts=acts, g=g, grad=grad, adam=fold)
                folded_grad = grad
            else:
                M.mlp_weight_grad(x, spec, acts=acts, g=g, grad=grad)
                assert torch.equal(grad, folded_grad), update
                if replicas:
                    ops.adam.replica_adam_step(param, grad[:, 0], m, v, counter, hyper, 1e-8, 0.01)
                else:
                    ops.adam_step(param, grad[0], m, v, counter, 1e-2, 0.5, 0.999, 1e-8, 0.05, 0.1, 0.01)
        for a, b in zip(state["folded"], state["after"]):
            assert not torch.isnan(a.float()).any() and torch.equal(a, b), update
        assert int(arrivals) == 0
    launched = {name: n - before.get(name, 0) for name, n in ops.kernel_launches.items()}
    assert launched["_mlp_weight_grad_kernel"] == 6 and launched["_mlp_rows_kernel"] == 6
    with pytest.raises(ValueError, match="one split"):
        M.mlp_weight_grad(x, spec, acts=acts, g=g, grad=_nan(*lead, 2, spec.numel), adam=fold)
    with pytest.raises(ValueError, match="folded Adam's parameters must be"):
        short = [torch.zeros(*lead, spec.numel - 1, device=DEVICE) for _ in range(3)]
        M.mlp_weight_grad(x, spec, acts=acts, g=g, grad=grad, adam=ops.adam.adam_fold(
            *short, counter, arrivals, 1e-2, 0.5, 0.999, 1e-8))


def test_autotuning_puts_back_what_the_folded_adam_writes():
    """On a GPU the autotuner times each config by running it many times: the weight-gradient kernel's folded
    Adam state (parameters, moments, counter, arrival count) is restored after each config's timing, so the
    update is applied once (the interpreter runs one config and never times)."""
    from fastgan.ops import mlp_kernels
    assert {"param_ptr", "exp_avg_ptr", "exp_avg_sq_ptr", "counter_ptr", "arrivals_ptr"} <= \
        set(mlp_kernels._mlp_weight_grad_kernel.restore_value)


def test_replica_launches_share_the_gpu_and_refuse_mismatched_buffers():
    """A launch of K replicas plans its slices for 1/K of the SMs (at K = 32 the classic D's row blocks fill an
    H100 without slices: 8 of 32 rows each); buffers without the leading K are refused before any kernel runs."""
    spec = MLPSpec((784, 128, 128, 1))
    assert M.slice_plan(spec, 256, True, True, mlp_slices.sms_per_replica(torch.device("cpu"), 1)).slices > 1
    assert M.slice_plan(spec, 256, True, True, mlp_slices.sms_per_replica(torch.device("cpu"), 8)).slices == 3
    assert M.slice_plan(spec, 256, True, True, mlp_slices.sms_per_replica(torch.device("cpu"), 32)).slices == 1
    small = MLPSpec((4, 8, 2))
    x, flat = torch.randn(3, 5, 4, device=DEVICE), torch.randn(3, small.numel, device=DEVICE)
    before = dict(ops.kernel_launches)
    with pytest.raises(ValueError, match="leading dimension of 3 replicas"):
        M.mlp_forward(x, flat, small, acts=_nan(5, 8), y=_nan(3, 5, 2))
    with pytest.raises(ValueError, match="leading dimension of 3 replicas"):
        M.mlp_forward(x, flat[:2], small, acts=_nan(3, 5, 8), y=_nan(3, 5, 2))
    with pytest.raises(ValueError, match="1-D float32"):
        M.mlp_forward(x[0], flat, small, acts=_nan(5, 8), y=_nan(5, 2))
    with pytest.raises(ValueError, match="one per replica"):
        M.mlp_weight_grad(x, small, acts=_nan(3, 5, 8), g=_nan(3, 5, 10), grad=_nan(3, 1, small.numel),
                          loss_partials=_nan(3, 2), loss_out=_nan(2))
    assert dict(ops.kernel_launches) == before


def test_op_autograd_matches_reference_and_compiles_without_graph_breaks(seed, ieee):
    spec = MLPSpec((10, 24, 5), True, "leaky_relu", "tanh", 0.2)
    x64, p64, dy64 = _make(spec, 19, seed)

    def run(fn, x, params):
        x = x.clone().requires_grad_(True)
        params = [t.clone().requires_grad_(True) for t in params]
        y = fn(x, params)
        return (y, *torch.autograd.grad(y, [x, *params], dy64.to(y.dtype).to(y.device)))

    expect = run(lambda x, p: fused_mlp_reference(x, p, spec), x64, p64)
    x, params = x64.float().to(DEVICE), [t.float().to(DEVICE) for t in p64]
    before = ops.kernel_launches["_mlp_rows_kernel"]
    eager = run(lambda x, p: fused_mlp(x, p, spec), x, params)
    assert ops.kernel_launches["_mlp_rows_kernel"] == before + 2    # forward, then the backward chain
    compiled = run(torch.compile(lambda x, p: fused_mlp(x, p, spec), fullgraph=True), x, params)
    for ours in (eager, compiled):
        for a, e, what in zip(ours, expect, ["y", "dx", "dW0", "db0", "dW1", "db1"]):
            assert_close(a, e, 1e-5, what)


def test_bad_input_is_refused_before_any_kernel_runs():
    spec = MLPSpec((4, 8, 2))
    params = [torch.randn(s) for s in spec.parameter_shapes()]
    before = dict(ops.kernel_launches)
    with pytest.raises(ValueError, match="x must be 2-D"):
        fused_mlp(torch.randn(3, 5), params, spec)
    with pytest.raises(ValueError, match="4 parameter tensors"):
        fused_mlp(torch.randn(3, 4), params[:3], spec)
    with pytest.raises(ValueError, match=r"params\[2\] has shape"):
        fused_mlp(torch.randn(3, 4), [params[0], params[1], params[2].t(), params[3]], spec)
    with pytest.raises(TypeError, match="float32"):
        fused_mlp(torch.randn(3, 4), [p.half() for p in params], spec)
    with pytest.raises(TypeError, match="MLPSpec"):
        fused_mlp(torch.randn(3, 4), params, (4, 8, 2))
    with pytest.raises(ValueError, match="dims"):
        MLPSpec((4,))
    with pytest.raises(ValueError, match="unknown activation"):
        MLPSpec((4, 2), hidden_activation="gelu")
    with pytest.raises(ValueError, match="negative_slope"):
        MLPSpec((4, 2), negative_slope=-0.1)
    assert dict(ops.kernel_launches) == before


def test_flat_parameters_is_a_view_when_laid_out_flat_else_a_copy():
    flat = torch.arange(14, dtype=torch.float32)
    params = [flat[:8].view(2, 4), flat[8:10], flat[10:14].view(2, 2)]
    view = M.flat_parameters(params)
    assert view.data_ptr() == flat.data_ptr() and view.numel() == 14
    scattered = [torch.randn(2, 4), torch.randn(2), torch.randn(2, 2)]
    copy = M.flat_parameters(scattered)
    assert torch.equal(copy, torch.cat([p.reshape(-1) for p in scattered]))


def test_sampler_draws_data_rows_and_normal_noise_afresh_each_call_and_reproducibly():
    data = torch.randn(50, 9, device=DEVICE)
    seed = torch.tensor([1234], device=DEVICE)

    def draw(counter, batch=64):
        x, z = _nan(batch, 9), _nan(batch, 40)
        sampler.sample_batch(data, x, z, seed, counter)
        return x, z

    counter = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    x1, z1 = draw(counter)
    assert int(counter) == sampler.sample_programs(64, 9, 40)
    x2, z2 = draw(counter)
    # every row is a data row
    for x in (x1, x2):
        match = (x[:, None, :] == data[None, :, :]).all(-1)
        assert match.any(1).all()
    assert not torch.equal(x1, x2) and not torch.equal(z1, z2)   # a new call, new draws
    again = draw(torch.zeros(1, dtype=torch.int64, device=DEVICE))
    assert torch.equal(again[0], x1) and torch.equal(again[1], z1)  # same seed and counter, same draws
    z = torch.cat([z1, z2]).flatten().double().cpu()     # 5,120 draws: mean and std within 4 sigma
    assert abs(z.mean().item()) < 4 / len(z) ** 0.5
    assert abs(z.std().item() - 1) < 4 * (0.5 / len(z)) ** 0.5
    used = torch.cat([(x1[:, None, :] == data[None]).all(-1).nonzero()[:, 1] for x1 in (x1, x2)])
    assert used.unique().numel() > 35   # 128 draws over 50 rows: ~46 distinct expected
    with pytest.raises(ValueError, match="same replicas and rows"):
        sampler.sample_batch(data, _nan(4, 9), _nan(5, 3), seed, counter)
    # wider than one program's 64 columns (the grid's second axis): whole data rows, every noise column drawn
    wide, counter = torch.randn(50, 130, device=DEVICE), torch.zeros(1, dtype=torch.int64, device=DEVICE)
    x, z = _nan(64, 130), _nan(64, 100)
    sampler.sample_batch(wide, x, z, seed, counter)
    assert int(counter) == sampler.sample_programs(64, 130, 100) == 4 * 3
    assert (x[:, None, :] == wide[None]).all(-1).any(1).all()
    assert not torch.isnan(z).any() and abs(z.std().item() - 1) < 0.1


def test_sampler_draws_every_replica_in_one_launch_as_its_single_run_draws():
    """K replicas in one call (a third grid axis): replica k's rows and noise are bit-identical to a one-replica
    call with seed seed + k at the same call number, also after the batch size changes (the counter realigns
    over the whole grid); the replicas' draws differ; the launch count is one a call for any K."""
    data = torch.randn(37, 5, device=DEVICE)
    K = 3
    many = sampler.DeviceSampler(40, DEVICE, replicas=K)
    ones = [sampler.DeviceSampler(40 + k, DEVICE) for k in range(K)]
    for batch in (20, 20, 70, 9):
        x, z = _nan(K, batch, 5), _nan(K, batch, 66)   # 66 noise columns: two column blocks
        before = ops.kernel_launches["_sample_kernel"]
        many.draw(data, x, z)
        assert ops.kernel_launches["_sample_kernel"] == before + 1
        for k, one in enumerate(ones):
            xk, zk = _nan(batch, 5), _nan(batch, 66)
            one.draw(data, xk, zk)
            assert torch.equal(x[k], xk) and torch.equal(z[k], zk), (batch, k)
        assert not torch.equal(z[0], z[1]) and not torch.equal(x[0], x[2])
    assert int(many.counter) == sampler.sample_programs(9, 5, 66, K) * 4   # at P's boundary: 4 calls
    # instance noise: the same rule, a counter of its own; standard normal, fresh each call
    for rows in (20, 20, 33):
        noise = many.normal(_nan(K, rows, 70))
        alone = [one.normal(_nan(rows, 70)) for one in ones]
        assert all(torch.equal(noise[k], alone[k]) for k in range(K)) and not torch.isnan(noise).any()
    assert not torch.equal(noise[0], noise[1]) and abs(noise.std().item() - 1) < 0.05
    assert not torch.equal(ones[0].normal(_nan(33, 70)), ones[0].normal(_nan(33, 70)))   # a new call, new draws
    # augmentation's uniforms: the same rule, a counter of their own; in [0, 1), fresh each call
    for rows, columns in ((20, 6), (20, 6), (33, 70)):
        before = ops.kernel_launches["_fill_kernel"]
        uniform = many.uniform(rows, columns)
        assert ops.kernel_launches["_fill_kernel"] == before + 1 and uniform.shape == (K, rows, columns)
        alone = [one.uniform(rows, columns) for one in ones]
        assert all(torch.equal(uniform[k], alone[k]) for k in range(K))
    assert bool(((uniform >= 0) & (uniform < 1)).all()) and abs(uniform.mean().item() - 0.5) < 0.02
    assert abs(uniform.var().item() - 1 / 12) < 0.01 and not torch.equal(uniform[0], uniform[1])
    assert not torch.equal(ones[0].uniform(33, 70), ones[0].uniform(33, 70))
    assert int(many.noise_counter) > 0 and many.state_dict()["uniform_counter"].item() > 0
    with pytest.raises(ValueError, match="one seed per replica"):
        sampler.sample_batch(data, _nan(2, 4, 5), _nan(2, 4, 3), many.seed, many.counter)
    with pytest.raises(ValueError, match="both"):
        sampler.sample_batch(data, _nan(2, 4, 5), _nan(4, 3), many.seed[:2], many.counter)
    with pytest.raises(ValueError, match="not a Philox sampler state"):
        many.check_state(ones[0].state_dict())   # one seed where three are needed


def test_adam_adds_partial_gradients_in_the_kernel():
    n, parts = 1000, 3
    g = torch.Generator().manual_seed(3)
    param = torch.randn(n, generator=g).to(DEVICE)
    partials = torch.randn(parts * n, generator=g).to(DEVICE)
    results = []
    for grad, k in ((partials, parts), (partials.view(parts, n).sum(0), 1)):
        p, m, v = param.clone(), torch.zeros(n, device=DEVICE), torch.zeros(n, device=DEVICE)
        counter = torch.zeros((), dtype=torch.int64, device=DEVICE)
        ops.adam_step(p, grad, m, v, counter, 1e-2, 0.9, 0.999, 1e-8, partials=k)
        results.append((p, m, v))
    for a, b in zip(*results):
        assert_close(a, b, 1e-6, "Adam from partials vs from their sum")
    with pytest.raises(ValueError, match="partial sums"):
        ops.adam_step(param.clone(), partials[:-1], torch.zeros_like(param), torch.zeros_like(param),
                      torch.zeros((), dtype=torch.int64, device=DEVICE), 1e-2, 0.9, 0.999, 1e-8, partials=parts)
