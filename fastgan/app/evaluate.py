"""``fastgan evaluate`` (a checkpoint's quality metrics, plain or D-guided samples) and ``fastgan profile``."""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from .. import data as datasets
from .. import metrics as quality_metrics
from ..checkpoint import CheckpointError, load_checkpoint
from ..profiling import format_table, print_commands, profile_trainer
from ..nn.presets import DATA_PRESETS, PRESETS, build_models
from ..nn.stacked import stack_models
from ..sampling import SampleOptions
from ..train.checkpoints import REPLICA_FORMAT, SHARDED_FORMAT
from ..train.config import TrainConfig
from ..train.trainer import GANTrainer
from .args import config_from_args, resolve_device
from .sweep import headline, per_setting, summary_table, sweep_from_config


def run_evaluate(args: argparse.Namespace) -> int:
    if args.checkpoint.is_dir():
        inside = args.checkpoint / "checkpoint.pt"
        if not inside.is_file():
            raise ValueError(f"{args.checkpoint} is a folder with no checkpoint.pt in it: pass the checkpoint file")
        args.checkpoint = inside
    state = load_checkpoint(args.checkpoint)
    if state.get("format") == SHARDED_FORMAT:   # a sweep split over processes: its shards, in replica order
        shards = [load_checkpoint(args.checkpoint.parent / name) for name in state["shards"]]
        state = {**shards[0], "extra": state["extra"], "config": state["config"],
                 "generator": torch.cat([s["generator"] for s in shards]),
                 "discriminator": torch.cat([s["discriminator"] for s in shards]),
                 "ema": torch.cat([s["ema"] for s in shards]) if shards[0].get("ema") is not None else None}
    model = state.get("extra", {}).get("model")
    if model is None:
        print(f"fastgan: {args.checkpoint} has no model description (was it written by `fastgan train`?)",
              file=sys.stderr)
        return 2
    guided = args.rejection is not None or args.metropolis is not None
    if args.rejection is not None and args.metropolis is not None:
        print("fastgan: --rejection and --metropolis are two ways for D to pick the samples: pass one",
              file=sys.stderr)
        return 2
    if args.sharpen != 1.0 and (args.metropolis is None or not 1.0 < args.sharpen < float("inf")):
        print(f"fastgan: --sharpen {args.sharpen:g}: Metropolis-Hastings' beta, a finite number >= 1 with "
              "--metropolis L", file=sys.stderr)
        return 2
    if args.metropolis_step != 1.0 and (args.metropolis is None or not 0.0 < args.metropolis_step <= 1.0):
        print(f"fastgan: --metropolis-step {args.metropolis_step:g}: the proposals' step, a number in (0, 1] with "
              "--metropolis L", file=sys.stderr)
        return 2
    if args.jacobian is not None and guided:
        print("fastgan: --jacobian picks G's samples without D: pass it without --rejection or --metropolis",
              file=sys.stderr)
        return 2
    if args.calibrate is not None and not guided:
        print("fastgan: --calibrate calibrates D for rejection or Metropolis-Hastings sampling: add --rejection Q "
              "or --metropolis L", file=sys.stderr)
        return 2
    if model["data"] not in ("digits", "ring", "grid"):
        print("fastgan: evaluate knows digits, ring and grid; MNIST needs its own classifier", file=sys.stderr)
        return 2
    if (guided or args.jacobian is not None) and model.get("num_classes"):
        option = ("--rejection" if args.rejection is not None else "--metropolis" if args.metropolis is not None
                  else "--jacobian")
        print(f"fastgan: {option} is for unconditional runs (this checkpoint's GAN takes labels)", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    features = 784 if model["data"] in ("digits", "mnist") else 2
    generator, discriminator = build_models(features, model)
    n = args.samples or quality_metrics.default_samples(model["data"])
    start = time.perf_counter()
    acceptance = []
    real = datasets.load(model["data"], device=device) if args.calibrate else None
    options = SampleOptions.from_arguments(False if args.rejection is None else args.rejection, args.metropolis or 0,
                                           args.sharpen, args.metropolis_step, args.calibrate or 0,
                                           args.calibrate_lr, args.calibrate_batch,
                                           False if args.jacobian is None else args.jacobian)   # (checked above)

    # a conditional GAN's samples: each class in turn (what fastgan train's metrics ask for)
    labels = torch.arange(n, device=device) % model["num_classes"] if model.get("num_classes") else None

    def draw(g, d):
        samples, rate = options.draw(g, d, real, n, model["latent_dim"], args.seed, device, model.get("pack", 1),
                                     labels)
        if rate is not None:
            acceptance.append(rate)
        return samples

    if state.get("format") == REPLICA_FORMAT:   # K replicas: each one's metrics, their mean and standard error
        flat = state["ema"] if state.get("ema") is not None else state["generator"]
        stacked, stacked_d = stack_models([generator]), stack_models([discriminator])
        flat_d = state["discriminator"]
        if flat.shape[1] != stacked.flat.shape[1] or (guided and (
                flat_d.shape != (flat.shape[0], stacked_d.flat.shape[1]))):
            raise CheckpointError(f"{args.checkpoint}: its weights do not fit the model it describes")
        # (a run of several starts: the one it kept, as one GAN)
        kept = state.get("extra", {}).get("start_scores", {}).get("kept")
        per_replica = []
        for k in range(flat.shape[0]) if kept is None else [kept]:
            g = stacked.load_into(generator, k, flat).to(device).eval()
            d = stacked_d.load_into(discriminator, k, flat_d).to(device).eval() if guided else None
            per_replica.append(quality_metrics.evaluate(model["data"], draw(g, d), labels))
        weights = "ema" if state.get("ema") is not None else "generator"
        kept_start = None
        if kept is None:
            result = quality_metrics.replica_summary(per_replica)
            grid = sweep_from_config(TrainConfig.from_dict(state["config"]))   # its settings and seeds
            figures = [headline(model["data"], q) for q in per_replica]
        else:
            result, grid = per_replica[0], None
            kept_start = {"seed": state["config"]["seed"] + kept, "of_starts": flat.shape[0]}
    else:
        grid = kept_start = None
        weights = "ema" if state.get("ema") else "generator"
        generator.load_state_dict(state.get("ema") or state["generator"])
        generator.to(device).eval()
        if guided:
            discriminator.load_state_dict(state["discriminator"])
            discriminator.to(device).eval()
        result = quality_metrics.evaluate(model["data"], draw(generator, discriminator), labels)
    rate = acceptance[0] if len(acceptance) == 1 else acceptance
    if args.jacobian is not None:
        sampling = {"jacobian_factor": args.jacobian, "acceptance": rate}
    elif guided:
        sampling = {**({"rejection_quantile": args.rejection} if args.rejection is not None
                       else {"metropolis_chain": args.metropolis, "sharpen": args.sharpen,
                             "metropolis_step": args.metropolis_step}),
                    "calibrate": args.calibrate or 0,
                    **({"calibrate_lr": args.calibrate_lr, "calibrate_batch": args.calibrate_batch}
                       if args.calibrate else {}),
                    "acceptance": rate}
    else:
        sampling = "plain"
    report = {"checkpoint": str(args.checkpoint), "step": state["step"], "data": model["data"],
              "weights": weights, "samples": n, "seed": args.seed, "sampling": sampling,
              "device": str(device), **({"start": kept_start} if kept_start is not None else {}), "metrics": result,
              **({"per_setting": per_setting(grid, figures)} if grid is not None else {}),
              "seconds": round(time.perf_counter() - start, 2)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if grid is not None:   # the per-setting table for the reader (stderr: stdout stays one JSON document)
        print(f"fastgan: per setting, mean ± s.e. over its {grid.seeds} seed(s)\n" + summary_table(grid, figures),
              end="", file=sys.stderr)
    return 0


def run_profile(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    real = datasets.load(args.data, root=args.data_root, device=config.device)
    torch.manual_seed(0)
    g, d = PRESETS[DATA_PRESETS[args.data]].build(real.shape[1], hidden=args.hidden)
    trainer = GANTrainer(g, d, real, config)
    summary = profile_trainer(trainer, steps=args.steps, warmup=args.warmup, out=args.out, trace=not args.no_trace)
    if "table" in summary:
        print(format_table(summary, limit=25))
        print(f"\nwrote {args.out / 'trace.json'}, {args.out / 'kernels.md'}, {args.out / 'profile.json'}")
    if summary["triton_launches_per_step"]:
        print("Triton launches per step:", summary["triton_launches_per_step"])
    argv = [a for a in (sys.argv[1:] if sys.argv and sys.argv[0].endswith("fastgan") else ["profile"])
            if a != "--no-trace"]
    print_commands(argv)
    return 0


