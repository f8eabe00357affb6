#!/usr/bin/env python3
"""The Hopper compile lane: every Triton kernel fastgan launches, compiled for a GPU on a CPU-only machine.

Triton's interpreter (how CI runs the kernels) checks their arithmetic, not what the real compiler
enforces: tl.dot shapes, layouts, shared memory, registers. This script runs the real pipeline (TTIR ->
TTGIR -> LLVM -> PTX -> ptxas cubin, all bundled in the triton wheel) for ``sm_<arch>`` with no GPU:

1. fastgan's own code runs on small CPU tensors with every kernel launch recorded instead of run: the
   trainer's step (precision fp32 / tf32 / bf16 x torch Adam / FlatAdam), the maxout op and, unless
   ``--quick``, every op over fp32 / fp16 / bf16, each activation, bias or not, both fp32 matmul
   precisions, the tests' odd shapes, the single- and multi-program (atomic) paths;
2. each recorded launch is compiled through Triton's own ``warmup`` (the same specialisation a launch
   makes) for every autotune config of its kernel, in ``--jobs`` processes;
3. one line per distinct compile: OK, or FAIL when it does not compile, needs more shared memory than
   a block may have (an OutOfResources at launch), or spills registers to local memory; with registers,
   shared memory, whether tl.dot became wgmma/mma, and the approximate PTX math it uses.

    python tools/compile_check.py                 # everything, sm_90 (H100/H200)
    python tools/compile_check.py --quick         # the trainer's launches (every config) and the maxout op
    python tools/compile_check.py --arch 80       # another target (A100)

Exit status 0 when every compile is OK, 1 if any fails, 2 if the check itself cannot run.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Shared memory one block may opt into (cudaDevAttrMaxSharedMemoryPerBlockOptin), by compute capability.
SHARED_MEMORY_LIMIT = {80: 166_912, 86: 101_376, 89: 101_376, 90: 232_448, 100: 232_448, 120: 101_376}
APPROXIMATE_MATH = re.compile(r"\b((?:ex2|lg2|sin|cos|tanh|rcp|rsqrt|sqrt|div)\.(?:approx|full)(?:\.ftz)?\.f32)\b")
# What each approximate instruction costs in accuracy (PTX ISA), for the report.
APPROXIMATE_BOUNDS = {"ex2.approx": "2 ulp", "lg2.approx": "2^-22 abs", "rcp.approx": "1 ulp",
                      "sqrt.approx": "2^-23 rel", "rsqrt.approx": "2^-22.9 rel", "div.full": "2 ulp"}


# -- in each worker: record what fastgan launches, then compile it ------------------------------------------

class _CompileOnlyDriver:
    """Triton's active driver for a machine with no GPU: enough for specialisation and compilation."""

    def __init__(self, target):
        self.target = target

    def is_active(self):
        return True

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        import torch
        return torch.device("cpu")

    def __getattr__(self, name):
        raise RuntimeError(f"compile-only driver: {name} needs a GPU")


