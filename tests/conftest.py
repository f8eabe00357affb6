"""Test set-up: Triton's interpreter runs every kernel on the CPU.

TRITON_INTERPRET must be set before triton is imported, so it is set here, at import time of the
conftest, before any test module imports fastgan. FASTGAN_AUTOTUNE=0 pins each kernel to one config.
"""
import os
import tempfile
import zlib

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("FASTGAN_AUTOTUNE", "0")
# pytest-xdist runs a worker per core; each worker's own thread pools (PyTorch's OpenMP, NumPy's BLAS under
# the interpreter's dots) get only its share of the cores. Pools of all the cores in every worker spin against
# each other: 2 workers on 2 cores ran test_metrics.py + test_sampling.py in 31 s with them, 14 s without.
# Set before torch and numpy are imported (children, such as the CLI tests' processes, inherit it).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    _threads = str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))   # (the cores xdist counts)
    for _pool in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_pool, _threads)
# The digits classifier is cached per test session, never in the user's own cache folder.
os.environ.setdefault("FASTGAN_CACHE", tempfile.mkdtemp(prefix="fastgan-test-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402

from fastgan import ops  # noqa: E402
from helpers import ON_CUDA  # noqa: E402

# Every test's random inputs come from one seed: crc32 of the test's id plus FASTGAN_TEST_SEED (default 0),
# so a run is reproducible in any process (Python's hash() is not), a failure prints its seed, and the
# suite can be scanned over many seeds (FASTGAN_TEST_SEED=1, 2, ...).
BASE_SEED = int(os.environ.get("FASTGAN_TEST_SEED", "0"))


def seed_for(nodeid: str) -> int:
    return (zlib.crc32(nodeid.encode()) + 1_000_003 * BASE_SEED) % 2**31


@pytest.fixture(autouse=True)
def _seeded(request):
    """Seed PyTorch's global RNG per test (inputs drawn without a generator are reproducible too)."""
    request.node.fastgan_seed = seed_for(request.node.nodeid)
    torch.manual_seed(request.node.fastgan_seed)
    yield


@pytest.fixture
def seed(request) -> int:
    """This test's seed, for its own ``torch.Generator``."""
    return request.node.fastgan_seed


def pytest_report_header(config):
    return f"fastgan: FASTGAN_TEST_SEED={BASE_SEED} (each test's seed is crc32(test id) + 1000003 x it)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and hasattr(item, "fastgan_seed"):
        report.sections.append(("fastgan seed", f"seed {item.fastgan_seed}; rerun with: "
                                f"FASTGAN_TEST_SEED={BASE_SEED} python -m pytest '{item.nodeid}'"))


@pytest.fixture
def gpu_math(monkeypatch):
    """The interpreter's fp32 exp, sqrt and division made as inexact as a GPU's, so accuracy tests see
    what a GPU computes: ``tl.exp(x)`` is ``ex2.approx(fl(x * log2 e))`` there, ``tl.sqrt`` is
    ``sqrt.approx`` and ``/`` is ``div.full``, each off by up to 2 ulps (PTX ISA). Here each result is the
    exact one moved 2 ulps up or down, by the low bit of the exact result (a fixed, input-dependent
    pattern); exp also rounds ``x * log2 e`` to fp32 first, as the GPU does; and a Python float argument
    becomes an fp32 scalar, as in a compiled kernel. The correctly rounded ``tl.sqrt_rn``/``tl.div_rn``
    and the accurate ``tl.log`` stay exact, as on the GPU."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter
    builder = getattr(interpreter, "InterpreterBuilder", None)
    names = ("create_exp", "create_sqrt", "create_fdiv", "unary_op", "binary_op")
    if builder is None or not all(hasattr(builder, n) for n in names) or not hasattr(interpreter, "_implicit_cvt"):
        pytest.skip("this triton's interpreter has no InterpreterBuilder.create_exp/... to patch")

    def inexact(v):
        v = np.asarray(v)
        if v.dtype != np.float32:
            return v
        toward = np.where(v.view(np.uint32) & 1, np.float32(np.inf), np.float32(-np.inf))
        return np.nextafter(np.nextafter(v, toward), toward)  # 2 ulps away

    def exp(x):
        if np.asarray(x).dtype != np.float32:
            return np.exp(x)
        return inexact(np.exp2((x * np.float32(1.4426950408889634)).astype(np.float32)))

    # a Python float argument is an fp32 scalar in a compiled kernel; the interpreter keeps it a float64
    # (the first GPU run caught FlatAdam's in-kernel 1 - beta2 that way: 1.3e-5 relative at 0.999)
    convert = interpreter._implicit_cvt

    def fp32_scalars(arg):
        if isinstance(arg, float):
            return tl.tensor(interpreter.TensorHandle(np.array([arg], dtype=np.float32), tl.float32), tl.float32)
        return convert(arg)

    monkeypatch.setattr(interpreter, "_implicit_cvt", fp32_scalars)
    monkeypatch.setattr(builder, "create_exp", lambda self, arg: self.unary_op(arg, exp))
    monkeypatch.setattr(builder, "create_sqrt", lambda self, arg: self.unary_op(arg, lambda v: inexact(np.sqrt(v))))
    monkeypatch.setattr(builder, "create_fdiv",
                        lambda self, a, b: self.binary_op(a, b, lambda x, y: inexact(np.divide(x, y))))
    yield


@pytest.fixture(params=["interpreter-math", "gpu-math"])
def math_model(request):
    """Run a test twice: with the interpreter's exact math, and with ``gpu_math``."""
    if ON_CUDA:  # compiled kernels: the GPU's own math, checked against the GPU bound
        if request.param == "interpreter-math":
            pytest.skip("on a GPU the kernels run the GPU's own math: the gpu-math case checks it")
        return request.param
    if request.param == "gpu-math":
        request.getfixturevalue("gpu_math")
    return request.param


@pytest.fixture
def no_host_reads(monkeypatch):
    """Within ``with no_host_reads():``, a Tensor read on the host (item, tolist, bool, float, int, cpu, numpy)
    called from fastgan's own code fails the test: on CUDA it would be a device sync."""
    import contextlib
    import sys
    from pathlib import Path
    package = str(Path(__import__("fastgan").__file__).parent)

    def guard(name, original):
        def checked(*args, **kwargs):
            if sys._getframe(1).f_code.co_filename.startswith(package):
                raise AssertionError(f"Tensor.{name} called inside fastgan's step: a host sync")
            return original(*args, **kwargs)
        return checked

    @contextlib.contextmanager
    def block():
        with monkeypatch.context() as patch:
            for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
                patch.setattr(torch.Tensor, name, guard(name, getattr(torch.Tensor, name)))
            yield
    return block


@pytest.fixture(params=["whole", "sliced"])
def slicing(request, monkeypatch):
    """Run a test twice: with the whole-MLP kernels' own plan (the wide end of a GAN-sized MLP, >= 256
    columns, is cut into slices), and with every MLP's end cut into slices of 8 columns, so the small test
    MLPs run the sliced paths: partial sums, the last program to arrive, the arrival counts reset."""
    from fastgan.ops import mlp_slices
    if request.param == "sliced":
        monkeypatch.setattr(mlp_slices, "_WIDE", 1)
        monkeypatch.setattr(mlp_slices, "_SLICE_MIN", 8)
    mlp_slices.slice_plan.cache_clear()
    yield request.param
    mlp_slices.slice_plan.cache_clear()


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
    import importlib
    maxout_module = importlib.import_module("fastgan.ops.maxout")   # (fastgan.ops.maxout is also the function)

    real_empty, real_empty_like = torch.empty, torch.empty_like

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.dtype == torch.int8:   # maxout's winning pieces: an index no kernel would write
            return t.fill_(-1)
        return t.fill_(float("nan")) if t.dtype.is_floating_point else t

    def empty_like(*args, **kwargs):
        t = real_empty_like(*args, **kwargs)
        return t.fill_(float("nan")) if t.dtype.is_floating_point else t

    class PoisonedTorch:
        def __getattr__(self, name):
            return {"empty": empty, "empty_like": empty_like}.get(name, getattr(torch, name))

    for module in (linear_module, bce_module, head_module, maxout_module):
        monkeypatch.setattr(module, "torch", PoisonedTorch())
    yield


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (this machine has none)")
    for item in items:
        if "gpu" in item.keywords and not ON_CUDA:
            item.add_marker(skip_gpu)
