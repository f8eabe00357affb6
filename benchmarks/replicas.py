"""K GANs at once against K separate runs: what a seed or hyper-parameter sweep gains from ``replicas=K``.

Two measurements, each timed interleaved (window after window, contender after contender, medians):

1. **K replicas vs K sequential runs** of the same work: one ``GANTrainer(replicas=K)`` step against K
   single-GAN steps (one run's step, timed, times K: the runs are identical in work). Default: the issue's
   case, K = 10 mixture GANs 2->128->128->2 (leaky-ReLU), batch 100, on this machine.
2. **Aggregate GAN-steps/s against K** (1 ... 256) per backend: K x steps/s of a K-replica trainer.

    python benchmarks/replicas.py                 # both, default sizes (CPU: a few minutes)
    python benchmarks/replicas.py --quick         # tiny windows (CI)
    python benchmarks/replicas.py --model classic --batch 128 --no-sequential --replicas 1 8 32 128   # the
        # classic MLP GAN (100-128-128-784), #41's target: K = 128 at >= 0.3 M GAN-steps/s on one H100/H200
    python benchmarks/train_step.py --replicas 1 4 16 64 256     # the sweep alone, from train_step.py

Records the run in results/<card>/runs.jsonl (never overwriting earlier runs); the latest run:
replicas[-quick].{json,md} and -gan_steps_per_s.png. Seconds per step: CUDA events on a GPU, the wall clock on a
CPU; set-up (the first steps: compile, capture, autotune) is timed apart and not in the medians.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TimeBudget, environment, markdown_table, new_run, seconds_per_step, write_results  # noqa: E402

from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, ops  # noqa: E402
from fastgan.data import gaussian_ring  # noqa: E402

PHILOX = {"sampler": "philox"}   # every replica's draws in one launch (on the CPU: PyTorch's generators)
BACKENDS = {   # name -> (GANTrainer options, needs CUDA)
    "torch": ({"kernels": "torch"}, False),
    "torch+compile": ({"kernels": "torch", "compile": True}, False),
    "triton": ({"kernels": "triton", **PHILOX}, True),
    "torch+graph": ({"kernels": "torch", "cuda_graph": True, **PHILOX}, True),
    "triton+graph": ({"kernels": "triton", "cuda_graph": True, **PHILOX}, True),
    # the draws as before the Philox sampler took them: K generators, 2-3 launches each per draw
    "triton+graph+generators": ({"kernels": "triton", "cuda_graph": True, "sampler": "torch"}, True),
    # the fused step for K replicas: 7 launches a step for every K (whole-MLP kernels, FlatAdam folded in)
    "triton-mlp+graph": ({"kernels": "triton-mlp", "cuda_graph": True, **PHILOX}, True),
    # the same two steps with FlatAdam's moments in bf16 (20 bytes of Adam traffic a parameter, not 28)
    "triton+graph+bf16-adam": ({"kernels": "triton", "cuda_graph": True, "adam_state": "bf16", **PHILOX}, True),
    "triton-mlp+graph+bf16-adam": ({"kernels": "triton-mlp", "cuda_graph": True, "adam_state": "bf16", **PHILOX},
                                   True),
}
# the GANs: the mixture GAN 2-W-W-2 (latent 2) on the ring, or the classic MLP GAN 100-W-W-784 on uniform
# 784-wide rows (speed only: what the rows hold does not change the work)
MODELS = ("mixture", "classic")
SWEEP = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def _models(model: str, width: int):
    if model == "classic":
        return (MLPGenerator(latent_dim=100, hidden=(width, width), out_dim=784),
                MLPDiscriminator(in_dim=784, hidden=(width, width)))
    return (MLPGenerator(latent_dim=2, hidden=(width, width), out_dim=2, output_activation=None),
            MLPDiscriminator(in_dim=2, hidden=(width, width)))


def _data(model: str, device):
    if model == "classic":
        return torch.rand(20_000, 784, generator=torch.Generator().manual_seed(0)).to(device)
    return gaussian_ring(20_000, device=device)


def _interleaved(trainers: dict, windows: int, steps: int, warmup: int) -> dict:
    """``{name: {"setup_s", "median_ms", "p20_ms", "p80_ms"}}`` per step, windows taken in turn."""
    result, times = {}, {}
    for name, trainer in trainers.items():
        start = time.perf_counter()
        for _ in range(warmup):
            trainer.step()
        trainer.flush_losses()
        result[name] = {"setup_s": time.perf_counter() - start}
        times[name] = []
    for _ in range(windows):
        for name, trainer in trainers.items():
            times[name].append(seconds_per_step(trainer, steps) * 1e3)
    for name, w in times.items():
        w.sort()
        result[name].update(median_ms=statistics.median(w), p20_ms=w[len(w) // 5], p80_ms=w[(4 * len(w)) // 5])
    return result


def sequential(k: int, model: str, width: int, batch: int, device, windows: int, steps: int) -> dict:
    """One K-replica step against K single-GAN steps: seconds per step of each, and the ratio."""
    data = _data(model, device)
    options = {"batch_size": batch, "lr": 1e-4, "device": str(device), "precision": "fp32", "fast": False}
    trainers = {"replicas": GANTrainer(*_models(model, width), data, replicas=k, **options),
                "single": GANTrainer(*_models(model, width), data, **options)}
    timed = _interleaved(trainers, windows, steps, warmup=5)
    replicas_ms, single_ms = timed["replicas"]["median_ms"], timed["single"]["median_ms"]
    return {"k": k, "width": width, "batch": batch, "replicas_ms_per_step": replicas_ms,
            "single_ms_per_step": single_ms, "sequential_ms_per_step": k * single_ms,
            "speedup": k * single_ms / replicas_ms, "spread": timed}


def sweep(ks: list[int], backends: list[str], model: str, width: int, batch: int, device, windows: int,
          steps: int, budget: TimeBudget) -> list[dict]:
    """Aggregate GAN-steps/s (K x steps/s) of a K-replica trainer, per backend and K."""
    data = _data(model, device)
    rows = []
    for k in ks:
        if not budget.allows(f"K={k}"):
            print(f"  K={k}: not run (time limit)", flush=True)
            continue
        row = {"k": k, "backends": {}}
        trainers = {}
        torch._dynamo.reset()   # each K compiles anew: no trainer of an earlier row fills the recompile limit
        for name in backends:
            options, needs_cuda = BACKENDS[name]
            if needs_cuda and device.type != "cuda":
                row["backends"][name] = {"skipped": "needs a CUDA device (on a CPU triton would run the "
                                                    "interpreter, which times Python, not kernels)"}
                continue
            try:
                trainers[name] = GANTrainer(*_models(model, width), data, replicas=k, batch_size=batch, lr=1e-4,
                                            device=str(device), fast=False, **options)
            except Exception as e:  # noqa: BLE001 - a backend that cannot run is a result
                row["backends"][name] = {"failed": f"{type(e).__name__}: {e}"[:300]}
        try:
            timed = _interleaved(trainers, windows, steps, warmup=5 if device.type == "cuda" else 2)
        except Exception as e:  # noqa: BLE001
            timed = {name: {"failed": f"{type(e).__name__}: {e}"[:300]} for name in trainers}
        for name, t in timed.items():
            if "median_ms" in t:
                t["gan_steps_per_s"] = k / (t["median_ms"] / 1e3)
            row["backends"][name] = t
        budget.done()
        rows.append(row)
        for name, t in row["backends"].items():
            what = f"{t['gan_steps_per_s']:12,.0f} GAN-steps/s ({t['median_ms']:.3f} ms/step)" \
                if "gan_steps_per_s" in t else t.get("skipped") or f"FAILED: {t.get('failed')}"
            print(f"  K={k:4d} {name:16s} {what}", flush=True)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> Path | None:
    from fastgan.app.plots import pyplot, save_figure
    names = list(dict.fromkeys(n for r in rows for n, v in r["backends"].items() if "gan_steps_per_s" in v))
    if not names:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name in names:
        points = [(r["k"], r["backends"][name]["gan_steps_per_s"]) for r in rows
                  if "gan_steps_per_s" in r["backends"].get(name, {})]
        ax.plot(*zip(*points), marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("replicas K (GANs trained at once)")
    ax.set_ylabel("aggregate GAN-steps / s")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv=None) -> int:
    new_run()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few, short windows (what CI runs)")
    parser.add_argument("--k", type=int, default=10, help="replicas for the sequential comparison (default: 10)")
    parser.add_argument("--replicas", type=int, nargs="+", default=None, metavar="K",
                        help=f"the sweep's K values (default: {' '.join(map(str, SWEEP))})")
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=None)
    parser.add_argument("--model", choices=MODELS, default="mixture",
                        help="the mixture GAN 2-W-W-2 (default) or the classic MLP GAN 100-W-W-784")
    parser.add_argument("--width", type=int, default=128, help="hidden width of G and D (default: 128)")
    parser.add_argument("--batch", type=int, default=100, help="batch size per GAN (default: 100)")
    parser.add_argument("--windows", type=int, default=None)
    parser.add_argument("--steps-per-window", type=int, default=None)
    parser.add_argument("--no-sequential", action="store_true", help="the sweep only")
    parser.add_argument("--no-sweep", action="store_true", help="the sequential comparison only")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="S",
                        help="start no sweep row that would end past S seconds")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    windows = args.windows or (3 if args.quick else 15)
    steps = args.steps_per_window or (2 if args.quick else 20)
    ks = args.replicas or ([1, 4] if args.quick else SWEEP)
    backends = args.backends or (["torch"] if args.quick else [n for n, (_, cuda) in BACKENDS.items()
                                                               if device.type == "cuda" or not cuda])
    env = environment()
    print(f"card: {env['card']} | torch {env['torch']} | triton {env['triton']} | threads {torch.get_num_threads()}",
          flush=True)
    payload = {"environment": env, "threads": torch.get_num_threads(), "quick": args.quick, "windows": windows,
               "steps_per_window": steps, "model": args.model, "width": args.width, "batch": args.batch,
               "interpreter": ops.INTERPRET}
    shape = (f"mixture GANs 2-{args.width}-{args.width}-2" if args.model == "mixture" else
             f"classic MLP GANs 100-{args.width}-{args.width}-784")
    text = [f"# K GANs at once — {env['card']}, {env['date'][:10]}\n",
            f"torch {env['torch']}, {torch.get_num_threads()} threads; {shape} (leaky-ReLU), batch {args.batch} "
            f"per GAN, fp32; {windows} interleaved windows of {steps} steps, medians (20-80% spread in the JSON); "
            "set-up timed apart. On CUDA the draws are the Philox sampler's (one launch for all K) except in "
            "the +generators column (each replica's generator).\n"]
    if not args.no_sequential:
        result = sequential(args.k, args.model, args.width, args.batch, device, windows, steps)
        payload["sequential"] = result
        print(f"K={args.k} replicas: {result['replicas_ms_per_step']:.3f} ms/step; {args.k} sequential runs: "
              f"{result['sequential_ms_per_step']:.3f} ms/step ({result['single_ms_per_step']:.3f} each): "
              f"{result['speedup']:.2f}x", flush=True)
        text.append(f"## {args.k} replicas against {args.k} sequential runs of the same work\n")
        text.append(markdown_table(["", "ms / step (all K GANs)", "speedup"], [
            [f"{args.k} sequential single-GAN runs", result["sequential_ms_per_step"], 1.0],
            [f"one trainer, replicas={args.k}", result["replicas_ms_per_step"], result["speedup"]]]) + "\n")
    budget = TimeBudget(args.time_limit)
    rows = []
    if not args.no_sweep:
        rows = sweep(ks, backends, args.model, args.width, args.batch, device, windows, steps, budget)
        payload["sweep"] = rows
        payload["not_run"] = budget.skipped
        text.append("## Aggregate GAN-steps/s against K\n")
        table_rows = [[r["k"]] + [(f"{t['gan_steps_per_s']:,.0f}" if "gan_steps_per_s" in t else
                                   "skipped" if "skipped" in t else "failed")
                                  for t in (r["backends"].get(n, {"skipped": ""}) for n in backends)] for r in rows]
        text.append(markdown_table(["K", *backends], table_rows))
        if budget.skipped:
            text.append(f"\nNot run (time limit): {', '.join(budget.skipped)}.")
    draw = (lambda folder, stem: [plot(rows, folder / f"{stem}-gan_steps_per_s.png",
                                       f"K GANs at once — {env['card']}")]) if rows else None
    name = "replicas" if args.model == "mixture" else "replicas-classic"
    json_path, md_path, *pictures = write_results(name, payload, "\n".join(text), args.out, quick=args.quick,
                                                  draw=draw)
    print(f"wrote {json_path}, {md_path}" + "".join(f", {p}" for p in pictures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
