"""Quality along training: a mixture protocol's modes / high-quality share / KL at several step counts.

The seeds of one variant train at once as a K-replica trainer (``fastgan.replicas``: replica k is the
single run with seed k) and are evaluated at each checkpoint on 2,500 samples (noise seed 10,000 + k),
as ``quality.py`` evaluates its runs; the trainer keeps going after each evaluation.

    python benchmarks/quality_curve.py --data ring --variant ema --checkpoints 20000 40000 80000
    python benchmarks/quality_curve.py --data grid --variant ema_pack2 --checkpoints 50000 100000 200000

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


def curve(kind: str, variant: str, seeds: int, checkpoints: list[int], protocol: dict, device) -> list[dict]:
    trainer = quality.mixture_trainer(kind, variant, 0, device, protocol=protocol, replicas=seeds)
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
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if sorted(set(args.checkpoints)) != args.checkpoints or args.checkpoints[0] < 1:
        parser.error("--checkpoints must be increasing positive step counts")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    protocol = {**quality.PROTOCOL, "lr": args.lr, "batch": args.batch, "pack_convention": args.pack_convention}
    env = environment()
    rows = curve(args.data, args.variant, args.seeds, args.checkpoints, protocol, device)
    body = [[r["steps"], f"{r['seconds']:.0f}", f"{r['summary']['modes'][0]:.2f} ± {r['summary']['modes'][1]:.2f}",
             f"{100 * r['summary']['high_quality'][0]:.1f} ± {100 * r['summary']['high_quality'][1]:.1f}",
             f"{r['summary']['kl'][0]:.3f} ± {r['summary']['kl'][1]:.3f}",
             f"{r['summary']['kl_all'][0]:.3f} ± {r['summary']['kl_all'][1]:.3f}"] for r in rows]
    text = (f"# Quality along training — {env['card']}, {env['date'][:10]}\n\n{args.data}, variant {args.variant}, "
            f"{args.seeds} seeds at once (replicas), mean ± s.e.\n\n{quality.describe(protocol)}\n\n"
            + markdown_table(["steps", "training seconds (all seeds)", "modes", "high-quality %",
                              "KL (high-quality)", "KL (all samples)"], body))
    payload = {"environment": env, "data": args.data, "variant": args.variant,
               "options": quality.VARIANTS[args.variant], "seeds": args.seeds, "protocol": protocol,
               "architecture": quality.describe(protocol), "curve": rows}
    json_path, md_path = write_results(f"quality-curve-{args.data}-{args.variant}", payload, text, args.out)
    print(f"wrote {json_path}, {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
