"""Every activation, forward and backward, element-wise against float64 over the whole range of x.

x sweeps a log-spaced grid from 1e-8 to 20 of both signs, plus 0 and the saturated tails, through
``fused_linear`` with a 1x1 identity weight (so the kernel's pre-activation is x exactly, fp32 ieee).
Forward: within a few fp32 ulps (``ULPS``) of the float64 value. Backward (``act'`` recovered from the
output): within as many ulps of the float64 derivative *at the kernel's y*, and within that plus what y's own
rounding forces (``|d act'/dy| * |y - y_exact|``) of the exact derivative at x.
"""
import pytest
import torch

from helpers import DEVICE
from fastgan import ops
from fastgan.ops import _math

# fp32 ulps allowed: with exact exp/division (the interpreter) and with the GPU's 2-ulp exp and division
# (worst seen: 4.2 ulps, sigmoid near x = -4, where e^-x sits at the top of its binade)
ULPS = {"interpreter-math": 3, "gpu-math": 5}
SLOPE = 0.2


def _grid() -> torch.Tensor:
    magnitudes = torch.logspace(-8, torch.log10(torch.tensor(20.0)).item(), 601, dtype=torch.float64)
    tails = torch.tensor([0.5, 0.6249, 0.625, 0.6251, 9.0, 30.0, 60.0, 80.0], dtype=torch.float64)
    x = torch.cat([magnitudes, tails, -magnitudes, -tails, torch.zeros(1, dtype=torch.float64)])
    return x.float().double()  # values representable in fp32: the kernel sees exactly these


def _ulp(v: torch.Tensor) -> torch.Tensor:
    """The fp32 spacing at each float64 value (at least the smallest normal's, for values near 0)."""
    f = v.float().abs().clamp_min(torch.finfo(torch.float32).tiny)
    return (torch.nextafter(f, torch.tensor(float("inf"))) - f).double()


def _derivative_slope(activation: str, y: torch.Tensor) -> torch.Tensor:
    """|d act'(x) / dy| as a function of the output: how y's rounding moves the recovered derivative."""
    return {"sigmoid": (1 - 2 * y).abs(), "tanh": 2 * y.abs()}.get(activation, torch.zeros_like(y))


def _assert_within(actual, expected, bound, what, x):
    diff = (actual - expected).abs()
    bad = ~(diff <= bound)
    if bad.any():
        i = int(torch.nan_to_num(diff / bound, nan=float("inf")).argmax())
        raise AssertionError(f"{what}: {int(bad.sum())}/{len(x)} points off; worst at x={x[i].item():.9g}: got "
                             f"{actual[i].item():.9g}, expected {expected[i].item():.9g} ({(diff[i] / _ulp(expected[i:i + 1])[0]).item():.1f} ulp)")


@pytest.mark.parametrize("activation", list(ops.ACTIVATIONS))
def test_activation_accurate_over_the_whole_range(activation, math_model, ieee, poison):
    act = ops.activation_from_name(activation)
    ulps = ULPS[math_model]
    x64 = _grid()
    x = x64.float().to(DEVICE)[:, None].requires_grad_()
    one = torch.ones(1, 1, device=DEVICE)
    before = ops.kernel_launches["_linear_act_fwd_kernel"]
    y = ops.fused_linear(x, one, None, activation, SLOPE)
    y.backward(torch.ones_like(y))
    assert ops.kernel_launches["_linear_act_fwd_kernel"] == before + 1, "the Triton kernel did not run"
    y, dx = y.detach().double().cpu()[:, 0], x.grad.double().cpu()[:, 0]

    y_exact = act.forward(x64, SLOPE)
    _assert_within(y, y_exact, ulps * _ulp(y_exact), f"{activation} forward", x64)

    at_kernel_y = act.derivative_from_output(y, SLOPE)
    _assert_within(dx, at_kernel_y, ulps * _ulp(at_kernel_y), f"{activation}' from the kernel's y", x64)
    exact_derivative = act.derivative_from_output(y_exact, SLOPE)
    forced = _derivative_slope(activation, y) * (y - y_exact).abs()
    _assert_within(dx, exact_derivative, ulps * _ulp(exact_derivative) + 1.01 * forced,
                   f"{activation}' against the exact derivative", x64)


def test_tanh_is_exact_near_zero_and_odd(ieee):
    x = torch.tensor([[1e-30], [1e-8], [-1e-8], [1e-4], [-1e-4]], device=DEVICE)
    y = ops.fused_linear(x, torch.ones(1, 1, device=DEVICE), None, "tanh")
    assert torch.equal(y[:3], x[:3])  # tanh(x) rounds to x in fp32 there
    assert torch.equal(y[3], -y[4])


def test_exp_neg_reduces_its_argument():
    """The constants of the Cody-Waite split: k * LN2_HI exact for every k the clamp allows."""
    hi = torch.tensor(_math.LN2_HI, dtype=torch.float32)
    assert hi.item() == _math.LN2_HI and abs(_math.LN2_HI + _math.LN2_LO - 0.6931471805599453) < 1e-12
    k = torch.arange(0, int(_math.EXP_NEG_LIMIT * _math.LOG2E) + 2, dtype=torch.float32)
    assert torch.equal((k * hi).double(), k.double() * _math.LN2_HI)
