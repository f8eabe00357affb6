"""linear_bce_head (D's last Linear(H, 1) + sigmoid-BCE, fused) against float64 PyTorch."""
import pytest
import torch

import fastgan.ops.head as head_module
from helpers import DEVICE, TOLERANCE, assert_close, fp32_sum_rounding
from fastgan import ops
from fastgan.ops import linear_bce_head


def _compare(m, width, target, reduction="mean", bias=True, seed=0, scale=1.0, transpose=False):
    g = torch.Generator().manual_seed(seed)
    h64 = torch.randn(m, width, dtype=torch.float64, generator=g) * scale
    w64 = torch.randn(1, width, dtype=torch.float64, generator=g) / width ** 0.5
    b64 = torch.randn(1, dtype=torch.float64, generator=g) if bias else None

    def leaves(dtype, device):
        return [None if t is None else t.clone().to(device=device, dtype=dtype).requires_grad_()
                for t in (h64, w64, b64)]

    h, w, b = leaves(torch.float32, DEVICE)
    hr, wr, br = leaves(torch.float64, "cpu")
    h_in = h.t().contiguous().t() if transpose else h  # column-major h: strides (1, M)
    before = dict(ops.kernel_launches)
    loss = linear_bce_head(h_in, w, b, target, reduction)
    loss.backward(torch.tensor(0.7, device=DEVICE))
    assert ops.kernel_launches["_linear_bce_head_fwd_kernel"] == before.get("_linear_bce_head_fwd_kernel", 0) + 1
    assert ops.kernel_launches["_linear_bce_head_bwd_kernel"] == before.get("_linear_bce_head_bwd_kernel", 0) + 1
    target = float(torch.tensor(target, dtype=torch.float32))  # the kernel's target is fp32
    ref = ops.linear_bce_head_reference(hr, wr, br, target, reduction)
    ref.backward(torch.tensor(0.7, dtype=torch.float64))
    tolerance = TOLERANCE["ieee"]
    dw_allowance, db_allowance = _fp32_rounding(h64, w64, b64, target, 0.7 / m if reduction == "mean" else 0.7)
    assert_close(loss, ref, tolerance, "loss")
    assert_close(h.grad, hr.grad, tolerance, "dh")
    assert_close(w.grad, wr.grad, tolerance, "dw", allowance=dw_allowance)
    if bias:
        assert_close(b.grad, br.grad, tolerance, "db", allowance=db_allowance)


def _fp32_rounding(h, w, b, target, scale):
    """What fp32 arithmetic itself may cost dw and db, which are sums over the batch that can cancel:
    2^-22 (sqrt(M) ||terms||_2 + |sum|) for the sum's roundings, plus the logits' own rounding (a dot over
    H, then the bias) carried through sigmoid' into every term."""
    z = h @ w.t() + (b if b is not None else 0)
    z_error = fp32_sum_rounding(h, w.t(), total=z) + 2.0 ** -22 * (b.abs() if b is not None else 0)
    g = (torch.sigmoid(z) - target) * scale
    g_error = torch.sigmoid(z) * (1 - torch.sigmoid(z)) * z_error * scale + 2.0 ** -22 * g.abs()  # (M, 1)
    ones = torch.ones_like(g)
    return (fp32_sum_rounding(g.t(), h) + g_error.t() @ h.abs(),
            (fp32_sum_rounding(g.t(), ones) + g_error.t() @ ones).reshape(1))


@pytest.mark.parametrize("m", [1, 7, 129, 1000])
@pytest.mark.parametrize("width", [1, 128, 300])
@pytest.mark.parametrize("target", [1.0, 0.0, 0.9])
def test_matches_reference(m, width, target, poison, seed):
    _compare(m, width, target, seed=seed)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_reduction_bias_strides(reduction, bias, poison, seed):
    _compare(33, 128, 0.9, reduction=reduction, bias=bias, transpose=True, seed=seed)


def test_extreme_logits(poison, seed):
    _compare(16, 8, 1.0, scale=400.0, seed=seed)
    _compare(16, 8, 0.0, scale=400.0, seed=seed + 1)