def _recording(launches: list, grids: list | None = None):
    """Patch Triton so a launch is recorded (kernel, args, kwargs), not run, and its grid appended to ``grids``
    if given (a tuple, or Triton's callable of the launch's meta-parameters); returns the undo function."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction
    saved = (JITFunction.run, Autotuner.run)

    def record_jit(self, *args, grid=None, warmup=False, **kwargs):
        launches.append((self, args, kwargs))
        if grids is not None:
            grids.append(grid)

    def record_autotuned(self, *args, **kwargs):
        grid, _ = kwargs.pop("grid", None), kwargs.pop("warmup", None)
        launches.append((self, args, kwargs))
        if grids is not None:
            grids.append(grid)

    JITFunction.run, Autotuner.run = record_jit, record_autotuned

    def undo():
        JITFunction.run, Autotuner.run = saved
    return undo


def _cases(quick: bool):
    """(label, function) pairs: the code paths whose launches are compiled."""
    import torch
    import fastgan
    from fastgan import ops

    def trainer_step(precision, fused_optimizer, kernels="triton", batch_size=128, **options):
        def run():
            torch.manual_seed(0)
            trainer = fastgan.GANTrainer(fastgan.MLPGenerator(), fastgan.MLPDiscriminator(), torch.rand(256, 784),
                                         batch_size=batch_size, device="cpu", kernels=kernels, precision=precision,
                                         fused_optimizer=fused_optimizer, **options)
            trainer.step()
        return run

    cases = [(f"trainer {precision} optimizer={optimizer or 'adam'}", trainer_step(precision, optimizer))
             for precision in ("fp32", "tf32", "bf16") for optimizer in (False, "flat")]
    # triton-mlp's fused step; at batch 16,384 its weight gradients are split and Adam adds the partials
    cases += [(f"trainer triton-mlp {precision} batch={batch}", trainer_step(precision, False, "triton-mlp", batch))
              for precision in ("fp32", "tf32", "bf16") for batch in (128, 16_384)]
    # its folded Adam with bf16 moments (stochastically rounded in the weight-gradient kernel)
    cases.append(("trainer triton-mlp tf32 batch=128 adam_state=bf16",
                  trainer_step("tf32", "flat", "triton-mlp", 128, adam_state="bf16")))
    # K replicas: the fused linear kernels with their grid axis over replicas (strided stacked weights)
    cases += [(f"trainer replicas=3 {precision}", trainer_step(precision, False, replicas=3))
              for precision in ("fp32", "tf32", "bf16")]
    # triton-mlp's fused step for 8 replicas: the whole-MLP kernels' replica axis, a real label per replica,
    # FlatAdam's replica kernel (adding 8 partial sums at batch 16,384)
    cases += [(f"trainer triton-mlp replicas=8 {precision} batch={batch}",
               trainer_step(precision, False, "triton-mlp", batch, replicas=8, real_label=[0.9, 1.0] * 4))
              for precision, batch in (("tf32", 128), ("bf16", 128), ("tf32", 16_384))]

    # PacGAN's D: ops.maxout, values + winner forward, the whole input gradient backward
    def maxout(rows, units, pieces, dtype, strided):
        def run():
            x = torch.randn(rows, units * pieces + strided, dtype=dtype)[:, strided:].requires_grad_()
            ops.maxout(x, pieces).backward(torch.ones(rows, units, dtype=dtype))
        return run

    for name, dtype in {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.items():
        for rows, units, pieces, strided in ((100, 200, 5, 0), (7, 13, 3, 1), (1, 1, 64, 0)):
            cases.append((f"maxout {name} {rows}x{units}x{pieces}{' strided' if strided else ''}",
                          maxout(rows, units, pieces, dtype, strided)))
    if quick:
        return cases
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

    def linear(m, k, n, dtype, activation, bias, precision):
        def run():
            x = torch.randn(m, k, dtype=dtype, requires_grad=True)
            w = torch.randn(n, k, dtype=dtype, requires_grad=True)
            b = torch.randn(n, dtype=dtype, requires_grad=True) if bias else None
            with ops.matmul_precision(precision):
                y = ops.fused_linear(x, w, b, activation, 0.2)
                y.backward(torch.ones_like(y))
        return run

    for name, dtype in dtypes.items():
        for activation in ops.ACTIVATIONS:
            for bias in (True, False):
                for precision in (("tf32", "ieee") if dtype == torch.float32 else ("tf32",)):
                    cases.append((f"fused_linear {name} {activation} bias={bias} {precision} 128x784->128",
                                  linear(128, 784, 128, dtype, activation, bias, precision)))
    for name, dtype in dtypes.items():   # batch 4096: the weight gradient in 8 batch splits (a splits argument > 1)
        cases.append((f"fused_linear {name} leaky_relu bias=True tf32 4096x128->128 (split dW)",
                      linear(4096, 128, 128, dtype, "leaky_relu", True, "tf32")))
    for m, k, n in [(1, 1, 1), (7, 13, 129), (129, 127, 7), (20, 784, 1), (33, 100, 128)]:  # the tests' shapes
        for precision in ("tf32", "ieee"):
            cases.append((f"fused_linear fp32 tanh {precision} {m}x{k}->{n}",
                          linear(m, k, n, torch.float32, "tanh", True, precision)))

    def bce(n, dtype, target, reduction):
        def run():
            logits = torch.randn(n, 1, dtype=dtype, requires_grad=True)
            t = torch.rand(n, 1, dtype=dtype) if target == "tensor" else target
            ops.sigmoid_bce_with_logits(logits, t, reduction).sum().backward()
        return run

    for name, dtype in dtypes.items():
        for target in (0.9, "tensor"):
            for reduction in ("mean", "sum", "none"):
                cases.append((f"sigmoid_bce {name} target={target} {reduction}", bce(128, dtype, target, reduction)))
            cases.append((f"sigmoid_bce {name} target={target} atomic", bce(70_000, dtype, target, "mean")))

    def head(m, width, dtype, bias, frozen):
        def run():
            h = torch.randn(m, width, dtype=dtype, requires_grad=True)
            w = torch.randn(1, width, dtype=dtype, requires_grad=not frozen)
            b = torch.randn(1, dtype=dtype, requires_grad=not frozen) if bias else None
            ops.linear_bce_head(h, w, b, 0.9).backward()
        return run

    for name, dtype in dtypes.items():
        for width in (8, 128, 300):
            for m in (128, 5000):
                for bias in (True, False):
                    for frozen in (False, True):
                        cases.append((f"linear_bce_head {name} {m}x{width} bias={bias} frozen={frozen}",
                                      head(m, width, dtype, bias, frozen)))

    def mlp(dims, bias, hidden, out, precision, rows=37, bf16=False):
        def run():
            spec = ops.MLPSpec(dims, bias, hidden, out, 0.2)
            x = torch.randn(rows, dims[0], requires_grad=True)
            params = [torch.randn(s, requires_grad=True) for s in spec.parameter_shapes()]
            with ops.matmul_precision(precision), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = ops.fused_mlp(x, params, spec)
            y.backward(torch.ones_like(y))
        return run

    # The widths are runtime values in these kernels: variants differ by depth, bias, activations and
    # precision, so every activation appears in each slot, 1-4 layers, bias or not, once per precision.
    for i, (dims, bias, hidden, out) in enumerate([
            ((7, 129), False, "relu", "sigmoid"), ((13, 33, 1), True, "leaky_relu", "none"),
            ((5, 17, 9, 3), False, "tanh", "tanh"), ((3, 40, 7, 33, 2), True, "sigmoid", "relu"),
            ((9, 16, 784), True, "none", "leaky_relu")]):
        cases.append((f"fused_mlp {dims} bias={bias} {hidden}/{out} tf32", mlp(dims, bias, hidden, out, "tf32")))
        if i in (1, 2):
            cases.append((f"fused_mlp {dims} bias={bias} {hidden}/{out} ieee", mlp(dims, bias, hidden, out, "ieee")))
            cases.append((f"fused_mlp {dims} bias={bias} {hidden}/{out} bf16",
                          mlp(dims, bias, hidden, out, "tf32", bf16=True)))
    cases.append(("fused_mlp 1024-wide hidden, 10,000 rows (split reduction)",
                  mlp((784, 1024, 1024, 784), True, "leaky_relu", "tanh", "tf32", rows=10_000)))

    def spectral():
        flat, u = torch.randn(784 * 128 + 128 * 128 + 128), torch.randn(257)
        ops.spectral.spectral_normalize_([flat[:100352].view(128, 784), flat[100352:116736].view(128, 128),
                                          flat[116736:].view(1, 128)], list(u.split([128, 128, 1])))

    cases.append(("spectral_normalize_ (D's three layers)", spectral))

    for rows in (100, 1):   # a size of 1 specialises to a constant unless the kernel says not to
        cases.append((f"sample_batch from {rows} rows", lambda rows=rows: ops.sampler.sample_batch(
            torch.rand(rows, 784), torch.empty(128, 784), torch.empty(128, 100), torch.tensor([1]),
            torch.zeros(1, dtype=torch.int64))))
    for uniform in (False, True):
        cases.append((f"philox_fill ({'uniform' if uniform else 'normal'}), 8 replicas",
                      lambda uniform=uniform: ops.sampler.philox_fill(torch.empty(8, 100, 2), torch.arange(8),
                                                                      torch.zeros(1, dtype=torch.int64), uniform)))
    cases.append(("sample_batch, 8 replicas", lambda: ops.sampler.sample_batch(
        torch.rand(100, 2), torch.empty(8, 100, 2), torch.empty(8, 100, 16), torch.arange(8),
        torch.zeros(1, dtype=torch.int64))))

    def adam(n, moments=torch.float32):
        def run():
            p, g, m, v = torch.randn(n), torch.randn(n), torch.zeros(n, dtype=moments), torch.zeros(n, dtype=moments)
            ops.adam_step(p, g, m, v, torch.zeros((), dtype=torch.int64), 1e-3, 0.5, 0.999, 1e-8)
        return run

    cases += [(f"adam_step n={n}", adam(n)) for n in (64, 1000, 247_697)]
    cases.append(("adam_step n=247697, bf16 moments", adam(247_697, torch.bfloat16)))
    cases.append(("replica_adam_step, 8 replicas, bf16 moments", lambda: ops.adam.replica_adam_step(
        torch.randn(8, 1000), torch.randn(8, 1000), torch.zeros(8, 1000, dtype=torch.bfloat16),
        torch.zeros(8, 1000, dtype=torch.bfloat16), torch.zeros(1, dtype=torch.int64),
        ops.adam.replica_adam_hyper([1e-3] * 8, [(0.5, 0.999)] * 8), 1e-8)))
    cases.append(("adam_step from 4 partial sums", lambda: ops.adam_step(
        torch.randn(1000), torch.randn(4000), torch.zeros(1000), torch.zeros(1000), torch.zeros((), dtype=torch.int64),
        1e-3, 0.5, 0.999, 1e-8, partials=4)))
    cases.append(("replica_adam_step, 8 replicas", lambda: ops.adam.replica_adam_step(
        torch.randn(8, 1000), torch.randn(8, 1000), torch.zeros(8, 1000), torch.zeros(8, 1000),
        torch.zeros(1, dtype=torch.int64), ops.adam.replica_adam_hyper([1e-3] * 8, [(0.5, 0.999)] * 8), 1e-8, 0.01)))
    cases.append(("replica_adam_step, 8 replicas from 3 partial sums", lambda: ops.adam.replica_adam_step(
        torch.randn(8, 1000), torch.randn(8, 3, 1000), torch.zeros(8, 1000), torch.zeros(8, 1000),
        torch.zeros(1, dtype=torch.int64), ops.adam.replica_adam_hyper([1e-3] * 8, [(0.5, 0.999)] * 8), 1e-8,
        partials=3)))
    return cases


def _describe(kernel, args, kwargs) -> str:
    """The launch's variant: pointer dtypes and constexpr keyword arguments (block sizes come per config)."""
    import torch
    short = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int64: "i64"}
    dtypes = sorted({short.get(a.dtype, str(a.dtype)) for a in args if isinstance(a, torch.Tensor)})
    constants = " ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
    return f"[{'/'.join(dtypes)}] {constants}".strip()


