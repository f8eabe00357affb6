"""The GAN training step, every backend against eager, side by side in one run.

For each (model width, batch size) row, every backend trains the same models (same init, same seed)
and is timed *interleaved*: window after window, backend after backend, so drift hits all alike.
Reported per backend: ms/step and steps/s (median of windows, with the 20-80% spread), speedup vs
eager in the same row, set-up time (first step: compile/capture/autotune) apart from steady state,
kernel launches per step (torch.profiler on CUDA; Triton launches counted by fastgan on CPU), peak
device memory, and achieved TFLOP/s from the FLOP count of the step (counted from the models' layers).
A backend that is not available yet, or needs hardware this machine lacks, is a row marked skipped
with the reason; nothing is faked.

    python benchmarks/train_step.py --quick       # CPU or GPU: tiny sizes, a few windows (CI runs it)
    python benchmarks/train_step.py               # GPU: widths 128/512/1024 x batch 64..16384
    python benchmarks/train_step.py --replicas 1 4 16 64 256   # K GANs at once: aggregate GAN-steps/s
                                                  # against K per backend (benchmarks/replicas.py's sweep)
Records the run in results/<card>/runs.jsonl; the latest run: train_step[-quick].{json,md} and
-{steps_per_s,speedup}.png (the pictures of every run under runs/, named by its id: benchmarks/results/README.md).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (TimeBudget, environment, markdown_table, new_run, run_steps, seconds_per_step,  # noqa: E402
                    write_results)

import fastgan  # noqa: E402
from fastgan import ops  # noqa: E402
from fastgan.nn.presets import PRESETS  # noqa: E402


@dataclass(frozen=True)
class Backend:
    name: str
    options: dict            # GANTrainer keyword arguments
    needs_cuda: bool = False


# Each row is what its name says (fast=False: nothing decided for it), but "defaults": GANTrainer as a user makes
# it, the settings its fast path picks for the device; on a GPU it should equal the best row.
BACKENDS = [
    Backend("eager", {"kernels": "torch"}),
    Backend("eager+graph", {"kernels": "torch", "cuda_graph": True}, needs_cuda=True),
    Backend("compile", {"kernels": "torch", "compile": True}),
    Backend("compile(reduce-overhead)", {"kernels": "torch", "compile": "reduce-overhead"}, needs_cuda=True),
    Backend("triton", {"kernels": "triton"}),
    Backend("triton+flat_adam", {"kernels": "triton", "fused_optimizer": "flat"}),
    Backend("triton+torch_fused_adam", {"kernels": "triton", "fused_optimizer": "torch"}),
    Backend("triton+graph", {"kernels": "triton", "cuda_graph": True}, needs_cuda=True),
    Backend("triton+graph+flat_adam", {"kernels": "triton", "cuda_graph": True, "fused_optimizer": "flat"},
            needs_cuda=True),
    Backend("triton+graph(k=8)", {"kernels": "triton", "cuda_graph": True, "steps_per_replay": 8}, needs_cuda=True),
    Backend("triton+graph(k=8)+flat_adam", {"kernels": "triton", "cuda_graph": True, "steps_per_replay": 8,
                                            "fused_optimizer": "flat"}, needs_cuda=True),
    Backend("triton-mlp", {"kernels": "triton-mlp"}),
    Backend("triton-mlp+graph", {"kernels": "triton-mlp", "cuda_graph": True}, needs_cuda=True),
    Backend("triton-mlp+graph(k=8)", {"kernels": "triton-mlp", "cuda_graph": True, "steps_per_replay": 8},
            needs_cuda=True),
    Backend("triton+graph(k=8)+torch_fused_adam", {"kernels": "triton", "cuda_graph": True, "steps_per_replay": 8,
                                                   "fused_optimizer": "torch"}, needs_cuda=True),
    # fastgan's native CUDA kernels (kernels/, built with CMake): a row that says so where the library is missing
    Backend("cuda", {"kernels": "cuda"}, needs_cuda=True),
    Backend("cuda+graph", {"kernels": "cuda", "cuda_graph": True}, needs_cuda=True),
    Backend("cuda+graph(k=8)", {"kernels": "cuda", "cuda_graph": True, "steps_per_replay": 8}, needs_cuda=True),
    Backend("defaults", {"fast": True}),
]
WIDTHS = [128, 512, 1024]
BATCHES = [64, 128, 256, 1024, 4096, 16384]


def step_flops(generator: torch.nn.Module, discriminator: torch.nn.Module, batch: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one step: D update on real + fake, then G update through D.

    Per layer of B rows: forward, dX and dW each cost 2*B*in*out. D step: D forward on real and on
    fake, backward of both without dX of the first layer (its inputs need no gradient). G step: G
    forward (once, shared), D forward on fake again, D backward with dX only (D frozen), G backward
    without dX of its first layer (the noise needs no gradient).
    """
    def macs(module):
        return [m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear)]
    g, d = macs(generator), macs(discriminator)
    d_forward, g_forward = sum(d), sum(g)
    d_step = 2 * d_forward + 2 * (sum(d) + sum(d[1:]))
    g_step = g_forward + d_forward + sum(d) + sum(g) + sum(g[1:])
    return 2 * batch * (d_step + g_step)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Host-side calls that put work on the GPU: kernel launches (runtime and driver API; Triton uses the
# driver's), graph launches, and the async memset/memcpy PyTorch issues for fills and copies.
HOST_LAUNCH_CALLS = {"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
                     "cudaGraphLaunch", "cuGraphLaunch", "cudaMemsetAsync", "cudaMemcpyAsync"}


def _launches_per_step(trainer, steps: int = 8) -> dict:
    """Kernels executed on the device and host-side launch calls, per training step.

    On CUDA both come from one torch.profiler run (CUDA activity for what executed, the CUDA runtime and
    driver API calls for what the host launched): a graph replay executes many kernels from one launch.
    On a CPU under Triton's interpreter the Triton kernels of one step are counted; elsewhere nothing launches.
    """
    if trainer.device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile
        _sync(trainer.device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            ran = run_steps(trainer, steps)
            _sync(trainer.device)
        events = prof.events()
        executed = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        launches = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU
                    and e.name in HOST_LAUNCH_CALLS]
        graph_launches = sum(e.name in ("cudaGraphLaunch", "cuGraphLaunch") for e in launches)
        return {"kernels_per_step": len(executed) / ran, "host_launches_per_step": len(launches) / ran,
                "graph_launches_per_step": graph_launches / ran, "launches_how": "torch.profiler (CUDA + CPU API)"}
    if trainer.kernels_run == "triton-interpreter":   # one step: every eager step launches the same kernels
        before = sum(ops.kernel_launches.values())
        ran = run_steps(trainer, 1)
        return {"kernels_per_step": (sum(ops.kernel_launches.values()) - before) / ran,
                "host_launches_per_step": None, "launches_how": "Triton kernels (interpreter)"}
    return {"kernels_per_step": None, "host_launches_per_step": None, "launches_how": "n/a on CPU"}


def _peak_step_memory_mib(trainer, steps: int) -> float | None:
    """The peak of memory allocated during this backend's own steps, above what was allocated before
    them (every backend's models, optimizer state and graphs): its steps' working memory, alone."""
    if trainer.device.type != "cuda":
        return None
    _sync(trainer.device)
    before = torch.cuda.memory_allocated(trainer.device)
    torch.cuda.reset_peak_memory_stats(trainer.device)
    run_steps(trainer, steps)
    _sync(trainer.device)
    trainer.flush_losses()
    return (torch.cuda.max_memory_allocated(trainer.device) - before) / 2**20


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".replace("\n", " ")[:400]


def _label(name: str, trainer) -> str:
    """The backend's name, saying so where its fused ops do not run compiled Triton kernels."""
    note = {"triton-interpreter": "Triton interpreter", "reference": "reference path: no Triton here"}
    return f"{name} [{note[trainer.kernels_run]}]" if trainer.kernels_run in note else name


def run_row(width: int, batch: int, backends: list[Backend], device: torch.device, real: torch.Tensor,
            windows: int, steps_per_window: int, warmup: int, precision: str = "tf32") -> dict:
    """Every backend on one (width, batch): a backend that fails is a row marked failed, with its error."""
    trainers, results = {}, {}
    torch.manual_seed(0)
    generator, discriminator = PRESETS["classic"].build(real.shape[1], hidden=(width, width))
    for backend in backends:
        if backend.needs_cuda and device.type != "cuda":
            results[backend.name] = {"skipped": "needs a CUDA device"}
            continue
        try:
            before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
            trainer = fastgan.GANTrainer(copy.deepcopy(generator), copy.deepcopy(discriminator), real,
                                         batch_size=batch, seed=0, device=device, precision=precision,
                                         **{"fast": False, **backend.options})
            _sync(device)
            start = time.perf_counter()
            trainer.step()  # the first call pays compile / warm-up + capture / autotune
            _sync(device)
            setup_s = time.perf_counter() - start
            run_steps(trainer, warmup)
            trainer.flush_losses()
            state = (torch.cuda.memory_allocated(device) - before) / 2**20 if device.type == "cuda" else None
        except Exception as e:  # noqa: BLE001 - a failing backend is a result, not the end of the run
            results[backend.name] = {"failed": _error(e)}
            print(f"    {backend.name}: FAILED at set-up: {_error(e)}", flush=True)
            continue
        trainers[backend.name] = trainer
        results[backend.name] = {"label": _label(backend.name, trainer), "kernels_run": trainer.kernels_run,
                                 "setup_s": setup_s, "state_memory_mib": state, "windows_s_per_step": []}
    for _ in range(windows):
        for name, trainer in list(trainers.items()):
            try:
                results[name]["windows_s_per_step"].append(seconds_per_step(trainer, steps_per_window))
            except Exception as e:  # noqa: BLE001
                results[name] = {"failed": "while timing: " + _error(e)}
                del trainers[name]
    flops = step_flops(generator, discriminator, batch)
    for name, trainer in trainers.items():
        r = results[name]
        w = sorted(r["windows_s_per_step"])
        r["ms_per_step"] = statistics.median(w) * 1e3
        r["ms_p20"], r["ms_p80"] = w[len(w) // 5] * 1e3, w[(4 * len(w)) // 5] * 1e3
        r["steps_per_s"] = 1e3 / r["ms_per_step"]
        r["tflops"] = flops / (r["ms_per_step"] / 1e3) / 1e12
        try:
            r.update(_launches_per_step(trainer))
            r["step_peak_memory_mib"] = _peak_step_memory_mib(trainer, steps_per_window)
        except Exception as e:  # noqa: BLE001
            r["counting_failed"] = _error(e)
        history = trainer.history
        r["last_losses"] = [history["loss_d"][-1], history["loss_g"][-1]] if history["step"] else None
    eager = results.get("eager", {}).get("ms_per_step")
    for r in results.values():
        if "ms_per_step" in r and eager:
            r["speedup_vs_eager"] = eager / r["ms_per_step"]
    return {"width": width, "batch": batch, "flops_per_step": flops, "backends": results}


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    header = ["width", "batch", "backend", "ms/step", "spread (p20–p80)", "steps/s", "× eager", "setup s",
              "kernels/step", "host launches/step", "state MiB", "step peak MiB", "TFLOP/s"]
    body = []
    for row in rows:
        for name, r in row["backends"].items():
            if "skipped" in r or "failed" in r:
                what = f"skipped: {r['skipped']}" if "skipped" in r else f"FAILED: {r['failed']}"
                body.append([row["width"], row["batch"], name, what] + [""] * (len(header) - 4))
                continue
            body.append([row["width"], row["batch"], r["label"], f"{r['ms_per_step']:.3f}",
                         f"{r['ms_p20']:.3f}–{r['ms_p80']:.3f}", f"{r['steps_per_s']:.1f}",
                         f"{r.get('speedup_vs_eager', float('nan')):.2f}×", f"{r['setup_s']:.2f}",
                         _fmt(r.get("kernels_per_step"), "g"), _fmt(r.get("host_launches_per_step"), "g"),
                         _fmt(r.get("state_memory_mib"), ".0f"), _fmt(r.get("step_peak_memory_mib"), ".0f"),
                         f"{r['tflops']:.3g}"])
    return markdown_table(header, body)


def plots(rows: list[dict], folder: Path, stem: str, title: str) -> list[Path]:
    from fastgan.app.plots import pyplot, save_figure
    plt = pyplot()
    paths = []
    widths = sorted({r["width"] for r in rows})
    names = list(dict.fromkeys(n for r in rows for n, v in r["backends"].items() if "ms_per_step" in v))
    fig, axes = plt.subplots(1, len(widths), figsize=(5.5 * len(widths), 4.2), squeeze=False)
    for ax, width in zip(axes[0], widths):
        for name in names:
            points = [(r["batch"], r["backends"][name]["steps_per_s"]) for r in rows
                      if r["width"] == width and "steps_per_s" in r["backends"].get(name, {})]
            if points:
                colour = plt.get_cmap("tab20")(names.index(name) % 20)
                ax.plot(*zip(*points), marker="os^Dv"[names.index(name) % 5], color=colour, label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("steps / s")
        ax.set_title(f"hidden width {width}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2 if len(names) > 8 else 1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    paths.append(save_figure(fig, folder / f"{stem}-steps_per_s.png"))

    # one panel per (width, batch) row: a labelled horizontal bar per backend, the fastest on top
    fig, axes = plt.subplots(1, len(rows), figsize=(6.2 * len(rows), 0.32 * len(names) + 1.6), squeeze=False)
    for ax, r in zip(axes[0], rows):
        done = sorted(((v["speedup_vs_eager"], n) for n, v in r["backends"].items() if "speedup_vs_eager" in v))
        ax.barh(range(len(done)), [v for v, _ in done], color=["#c44e52" if n == "eager" else
                                                                 "#4c72b0" if n.startswith(("triton", "cuda"))
                                                                 else "#8c8c8c" for _, n in done])
        ax.set_yticks(range(len(done)), [n for _, n in done], fontsize=8)
        for i, (v, _) in enumerate(done):
            ax.text(v, i, f" {v:.2f}×", va="center", fontsize=7)
        ax.axvline(1.0, color="k", linewidth=0.8)
        ax.set_xlim(0, max([v for v, _ in done] + [1.0]) * 1.15)
        ax.set_xlabel("speedup vs eager (×), same run")
        ax.set_title(f"width {r['width']}, batch {r['batch']}", fontsize=9)
    fig.suptitle(title + " (blue: fastgan's kernels, grey: PyTorch)", fontsize=10)
    fig.tight_layout()
    paths.append(save_figure(fig, folder / f"{stem}-speedup.png"))
    return paths


def main(argv=None) -> int:
    new_run()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few windows (what CI runs)")
    parser.add_argument("--widths", type=int, nargs="+", default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--backends", nargs="+", default=None, choices=[b.name for b in BACKENDS])
    parser.add_argument("--windows", type=int, default=None, help="timed windows per backend")
    parser.add_argument("--steps-per-window", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="tf32",
                        help="applied alike to every backend (default: tf32)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="S",
                        help="start no row that would end past S seconds (the longest row so far as the guide); "
                             "rows not run are listed in the results")
    parser.add_argument("--replicas", type=int, nargs="+", default=None, metavar="K",
                        help="instead: K GANs at once, aggregate GAN-steps/s against K per backend (the sweep of "
                             "benchmarks/replicas.py, which writes its own results)")
    args = parser.parse_args(argv)
    if args.replicas:
        import replicas
        forwarded = ["--no-sequential", "--replicas", *map(str, args.replicas)]
        for flag, value in (("--device", args.device), ("--out", args.out), ("--time-limit", args.time_limit),
                            ("--windows", args.windows), ("--steps-per-window", args.steps_per_window)):
            if value is not None:
                forwarded += [flag, str(value)]
        return replicas.main(forwarded + (["--quick"] if args.quick else []))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    quick = args.quick
    widths = args.widths or ([32] if quick and device.type == "cpu" else [128] if quick else WIDTHS)
    batches = args.batches or ([16] if quick and device.type == "cpu" else [128, 4096] if quick else BATCHES)
    windows = args.windows or (3 if quick and device.type == "cpu" else 10 if quick else 15)
    steps_per_window = args.steps_per_window or (2 if quick and device.type == "cpu" else 20 if quick else 50)
    backends = [b for b in BACKENDS if args.backends is None or b.name in args.backends]
    env = environment()
    print(f"card: {env['card']} | torch {env['torch']} | triton {env['triton']} | "
          f"triton interpreter: {ops.INTERPRET}", flush=True)
    real = fastgan.data.digits(device=device)
    title = f"GAN train step — {env['card']}, {env['date'][:10]}" + (" (Triton interpreted)" if ops.INTERPRET else "")
    if device.type == "cpu":
        note = ("On this CPU the rows named triton ran " + ("Triton's interpreter: their times measure the "
                "interpreter, not the kernels" if ops.INTERPRET else "the ops' PyTorch reference path (no "
                "compiled Triton on a CPU): they measure no fused kernel") + "; each row says so.\n\n")
    else:
        note = ""
    budget = TimeBudget(args.time_limit)
    rows = []
    for width in widths:
        for batch in batches:
            if not budget.allows(f"width {width} batch {batch}"):
                print(f"  width {width:5d} batch {batch:6d} not run: --time-limit {args.time_limit:g}s", flush=True)
                continue
            row = run_row(width, batch, backends, device, real, windows, steps_per_window, warmup=1 if quick else 5,
                          precision=args.precision)
            budget.done()
            rows.append(row)
            for name, r in row["backends"].items():
                if "ms_per_step" not in r:
                    what = f"skipped: {r['skipped']}" if "skipped" in r else f"FAILED: {r['failed']}"
                    print(f"  width {width:5d} batch {batch:6d} {name:36s} {what}", flush=True)
                else:
                    print(f"  width {width:5d} batch {batch:6d} {r['label']:36s} {r['ms_per_step']:9.3f} ms/step "
                          f"{r.get('speedup_vs_eager', float('nan')):6.2f}x eager", flush=True)
            save(rows, budget, env, title, note, args, windows, steps_per_window)
    # the last write draws the plots, from the rows as saved
    draw = (lambda folder, stem: plots(rows, folder, stem, title)) if rows else None
    json_path, md_path, *pictures = save(rows, budget, env, title, note, args, windows, steps_per_window, draw)
    print(f"wrote {json_path}, {md_path}" + "".join(f", {p}" for p in pictures))
    return 0


def save(rows, budget, env, title, note, args, windows, steps_per_window, draw=None):
    """Written after every row, so a run cut short by a time limit still leaves what it measured."""
    not_run = f"\n\nNot run (time limit {args.time_limit:g} s): {', '.join(budget.skipped)}." if budget.skipped else ""
    text = (f"# {title}\n\ntorch {env['torch']}, triton {env['triton']}, driver {env.get('driver')}; "
            f"precision {args.precision} for every backend; {windows} interleaved windows of "
            f"{steps_per_window} steps per backend, medians. kernels/step: kernels executed on the device; "
            f"host launches/step: kernel and graph launches the host made (a graph replay runs many kernels "
            f"from one). state MiB: models, optimizer state and graphs of the backend; step peak MiB: the "
            f"working memory of its own steps.\n\n{note}{table(rows)}{not_run}")
    payload = {"environment": env, "interpreter": ops.INTERPRET, "precision": args.precision, "quick": args.quick,
               "windows": windows, "steps_per_window": steps_per_window, "rows": rows, "not_run": budget.skipped}
    return write_results("train_step", payload, text, args.out, quick=args.quick, draw=draw)


if __name__ == "__main__":
    sys.exit(main())
