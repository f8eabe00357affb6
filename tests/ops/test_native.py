"""kernels="cuda": fastgan's native CUDA library (kernels/, CMake) through fastgan.ops.native.

On a CPU: loading errors, argument checks before any call, the custom ops' registration and fake shapes,
the fallbacks, and the C ABI itself when the library is built (CI builds it in its native lane: a launch on
a machine without a GPU must come back as a CUDA error with its text, not a crash). On a GPU
(benchmarks/device_check.sh builds the library first): the kernels against float64 over the Triton ops'
cases, a training run against the torch path, torch.compile with no graph breaks, CUDA-graph capture.
"""
import ctypes
import warnings

import pytest
import torch

from helpers import ON_CUDA, assert_close
from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, fuse, ops
from fastgan.ops import native
from fastgan.nn import FusedMLP
from fastgan.ops import MLPSpec

BUILT = native.available()
needs_library = pytest.mark.skipif(not BUILT, reason=f"the native library is not built ({native.library_path()}): "
                                                     f"{native.BUILD_COMMAND}")


def on_gpu(test):
    """A GPU test: needs a CUDA device and the built library (device_check.sh builds it first)."""
    skip = pytest.mark.skipif(not (ON_CUDA and BUILT), reason="needs a CUDA device and the built native library")
    return pytest.mark.gpu(skip(test))