def _resource_usage(cubin: bytes) -> dict:
    """Registers, local memory (spills) and shared memory per kernel, from the cubin (cuobjdump)."""
    from triton import knobs
    tool = Path(knobs.nvidia.ptxas.path).with_name("cuobjdump")
    if not tool.exists():
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True,
                              timeout=60).stdout
    return {key: int(m.group(1)) for key in ("REG", "LOCAL", "SHARED") if (m := re.search(rf"\b{key}:(\d+)", text))}


def _dot_kind(ptx: str) -> str:
    """What tl.dot became in the PTX: Hopper's wgmma, mma.sync, or "-" (no tensor-core instruction)."""
    return "wgmma" if "wgmma.mma_async" in ptx else "mma" if re.search(r"\bmma\.sync", ptx) else "-"


def _compile_only(arch: int) -> None:
    """This process compiles for ``sm_<arch>`` with no GPU, and fastgan's CPU tensors take the Triton path
    (whose launches are then recorded, never run). Call it before triton is used; torch comes first."""
    import torch  # noqa: F401 - imported before triton, as fastgan does
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver

    sys.path.insert(0, str(REPO))
    driver.set_active(_CompileOnlyDriver(GPUTarget("cuda", arch, 32)))
    import fastgan.ops._runtime as runtime
    modules = [m for name, m in sys.modules.items() if name.startswith("fastgan") and hasattr(m, "use_triton")]
    for module in modules:
        module.use_triton = lambda tensor: runtime.HAS_TRITON and not runtime._reference_only


