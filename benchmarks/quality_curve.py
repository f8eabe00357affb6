"""Quality along training: a mixture protocol's modes / high-quality share / KL at several step counts.

The seeds of one variant train at once as a K-replica trainer (``fastgan.replicas``: replica k is the
single run with seed k) and are evaluated at each checkpoint on 2,500 samples (noise seed 10,000 + k),
as ``quality.py`` evaluates its runs; the trainer keeps going after each evaluation.

    python benchmarks/quality_curve.py --data ring --variant ema --checkpoints 20000 40000 80000
    python benchmarks/quality_curve.py --data grid --variant ema_pack2 --checkpoints 50000 100000 200000
    python benchmarks/quality_curve.py --data ring --variant ema --seeds 10 --cuda-graph --steps-per-replay 8 \
        --checkpoints 100000 200000 400000    # a GPU: PacGAN's length, 10 seeds at once

Defaults are PacGAN's settings on our models (``quality.py``'s mixture-benchmark preset): Adam 1e-4
(0.5, 0.999), batch 100 packed rows, 5 seeds. Writes results/<card>/<date>-quality-curve.{json,md}.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from common import environment, markdown_table, write_results  # noqa: E402

from fastgan import metrics  # noqa: E402


def curve(kind: str, variant: str, seeds: int, checkpoints: list[int], protocol: dict, device, kernels="torch",
          report=None, **options) -> list[dict]:
    """The rows (one per checkpoint); ``report(rows)`` after each, so a run stopped by a time limit keeps
    what it measured."""
    trainer = quality.mixture_trainer(kind, variant, 0, device, kernels=kernels, protocol=protocol, replicas=seeds,
                                      **options)
    rows, start = [], time.perf_counter()
    for steps in checkpoints:
        trainer.fit(steps - trainer.step_count, log_every=5000, progress=False)
        seconds = time.perf_counter() - start
        runs = [metrics.evaluate_mixture(trainer.sample(2500, seed=10_000 + k, replica=k), kind) for k in range(seeds)]
        summary = {key: quality._mean_se([r[key] for r in runs]) for key in ("modes", "high_quality", "kl", "kl_all")}
        rows.append({"steps": steps, "seconds": seconds, "runs": runs, "summary": summary})
        m, h, k = summary["modes"], summary["high_quality"], summary["kl"]
        print(f"  {kind} {variant} {steps:7d} steps ({seconds:6.0f} s): modes {m[0]:.2f}±{m[1]:.2f}  "
              f"HQ {100 * h[0]:.1f}±{100 * h[1]:.1f}%  KL {k[0]:.3f}±{k[1]:.3f}", flush=True)
        start = time.perf_counter() - seconds   # evaluation time is not training time
        if report is not None:
            report(rows)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["ring", "grid"], default="ring")
    parser.add_argument("--variant", choices=[v for v in quality.VARIANTS if v not in quality.IMAGE_ONLY and v != "r1"],
                        default="vanilla")
    parser.add_argument("--checkpoints", type=int, nargs="+", required=True, help="step counts to evaluate at")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--pack-convention", choices=["samples", "rows"], default="rows")
    parser.add_argument("--device", default=None)
    parser.add_argument("--kernels", choices=["torch", "triton"], default="torch")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="capture the replicas' steps in a CUDA graph (a GPU: PacGAN's 400k steps in minutes)")
    parser.add_argument("--steps-per-replay", type=int, default=1, metavar="K",
                        help="with --cuda-graph: steps per graph replay (the checkpoints must be multiples of K)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps_per_replay < 1 or (args.steps_per_replay > 1 and not args.cuda_graph):
        parser.error("--steps-per-replay K needs --cuda-graph and K >= 1")
    if any(c % args.steps_per_replay for c in args.checkpoints):
        parser.error(f"--checkpoints must be multiples of --steps-per-replay {args.steps_per_replay}")
    if sorted(set(args.checkpoints)) != args.checkpoints or args.checkpoints[0] < 1:
        parser.error("--checkpoints must be increasing positive step counts")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    protocol = {**quality.PROTOCOL, "lr": args.lr, "batch": args.batch, "pack_convention": args.pack_convention}
    env = environment()
    if args.cuda_graph and device.type != "cuda":
        parser.error("--cuda-graph needs a CUDA device")
    options = {"cuda_graph": True, "steps_per_replay": args.steps_per_replay} if args.cuda_graph else {}
    written = []

    def save(rows):
        body = [[r["steps"], f"{r['seconds']:.0f}",
                 f"{r['summary']['modes'][0]:.2f} ± {r['summary']['modes'][1]:.2f}",
                 f"{100 * r['summary']['high_quality'][0]:.1f} ± {100 * r['summary']['high_quality'][1]:.1f}",
                 f"{r['summary']['kl'][0]:.3f} ± {r['summary']['kl'][1]:.3f}",
                 f"{r['summary']['kl_all'][0]:.3f} ± {r['summary']['kl_all'][1]:.3f}"] for r in rows]
        graph = f", CUDA graph ({args.steps_per_replay} steps per replay)" if args.cuda_graph else ""
        how = f"kernels {args.kernels}{graph}"
        text = (f"# Quality along training — {env['card']}, {env['date'][:10]}\n\n{args.data}, variant "
                f"{args.variant}, {args.seeds} seeds at once (replicas), mean ± s.e.; {how}\n\n"
                f"{quality.describe(protocol)}\n\n"
                + markdown_table(["steps", "training seconds (all seeds)", "modes", "high-quality %",
                                  "KL (high-quality)", "KL (all samples)"], body))
        payload = {"environment": env, "data": args.data, "variant": args.variant, "kernels": args.kernels,
                   "cuda_graph": args.cuda_graph, "steps_per_replay": args.steps_per_replay,
                   "options": quality.VARIANTS[args.variant], "seeds": args.seeds, "protocol": protocol,
                   "architecture": quality.describe(protocol), "curve": rows}
        written[:] = write_results(f"quality-curve-{args.data}-{args.variant}", payload, text, args.out)

    curve(args.data, args.variant, args.seeds, args.checkpoints, protocol, device, args.kernels, report=save,
          **options)
    json_path, md_path = written
    print(f"wrote {json_path}, {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
