"""Micro-benchmarks of fastgan's fused ops against PyTorch, on a CUDA device.

fused_linear forward and forward+backward vs ``F.linear`` + activation (eager) and ``torch.compile`` of
the same, at the MLP GAN's shapes and at large ones; one whole G or D pass (``fused_mlp``) vs the
per-layer fused ops and PyTorch; the fused loss vs
``F.binary_cross_entropy_with_logits``. All contenders of one row are timed interleaved (CUDA events,
warm-up, median of windows). Achieved TFLOP/s and GB/s are reported against the card's ceilings,
measured in the same run. Records the run in ``results/<card>/runs.jsonl``; the latest: ``kernels[-quick].{json,md}``.

    python benchmarks/kernels.py            # the full grid
    python benchmarks/kernels.py --quick    # the GAN's layers at batch 128 and 4096, batch-16384 rows vs the ceilings
On a machine without CUDA it says so and exits 0: there is nothing honest to time.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TimeBudget, environment, interleaved_ms, markdown_table, measure_ceilings, new_run, write_results  # noqa: E402

# (in_features, out_features, activation) of the classic MLP GAN's layers, and wide ones.
GAN_LAYERS = [(100, 128, "leaky_relu"), (128, 128, "leaky_relu"), (128, 784, "sigmoid"),
              (784, 128, "leaky_relu"), (128, 1, "none")]
WIDE_LAYERS = [(1024, 1024, "leaky_relu"), (4096, 4096, "leaky_relu")]
BATCHES = [64, 128, 256, 1024, 4096, 16384, 65536]
QUICK_BATCHES = [128, 4096]


def _set_recompile_limit(n: int) -> None:
    import torch._dynamo.config as dynamo_config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, n)


def linear_rows(batches, layers, dtype, precision, with_compile=True):
    """One row per (batch, layer, fwd | fwd+bwd), yielded as soon as it is measured."""
    from fastgan import ops
    compiled = torch.compile(ops.fused_linear_reference, dynamic=False) if with_compile else None
    for m in batches:
        for k, n, activation in layers:
            if m * max(k, n) > (1 << 28):  # keep single tensors under 1 GiB
                continue
            x = torch.randn(m, k, device="cuda", dtype=dtype)
            w = (torch.randn(n, k, device="cuda", dtype=dtype) / k ** 0.5)
            b = torch.randn(n, device="cuda", dtype=dtype)
            dy = torch.randn(m, n, device="cuda", dtype=dtype)
            xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))

            def forward(fn):
                return lambda: fn(x, w, b, activation, 0.2)

            def forward_backward(fn):
                def run():
                    xg.grad = wg.grad = bg.grad = None
                    fn(xg, wg, bg, activation, 0.2).backward(dy)
                return run

            fns = {"torch": ops.fused_linear_reference, "fastgan": ops.fused_linear}
            if compiled is not None:
                fns["compile"] = compiled
            element = x.element_size()
            for mode, wrap, flops, bytes_moved in (
                    ("fwd", forward, 2 * m * n * k, (m * k + n * k + n + m * n) * element),
                    ("fwd+bwd", forward_backward, 6 * m * n * k,
                     (m * k + n * k + n + m * n + 2 * m * n + n * k + m * k + m * k + n * k + n) * element)):
                timings = interleaved_ms({name: wrap(fn) for name, fn in fns.items()})
                row = {"op": "fused_linear", "mode": mode, "batch": m, "in": k, "out": n, "activation": activation,
                       "dtype": str(dtype).removeprefix("torch."), "precision": precision,
                       "flops": flops, "bytes": bytes_moved, "timings": timings}
                _print_row(row)
                yield row


# The classic GAN's two networks, (widths, hidden activation, output activation)
GAN_MLPS = {"G": ((100, 128, 128, 784), "leaky_relu", "sigmoid"), "D": ((784, 128, 128, 1), "leaky_relu", "none")}


def mlp_rows(batches):
    """One whole network pass: ``fused_mlp`` (1 kernel forward, 2 backward) vs the per-layer fused ops
    (one kernel per layer forward, two backward) vs PyTorch (``F.linear`` + activation per layer)."""
    from fastgan import ops
    for m in batches:
        for net, (dims, hidden, out) in GAN_MLPS.items():
            spec = ops.MLPSpec(dims, True, hidden, out, 0.2)
            params = []
            for shape in spec.parameter_shapes():
                scale = shape[1] ** -0.5 if len(shape) == 2 else 0.1
                params.append((torch.randn(shape, device="cuda") * scale))
            flat = torch.cat([p.reshape(-1) for p in params])
            views, offset = [], 0
            for p in params:   # the whole-MLP op reads the parameters in place when they sit back to back
                views.append(flat[offset:offset + p.numel()].view(p.shape).requires_grad_())
                offset += p.numel()
            x = torch.randn(m, dims[0], device="cuda")
            dy = torch.randn(m, dims[-1], device="cuda")

            def per_layer(x, params, spec):
                for layer in range(spec.num_layers):
                    x = ops.fused_linear(x, params[2 * layer], params[2 * layer + 1], spec.activation(layer), 0.2)
                return x

            contenders = {"torch": ops.fused_mlp_reference, "fastgan-unfused": per_layer, "fastgan": ops.fused_mlp}
            macs = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
            for mode in ("fwd", "fwd+bwd"):
                def make(fn, mode=mode):
                    def run():
                        y = fn(x, views, spec)
                        if mode == "fwd+bwd":
                            for v in views:
                                v.grad = None
                            y.backward(dy)
                    return run
                timings = interleaved_ms({name: make(fn) for name, fn in contenders.items()})
                # the backward: dW of every layer and dX of every layer but the first (x needs no gradient)
                flops = 2 * m * macs if mode == "fwd" else 2 * m * (3 * macs - dims[0] * dims[1])
                moved = 4 * (m * (dims[0] + dims[-1]) + flat.numel()) * (1 if mode == "fwd" else 3)
                row = {"op": f"mlp {net}", "mode": mode, "batch": m, "in": dims[0], "out": dims[-1],
                       "activation": f"{hidden}/{out}", "dtype": "float32", "precision": ops.get_matmul_precision(),
                       "flops": flops, "bytes": moved, "timings": timings}
                _print_row(row)
                yield row


def loss_rows(batches):
    """The fused loss vs PyTorch's; and D's fused head (last Linear(128, 1) + loss) vs the two unfused."""
    from fastgan import ops
    for m in batches:
        logits = torch.randn(m, 1, device="cuda", requires_grad=True)
        target = torch.full((m, 1), 0.9, device="cuda")

        def fused():
            logits.grad = None
            ops.sigmoid_bce_with_logits(logits, 0.9).backward()

        def eager():
            logits.grad = None
            F.binary_cross_entropy_with_logits(logits, target).backward()

        timings = interleaved_ms({"torch": eager, "fastgan": fused})
        row = {"op": "sigmoid_bce", "mode": "fwd+bwd", "batch": m, "in": 1, "out": 1, "activation": "-",
               "dtype": "float32", "precision": "-", "flops": 10 * m, "bytes": 8 * m, "timings": timings}
        _print_row(row)
        yield row

        width = 128
        h = torch.randn(m, width, device="cuda", requires_grad=True)
        w = (torch.randn(1, width, device="cuda") / width ** 0.5).requires_grad_()
        b = torch.zeros(1, device="cuda", requires_grad=True)

        def head(loss_of):
            def run():
                h.grad = w.grad = b.grad = None
                loss_of().backward()
            return run

        timings = interleaved_ms({
            "torch": head(lambda: F.binary_cross_entropy_with_logits(F.linear(h, w, b), target)),
            "fastgan-unfused": head(lambda: ops.sigmoid_bce_with_logits(ops.fused_linear(h, w, b), 0.9)),
            "fastgan": head(lambda: ops.linear_bce_head(h, w, b, 0.9)),
        })
        row = {"op": "linear_bce_head", "mode": "fwd+bwd", "batch": m, "in": width, "out": 1, "activation": "-",
               "dtype": "float32", "precision": "-", "flops": 6 * m * width, "bytes": 8 * m * width,
               "timings": timings}
        _print_row(row)
        yield row


def _print_row(row):
    t = row["timings"]
    parts = [f"{name} {v['median_ms'] * 1e3:8.1f} us" if "median_ms" in v else f"{name} ERROR"
             for name, v in t.items()]
    print(f"{row['op']:12s} {row['mode']:7s} {row['dtype']:8s} M={row['batch']:<6d} {row['in']:>4d}->{row['out']:<4d} "
          f"{row['activation']:10s} " + " | ".join(parts), flush=True)


def table(rows, ceilings):
    header = ["op", "mode", "dtype", "batch", "in→out", "act", "torch µs", "compile µs",
              "fastgan-unfused µs (per layer)", "fastgan µs", "vs torch", "vs compile", "fastgan TFLOP/s",
              "% matmul ceiling", "fastgan GB/s"]
    body = []
    for r in rows:
        t = r["timings"]
        ms = {k: v.get("median_ms") for k, v in t.items()}
        ours = ms.get("fastgan")
        ceiling_key = "bf16_matmul_TFLOPs" if r["dtype"] == "bfloat16" else (
            "fp32_matmul_TFLOPs" if r["precision"] == "ieee" else "tf32_matmul_TFLOPs")
        tflops = r["flops"] / ours / 1e9 if ours else None
        body.append([
            r["op"], r["mode"], r["dtype"], r["batch"], f"{r['in']}→{r['out']}", r["activation"],
            *(f"{ms[k] * 1e3:.1f}" if ms.get(k) else "-" for k in ("torch", "compile", "fastgan-unfused", "fastgan")),
            *(f"{ms[k] / ours:.2f}×" if ms.get(k) and ours else "-" for k in ("torch", "compile")),
            f"{tflops:.2f}" if tflops else "-",
            f"{100 * tflops / ceilings[ceiling_key]:.0f}%" if tflops and r["op"] == "fused_linear" else "-",
            f"{r['bytes'] / ours / 1e6:.0f}" if ours else "-",
        ])
    return markdown_table(header, body)


def main(argv=None) -> int:
    new_run()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few key shapes only")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "both"], default=None,
                        help="default: both (--quick: float32, plus one large bf16 row)")
    parser.add_argument("--precision", choices=["tf32", "ieee"], default="tf32",
                        help="fp32 matmuls: tf32 tensor cores (default, for torch and fastgan alike) or exact")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="S",
                        help="start no row that would end past S seconds (the longest row so far as the guide)")
    parser.add_argument("--groups", nargs="+", choices=["large", "large-bf16", "gan", "mlp", "loss"], default=None,
                        help="with --quick: only these groups of rows, in this order (default: all, large first)")
    args = parser.parse_args(argv)
    if args.groups and not args.quick:
        parser.error("--groups selects among the --quick groups: add --quick")
    if not torch.cuda.is_available():
        print("benchmarks/kernels.py: skipped: no CUDA device on this machine; these benchmarks time GPU kernels "
              "and nothing is faked on a CPU. Run it (or benchmarks/device_check.sh) on a GPU machine.")
        return 0
    from fastgan import ops
    _set_recompile_limit(512)
    ops.set_matmul_precision(args.precision)
    torch.backends.cuda.matmul.allow_tf32 = args.precision == "tf32"
    env = environment()
    print(f"card: {env['card']} | torch {env['torch']} | triton {env['triton']} | driver {env.get('driver')}")
    ceilings = measure_ceilings()
    print("ceilings (measured now):", {k: round(v, 1) for k, v in ceilings.items()}, flush=True)
    fp32 = args.precision if args.precision else "tf32"
    if args.quick:
        # the headline first: the fused linear at batch 16,384 against the card's matmul ceilings; then the
        # GAN's layers at batch 128 and 4096 (fp32 on tf32 cores, as the trainer's default), the whole-MLP
        # rows and the losses; no torch.compile contender (each shape is a compile: the full run has them)
        groups = {"large": lambda: linear_rows([16384], [(784, 128, "leaky_relu"), (1024, 1024, "leaky_relu")],
                                               torch.float32, fp32, with_compile=False),
                  "large-bf16": lambda: linear_rows([16384], [(1024, 1024, "leaky_relu")], torch.bfloat16, "-",
                                                    with_compile=False),
                  "gan": lambda: linear_rows(QUICK_BATCHES, GAN_LAYERS, torch.float32, fp32, with_compile=False),
                  "mlp": lambda: mlp_rows([128, 4096, 16384]),
                  "loss": lambda: loss_rows(QUICK_BATCHES)}
        groups = [groups[name] for name in (args.groups or groups)]
    else:
        dtype_choice = args.dtype or "both"
        dtypes = {"float32": [torch.float32], "bfloat16": [torch.bfloat16],
                  "both": [torch.float32, torch.bfloat16]}[dtype_choice]
        groups = [lambda d=d: linear_rows(BATCHES, GAN_LAYERS + WIDE_LAYERS, d, fp32 if d == torch.float32 else "-")
                  for d in dtypes]
        groups += [lambda: mlp_rows([128, 1024, 4096, 16384, 65536]), lambda: loss_rows(BATCHES)]
    rows = []
    budget = TimeBudget(args.time_limit)

    def save():  # after every row, so a run cut short by a time limit still leaves what it measured
        not_run = (f"\n\nStopped by --time-limit {args.time_limit:g} s before: {budget.skipped[0]} and what follows."
                   if budget.skipped else "")
        text = (f"# fused op micro-benchmarks — {env['card']}, {env['date']}\n\n"
                f"torch {env['torch']}, triton {env['triton']}, driver {env.get('driver')}. Ceilings measured in this "
                "run: " + ", ".join(f"{k} {v:.1f}" for k, v in ceilings.items())
                + ". Times are medians of interleaved CUDA-event windows after warm-up (autotuning included in "
                "the warm-up).\n\n" + table(rows, ceilings) + not_run)
        return write_results("kernels", {"environment": env, "ceilings": ceilings, "rows": rows,
                                         "quick": args.quick, "not_run": budget.skipped}, text, args.out,
                             quick=args.quick)

    json_path, md_path = save()[:2]
    for group in groups:
        rows_of_group = group()
        while budget.allows("the next row"):
            row = next(rows_of_group, None)
            if row is None:
                break
            budget.done()
            rows.append(row)
            save()
        if budget.skipped:
            break
    json_path, md_path = save()[:2]
    print(f"wrote {json_path} and {md_path}" + (f"; stopped by --time-limit after {len(rows)} rows"
                                                 if budget.skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