def _worker(arch: int, quick: bool, share: int, shares: int) -> dict:
    """Record every case's launches, compile this worker's share of (launch, config) units."""
    _compile_only(arch)
    import triton
    from triton.runtime.autotuner import Autotuner

    notes, launches, labels = [], [], []
    undo = _recording(launches)
    try:
        for label, run in _cases(quick):
            before = len(launches)
            try:
                run()
            except Exception as e:  # noqa: BLE001 - reported; the other cases still run
                notes.append(f"ERROR exercising {label}: {type(e).__name__}: {e}")
            labels += [label] * (len(launches) - before)
    finally:
        undo()

    results = []
    for index, ((kernel, args, kwargs), label) in enumerate(zip(launches, labels)):
        configs = list(enumerate(kernel.configs)) if isinstance(kernel, Autotuner) else [(None, None)]
        jit = kernel.fn if isinstance(kernel, Autotuner) else kernel
        variant = _describe(kernel, args, kwargs)
        for config_index, config in configs:
            unit = f"{jit.__name__} {variant} {config_index}"
            if zlib.crc32(unit.encode()) % shares != share:
                continue
            options = dict(kwargs, **(config.all_kwargs() if config is not None else {}))
            block = " ".join(f"{k}={v}" for k, v in config.kwargs.items()) if config is not None else ""
            entry = {"kernel": jit.__name__, "variant": variant, "label": label,
                     "config": None if config is None else
                     f"cfg {config_index}/{len(configs)} [{block} warps={config.num_warps} stages={config.num_stages}]"}
            start = time.time()
            try:
                compiled = jit.warmup(*args, grid=(1,), **options)
            except Exception as e:  # noqa: BLE001 - a failed compile is the finding
                entry["error"] = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
                results.append(entry)
                continue
            ptx = compiled.asm.get("ptx", "")
            entry.update(hash=compiled.hash, shared=compiled.metadata.shared, seconds=time.time() - start,
                         usage=_resource_usage(compiled.asm.get("cubin", b"")),
                         dot=_dot_kind(ptx),
                         approximate=sorted(set(APPROXIMATE_MATH.findall(ptx))))
            results.append(entry)
    # every kernel of the package (by convention, the @triton.jit functions named *_kernel) must be launched
    # by some case, or it was never compiled here
    from triton.runtime.jit import JITFunction
    kernels = {name for module in list(sys.modules.values()) if getattr(module, "__name__", "").startswith("fastgan")
               for name, obj in vars(module).items()
               if name.endswith("_kernel") and isinstance(obj, (JITFunction, Autotuner))}
    launched = {(k.fn if isinstance(k, Autotuner) else k).__name__ for k, _, _ in launches}
    return {"notes": notes, "results": results, "triton": triton.__version__, "launches": len(launches),
            "never_launched": sorted(kernels - launched)}


