"""sigmoid_bce_with_logits against F.binary_cross_entropy_with_logits in float64 (Triton interpreter)."""
import pytest
import torch
import torch.nn.functional as F

from helpers import DEVICE, TOLERANCE, assert_close
from fastgan import ops
from fastgan.ops import sigmoid_bce_with_logits
import fastgan.ops.bce as bce_module


def _compare(logits64, target, reduction, dtype=torch.float32, tolerance=TOLERANCE["ieee"], seed=1):
    x = logits64.to(device=DEVICE, dtype=dtype).requires_grad_()
    xr = logits64.to(dtype).double().requires_grad_()  # the logits the kernel sees
    t = target.to(device=DEVICE, dtype=dtype) if isinstance(target, torch.Tensor) else target
    # the reference's target is the one the kernel sees (rounded to the logits' dtype, or to fp32)
    tr = target.to(dtype).double() if isinstance(target, torch.Tensor) else \
        torch.full_like(logits64, float(torch.tensor(target, dtype=torch.float32)))
    before = ops.kernel_launches["_sigmoid_bce_fwd_kernel"]
    loss = sigmoid_bce_with_logits(x, t, reduction)
    assert ops.kernel_launches["_sigmoid_bce_fwd_kernel"] == before + 1, "the Triton kernel did not run"
    ref = F.binary_cross_entropy_with_logits(xr, tr.double(), reduction=reduction)
    upstream = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    loss.backward(upstream.to(device=DEVICE, dtype=dtype))
    ref.backward(upstream)
    assert loss.shape == ref.shape and loss.dtype == dtype
    assert_close(loss, ref, tolerance, "loss")
    assert_close(x.grad, xr.grad, tolerance, "grad")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("n", [1, 7, 129, 1000, 4097])
@pytest.mark.parametrize("target", ["tensor", 1.0, 0.0, 0.9])
def test_matches_pytorch(reduction, n, target, poison, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1, dtype=torch.float64, generator=g) * 4
    if target == "tensor":
        target = torch.rand(n, 1, dtype=torch.float64, generator=g)
    _compare(logits, target, reduction, seed=seed)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_extreme_logits_are_exact(reduction, poison, seed):
    logits = torch.tensor([[-100.0], [100.0], [-30.0], [30.0], [0.0], [1e-8], [-88.0], [88.0]],
                          dtype=torch.float64)
    for target in (1.0, 0.0, 0.9, torch.rand(8, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))):
        _compare(logits, target, reduction)


def test_multi_program_atomic_reduction(monkeypatch, poison, seed):
    # Above the single-program limit, programs add partial sums atomically into a zeroed scalar.
    monkeypatch.setattr(bce_module, "_SINGLE_PROGRAM_LIMIT", 1000)
    logits = torch.randn(5000, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    _compare(logits, 0.3, "mean")
    _compare(logits, 0.3, "sum")


def test_non_contiguous_and_fp16(poison, seed):
    base = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    _compare(base[:, 1:2], 1.0, "mean")  # a strided column, as a (N, 1) logits slice
    _compare(base[:, :1].contiguous(), 0.9, "none", dtype=torch.float16, tolerance=TOLERANCE[torch.float16])


def test_grad_wrt_target_tensor():
    x = torch.randn(6, 1, dtype=torch.float32)
    t = torch.rand(6, 1, requires_grad=True)
    tr = t.detach().double().requires_grad_()
    sigmoid_bce_with_logits(x, t).backward()
    F.binary_cross_entropy_with_logits(x.double(), tr).backward()
    assert_close(t.grad, tr.grad, 1e-6, "d target")


def test_empty_input_follows_pytorch():
    assert torch.isnan(sigmoid_bce_with_logits(torch.empty(0, 1), 1.0))
    assert sigmoid_bce_with_logits(torch.empty(0, 1), 1.0, "sum").item() == 0.0


@pytest.mark.parametrize("call, error, message", [
    (lambda: sigmoid_bce_with_logits(torch.randn(4, 1), torch.rand(4)), ValueError, "target has shape"),
    (lambda: sigmoid_bce_with_logits(torch.randn(4, 1), 1.5), ValueError, r"in \[0, 1\]"),
    (lambda: sigmoid_bce_with_logits(torch.randn(4, 1), "1"), TypeError, "target must be"),
    (lambda: sigmoid_bce_with_logits(torch.randn(4, 1), 1.0, "max"), ValueError, "reduction"),
    (lambda: sigmoid_bce_with_logits(torch.arange(4), 1.0), TypeError, "logits must be float"),
    (lambda: sigmoid_bce_with_logits(torch.randn(4, 1), torch.rand(4, 1, device="meta")), ValueError, "meta"),
])
def test_bad_input_is_rejected_before_any_kernel(call, error, message):
    before = ops.kernel_launches["_sigmoid_bce_fwd_kernel"]
    with pytest.raises(error, match=message):
        call()
    assert ops.kernel_launches["_sigmoid_bce_fwd_kernel"] == before