def test_many_programs_add_atomically(monkeypatch, poison, seed):
    monkeypatch.setattr(head_module, "_SINGLE_PROGRAM_LIMIT", 64)
    _compare(500, 40, 0.9, seed=seed)


def test_only_needed_gradients():
    h = torch.randn(9, 16, requires_grad=True)
    w, b = torch.randn(1, 16), torch.randn(1)  # D frozen (the G step): only dh is wanted
    linear_bce_head(h, w, b, 1.0).backward()
    hr = h.detach().double().requires_grad_()
    ops.linear_bce_head_reference(hr, w.double(), b.double(), 1.0).backward()
    assert_close(h.grad, hr.grad, TOLERANCE["ieee"], "dh")


@pytest.mark.parametrize("call, error, message", [
    (lambda: linear_bce_head(torch.randn(4, 8), torch.randn(2, 8), None, 1.0), ValueError, r"weight must have shape \(1, 8\)"),
    (lambda: linear_bce_head(torch.randn(4), torch.randn(1, 4), None, 1.0), ValueError, "h must be 2-D"),
    (lambda: linear_bce_head(torch.randn(4, 8), torch.randn(1, 8), torch.randn(2), 1.0), ValueError, "bias"),
    (lambda: linear_bce_head(torch.randn(4, 8), torch.randn(1, 8), None, 2.0), ValueError, "target"),
    (lambda: linear_bce_head(torch.randn(4, 8), torch.randn(1, 8), None, 1.0, "none"), ValueError, "reduction"),
    (lambda: linear_bce_head(torch.randn(4, 8), torch.randn(1, 8).half(), None, 1.0), TypeError, "dtype"),
])
def test_bad_input(call, error, message):
    before = sum(ops.kernel_launches.values())
    with pytest.raises(error, match=message):
        call()
    assert sum(ops.kernel_launches.values()) == before


def test_autocast_bf16_runs_the_layer_in_bf16_and_the_loss_in_fp32(seed):
    """Under autocast (precision="bf16") the head casts like F.linear + BCE do: no dtype mismatch between
    bf16 activations and fp32 master weights; an fp32 loss; fp32 gradients for the fp32 weights."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(37, 64, generator=g).to(DEVICE).requires_grad_()
    w = (torch.randn(1, 64, generator=g) / 8).to(DEVICE).requires_grad_()
    b = torch.randn(1, generator=g).to(DEVICE).requires_grad_()
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        loss = linear_bce_head(h.bfloat16(), w, b, 0.9)
    assert loss.dtype == torch.float32
    loss.backward()
    assert w.grad.dtype == torch.float32 and b.grad.dtype == torch.float32
    h64, w64, b64 = (t.detach().bfloat16().double().requires_grad_() for t in (h, w, b))
    reference = ops.linear_bce_head_reference(h64, w64, b64, 0.9)
    reference.backward()
    assert_close(loss, reference, TOLERANCE[torch.bfloat16], "loss")
    assert_close(w.grad, w64.grad, TOLERANCE[torch.bfloat16], "dw")
    assert_close(h.grad, h64.grad, TOLERANCE[torch.bfloat16], "dh")


def test_compiles_with_no_graph_break_and_matches_eager(seed):
    """The head is registered like every op (ops/_register.py): under torch.compile it is an opaque op with
    its backward an opaque op too, zero graph breaks, the same loss and gradients as the eager call."""
    g = torch.Generator().manual_seed(seed)
    h0, w0, b0 = torch.randn(37, 64, generator=g), torch.randn(1, 64, generator=g) / 8, torch.randn(1, generator=g)

    def loss_of(h, w, b):
        return linear_bce_head(h, w, b, 0.9)

    results = []
    for fn in (loss_of, torch.compile(loss_of, fullgraph=True)):  # fullgraph: a graph break is an error
        h, w, b = (t.clone().to(DEVICE).requires_grad_() for t in (h0, w0, b0))
        loss = fn(h, w, b)
        loss.backward()
        results.append((loss, h.grad, w.grad, b.grad))
    for name, eager, compiled in zip(("loss", "dh", "dw", "db"), *results):
        assert_close(compiled, eager, TOLERANCE["ieee"], name)
