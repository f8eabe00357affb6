"""What the tests share (``from helpers import assert_close, DEVICE``): where kernels run, tolerances per precision,
and element-wise comparisons that say how and where a failure happened. Fixtures live in conftest.py, which
sets up Triton's interpreter before this module imports fastgan."""
from __future__ import annotations

import torch

from fastgan import ops

ON_CUDA = torch.cuda.is_available()
# Where kernel tests put their tensors: the GPU when there is one (benchmarks/device_check.sh runs them
# compiled there), else the CPU under the interpreter.
DEVICE = "cuda" if ON_CUDA else "cpu"
# bf16 tl.dot is silently wrong in Triton's CPU interpreter (errors ~1e10 seen with triton 3.9): bf16
# matmul tests run on a GPU only.
BF16_DOT_OK = ON_CUDA and not ops.INTERPRET

TOLERANCE = {"ieee": 1e-5, "tf32": 5e-3, torch.float16: 5e-3, torch.bfloat16: 2e-2}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖actual − expected‖ / ‖expected‖ in float64 (NaN if actual has a NaN): for reports, not for passing."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    denominator = expected.norm().item()
    numerator = (actual - expected).norm().item()
    if denominator == 0.0:
        return numerator
    return numerator / denominator


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float, what: str = "output",
                 allowance: torch.Tensor | None = None):
    """Element-wise: every element must satisfy ``|a - e| <= tolerance * (|e| + rms(e)) + allowance``.

    ``tolerance * |e|`` is the relative part; ``tolerance * rms(e)`` an absolute part that follows the
    tensor's own magnitude (elements that cancel to near zero carry the rounding of their large terms);
    ``allowance`` (optional, element-wise) adds a per-element bound a test derives, e.g. from the
    conditioning of its inputs. NaN never passes. A failure says how many elements are off and where.
    """
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    rms = e.square().mean().sqrt().item() if e.numel() else 0.0
    bound = tolerance * (e.abs() + rms)
    if allowance is not None:
        bound = bound + allowance.detach().double().cpu()
    diff = (a - e).abs()
    bad = ~(diff <= bound)  # NaN compares false: it is always bad
    if bad.any():
        excess = torch.nan_to_num(diff / bound.clamp_min(1e-300), nan=float("inf"))
        worst = int(excess.flatten().argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), a.shape)) if a.dim() else ()
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{a.numel()} elements outside |a-e| <= {tolerance:.1e}(|e| + rms {rms:.3g})"
            f"{' + allowance' if allowance is not None else ''}; NaNs {int(torch.isnan(a).sum())}; worst at "
            f"{index}: got {a.flatten()[worst].item():.8g}, expected {e.flatten()[worst].item():.8g} "
            f"(error {diff.flatten()[worst].item():.3e}, bound {bound.flatten()[worst].item():.3e}); "
            f"relative-norm error {relative_error(a, e):.3e}")


def fp32_sum_rounding(a: torch.Tensor, b: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor:
    """For each element of ``a @ b`` (float64 operands): 2^-22 (sqrt(K) ||a_i * b_j||_2 + |total_ij|), the
    statistical size of the K roundings of its partial sums in fp32 and of the result's own (``total``
    defaults to ``a @ b``). It matters where the terms are far larger than their sum, which then cancels;
    kernel tests add it to their tolerance element by element."""
    total = a @ b if total is None else total
    return 2.0 ** -22 * (a.shape[1] ** 0.5 * (a.square() @ b.square()).sqrt() + total.abs())
