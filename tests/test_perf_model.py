"""tools/perf_model.py: every launch it records has a model, a grid evaluates to the CTAs worked out by hand
from the spec, and the two constants reproduce the step times they were fitted to.

Nothing is compiled here (compiling is the compile lane's job): the tool runs with ``--no-compile``, in a
process of its own, because it records through Triton's real launcher, not the interpreter this suite uses.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import perf_model  # noqa: E402 - tools/ is not a package


def cdiv(a, b):
    return -(-a // b)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("perf_model") / "model.json"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "perf_model.py"), "--no-compile", "--json", str(out),
                           "--replicas", "8"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())


def step(report, label):
    return next(s for s in report["steps"] if s["label"] == label and s["batch"] == report["fit_batch"])


@pytest.mark.parametrize("label", ["fused", "per-layer"])
def test_every_launch_of_the_step_has_a_model(report, label):
    launches = step(report, label)["launches"]
    assert launches
    assert [launch["kernel"] for launch in launches if not launch["modelled"]] == []


def test_every_kernel_of_the_package_has_a_model():
    kernels = {name for path in (ROOT / "fastgan" / "ops").glob("*.py")
               for name in re.findall(r"^\s*def (\w+_kernel)\(", path.read_text(), re.M)}
    assert kernels and sorted(kernels - set(perf_model.WORK)) == []


def test_weight_gradient_grid_of_the_fused_step(report):
    # D's weight gradient over the real and fake rows (2 x 128), then G's over 128; one batch split each
    passes = [((784, 128, 128, 1), 256), ((100, 128, 128, 784), 128)]
    launches = [launch for launch in step(report, "fused")["launches"] if launch["kernel"] == "_mlp_weight_grad_kernel"]
    assert len(launches) == len(passes)
    for launch, (dims, rows) in zip(launches, passes):
        layers = list(zip(dims[:-1], dims[1:]))
        for config in launch["configs"]:
            n, k, m = (config["kwargs"][f"BLOCK_{axis}"] for axis in "NKM")
            tiles = [cdiv(d_out, n) * cdiv(d_in, k) for d_in, d_out in layers]
            assert config["ctas"] == max(tiles) * len(layers), config
            assert config["active"] == sum(tiles), config
            assert config["serial"] == cdiv(rows, m) + 1, config   # + program 0's sum of the loss partials


def test_the_fused_step_of_8_replicas_launches_its_kernels_once_for_all(report):
    """The same launches as one GAN's step; the weight gradients' active CTAs and Adam's bytes 8 times one's
    (Adam: value and two moments read and written, the gradient written or read, 4 bytes each, per parameter)."""
    one, eight = step(report, "fused"), step(report, "fused x 8 replicas")
    assert [launch["kernel"] for launch in eight["launches"]] == [launch["kernel"] for launch in one["launches"]]
    parameters = sum(d_in * d_out + d_out for dims in ((784, 128, 128, 1), (100, 128, 128, 784))
                     for d_in, d_out in zip(dims[:-1], dims[1:]))
    assert one["adam_bytes"] == 28 * parameters and eight["adam_bytes"] == 8 * one["adam_bytes"]
    for a, b in zip(one["launches"], eight["launches"]):
        if a["kernel"] == "_mlp_weight_grad_kernel":
            assert [c["active"] * 8 for c in a["configs"]] == [c["active"] for c in b["configs"]]


def test_the_matmul_flops_of_a_step_are_its_layers_products(report):
    """Per GAN-step of the classic GAN at batch 128, worked out by hand: D's update (G forward; D forward, its
    gradient chain above layer 0 and its weight gradients, on 256 rows), G's (D forward and chain on 128 rows,
    D's input gradient, G's chain above layer 0, G's weight gradients); the per-layer step at K = 8 does 8 times
    that, the fused step more (each slice of G's 784 outputs recomputes the layers below)."""
    g, d = (100, 128, 128, 784), (784, 128, 128, 1)

    def products(dims, rows, layers=slice(None)):
        return sum(2 * rows * d_in * d_out for d_in, d_out in list(zip(dims[:-1], dims[1:]))[layers])

    per_gan = (products(g, 128) + 2 * products(d, 256) + products(d, 256, slice(1, None))
               + products(d, 128) + products(d, 128, slice(1, None)) + 2 * 128 * 128 * 784
               + products(g, 128, slice(1, None)) + products(g, 128))
    assert step(report, "per-layer x 8 replicas")["matmul_flops"] == 8 * per_gan
    assert step(report, "fused x 8 replicas")["matmul_flops"] > 8 * per_gan


def test_fit_reproduces_the_measured_step_times(report):
    """The constants, applied to the measured code's (kernels, serial work), give back the measured times."""
    terms = json.loads(perf_model.FIT.read_text())["terms"]
    for label, measured in report["measured"].items():
        nodes, work = terms[label]
        assert nodes * report["c_node_us"] + work * report["c_iter_us"] == pytest.approx(measured["us"], rel=0.01)


def test_ptx_facts():
    ptx = """
\t@%p1 cp.async.cg.shared.global [ %r10 + 0 ], [ %rd4 + 0 ], 0x10, %r11;
\tcp.async.ca.shared.global [ %r63 + 0 ], [ %rd77 + 0 ], 0x4, %r65;
\tcp.async.wait_group \t2;
\tcp.async.wait_group \t0;
\t@%p14 ld.global.b64 { %rd1 }, [ %rd27 + 0 ];
\t@%p15 ld.global.L1::evict_last.v2.b32 { %r108, %r109 }, [ %rd27 + 4 ];
\tmma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f5, ...};
"""
    assert perf_model.ptx_facts(ptx) == {"cp_async": [4, 16], "wait_group": 2, "ld_global": 8, "dot": "mma"}
    assert perf_model.ptx_facts("")["dot"] == "-"


def test_gate_counts_matmul_launches_only():
    def launch(kernel, active):
        return {"kernel": kernel, "index": 0, "configs": [{"config": "cfg 0/1", "kwargs": {}, "num_warps": 4,
                                                           "num_stages": 2, "active": active}]}
    assert perf_model.gate({"launches": [launch("_mlp_rows_kernel", 66), launch("_adam_step_kernel", 1)]}) == []
    [failure] = perf_model.gate({"launches": [launch("_linear_act_fwd_kernel", 65)]})
    assert failure.startswith("FAIL _linear_act_fwd_kernel cfg 0/1") and "65 active CTAs < 66" in failure


def test_adam_bytes_count_bf16_moments_at_two_bytes():
    """Per parameter: its value and two moments read and written, its gradient (each partial sum) read: 28 bytes
    with fp32 moments, 20 with bf16; the replica kernel K times that."""
    import torch

    def launch(kernel, dtype, grid=(3, 1, 1), partials=1):
        return {"kernel": kernel, "meta": {"n": 1000, "grid": grid, "PARTIALS": partials,
                                           "exp_avg_ptr": torch.zeros(1, dtype=dtype)}}
    bytes_of = lambda *launches: perf_model.adam_bytes({"launches": list(launches)})  # noqa: E731
    assert bytes_of(launch("_adam_step_kernel", torch.float32)) == 28_000
    assert bytes_of(launch("_adam_step_kernel", torch.bfloat16)) == 20_000
    assert bytes_of(launch("_adam_step_kernel", torch.bfloat16, partials=4)) == 32_000
    assert bytes_of(launch("_replica_adam_kernel", torch.bfloat16, grid=(3, 8, 1))) == 8 * 20_000
