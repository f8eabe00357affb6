"""Generation quality: the PacGAN protocol on Gaussian mixtures, digits metrics, and quality per second.

Mixtures (PacGAN Table 1 protocol): ring-8 (radius 1, std 0.01) and grid-25 (means {-4,-2,0,2,4}^2,
std 0.05), 100k training points, 2,500 generated samples evaluated, several seeds, mean ± standard
error of modes / high-quality share / KL / within-mode spread / sliced Wasserstein over its real-vs-real floor,
for the vanilla GAN and each stabilisation option.
Digits: Fréchet distance, precision/recall/density/coverage and class coverage of the MLP GAN with
and without options, beside the real-vs-real floor. Time to quality: wall-clock (evaluation excluded)
until ring-8 shows 8/8 modes with >= 90% high-quality samples, per backend.

    python benchmarks/quality.py --quick     # 2 seeds, short runs, a few variants (minutes on a CPU)
    python benchmarks/quality.py             # 10 seeds, every variant (long on a CPU)
    python benchmarks/quality.py --no-digits --replicas --seeds 10 --steps 40000 --batch 100 --lr 1e-4 \
        --variants vanilla pack2 pack3 pack4 --pack-convention rows    # the protocol, 10 seeds at once
    python benchmarks/quality.py --no-digits --preset pacgan --variants vanilla pack2 pack3 pack4 \
        --steps 400000     # PacGAN's own protocol: its models and its code's settings (GPU-sized)
    python benchmarks/quality.py --no-mixtures --digits-preset digits --variants recipe   # fastgan train's
Every protocol setting is a flag: --lr --lr-schedule --betas --batch --steps --latent-dim --preset
--pack-convention --update --seeds; --replicas trains a variant's seeds as one K-replica trainer
(fastgan.replicas: the same runs, seeds 0..K-1, each on the seed-0 data set) instead of one after another.
Records the run in results/<card>/runs.jsonl; the latest run: quality[-quick].{json,md} and
-{ring,grid,digits}.png.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import textwrap
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, markdown_table, new_run, write_results  # noqa: E402
from mixture_protocol import (IMAGE_ONLY, MODEL_PRESETS, PACGAN_PROTOCOL, PROTOCOL, VARIANTS, describe,  # noqa: E402
                              mixture_trainer, trainer_settings)

import fastgan  # noqa: E402
from fastgan import data, metrics, ops  # noqa: E402
from fastgan.app.args import lr_milestone, lr_schedule_arg  # noqa: E402
from fastgan.nn.presets import PRESETS  # noqa: E402

QUICK_VARIANTS = ["vanilla", "pack2", "ema"]
DIGITS_VARIANTS = ["vanilla", "label_smoothing", "ema", "hinge", "pack2", "diffaugment", "ada", "recipe"]
QUICK_DIGITS_VARIANTS = ["vanilla", "label_smoothing"]

PACGAN_TABLE1 = {  # published (Lin et al. 2018, Table 1): modes, high-quality %, KL
    ("ring", "GAN"): (6.3, 98.2, 0.45), ("grid", "GAN"): (17.3, 94.8, 0.70),
    ("ring", "PacGAN2"): (7.9, 95.6, 0.07), ("grid", "PacGAN4"): (24.8, 93.6, 0.04),
}


# the per-seed figures a mixture row averages (metrics.evaluate_mixture's numbers)
SUMMARY_KEYS = ("modes", "high_quality", "kl", "kl_all", "spread", "spread_excluded", "offset", "spread_to_centre",
                "swd", "swd_floor", "swd_ratio")


def _mean_se(values):
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.inf, 0.0
    mean = statistics.fmean(finite)
    se = statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) > 1 else 0.0
    return mean, se


def _replica_runs(kind, variant, seeds, steps, device, protocol):
    """A variant's seeds as one K-replica trainer; each replica's samples drawn as its single run would."""
    trainer = mixture_trainer(kind, variant, 0, device, protocol=protocol, replicas=seeds)
    start = time.perf_counter()
    trainer.fit(steps, log_every=max(1, steps // 4), progress=False)
    seconds = (time.perf_counter() - start) / seeds
    samples = [trainer.sample(2500, seed=10_000 + k, replica=k) for k in range(seeds)]
    return [{**metrics.evaluate_mixture(s, kind), "seconds": seconds} for s in samples], samples[0]


def run_mixtures(kinds, variants, seeds, steps, device, protocol=None, replicas=False):
    protocol = protocol or PROTOCOL
    results, pictures = {}, {}
    for kind in kinds:
        for variant in variants:
            if replicas:
                runs, first = _replica_runs(kind, variant, seeds, steps, device, protocol)
                pictures[(kind, variant)] = first.cpu()
            else:
                runs = []
                for seed in range(seeds):
                    trainer = mixture_trainer(kind, variant, seed, device, protocol=protocol)
                    start = time.perf_counter()
                    trainer.fit(steps, log_every=max(1, steps // 4), progress=False)
                    seconds = time.perf_counter() - start
                    samples = trainer.sample(2500, seed=10_000 + seed)
                    runs.append({**metrics.evaluate_mixture(samples, kind), "seconds": seconds})
                    if seed == 0:
                        pictures[(kind, variant)] = samples.cpu()
            summary = {key: _mean_se([r[key] for r in runs]) for key in SUMMARY_KEYS}
            results[f"{kind}/{variant}"] = {"runs": runs, "summary": summary}
            m, h, k, a = summary["modes"], summary["high_quality"], summary["kl"], summary["kl_all"]
            w, o, d = summary["spread"], summary["offset"], summary["swd_ratio"]
            print(f"  {kind:4s} {variant:16s} modes {m[0]:5.2f}±{m[1]:.2f}  HQ {100 * h[0]:5.1f}±{100 * h[1]:.1f}%  "
                  f"KL {k[0]:.3f}±{k[1]:.3f} (all samples {a[0]:.3f})  spread {w[0]:.2f}±{w[1]:.2f}  "
                  f"offset {o[0]:.2f}  "
                  f"SWD/floor {d[0]:.2f}±{d[1]:.2f}  ({statistics.fmean(r['seconds'] for r in runs):.1f} s/run)",
                  flush=True)
    return results, pictures


def time_to_quality(device, seeds, max_steps, protocol=None, variants=("vanilla",), check_every=250):
    """Per configuration (backend x variant, with ``protocol``): training steps and wall-clock seconds
    (evaluation excluded) until ring-8 first has 8/8 modes and >= 90% high-quality samples."""
    rows = {}
    configurations = [("eager", "torch", v) for v in variants] + [("triton", "triton", "vanilla")]
    for backend, kernels, variant in configurations:
        name = f"{backend} {variant}"
        if kernels == "triton" and device.type != "cuda":
            rows[name] = {"skipped": "Triton on a CPU runs in the interpreter (or the reference path): "
                                     "its wall-clock is not a speed"}
            continue
        times = []
        for seed in range(seeds):
            trainer = mixture_trainer("ring", variant, seed, device, kernels=kernels, protocol=protocol)
            elapsed, reached = 0.0, None
            while trainer.step_count < max_steps:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                trainer.fit(min(check_every, max_steps - trainer.step_count), log_every=check_every, progress=False)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed += time.perf_counter() - start
                result = metrics.evaluate_mixture(trainer.sample(2500, seed=77), "ring")
                if result["modes"] == 8 and result["high_quality"] >= 0.9:
                    reached = (trainer.step_count, elapsed)
                    break
            times.append(reached)
        hit = [t for t in times if t is not None]
        rows[name] = {"reached": f"{len(hit)}/{len(times)}",
                      "median_seconds": statistics.median([t[1] for t in hit]) if hit else None,
                      "median_steps": statistics.median([t[0] for t in hit]) if hit else None,
                      "max_steps": max_steps}
        print(f"  time to 8/8 modes & >=90% HQ, {name}: {rows[name]}", flush=True)
    return rows


def run_digits(variants, steps, device, preset="classic"):
    results, pictures = {}, {}
    real = data.digits(device=device)
    for variant in variants:
        options = dict(VARIANTS[variant])
        pack = options.get("pack", 1)
        torch.manual_seed(0)
        g, d = PRESETS[preset].build(784, pack=pack)
        batch = 128 if 128 % pack == 0 else 126
        trainer = fastgan.GANTrainer(g, d, real, batch_size=batch, seed=0, device=device, **options)
        start = time.perf_counter()
        trainer.fit(steps, log_every=max(1, steps // 4), progress=False)
        seconds = time.perf_counter() - start
        samples = trainer.sample(metrics.default_samples("digits"), seed=1)   # (8 draws of 899, each figure their mean)
        result = metrics.evaluate_digits(samples)
        results[variant] = {**result, "seconds": seconds, "steps": steps}
        pictures[variant] = samples[:64].cpu()
        gen, floor = result["generated"], result["real_floor"]
        print(f"  digits {variant:16s} FD {gen['frechet_distance']:8.2f} (floor {floor['frechet_distance']:.2f})  "
              f"P@5 {gen['precision@5']:.2f} R@5 {gen['recall@5']:.2f} D@5 {gen['density@5']:.2f} "
              f"C@5 {gen['coverage@5']:.2f}  classes {gen['classes_seen']}/10 KL {gen['class_kl']:.3f}", flush=True)
    return results, pictures


def draw(pictures_mix, pictures_digits, folder, stem, seed=0):
    """The pictures: each mixture's samples of ``seed`` (the first one trained) per variant, the digits' grids."""
    from fastgan.app.plots import pyplot, save_figure
    plt = pyplot()
    paths = []
    for kind in ("ring", "grid"):
        variants = [v for (k, v) in pictures_mix if k == kind]
        if not variants:
            continue
        centers = data.ring_centers() if kind == "ring" else data.grid_centers()
        columns = min(4, len(variants))
        rows = math.ceil(len(variants) / columns)
        fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, variant in zip(axes.flat, variants):
            s = pictures_mix[(kind, variant)]
            ax.set_axis_on()
            ax.scatter(s[:, 0], s[:, 1], s=1.5, alpha=0.5)
            ax.scatter(centers[:, 0], centers[:, 1], marker="x", c="tab:red", s=30)
            ax.set_title("\n".join(textwrap.wrap(variant, 34)), fontsize=9)   # long names: no overlap
            ax.set_aspect("equal")
            lim = 1.6 if kind == "ring" else 5.5
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
        fig.suptitle(f"{kind}: 2,500 samples (seed {seed}) over the mode centres", fontsize=10)
        fig.tight_layout()
        paths.append(save_figure(fig, folder / f"{stem}-{kind}.png"))
    if pictures_digits:
        columns = len(pictures_digits)
        fig, axes = plt.subplots(1, columns, figsize=(3.2 * columns, 3.5), squeeze=False)
        for ax, (variant, samples) in zip(axes[0], pictures_digits.items()):
            grid = samples.clamp(0, 1).reshape(8, 8, 28, 28).permute(0, 2, 1, 3).reshape(8 * 28, 8 * 28)
            ax.imshow(grid.numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(variant, fontsize=9)
            ax.set_axis_off()
        fig.tight_layout()
        paths.append(save_figure(fig, folder / f"{stem}-digits.png"))
    return paths


def tables(mixtures, digits, ttq, architecture="", digits_preset="classic"):
    lines = []
    if mixtures:
        lines += ["## Mixtures (mean ± standard error over seeds)", "", architecture, ""]
        body = []
        for key, r in mixtures.items():
            kind, variant = key.split("/")
            m, h, k = (r["summary"][x] for x in ("modes", "high_quality", "kl"))
            a, w, o, d = (r["summary"].get(x) for x in ("kl_all", "spread", "offset", "swd_ratio"))   # (older: "-")
            body.append([kind, variant, len(r["runs"]), f"{m[0]:.2f} ± {m[1]:.2f}",
                         f"{100 * h[0]:.1f} ± {100 * h[1]:.1f}", f"{k[0]:.3f} ± {k[1]:.3f}",
                         "-" if a is None else f"{a[0]:.3f} ± {a[1]:.3f}",
                         "-" if w is None else f"{w[0]:.2f} ± {w[1]:.2f}",
                         "-" if o is None else f"{o[0]:.2f} ± {o[1]:.2f}",
                         "-" if d is None else f"{d[0]:.2f} ± {d[1]:.2f}"])
        for (kind, name), (m, h, k) in PACGAN_TABLE1.items():
            body.append([kind, f"published {name} (PacGAN Table 1)", "-", f"{m}", f"{h}", f"{k}", "-", "-", "-", "-"])
        lines.append(markdown_table(["data", "variant", "seeds", "modes", "high-quality %", "KL (high-quality, "
                                     "PacGAN's)", "KL (all samples)", "spread (data: 1)", "offset (std)",
                                     "SWD / floor (data: 1)"],
                                    body))
        lines.append("\nspread: the standard deviation of each mode's high-quality samples about their mean, over "
                     "the data's, mean over the modes (before 2026-12-06: their RMS distance to the mode's "
                     "centre); offset: the distance of their mean from the mode's centre, in std, mean over the "
                     "modes; "
                     "SWD / floor: sliced Wasserstein-1 to the mixture over what real samples of that size "
                     "score ([api.md](../../../docs/api.md#quality-metrics)).")
    if digits:
        hidden = "-".join(map(str, PRESETS[digits_preset].hidden))
        lines += ["", f"## Digits (`{digits_preset}` models: G 100-{hidden}-784, D 784-{hidden}-1; floor = real vs "
                  "real, same sample count)", ""]
        body = []
        floor = next(iter(digits.values()))["real_floor"]
        body.append(["real vs real (floor)", "-", f"{floor['frechet_distance']:.2f}", f"{floor['precision@5']:.2f}",
                     f"{floor['recall@5']:.2f}", f"{floor['density@5']:.2f}", f"{floor['coverage@5']:.2f}",
                     f"{floor['classes_seen']}", f"{floor['class_kl']:.3f}"])
        for variant, r in digits.items():
            g = r["generated"]
            body.append([variant, r["steps"], f"{g['frechet_distance']:.2f}", f"{g['precision@5']:.2f}",
                         f"{g['recall@5']:.2f}", f"{g['density@5']:.2f}", f"{g['coverage@5']:.2f}",
                         f"{g['classes_seen']}", f"{g['class_kl']:.3f}"])
        lines.append(markdown_table(["variant", "steps", "FD", "precision@5", "recall@5", "density@5",
                                     "coverage@5", "classes", "class KL"], body))
        accuracy = next(iter(digits.values()))["classifier_held_out_accuracy"]
        lines.append(f"\nFeature classifier held-out accuracy: {100 * accuracy:.1f}%.")
    if ttq:
        lines += ["", "## Time to quality: ring-8, 8/8 modes with >= 90% high-quality samples", ""]
        body = [[name, r.get("skipped") or f"{r['reached']} within {r['max_steps']} steps",
                 "-" if r.get("median_steps") is None else r["median_steps"],
                 "-" if r.get("median_seconds") is None else f"{r['median_seconds']:.1f}"] for name, r in ttq.items()]
        lines.append(markdown_table(["configuration", "runs that reached it", "median steps", "median seconds"],
                                    body))
    return "\n".join(lines)


def _report(env, seeds, steps, digits_steps, mixtures, digits, ttq, architecture="", digits_preset="classic") -> str:
    runs = [f"{seeds} seeds x {steps} steps per mixture run" if mixtures else "",
            f"digits {digits_steps} steps, one seed, each figure the mean over {metrics.DIGITS_DRAWS} draws of 899 "
            "samples" if digits else ""]
    return (f"# Generation quality — {env['card']}, {env['date'][:10]}\n\n" + "; ".join(r for r in runs if r)
            + ".\n\n" + tables(mixtures, digits, ttq, architecture, digits_preset))


def main(argv=None) -> int:
    new_run()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 seeds, short runs, a few variants")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="training steps per mixture run")
    parser.add_argument("--digits-steps", type=int, default=None)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None)
    parser.add_argument("--no-digits", action="store_true")
    parser.add_argument("--no-mixtures", action="store_true", help="only the digits runs")
    parser.add_argument("--no-time-to-quality", action="store_true",
                        help="skip the time-to-quality runs (ring, up to 3 seeds per configuration)")
    parser.add_argument("--digits-preset", choices=sorted(PRESETS), default="classic",
                        help="the digits models (default classic: 128 wide; digits: fastgan train's, 256 wide)")
    parser.add_argument("--preset", choices=MODEL_PRESETS, default=PROTOCOL["preset"],
                        help="the mixture models (default mixture-benchmark); pacgan: PacGAN's models and, unless "
                             "the flags below say otherwise, its settings: " + ", ".join(
                                 f"{k} {v}" for k, v in PACGAN_PROTOCOL.items() if k != "preset"))
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 2e-4)")
    parser.add_argument("--lr-schedule", type=lr_milestone, nargs="+", default=None, metavar="STEP:FACTOR",
                        help="step-down learning rates: x FACTOR from STEP on, e.g. 200000:0.5 300000:0.1")
    parser.add_argument("--betas", type=float, nargs=2, default=None, help="Adam betas (default 0.5 0.999)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 128; 126 for pack 3)")
    parser.add_argument("--latent-dim", type=int, default=None, help="G's noise size (default: the preset's)")
    parser.add_argument("--pack-convention", choices=["samples", "rows"], default=None,
                        help="samples (default): D sees batch/pack packed rows (fastgan's); rows: batch packed rows "
                             "(PacGAN's code)")
    parser.add_argument("--update", choices=["alternating", "simultaneous"], default=None,
                        help="alternating (default) or simultaneous (PacGAN's code) D and G updates")
    parser.add_argument("--replicas", action="store_true",
                        help="train each variant's seeds at once, as one K-replica trainer")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="only print the markdown table of a saved run (its record, e.g. quality.json, or its "
                             "payload) as this version draws it; the run's own table stays as it was")
    args = parser.parse_args(argv)
    if args.render is not None:
        payload = json.loads(args.render.read_text())
        payload = payload.get("payload", payload)   # (a record of runs.jsonl, or a bare payload)
        print(_report(payload["environment"], payload["seeds"], payload["steps"], payload["digits_steps"],
                      payload["mixtures"], payload["digits"], payload["time_to_quality"],
                      payload.get("architecture", ""), payload.get("digits_preset", "classic")))
        return 0
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    seeds = args.seeds or (2 if args.quick else 10)
    steps = args.steps or (1500 if args.quick else 10000)
    digits_steps = args.digits_steps or (1000 if args.quick else 20000)
    variants = args.variants or (QUICK_VARIANTS if args.quick else [v for v in VARIANTS if v not in IMAGE_ONLY])
    mixture_variants = [] if args.no_mixtures else [v for v in variants if v not in IMAGE_ONLY]
    # every variant applies to the digits; without --variants, the digits list
    digits_variants = [] if args.no_digits else (args.variants if args.variants is not None else
                                                 QUICK_DIGITS_VARIANTS if args.quick else DIGITS_VARIANTS)
    env = environment()
    print(f"card: {env['card']} | seeds {seeds} | steps {steps} | variants {variants}", flush=True)
    defaults = PACGAN_PROTOCOL if args.preset == "pacgan" else PROTOCOL
    given = {"lr": args.lr, "betas": tuple(args.betas) if args.betas else None, "batch": args.batch,
             "latent_dim": args.latent_dim, "pack_convention": args.pack_convention, "update": args.update,
             "lr_schedule": lr_schedule_arg(args.lr_schedule)}
    protocol = {**defaults, **{k: v for k, v in given.items() if v is not None}, "preset": args.preset}
    if args.preset == "pacgan" and protocol["latent_dim"] != 2:
        parser.error("--preset pacgan: its G takes 2-d noise (no --latent-dim)")
    for variant in mixture_variants:   # a setting a variant cannot take fails here, before hours of training
        try:
            fastgan.TrainConfig(**trainer_settings(variant, protocol)[0],
                                **({"replicas": seeds} if args.replicas else {}))
        except ValueError as error:
            parser.error(f"variant {variant} with these settings: {error}")
    mixtures, mix_pictures = run_mixtures(["ring", "grid"], mixture_variants, seeds, steps, device, protocol,
                                          args.replicas) if mixture_variants else ({}, {})
    digits_results, digit_pictures = (run_digits(digits_variants, digits_steps, device, args.digits_preset)
                                      if digits_variants else ({}, {}))
    ttq = time_to_quality(device, seeds=min(seeds, 3), max_steps=steps, protocol=protocol,
                          variants=mixture_variants) if mixture_variants and not args.no_time_to_quality else {}
    text = _report(env, seeds, steps, digits_steps, mixtures, digits_results, ttq, describe(protocol),
                   args.digits_preset)
    payload = {"environment": env, "seeds": seeds, "steps": steps, "digits_steps": digits_steps,
               "architecture": describe(protocol), "variants": {v: VARIANTS[v] for v in variants},
               "protocol": {**protocol, "replicas": args.replicas}, "digits_preset": args.digits_preset,
               "mixtures": mixtures, "digits": digits_results, "time_to_quality": ttq,
               "published_pacgan_table1": {f"{k}/{n}": v for (k, n), v in PACGAN_TABLE1.items()},
               "interpreter": ops.INTERPRET}
    json_path, md_path, *pictures = write_results(
        "quality", payload, text, args.out, quick=args.quick,
        draw=lambda folder, stem: draw(mix_pictures, digit_pictures, folder, stem))
    print(f"wrote {json_path}, {md_path}, " + ", ".join(map(str, pictures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
