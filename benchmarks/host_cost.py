"""Host cost of fastgan's ops: the Python-side microseconds of one call with its kernel launches stubbed out.

Without a CUDA graph every op call pays its host cost (checks, autograd, output allocation, the launch grid,
Triton's launcher) before the GPU sees a kernel; the H200 run measured the per-layer step at 0.60x eager there.
This benchmark measures fastgan's side of it on any machine: each Triton kernel of ``fastgan.ops`` is replaced
by a stub that evaluates the launch grid and returns, so what is timed is everything but the launch itself
(Triton's launcher, which needs a GPU to run, is not in it). Beside it, PyTorch's ``F.linear`` + activation on
8 x 8 tensors, where its arithmetic is negligible: the host cost of the eager ops fastgan replaces.

On the CPU it needs ``TRITON_INTERPRET=1`` (set here when unset) so the ops take their Triton path; on CUDA it
stubs the same launches, then times every call again with its kernels launched (rows "(launched)": Triton's
launcher included, each window ending with a synchronisation; the tiny layers keep the GPU ahead). Median of
windows, the contenders taking turns window by window, warm-up apart; each row also as a multiple of PyTorch's
call of the same pass (this shared CPU's speed drifts by tens of percent: compare runs by that ratio). Records
the run in ``results/<card>/runs.jsonl``; the latest: ``host_cost.{json,md}``.

    python benchmarks/host_cost.py [--launched] [--label NAME] [--out DIR]
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")   # (before fastgan is imported: it reads it once)

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, markdown_table, new_run, write_results  # noqa: E402

import fastgan.ops as ops  # noqa: E402
from fastgan.profiling import stubbed_launches  # noqa: E402

# small widths, so that what the CPU computes for real (output allocation, the whole-MLP op's parameter
# concatenation) stays negligible beside the host path, which is the same at any width
LAYER = (128, 16, 16)   # rows, in, out
D_DIMS = (16, 16, 16, 1)


TORCH_ROW = {"forward": "F.linear + leaky_relu forward", "forward+backward": "F.linear + leaky_relu forward+backward"}


def interleaved_microseconds(calls_of: dict, calls: int, windows: int, warmup: int = 50, sync=None) -> dict:
    """``{name: {"median_us", "min_us", "max_us"}}`` per call over ``windows`` windows of ``calls`` calls each,
    the contenders taking turns window by window, so a machine whose speed drifts slows them alike; ``sync``
    (e.g. ``torch.cuda.synchronize``) ends each window, inside its time."""
    for fn in calls_of.values():
        for _ in range(warmup):
            fn()
    per_call = {name: [] for name in calls_of}
    for _ in range(windows):
        for name, fn in calls_of.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            if sync is not None:
                sync()
            per_call[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: {"median_us": statistics.median(w), "min_us": min(w), "max_us": max(w)}
            for name, w in per_call.items()}


def contenders(device: torch.device) -> dict:
    """name -> (what it is, the call): fastgan's ops (stubbed launches) and PyTorch's eager ops."""
    rows, fan_in, fan_out = LAYER
    x = torch.randn(rows, fan_in, device=device)
    weight = torch.randn(fan_out, fan_in, device=device, requires_grad=True)
    bias = torch.randn(fan_out, device=device, requires_grad=True)
    dy = torch.randn(rows, fan_out, device=device)
    spec = ops.MLPSpec(D_DIMS, hidden_activation="leaky_relu", output_activation="none", negative_slope=0.2)
    params, flat, offset = [], torch.randn(spec.numel, device=device), 0
    for shape in spec.parameter_shapes():   # back to back in one buffer, as FusedMLP keeps them (no copy a call)
        params.append(torch.nn.Parameter(torch.empty(0, device=device)))
        params[-1].data = flat[offset:offset + math.prod(shape)].view(shape)
        offset += math.prod(shape)
    xs, ws, bs = (torch.randn(shape, device=device, requires_grad=grad)
                  for shape, grad in (((8, 8), False), ((8, 8), True), ((8,), True)))

    def linear_forward():
        with torch.no_grad():
            ops.fused_linear(x, weight, bias, "leaky_relu", 0.2)

    # gradients by autograd.grad: no accumulation into .grad (CPU arithmetic here, one more launch on a GPU)
    def linear_both():
        torch.autograd.grad(ops.fused_linear(x, weight, bias, "leaky_relu", 0.2), (weight, bias), dy)

    def mlp_forward():
        with torch.no_grad():
            ops.fused_mlp(x, params, spec)

    def mlp_both():
        torch.autograd.grad(ops.fused_mlp(x, params, spec), params, dy[:, :1])

    def torch_forward():
        with torch.no_grad():
            F.leaky_relu(F.linear(xs, ws, bs), 0.2)

    def torch_both():
        torch.autograd.grad(F.leaky_relu(F.linear(xs, ws, bs), 0.2), (ws, bs), xs)

    layer = f"{rows}x{fan_in} -> {fan_out}"
    return {"fused_linear forward": (f"fastgan, {layer}, launches stubbed", linear_forward),
            "fused_linear forward+backward": (f"fastgan, {layer}, launches stubbed", linear_both),
            "fused_mlp forward": (f"fastgan, D {D_DIMS}, launches stubbed", mlp_forward),
            "fused_mlp forward+backward": (f"fastgan, D {D_DIMS}, launches stubbed", mlp_both),
            "F.linear + leaky_relu forward": ("PyTorch eager, 8x8 (arithmetic negligible)", torch_forward),
            "F.linear + leaky_relu forward+backward": ("PyTorch eager, 8x8 (arithmetic negligible)", torch_both)}


def _calls(contenders_: dict) -> dict:
    return {name: fn for name, (_, fn) in contenders_.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per window (default 500)")
    parser.add_argument("--windows", type=int, default=9, help="windows per contender (default 9)")
    parser.add_argument("--launched", action="store_true",
                        help="also time the calls with their kernels launched (on by itself on CUDA; on a CPU the "
                             "interpreter runs them: that checks the path, its times are the interpreter's)")
    parser.add_argument("--label", default=None, help="a name for this run's record (e.g. the commit measured)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not ops.use_triton(torch.empty(0, device=device)):
        print("host_cost: the ops take their PyTorch path here (no CUDA, TRITON_INTERPRET unset before import): "
              "nothing to measure")
        return 0
    new_run()
    rows, results, warmup = [], {}, min(50, args.calls)
    with stubbed_launches() as stubbed:
        calls = contenders(device)
        modes = [("", calls, interleaved_microseconds(_calls(calls), args.calls, args.windows, warmup))]
    if device.type == "cuda" or args.launched:   # the kernels launched: Triton's launcher in, the GPU keeping up
        calls = {name: (what.replace("launches stubbed", "launched"), fn) for name, (what, fn) in
                 contenders(device).items()}
        sync = torch.cuda.synchronize if device.type == "cuda" else None
        modes.append((" (launched)", calls, interleaved_microseconds(_calls(calls), args.calls, args.windows,
                                                                    warmup, sync)))
    for suffix, calls, timed in modes:
        for name, (what, _) in calls.items():
            # against PyTorch's eager call of the same pass, timed in the same windows
            torch_row = timed[TORCH_ROW["forward+backward" if name.endswith("forward+backward") else "forward"]]
            row = {"what": what, **timed[name], "x_pytorch": timed[name]["median_us"] / torch_row["median_us"]}
            results[name + suffix] = row
            rows.append([name + suffix, what, row["median_us"], row["min_us"], row["max_us"],
                         f"{row['x_pytorch']:.2f}x"])
    table = markdown_table(["call", "what", "median µs", "min µs", "max µs", "median / PyTorch's"], rows)
    env = environment()
    payload = {"environment": env, "device": str(device), "stubbed_kernels": stubbed, "calls": args.calls,
               "windows": args.windows, "warmup": warmup, "results": results}
    print(table)
    write_results("host_cost", payload, table, out_dir=args.out, label=args.label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
