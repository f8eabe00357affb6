"""Test set-up: Triton's interpreter runs every kernel on the CPU.

TRITON_INTERPRET must be set before triton is imported, so it is set here, at import time of the
conftest, before any test module imports fastgan. FASTGAN_AUTOTUNE=0 pins each kernel to one config.
"""
import os
import tempfile

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("FASTGAN_AUTOTUNE", "0")
# The digits classifier is cached per test session, never in the user's own cache folder.
os.environ.setdefault("FASTGAN_CACHE", tempfile.mkdtemp(prefix="fastgan-test-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402

from fastgan import ops  # noqa: E402

ON_CUDA = torch.cuda.is_available()
# Where kernel tests put their tensors: the GPU when there is one (benchmarks/device_check.sh runs them
# compiled there), else the CPU under the interpreter.
DEVICE = "cuda" if ON_CUDA else "cpu"
# bf16 tl.dot is silently wrong in Triton's CPU interpreter (errors ~1e10 seen with triton 3.9): bf16
# matmul tests run on a GPU only.
BF16_DOT_OK = ON_CUDA and not ops.INTERPRET

TOLERANCE = {"ieee": 1e-5, "tf32": 5e-3, torch.float16: 5e-3, torch.bfloat16: 2e-2}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖actual − expected‖ / ‖expected‖ in float64 (NaN if actual has a NaN, so NaN never passes)."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    denominator = expected.norm().item()
    numerator = (actual - expected).norm().item()
    if denominator == 0.0:
        return numerator
    return numerator / denominator


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float, what: str = "output"):
    """Relative-norm comparison that says where and how much a mismatch is."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = relative_error(actual, expected)
    if not error <= tolerance:  # also catches NaN
        a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
        diff = (a - e).abs()
        bad = ~(diff <= tolerance * e.abs().clamp_min(1.0))
        worst = int(torch.nan_to_num(diff, nan=float("inf")).flatten().argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), a.shape)) if a.dim() else ()
        raise AssertionError(
            f"{what}: relative error {error:.3e} > {tolerance:.1e}; {int(bad.sum())}/{a.numel()} elements off, "
            f"NaNs {int(torch.isnan(a).sum())}; worst at {index}: got {a.flatten()[worst].item():.6g}, "
            f"expected {e.flatten()[worst].item():.6g} (max abs err {diff.max().item():.3e})")


@pytest.fixture
def ieee():
    """Exact fp32 matmuls for the duration of a test."""
    with ops.matmul_precision("ieee"):
        yield


@pytest.fixture
def poison(monkeypatch):
    """Make every torch.empty/empty_like in fastgan.ops return NaN-filled memory, so an element a kernel
    forgets to write shows up as NaN instead of as a lucky zero."""
    import fastgan.ops.bce as bce_module
    import fastgan.ops.head as head_module
    import fastgan.ops.linear as linear_module

    real_empty, real_empty_like = torch.empty, torch.empty_like

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.dtype.is_floating_point else t

    def empty_like(*args, **kwargs):
        t = real_empty_like(*args, **kwargs)
        return t.fill_(float("nan")) if t.dtype.is_floating_point else t

    class PoisonedTorch:
        def __getattr__(self, name):
            return {"empty": empty, "empty_like": empty_like}.get(name, getattr(torch, name))

    for module in (linear_module, bce_module, head_module):
        monkeypatch.setattr(module, "torch", PoisonedTorch())
    yield


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (this machine has none)")
    for item in items:
        if "gpu" in item.keywords and not ON_CUDA:
            item.add_marker(skip_gpu)