# -- the parent: spread the work, merge, report ---------------------------------------------------------

def _verdict(entry: dict, shared_limit: int) -> tuple[str, list[str]]:
    if "error" in entry:
        return "FAIL", [entry["error"]]
    problems = []
    if entry["shared"] > shared_limit:
        problems.append(f"{entry['shared']} B of shared memory > {shared_limit} B per block: OutOfResources at launch")
    if entry["usage"].get("LOCAL", 0):
        problems.append(f"{entry['usage']['LOCAL']} B of local memory per thread: registers spill")
    return ("FAIL" if problems else "OK"), problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="compute capability (default 90: H100/H200)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiler processes")
    parser.add_argument("--quick", action="store_true",
                        help="only the trainer's launches (every config) and the maxout op")
    args = parser.parse_args(argv)
    shared_limit = SHARED_MEMORY_LIMIT.get(args.arch, 101_376)
    started = time.time()
    cache = tempfile.TemporaryDirectory(prefix="fastgan-compile-check-")
    # Set before any process imports triton: compile for real (no interpreter), keep every autotune config,
    # and a fresh cache so every kernel really compiles.
    os.environ.update(TRITON_INTERPRET="0", FASTGAN_AUTOTUNE="1", TRITON_CACHE_DIR=cache.name)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9 warns unless it is set: its default
    import multiprocessing
    jobs = max(1, args.jobs)
    try:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_worker, [args.arch] * jobs, [args.quick] * jobs, range(jobs), [jobs] * jobs))
    except Exception:  # noqa: BLE001
        print("ERROR the compile check could not run:\n" + traceback.format_exc(), flush=True)
        return 2
    finally:
        cache.cleanup()
    print(f"compile check: sm_{args.arch}, triton {parts[0]['triton']}, {parts[0]['launches']} launches recorded "
          f"({'trainer only' if args.quick else 'trainer and every op variant'}), shared-memory limit "
          f"{shared_limit} B, {jobs} processes")
    for note in dict.fromkeys(n for p in parts for n in p["notes"]):
        print(note)
    never = [] if args.quick else parts[0]["never_launched"]
    for name in never:
        print(f"FAIL {name}: no case launches it, so it was never compiled (add one to _cases)")
    distinct = {}
    for entry in (e for p in parts for e in p["results"]):
        key = entry.get("hash") or (entry["kernel"], entry["variant"], entry["config"], entry["error"])
        distinct.setdefault(key, dict(entry, labels=[]))["labels"].append(entry["label"])
    counts = {"OK": 0, "FAIL": 0}
    approximate_seen = set()
    for entry in sorted(distinct.values(), key=lambda e: (e["kernel"], e["variant"], e["config"] or "")):
        status, problems = _verdict(entry, shared_limit)
        counts[status] += 1
        origin = entry["labels"][0] + (f" (+{len(entry['labels']) - 1})" if len(entry["labels"]) > 1 else "")
        head = f"{status:4s} {entry['kernel']} {entry['config'] or ''} {entry['variant']}".replace("  ", " ")
        if "error" not in entry:
            usage = entry["usage"]
            approximate_seen.update(entry["approximate"])
            head += (f" | smem {entry['shared']} B, regs {usage.get('REG', '?')}, local {usage.get('LOCAL', '?')} B, "
                     f"dot {entry['dot']}" + (f", {' '.join(entry['approximate'])}" if entry["approximate"] else ""))
        print(f"{head} | from: {origin}")
        for problem in problems:
            print(f"       {problem}")
    bounds = ", ".join(f"{name} ({APPROXIMATE_BOUNDS.get(name.rsplit('.', 1)[0].replace('.ftz', ''), '?')})"
                       for name in sorted(approximate_seen))
    print(f"approximate instructions in the PTX: {bounds or 'none'}")
    print(f"SUMMARY: {counts['OK']} OK, {counts['FAIL']} FAIL of {len(distinct)} distinct compiles "
          f"(sm_{args.arch}, triton {parts[0]['triton']}) in {time.time() - started:.0f} s")
    return 1 if counts["FAIL"] or never or any(p["notes"] for p in parts) else 0


if __name__ == "__main__":
    sys.exit(main())