def test_a_missing_library_is_one_clear_error_naming_the_build(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTGAN_KERNELS_LIB", str(tmp_path / "nowhere.so"))
    with pytest.raises(native.NativeKernelsUnavailable, match=r"nowhere.so: build it .*cmake -S \. -B build"):
        native.load()
    assert not native.available()
    (tmp_path / "junk.so").write_text("not a library")
    monkeypatch.setenv("FASTGAN_KERNELS_LIB", str(tmp_path / "junk.so"))
    with pytest.raises(native.NativeKernelsUnavailable, match="cannot be loaded"):
        native.load()


def test_importing_fastgan_never_loads_the_library():
    import subprocess
    import sys
    code = ("import os; os.environ['FASTGAN_KERNELS_LIB'] = '/nonexistent.so'; import fastgan, fastgan.ops.native; "
            "assert fastgan.ops.native._lib is None; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


def test_kernels_cuda_needs_a_gpu_and_says_so():
    g, d = MLPGenerator(latent_dim=4, hidden=(8,), out_dim=3), MLPDiscriminator(in_dim=3, hidden=(8,))
    if ON_CUDA:
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="kernels='cuda' runs fastgan's native CUDA kernels: it needs a CUDA device"):
        GANTrainer(g, d, torch.rand(20, 3), kernels="cuda", device="cpu")


def test_cli_kernels_cuda_without_a_gpu_is_one_line(capsys):
    if ON_CUDA:
        pytest.skip("this machine has a GPU")
    from fastgan.app.cli import main
    assert main(["train", "--data", "ring", "--kernels", "cuda", "--steps", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fastgan: error: kernels='cuda'" in err


def test_arguments_are_checked_before_any_call():
    spec = MLPSpec((4, 8, 2))
    x = torch.randn(5, 4)
    params = list(FusedMLP(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LeakyReLU(0.2),
                                               torch.nn.Linear(8, 2))).parameters())
    with pytest.raises(ValueError, match="run on CUDA devices only"):
        native.cuda_mlp(x, params, spec)
    with pytest.raises(TypeError, match="must be float32"):
        native.cuda_mlp(x.double(), params, spec)
    with pytest.raises(ValueError, match="at most 8 layers"):
        native.check_spec(MLPSpec((4,) * 10))
    with pytest.raises(ValueError, match="widths up to 1024"):
        native.check_spec(MLPSpec((4, 2048, 1)))
    with pytest.raises(ValueError, match="run on CUDA devices only"):
        native.cuda_bce_with_logits(torch.randn(4, 1), 0.9)
    with pytest.raises(TypeError, match="spec must be"):
        native.check_spec((4, 8, 2))


def test_the_ops_are_registered_with_fake_shapes_for_torch_compile():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x = torch.empty(6, 4)
        params = [torch.empty(8, 4), torch.empty(8), torch.empty(3, 8), torch.empty(3)]
        out = torch.ops.fastgan.cuda_mlp(x, params, [4, 8, 3], True, "leaky_relu", "none", 0.2, "tf32")
        assert out.shape == (6, 11)   # every layer's output side by side: 8 + 3 columns
        dx, dflat = torch.ops.fastgan.cuda_mlp_backward(out[:, -3:], x, params, out, [4, 8, 3], True, "leaky_relu",
                                                        "none", 0.2, "tf32", True, True)
        assert dx.shape == (6, 4) and dflat.shape == (8 * 4 + 8 + 3 * 8 + 3,)
        assert torch.ops.fastgan.cuda_bce(torch.empty(6, 1), 0.9).shape == ()
        assert torch.ops.fastgan.cuda_bce_backward(torch.empty(()), torch.empty(6, 1), 0.9).shape == (6, 1)


def test_fuse_falls_back_to_triton_where_the_native_kernels_cannot_take_the_mlp():
    wide = torch.nn.Sequential(torch.nn.Linear(4, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fused = fuse(wide, whole=True, backend="cuda")
    assert isinstance(fused, FusedMLP) and fused.backend == "triton"
    assert any("widths up to 1024" in str(w.message) for w in caught)
    narrow = fuse(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh()), whole=True, backend="cuda")
    assert narrow.backend == "cuda" and "backend=cuda" in repr(narrow)
    with pytest.raises(ValueError, match="pass whole=True"):
        fuse(torch.nn.Linear(2, 2), backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        fuse(torch.nn.Linear(2, 2), whole=True, backend="rocm")


def test_kernels_run_names_a_model_that_runs_the_triton_kernels_instead():
    """The cuda backend with a D wider than the native kernels take (the digits default's pack-2 D is 1568 wide)
    says so instead of "cuda" (``trainer.kernels_run`` asks it; its modules are built here on the CPU)."""
    from fastgan.train.backends import BACKENDS
    cuda, data = BACKENDS["cuda"], torch.zeros(4, 20)
    g = fuse(MLPGenerator(latent_dim=16, hidden=(64, 64), out_dim=20), whole=True, backend="cuda")
    d = fuse(MLPDiscriminator(in_dim=20, hidden=(64, 64)), whole=True, backend="cuda")
    assert cuda.kernels_run(g, d, data) == "cuda"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = fuse(MLPDiscriminator(in_dim=1568, hidden=(64, 64)), whole=True, backend="cuda")
    assert cuda.kernels_run(g, d, data) == "cuda (D: triton whole-MLP)"
    from fastgan.nn.models import BatchNormGenerator
    with warnings.catch_warnings():   # no plain MLP (BatchNorm): fused per layer
        warnings.simplefilter("ignore")
        g = fuse(BatchNormGenerator(2, hidden=8, layers=2), whole=True, backend="cuda")
    assert cuda.kernels_run(g, d, data) == "cuda (G: triton per layer, D: triton whole-MLP)"


@pytest.fixture
def stub_library(monkeypatch):
    """The autograd and custom-op glue on CPU tensors, the library replaced by a recorder (outputs left as
    allocated): what is checked is the structure (shapes, which gradients, strides passed), not the math."""
    import contextlib
    calls = []
    monkeypatch.setattr(native, "_call", lambda name, *args: calls.append((name, args)))
    monkeypatch.setattr(native, "_stream", lambda device: None)
    monkeypatch.setattr(native, "_on", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(native, "_check_input", lambda name, t, device=None: None)   # (CPU tensors allowed)
    return calls


def _mlp_params(dims, requires_grad=True):
    layers = []
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        layers += [torch.nn.Linear(d_in, d_out), torch.nn.LeakyReLU(0.2)]
    module = FusedMLP(torch.nn.Sequential(*layers[:-1]))
    return module, [p.requires_grad_(requires_grad) for p in module.parameters()]


def test_autograd_glue_returns_every_gradient_in_place_of_each_input(stub_library):
    spec = MLPSpec((4, 8, 3), True, "leaky_relu", "none", 0.2)
    _, params = _mlp_params(spec.dims)
    x = torch.randn(5, 4, requires_grad=True)
    y = native.cuda_mlp(x, params, spec)
    assert y.shape == (5, 3)
    grads = torch.autograd.grad(y.sum(), [x, *params])
    assert [tuple(g.shape) for g in grads] == [(5, 4), (8, 4), (8,), (3, 8), (3,)]
    names = [name for name, _ in stub_library]
    assert names == ["fg_mlp_forward", "fg_mlp_backward"]
    backward_args = stub_library[-1][1]
    assert backward_args[-3] is not None and backward_args[-2] is not None, "dx and dparams asked for"
    # weights that need no gradient (D during G's update): the library is asked for dx only
    _, frozen = _mlp_params(spec.dims, requires_grad=False)
    (dx,) = torch.autograd.grad(native.cuda_mlp(x, frozen, spec).sum(), [x])
    assert dx.shape == (5, 4) and stub_library[-1][1][-2] is None
    # an input that needs none (real data): dW and db only
    native.cuda_mlp(x.detach(), params, spec).sum().backward()
    assert stub_library[-1][1][-3] is None and all(p.grad is not None for p in params)


def test_one_row_inputs_pass_their_width_as_row_stride(stub_library):
    spec = MLPSpec((4, 3), True, "none", "none", 0.2)
    _, params = _mlp_params(spec.dims)
    x = torch.randn(4, 1).t()                     # shape (1, 4), strides (1, 1): any stride is valid for one row
    native.cuda_mlp(x, params, spec)
    name, args = stub_library[-1]
    assert name == "fg_mlp_forward" and args[1] == 4


def test_the_glue_compiles_with_no_graph_breaks(stub_library):
    torch._dynamo.reset()
    from torch._dynamo.utils import counters
    counters.clear()
    spec = MLPSpec((4, 8, 3), True, "leaky_relu", "none", 0.2)
    _, params = _mlp_params(spec.dims)

    def loss(x):
        return native.cuda_bce_with_logits(native.cuda_mlp(x, params, spec)[:, :1], 0.9)

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    compiled(torch.randn(6, 4)).backward()
    assert dict(counters["graph_break"]) == {}
    assert {name for name, _ in stub_library} == {"fg_mlp_forward", "fg_mlp_backward", "fg_bce_forward",
                                                   "fg_bce_backward"}


@needs_library
def test_the_c_abi_answers_from_python():
    """Through ctypes: the ABI version, an invalid argument's error text, and (without a GPU) a launch that
    comes back as a CUDA error naming the kernel, as a RuntimeError."""
    lib = native.load()
    assert lib.fg_abi_version() == native.ABI_VERSION
    dims = (ctypes.c_int32 * 3)(4, 8, 2)
    status = lib.fg_mlp_forward(None, 4, 3, None, dims, 9, 1, 2, 0, 0.2, 1, None, None)
    assert status == 1 and b"layers must be 1..8" in lib.fg_last_error()
    status = lib.fg_mlp_forward(None, 4, 3, None, dims, 2, 1, 7, 0, 0.2, 1, None, None)
    assert status == 1 and b"unknown activation code 7" in lib.fg_last_error()
    with pytest.raises(RuntimeError, match="fg_bce_forward failed: logits and loss must not be NULL"):
        native._call("fg_bce_forward", None, None, 1.0, 4, None, None)
    if not ON_CUDA:
        x = (ctypes.c_float * 4)()
        with pytest.raises(RuntimeError, match="fg_mlp_forward failed: mlp_forward_kernel: .*cuda"):
            native._call("fg_mlp_forward", x, 4, 1, x, dims, 1, 1, 0, 0, 0.2, 0, x, None)


# -- on a GPU ------------------------------------------------------------------------------------------------

SHAPES = [((1, 1), 1), ((7, 13, 129), 5), ((784, 128, 128, 1), 33), ((100, 256, 512, 784), 129),
          ((2, 1024, 2), 17)]


@pytest.mark.parametrize("dims,rows", SHAPES)
@pytest.mark.parametrize("acts", [("leaky_relu", "none"), ("relu", "sigmoid"), ("tanh", "tanh")])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("precision", ["ieee", "tf32", "bf16"])
@on_gpu
def test_cuda_mlp_matches_float64(dims, rows, acts, bias, precision, seed):
    """The forward against the exact float64 MLP; every gradient (dx, each W and b) against float64 taken at
    the kernels' own saved outputs, element-wise: the kernels recover act' from those outputs, and a
    pre-activation near 0 that rounds to the other side of a ReLU kink flips that unit's mask, changing its
    gradient by O(1) (the first GPU run failed only the ReLU cases on exactly that, when the reference took
    its own float64 masks). x is non-contiguous; the outputs NaN-free (every element written: the library
    writes into fresh torch.empty buffers)."""
    from test_mlp import _expected_backward
    spec = MLPSpec(dims, bias, acts[0], acts[1], 0.2)
    g = torch.Generator().manual_seed(seed)
    params64 = []
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        params64.append(torch.randn(d_out, d_in, generator=g, dtype=torch.float64) / d_in ** 0.5)
        if bias:
            params64.append(torch.randn(d_out, generator=g, dtype=torch.float64) * 0.1)
    flat = torch.cat([p.reshape(-1) for p in params64]).float().cuda()
    params, offset = [], 0
    for p in params64:
        params.append(flat[offset:offset + p.numel()].view(p.shape).requires_grad_())
        offset += p.numel()
    wide64 = torch.randn(rows, dims[0] + 3, generator=g, dtype=torch.float64)
    x = wide64.float().cuda()[:, 2:2 + dims[0]].requires_grad_()   # a strided view on the GPU
    assert rows == 1 or not x.is_contiguous()
    x64 = x.detach().double().cpu()                                   # the operands as the kernels hold them
    params64 = [p.float().double() for p in params64]
    dy64 = torch.randn(rows, dims[-1], generator=g, dtype=torch.float64).float().double()
    import contextlib
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with ops.matmul_precision("ieee" if precision == "ieee" else "tf32"), autocast:
        y = native.cuda_mlp(x, params, spec)
        grads = torch.autograd.grad(y, [x, *params], dy64.float().cuda())
        with torch.no_grad():   # every layer's saved output (the kernels are deterministic: the same again)
            out = native._forward_op(x, params, list(dims), bias, acts[0], acts[1], 0.2, native._precision(x))
    tolerance = {"ieee": 1e-4, "tf32": 2e-2, "bf16": 6e-2}[precision]
    assert torch.equal(out[:, -dims[-1]:], y.detach()), "the forward is not deterministic"
    assert_close(y, ops.mlp.fused_mlp_reference(x64, params64, spec), tolerance, "y")
    outs, start = [], 0
    for width in dims[1:]:
        outs.append(out[:, start:start + width].double().cpu())
        start += width
    # every saved layer output against float64, layer by layer from the kernels' own input to it: the
    # gradients below are taken at these, so a wrong one must fail here
    weights = params64[::2] if bias else params64
    biases = params64[1::2] if bias else [None] * len(weights)
    for layer, saved in enumerate(outs):
        inp = x64 if layer == 0 else outs[layer - 1]
        act = ops.activation_from_name(spec.activation(layer))
        expect = act.forward(torch.nn.functional.linear(inp, weights[layer], biases[layer]), 0.2)
        assert_close(saved, expect, tolerance, f"layer {layer} output")
    _, _, dx64, allow_dx, layer_grads = _expected_backward(spec, x64, params64, outs, dy64)
    expected = [(dx64, allow_dx)]
    for dw, db, allow_dw, allow_db in layer_grads:
        expected += [(dw, allow_dw)] + ([(db, allow_db)] if bias else [])
    assert len(expected) == len(grads)
    for i, (ours, (theirs, allowance)) in enumerate(zip(grads, expected)):
        assert_close(ours, theirs, tolerance, f"grad {i}", allowance=allowance)


@pytest.mark.parametrize("target", [0.0, 0.9, 1.0])
@pytest.mark.parametrize("n", [1, 7, 1000, 70_000])
@on_gpu
def test_cuda_bce_matches_float64(n, target, seed):
    g = torch.Generator().manual_seed(seed)
    logits64 = torch.randn(n, 1, generator=g, dtype=torch.float64) * 5
    logits64[0] = 80.0   # extreme values stay finite
    x = logits64.float().cuda().requires_grad_()
    loss = native.cuda_bce_with_logits(x, target)
    (grad,) = torch.autograd.grad(loss * 3.0, x)
    leaf = logits64.clone().requires_grad_()
    ref = torch.nn.functional.binary_cross_entropy_with_logits(leaf, torch.full_like(leaf, target))
    (ref_grad,) = torch.autograd.grad(ref * 3.0, leaf)
    assert_close(loss, ref, 1e-5, "loss")
    assert_close(grad, ref_grad, 1e-5, "grad")


def _gan(device, kernels, **options):
    torch.manual_seed(0)
    g, d = MLPGenerator(latent_dim=16, hidden=(64, 64), out_dim=20), MLPDiscriminator(in_dim=20, hidden=(64, 64))
    real = torch.rand(512, 20, generator=torch.Generator().manual_seed(1)).to(device)
    return GANTrainer(g, d, real, batch_size=64, lr=1e-3, seed=3, kernels=kernels, precision="fp32", **options)


@pytest.mark.parametrize("compile_", [False, True])
@on_gpu
def test_kernels_cuda_trains_like_the_torch_path(compile_):
    torch._dynamo.reset()
    from torch._dynamo.utils import counters
    counters.clear()
    ours, theirs = _gan("cuda", "cuda", compile=compile_), _gan("cuda", "torch")
    assert ours.kernels_run == "cuda"
    for _ in range(20):
        ours.step(), theirs.step()
    if compile_:
        assert dict(counters["graph_break"]) == {}
    for a, b in zip(ours.generator.state_dict().values(), theirs.generator.state_dict().values()):
        assert_close(a, b, 1e-4, "G weights")


@on_gpu
def test_kernels_cuda_in_a_cuda_graph_equals_eager():
    graphed = _gan("cuda", "cuda", cuda_graph=True, steps_per_replay=4, graph_warmup=2)
    eager = _gan("cuda", "cuda")
    while graphed.step_count < 10:
        graphed.step()
    for _ in range(graphed.step_count):
        eager.step()
    for a, b in zip(graphed.generator.state_dict().values(), eager.generator.state_dict().values()):
        assert_close(a, b, 1e-5, "G weights")


def test_activation_ids_are_the_headers():
    """The ids native.py passes for each activation are kernels/fastgan_kernels.h's fg_activation values."""
    import re
    from pathlib import Path
    header = (Path(native.__file__).resolve().parents[2] / "kernels" / "fastgan_kernels.h").read_text()
    enum = dict(re.findall(r"FG_(NONE|RELU|LEAKY_RELU|SIGMOID|TANH) = (\d)", header))
    assert {name.upper(): str(i) for name, i in native.ACTIVATIONS.items()} == enum
