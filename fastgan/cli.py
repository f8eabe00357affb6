"""The ``fastgan`` command: ``fastgan train`` (and, as they land, ``bench``, ``profile``, ``evaluate``)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from . import data as datasets
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .models import (DATA_PRESETS, PRESETS, ModelPreset, _guided_sample, _sample_guide, calibrate_discriminator,
                     generate)
from .plots import save_image_grid, save_loss_curve, save_scatter, save_scatter_panels
from .losses import LOSSES
from .config import KERNELS, PACK_CONVENTIONS, PER_REPLICA, PRECISIONS, SAMPLERS, UPDATES, TrainConfig
from .trainer import GANTrainer, NonFiniteLossError, TrainingInterrupted

DESCRIPTION = """\
fastgan: fast GAN training in PyTorch.

Train an MLP GAN on the bundled handwritten digits, with no download:

  fastgan train --out runs/digits

writes samples.png (a grid of generated digits), losses.png, checkpoint.pt and
metrics.json into the output folder. The defaults (G 100-256-256-784 and
D 784-256-256-1 with leaky-ReLU, label smoothing 0.9, PacGAN packing 2, an
EMA of G's weights, 20,000 steps) give digits at FD ~4 (real floor 3.25) in
about 2 minutes on a 2-core CPU; `--hidden 128 128 --real-label 1.0 --pack 1
--ema 0` is the classic GAN. Run `fastgan train --help` for the options."""

TRAIN_EPILOG = """\
examples:
  fastgan train                                 # digits, default steps, into runs/digits
  fastgan train --data ring --steps 3000        # the 8-Gaussian ring, 2-D scatter plot
  fastgan train --data mnist --data-root ~/mnist --steps 20000
  fastgan train --out runs/digits --steps 8000 --resume   # continue a run up to 8000 steps"""

# The index checkpoint.pt of a sweep whose replicas were split over processes (each wrote its own shard)
SHARDED_FORMAT = "fastgan.ShardedReplicas"

# The noise seed of the samples the quality metrics are computed on: `fastgan train` (metrics.json) and
# `fastgan evaluate` use the same one, so one checkpoint gives the same figures on the same device.
QUALITY_SEED = 1


def resolve_device(text: str | None) -> torch.device:
    """``--device`` as a torch.device, or a one-line ValueError saying what is wrong (no traceback)."""
    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {text!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {text}: this machine has no usable CUDA device (torch {torch.__version__}, "
                             f"built with CUDA {torch.version.cuda or 'no'}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {text}: there are only {torch.cuda.device_count()} CUDA devices")
    elif device.type != "cpu":
        raise ValueError(f"--device {text}: fastgan trains on cpu or cuda, not {device.type}")
    return device


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _quantile(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a quantile in [0, 1), got {text}")
    return value


def lr_milestone(text: str) -> tuple[int, float] | None:
    """One ``STEP:FACTOR`` of ``--lr-schedule`` (an argparse type): ``200000:0.5``; ``none``: None."""
    if text.lower() == "none":
        return None
    step, sep, factor = text.partition(":")
    try:
        pair = (int(step), float(factor))
    except ValueError:
        pair = None
    if not sep or pair is None or pair[0] < 1 or not (math.isfinite(pair[1]) and pair[1] > 0):
        raise argparse.ArgumentTypeError(f"each milestone is STEP:FACTOR (a positive step, a positive factor), "
                                         f"e.g. 200000:0.5, got {text!r}")
    return pair


def lr_schedule_arg(milestones) -> tuple[tuple[int, float], ...] | None:
    """``--lr-schedule``'s values as a schedule, ``none`` entries dropped; None (not given) stays None."""
    return None if milestones is None else tuple(m for m in milestones if m is not None)


def _add_fast_step_options(parser: argparse.ArgumentParser) -> None:
    """Where and how the step runs: the same options for `train` and `profile`."""
    group = parser.add_argument_group("fast step")
    group.add_argument("--kernels", choices=KERNELS, default="torch",
                       help="torch (default), triton (fused per layer; fastest in a CUDA graph with "
                            "--fused-optimizer), triton-mlp (each network one fused kernel per pass: the fastest "
                            "without a graph), cuda (fastgan's native CUDA kernels: a GPU and the CMake build) or "
                            "auto (measured on an H200: triton in a CUDA graph at batch <= 512, else torch)")
    group.add_argument("--sampler", choices=SAMPLERS, default="auto",
                       help="batch and noise draws: torch (PyTorch's generator), philox (one Triton kernel; "
                            "triton-mlp) or auto (default: philox where triton-mlp's fused step runs)")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    group.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                       help="torch.compile the step (optionally a mode: reduce-overhead, max-autotune)")
    group.add_argument("--fused-optimizer", nargs="?", const="flat", default=False, choices=["flat", "torch"],
                       help="flat (the default when given): FlatAdam, flat parameter buffers and Adam in one "
                            "Triton kernel per model; torch: torch.optim.Adam(fused=True)")
    group.add_argument("--precision", choices=PRECISIONS, default="tf32",
                       help="matmul precision for every kernel: exact fp32, tf32 (default) or bf16 autocast")
    group.add_argument("--cuda-graph", action="store_true", help="capture whole steps in a CUDA graph (CUDA only)")
    group.add_argument("--steps-per-replay", type=_positive(int), default=1,
                       help="steps captured per graph replay (with --cuda-graph; default: 1)")


# TrainConfig's fields that `fastgan train` takes from elsewhere than a flag of the same name, and why.
# Every other field is a flag (tests/test_cli.py checks): a new setting cannot be forgotten here.
NOT_TRAIN_FLAGS = {
    "betas": "DCGAN's (0.5, 0.999), as every run in the benchmarks",
    "graph_warmup": "3 eager steps before a CUDA-graph capture, enough to create and tune everything",
    "data_parallel": "set by the process count: under torchrun a run without --replicas is data-parallel",
}
# Flags whose default is not TrainConfig's, and why (the others share it: tests/test_config.py checks).
CLI_DEFAULTS = {"real_label": "0.9 (one-sided label smoothing) with the BCE loss, 1.0 with hinge",
                "pack": "2 for unconditional digits/MNIST (with smoothing and EMA: FD 4.44; smoothing alone: 26.5), "
                        "else 1; a resumed run keeps its own",
                "ema": "0.999 for unconditional digits/MNIST (the recipe's last part, see its results), else off; "
                       "a resumed run keeps its own unless --ema is given",
                "lr_schedule": "none (a constant rate); a resumed run keeps its own unless --lr-schedule is given"}
# The unconditional image recipe, chosen by measured FD (benchmarks/results/cpu/2026-11-27-digits-recipe.md)
IMAGE_RECIPE = {"pack": 2, "ema": 0.999}


def config_from_args(args: argparse.Namespace, **fixed) -> TrainConfig:
    """The TrainConfig of a command: every field whose flag the command has (same name), then ``fixed``.
    A per-replica flag given several values (``--lr 1e-4 2e-4``) becomes a per-replica sequence."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    for name in PER_REPLICA:
        if isinstance(values.get(name), list):
            values[name] = values[name][0] if len(values[name]) == 1 else tuple(values[name])
    values.update(fixed, device=str(resolve_device(args.device)))
    return TrainConfig(**values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgan", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = sub.add_parser("train", help="train a GAN and write samples, losses, checkpoint, metrics",
                           description="Train the MLP GAN on a data set and write its results to --out.",
                           epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--data", choices=datasets.DATASETS, default="digits",
                       help="training data (default: digits, bundled with scikit-learn)")
    train.add_argument("--data-root", help="folder holding MNIST's IDX files (for --data mnist)")
    train.add_argument("--steps", type=_positive(int), default=20000,
                       help="total training steps; a resumed run continues up to it (default: 20000)")
    train.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<data>)")
    train.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    train.add_argument("--conditional", action="store_true",
                       help="class-conditional GAN (digits, mnist): G(z, label) and a projection D; samples.png "
                            "has one row per class and metrics.json the classifier's per-class accuracy")
    train.add_argument("--batch-size", type=_positive(int), default=128, help="default: 128")
    train.add_argument("--lr", type=_positive(float), nargs="+", default=2e-4, metavar="LR",
                       help="Adam learning rate (default: 2e-4); with --replicas K, K values give one per replica")
    train.add_argument("--replicas", type=_positive(int), default=None, metavar="K",
                       help="train K GANs at once (replica k: seed + k, its own init, batches and noise); "
                            "samples.png gets a row (a panel) per replica, metrics.json each replica's quality and "
                            "their mean +- standard error. --lr, --lr-g, --lr-d, --real-label, --instance-noise "
                            "take K values for a sweep")
    train.add_argument("--hidden", type=_positive(int), nargs="+", default=None,
                       help="hidden widths of G and D (default: the data set's preset, 256 256; the classic GAN "
                            "is 128 128)")
    train.add_argument("--real-label", type=float, nargs="+", default=None,
                       help="D's target for real data: 0.9 (the default with the BCE loss) is one-sided label "
                            "smoothing, 1.0 the plain GAN loss; not used by --loss hinge")
    train.add_argument("--latent-dim", type=_positive(int), default=None,
                       help="G's noise size (default: the data set's preset: 100 for images, 16 for ring/grid)")
    train.add_argument("--seed", type=int, default=0, help="seeds model init, batches and noise (default: 0)")
    _add_fast_step_options(train)
    stabilise = train.add_argument_group("stabilisation options")
    stabilise.add_argument("--loss", choices=LOSSES, default="non_saturating")
    stabilise.add_argument("--lr-g", type=_positive(float), nargs="+", default=None, help="G's learning rate (TTUR)")
    stabilise.add_argument("--lr-d", type=_positive(float), nargs="+", default=None, help="D's learning rate (TTUR)")
    stabilise.add_argument("--lr-schedule", type=lr_milestone, nargs="+", default=None, metavar="STEP:FACTOR",
                           help="step-down learning rates: from STEP on, G's and D's rates are their base values "
                                "times FACTOR, e.g. 200000:0.5 300000:0.1 (steps increasing); a resumed run keeps "
                                "its own unless this is given (none: a constant rate)")
    stabilise.add_argument("--d-steps", type=_positive(int), default=1, help="D updates per G update")
    stabilise.add_argument("--ema", type=float, default=None,
                           help="EMA decay of G's weights (samples and metrics use the average); default 0.999 "
                                "for unconditional digits/MNIST, else off; 0 turns it off")
    stabilise.add_argument("--pack", type=_positive(int), default=None,
                           help="PacGAN packing degree: D sees this many samples per row; default 2 for "
                                "unconditional digits/MNIST, else 1")
    stabilise.add_argument("--pack-convention", choices=PACK_CONVENTIONS, default="samples",
                           help="what --batch-size counts when packing: samples (default: D sees batch/pack rows) "
                                "or rows (PacGAN's code: D sees batch packed rows, pack x batch samples a step)")
    stabilise.add_argument("--update", choices=UPDATES, default="alternating",
                           help="alternating (default: D's update, then G's through the updated D) or simultaneous "
                                "(both from one pass of D: PacGAN's code)")
    stabilise.add_argument("--instance-noise", type=float, nargs="+", default=0.0,
                           help="std of noise on D's inputs")
    stabilise.add_argument("--r1-gamma", type=float, default=0.0, help="R1 penalty weight on real data")
    stabilise.add_argument("--r1-every", type=_positive(int), default=16, help="R1 every N steps")
    for net, name in (("g", "G"), ("d", "D")):
        stabilise.add_argument(f"--weight-decay-{net}", type=float, default=0.0,
                               help=f"decoupled weight decay of {name} (AdamW's), e.g. 0.01")
        stabilise.add_argument(f"--l1-{net}", type=float, default=0.0, help=f"L1 penalty weight on {name}'s weights")
    stabilise.add_argument("--augment", default="", metavar="T1,T2",
                           help="differentiable augmentation of D's inputs (images): translation, cutout, "
                                "brightness, contrast, flip; e.g. translation,cutout")
    stabilise.add_argument("--augment-p", type=float, default=None,
                           help="probability each augmentation is applied (default 1; with --augment-target, "
                                "the starting one, default 0)")
    stabilise.add_argument("--augment-target", type=float, default=None,
                           help="adapt the probability (ADA) so E[sign(D(real))] approaches this, e.g. 0.6")
    stabilise.add_argument("--spectral-norm", action="store_true",
                           help="spectral normalisation of D's layers (one power iteration per step)")
    train.add_argument("--log-every", type=_positive(int), default=200,
                       help="read losses and checkpoint every N steps (default: 200)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=run_train)

    evaluate = sub.add_parser("evaluate", help="quality metrics of a checkpoint's generator",
                              description="Sample a checkpoint's generator (its EMA weights when it kept them) "
                                          "and print the quality metrics of its data set as JSON: mode coverage "
                                          "for ring/grid; Fréchet distance, precision/recall, density/coverage "
                                          "and class coverage for digits, each beside its real-vs-real floor.")
    evaluate.add_argument("checkpoint", type=Path,
                          help="a checkpoint.pt written by `fastgan train`, or the run's folder holding one")
    evaluate.add_argument("--samples", type=_positive(int), default=None,
                          help="generated samples (default: 2500 for ring/grid, 899 for digits: the floor's size)")
    evaluate.add_argument("--seed", type=int, default=QUALITY_SEED,
                          help=f"seed of the noise the samples are drawn from (default: {QUALITY_SEED}, the one "
                               "fastgan train used for metrics.json: same checkpoint, seed and device give the "
                               "same figures; CPU and CUDA draw different noise from one seed)")
    evaluate.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    evaluate.add_argument("--rejection", type=_quantile, default=None, metavar="Q",
                          help="discriminator rejection sampling: G's candidates kept by the checkpoint's D, gamma at "
                               "quantile Q in [0, 1) (e.g. 0.5; higher: stricter); the report says so and gives the "
                               "rate kept. Unconditional runs.")
    evaluate.add_argument("--metropolis", type=_positive(int), default=None, metavar="L",
                          help="instead of --rejection: Metropolis-Hastings over D's scores, each sample the last "
                               "state of a chain of L proposals of G (e.g. 100); it weighs G's samples by the density "
                               "ratio D's logit estimates, so use it with --calibrate. Unconditional runs.")
    evaluate.add_argument("--sharpen", type=float, default=1.0, metavar="BETA",
                          help="with --metropolis: the chain samples p_G exp(BETA logit) (default 1, the exact "
                               "correction; above 1 it favours D's best-scored samples over the modes' balance)")
    evaluate.add_argument("--metropolis-step", type=float, default=1.0, metavar="S",
                          help="with --metropolis: propose in G's latent space, z' = sqrt(1 - S^2) z + S noise, S in "
                               "(0, 1] (default 1: independent proposals, MH-GAN's); a small S (e.g. 0.1) refines "
                               "each sample within its mode and keeps G's mode shares")
    evaluate.add_argument("--calibrate", type=_positive(int), default=None, metavar="N",
                          help="with --rejection or --metropolis: first train a copy of the checkpoint's D N steps "
                               "(e.g. 2000) against the generator sampled from, G held fixed, on the run's data, so D "
                               "judges that generator (its EMA weights included) and the modes keep their balance")
    evaluate.add_argument("--calibrate-lr", type=_positive(float), default=1e-4, metavar="LR",
                          help="with --calibrate: its Adam learning rate (default 1e-4; after a step-down schedule, "
                               "the run's final D rate)")
    evaluate.add_argument("--calibrate-batch", type=_positive(int), default=500, metavar="N",
                          help="with --calibrate: real and generated rows per step (default 500)")
    evaluate.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    evaluate.set_defaults(run=run_evaluate)

    prof = sub.add_parser("profile", help="profile training steps: trace, per-kernel table, Nsight commands",
                          description="Warm up, then profile N training steps of the MLP GAN (classic 128-wide "
                                      "by default) between cudaProfilerStart/Stop under torch.profiler: writes "
                                      "trace.json (chrome://tracing, ui.perfetto.dev), kernels.md (launches and "
                                      "time per kernel) and profile.json, and prints the nsys and ncu command "
                                      "lines for the same run. Phases are NVTX ranges (D.forward.real, "
                                      "D.backward, D.optim, ...).")
    prof.add_argument("--data", choices=datasets.DATASETS, default="digits")
    prof.add_argument("--data-root")
    prof.add_argument("--steps", type=_positive(int), default=20, help="profiled steps (default: 20)")
    prof.add_argument("--warmup", type=int, default=10, help="steps before profiling (default: 10)")
    prof.add_argument("--batch-size", type=_positive(int), default=128)
    prof.add_argument("--hidden", type=_positive(int), nargs="+", default=list(PRESETS["classic"].hidden),
                      help="hidden widths of G and D (default: the classic GAN's, 128 128)")
    _add_fast_step_options(prof)
    prof.add_argument("--out", type=Path, default=Path("runs/profile"))
    prof.add_argument("--no-trace", action="store_true",
                      help="no torch.profiler (for runs under nsys/ncu): NVTX ranges and the capture range only")
    prof.set_defaults(run=run_profile)
    return parser


def model_description(data: str, preset: ModelPreset, pack: int) -> dict:
    """A run's model description, what checkpoints keep under extra["model"] (``_models`` rebuilds G and D
    from it; ``fastgan evaluate`` reads it)."""
    return {"data": data, "hidden": list(preset.hidden), "pack": pack, "latent_dim": preset.latent_dim,
            "output_activation": preset.output_activation}


def _models(features: int, model: dict):
    """G and D from a run's model description (what checkpoints keep under extra["model"]); conditional
    (``ConditionalMLPGenerator`` / ``ProjectionDiscriminator``) where it has ``num_classes``."""
    preset = ModelPreset(model["latent_dim"], tuple(model["hidden"]), model["output_activation"])
    return preset.build(features, pack=model.get("pack", 1), num_classes=model.get("num_classes"))


def run_train(args: argparse.Namespace) -> int:
    out: Path = args.out or Path("runs") / args.data
    checkpoint = out / "checkpoint.pt"
    preset = PRESETS[DATA_PRESETS[args.data]]
    recipe = IMAGE_RECIPE if args.data in ("digits", "mnist") and not args.conditional else {"pack": 1, "ema": None}
    if args.pack is None:   # (a resumed run keeps the model it was trained with, packing included)
        args.pack = recipe["pack"]
    ema_given = args.ema is not None
    schedule_given = args.lr_schedule is not None
    args.lr_schedule = lr_schedule_arg(args.lr_schedule) or ()   # (none: a constant rate)
    args.ema = recipe["ema"] if args.ema is None else (args.ema or None)   # --ema 0: off
    model_config = model_description(args.data, ModelPreset(args.latent_dim or preset.latent_dim,
                                                            tuple(args.hidden or preset.hidden),
                                                            preset.output_activation), args.pack)
    if args.conditional:
        if args.data not in ("digits", "mnist"):
            raise ValueError(f"--conditional needs class labels: --data digits or mnist, not {args.data}")
        if args.pack > 1:
            raise ValueError("--conditional does not combine with --pack")
        model_config["num_classes"] = 10
    from . import distributed
    device = resolve_device(args.device)
    multi = distributed.init(device)
    rank, world = distributed.rank(), distributed.world_size()
    sweep = multi and args.replicas is not None
    shard_path = out / f"checkpoint.rank{rank}-of-{world}.pt" if sweep else checkpoint
    saved = None
    if args.resume:
        if not checkpoint.exists():
            print(f"fastgan: --resume given but {checkpoint} does not exist", file=sys.stderr)
            return 2
        saved = load_checkpoint(checkpoint)
        if saved.get("format") == SHARDED_FORMAT:
            if saved["world_size"] != world:
                raise ValueError(f"{checkpoint} holds a sweep of {saved['replicas']} replicas trained by "
                                 f"{saved['world_size']} processes; this run has {world}: resume it with "
                                 f"torchrun --nproc_per_node={saved['world_size']} (each process resumes its shard)")
        elif sweep:
            raise ValueError(f"{checkpoint} is not a sweep's index (it was written by one process): resume it "
                             "without torchrun")
        model_config = saved.get("extra", {}).get("model", model_config)
        if not ema_given:   # a run resumes with the EMA it was trained with, whatever today's default
            args.ema = (saved.get("config") or {}).get("ema")
        if not schedule_given:   # and with its learning-rate schedule (a function of the step)
            args.lr_schedule = (saved.get("config") or {}).get("lr_schedule", ())
        if model_config.get("data") != args.data:
            print(f"fastgan: {checkpoint} was trained on --data {model_config.get('data')}, not {args.data}",
                  file=sys.stderr)
            return 2

    if args.real_label is None:
        args.real_label = [1.0 if args.loss == "hinge" else 0.9]
        if args.loss != "hinge" and rank == 0:   # the API's default is 1.0: say which one this run uses, and why
            print("fastgan: real_label 0.9 (the CLI's default: one-sided label smoothing, steadier on digits; the "
                  "Python API's default is 1.0, the plain GAN loss: pass --real-label 1.0 for it)")
    config = config_from_args(args, pack=model_config.get("pack", 1), data_parallel=multi and not sweep)
    whole = config
    if multi:   # before anything one rank could refuse alone: every rank at the same collective
        distributed.check_same_config({**{k: v for k, v in whole.to_dict().items() if k != "device"},
                                       "model": model_config, "steps": args.steps, "data": args.data})
    if sweep:   # this rank's slice of the replicas, as a run of its own (each replica keeps its seed)
        start, stop = distributed.shard(config.replicas, rank, world)
        config = config.shard(start, stop)
    conditional = model_config.get("num_classes") is not None   # (a resumed conditional run stays one)
    loaded = datasets.load(args.data, root=args.data_root, device=config.device, labels=conditional)
    real, labels = loaded if conditional else (loaded, None)
    torch.manual_seed(args.seed)
    g, d = _models(real.shape[1], {**model_config, "pack": config.pack})
    trainer = GANTrainer(g, d, real, config, labels=labels)
    if saved is not None:
        trainer.load(shard_path)
        if rank == 0:
            print(f"fastgan: resumed {checkpoint} at step {trainer.step_count}")
        changed = whole.changes_from(saved.get("config", {}))
        if changed and rank == 0:  # a resumed run equals an uninterrupted one only with the same settings
            print("fastgan: note: settings differ from the checkpoint's run: " +
                  ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()))

    extra = {"model": model_config}
    if sweep and rank == 0:   # the index first: an interrupted sweep resumes from it
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint({"format": SHARDED_FORMAT, "world_size": world, "replicas": whole.replicas,
                         "shards": [f"checkpoint.rank{r}-of-{world}.pt" for r in range(world)],
                         "config": whole.to_dict(), "extra": extra}, checkpoint)
    writes_checkpoint = sweep or rank == 0   # data-parallel ranks hold the same state: rank 0 keeps it
    remaining = args.steps - trainer.step_count
    start = time.perf_counter()
    status = "completed"
    if remaining > 0:
        if rank == 0:
            print(f"fastgan: training on {args.data} ({real.shape[0]} samples x {real.shape[1]} features), "
                  f"{remaining} steps at batch {args.batch_size} on {trainer.device}, kernels={trainer.kernels}"
                  + ("" if trainer.kernels_run in ("torch", "triton") else f" (running: {trainer.kernels_run})")
                  + (f", step: {trainer.step_path}" if trainer.kernels == "triton-mlp" else "")
                  + (f", {whole.replicas} replicas (seeds {args.seed}..{args.seed + whole.replicas - 1})"
                     if whole.replicas else "")
                  + (f", {world} processes ({'replicas split over them' if sweep else 'data-parallel'})"
                     if multi else ""))
        try:
            trainer.fit(remaining, log_every=args.log_every, progress=not args.no_progress and rank == 0,
                        checkpoint=shard_path if writes_checkpoint else None, checkpoint_extra=extra)
        except NonFiniteLossError as e:
            print(f"fastgan: stopped: {e}", file=sys.stderr)
            status = "diverged"
        except TrainingInterrupted as e:
            again = args.argv + ([] if "--resume" in args.argv else ["--resume"])
            if rank == 0:
                print(f"fastgan: interrupted at step {e.step} of {args.steps}; the checkpoint is {checkpoint}. "
                      f"Resume with: fastgan {shlex.join(again)}", file=sys.stderr)
            return 130
    seconds = time.perf_counter() - start
    trainer.flush_losses()
    results = None
    if whole.replicas is not None:   # every rank's replicas, gathered on rank 0 in replica order
        parts = distributed.gather(_replica_results(trainer, args, status))
        results = _merge_replica_results(parts) if rank == 0 else None
    if rank == 0:
        if results is not None and results["status"] != "completed" and status == "completed":
            status = f"diverged ({results['status']})"
            print(f"fastgan: stopped: {results['status']}: some replicas' losses became non-finite", file=sys.stderr)
        _write_outputs(trainer, out, args, model_config, status, seconds, max(remaining, 0), results, whole)
    if status == "completed" and writes_checkpoint:
        trainer.save(shard_path, extra=extra)
    if rank == 0:
        print(f"fastgan: wrote {out}/samples.png, losses.png, metrics.json, checkpoint.pt"
              + (f" (an index of the {world} ranks' checkpoint.rank*-of-{world}.pt)" if sweep else ""))
    code = 0 if status == "completed" else 1
    if multi:
        _leave_process_group(code)
    return code


def _leave_process_group(code: int) -> None:
    """The end of a torchrun rank's run: every rank done (rank 0 writes the outputs last), then out of the
    process without tearing the gloo group down, which was seen to abort a finished rank (SIGABRT,
    "terminate called without an active exception") and so fail a run that had written everything."""
    import os
    torch.distributed.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _replica_results(trainer, args, status: str) -> dict:
    """What a (sharded) replica run reports, computed where the replicas live: picture samples, each
    replica's quality (a completed run) and the losses per step."""
    shown = min(trainer.replicas, PICTURED_REPLICAS)
    pictures = trainer.sample(2500 if args.data in ("ring", "grid") else 10)[:shown].cpu()
    quality = None
    if status == "completed":
        samples = trainer.sample(_default_samples(args.data), seed=QUALITY_SEED)
        quality = [_quality(args.data, samples[k]) for k in range(trainer.replicas)]
    return {"pictures": pictures, "quality": quality, "history": trainer.history, "status": status,
            "weights": "ema" if trainer.ema_flat is not None else "generator"}


def _merge_replica_results(parts: list[dict]) -> dict:
    """The ranks' ``_replica_results`` as one run's: replicas in order (rank 0's first). Where a rank stopped
    early (a diverged shard), the history is the steps every rank has, the quality is left out, and
    ``status`` names the ranks that did not complete."""
    steps = min(len(p["history"]["step"]) for p in parts)
    history = {"step": parts[0]["history"]["step"][:steps]}
    for key in ("loss_d", "loss_g"):
        history[key] = [sum((p["history"][key][i] for p in parts), []) for i in range(steps)]
    incomplete = [f"rank {r} {p['status']}" for r, p in enumerate(parts) if p["status"] != "completed"]
    quality = None if incomplete else sum((p["quality"] for p in parts), [])
    pictures = torch.cat([p["pictures"] for p in parts])[:PICTURED_REPLICAS]
    return {"pictures": pictures, "quality": quality, "history": history, "weights": parts[0]["weights"],
            "status": "completed" if not incomplete else ", ".join(incomplete)}


def _write_outputs(trainer: GANTrainer, out: Path, args, model_config: dict, status: str, seconds: float,
                   steps_run: int, results: dict | None = None, config: TrainConfig | None = None) -> None:
    """samples.png, losses.png and metrics.json. A replica run passes its (gathered) ``results`` and the
    whole run's ``config`` (a sharded rank's trainer holds only its slice)."""
    out.mkdir(parents=True, exist_ok=True)
    config = config or trainer.config
    replicas = config.replicas
    if replicas is not None:
        _replica_pictures(results["pictures"], replicas, trainer, out, args)
    elif args.data in ("ring", "grid"):
        centers = datasets.ring_centers() if args.data == "ring" else datasets.grid_centers()
        save_scatter(trainer.sample(2500), out / "samples.png", centers=centers, real=trainer.data,
                     title=f"{args.data}: 2,500 samples after {trainer.step_count} steps")
    elif trainer.num_classes is not None:   # one row per class
        classes = trainer.num_classes
        rows = torch.arange(classes, device=trainer.device).repeat_interleave(10)
        save_image_grid(trainer.sample(10 * classes, labels=rows), out / "samples.png", columns=10,
                        title=f"{args.data}: one row per class (0 at the top), after {trainer.step_count} steps")
    else:
        save_image_grid(trainer.sample(64), out / "samples.png",
                        title=f"{args.data}: 64 samples after {trainer.step_count} steps")
    history = trainer.history
    if replicas is not None:   # the curve of the replicas' mean loss; metrics.json has each one's
        history = results["history"]
        history = {"step": history["step"], "loss_d": [sum(v) / len(v) for v in history["loss_d"]],
                   "loss_g": [sum(v) / len(v) for v in history["loss_g"]]}
    save_loss_curve(history, out / "losses.png", title=f"{args.data}: losses per step"
                    + (f" (mean of {replicas} replicas)" if replicas else ""))
    tail = max(1, min(len(history["step"]), args.log_every))
    window = list(zip(history["loss_d"][-tail:], history["loss_g"][-tail:]))
    metrics = {
        "status": status, "data": args.data, "steps": trainer.step_count, "steps_this_run": steps_run,
        "seconds_this_run": round(seconds, 3),
        "steps_per_second": round(steps_run / seconds, 2) if steps_run and seconds > 0 else None,
        "final_loss_d": sum(d for d, _ in window) / len(window) if window else None,
        "final_loss_g": sum(g for _, g in window) / len(window) if window else None,
        "loss_window_steps": tail,
        "config": {**model_config, **config.to_dict(), "kernels_run": trainer.kernels_run,
                   "step_path": trainer.step_path},
        "device": str(trainer.device),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    if replicas is not None:
        last = results["history"]["loss_d"][-1] if results["history"]["loss_d"] else None
        metrics["final_loss_d_per_replica"] = last
        metrics["final_loss_g_per_replica"] = results["history"]["loss_g"][-1] if last is not None else None
    if status == "completed" and replicas is not None:
        metrics["quality"] = replica_summary(results["quality"])
        metrics["quality_samples"] = {"seed": QUALITY_SEED, "device": str(trainer.device),
                                      "weights": results["weights"]}
    elif status == "completed":
        n = _default_samples(args.data)
        labels = torch.arange(n) % trainer.num_classes if trainer.num_classes else None
        metrics["quality"] = _quality(args.data, trainer.sample(n, seed=QUALITY_SEED, labels=labels), labels)
        metrics["quality_samples"] = {"seed": QUALITY_SEED, "device": str(trainer.device),
                                      "weights": "ema" if trainer.ema is not None else "generator"}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


# a sample picture shows at most this many replicas (metrics.json has every one)
PICTURED_REPLICAS = 16


def _replica_pictures(samples: torch.Tensor, replicas: int, trainer, out: Path, args) -> None:
    """samples.png of a K-replica run: a row of 10 images per replica, or a scatter panel per replica."""
    shown = samples.shape[0]
    more = f" (the first {shown} of {replicas})" if shown < replicas else ""
    if args.data in ("ring", "grid"):
        centers = datasets.ring_centers() if args.data == "ring" else datasets.grid_centers()
        save_scatter_panels(samples, out / "samples.png", centers=centers, real=trainer.data,
                            title=f"{args.data}: 2,500 samples per replica after {trainer.step_count} steps{more}")
    else:
        save_image_grid(samples.reshape(-1, samples.shape[-1]), out / "samples.png", columns=10,
                        title=f"{args.data}: a row per replica (0 at the top), after {trainer.step_count} "
                              f"steps{more}")


def replica_summary(per_replica: list[dict | None]) -> dict | None:
    """Each replica's metrics and, for every numeric metric, the mean and its standard error over replicas."""
    if not per_replica or per_replica[0] is None:
        return None
    keys = [k for k, v in per_replica[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    summary = {"replicas": per_replica, "mean": {}, "stderr": {}}
    for key in keys:
        values = torch.tensor([float(m[key]) for m in per_replica], dtype=torch.float64)
        summary["mean"][key] = values.mean().item()
        summary["stderr"][key] = (values.std() / len(values) ** 0.5).item() if len(values) > 1 else 0.0
    return summary


def _default_samples(data_name: str) -> int:
    return 2500 if data_name in ("ring", "grid") else 899  # the protocol's count; digits: the floor's size


def _quality(data_name: str, samples: torch.Tensor, labels: torch.Tensor | None = None) -> dict | None:
    """The quality metrics of ``samples`` for their data set, or None where fastgan has none (MNIST); for
    a conditional GAN (``labels``: the class each sample was asked for) also the classifier's accuracy."""
    from . import metrics
    if data_name in ("ring", "grid"):
        return metrics.evaluate_mixture(samples, data_name)
    if data_name == "digits":
        result = metrics.evaluate_digits(samples)
        if labels is not None:
            result["conditional"] = metrics.conditional_accuracy(samples, labels)
        return result
    return None


def run_evaluate(args: argparse.Namespace) -> int:
    if args.checkpoint.is_dir():
        inside = args.checkpoint / "checkpoint.pt"
        if not inside.is_file():
            raise ValueError(f"{args.checkpoint} is a folder with no checkpoint.pt in it: pass the checkpoint file")
        args.checkpoint = inside
    state = load_checkpoint(args.checkpoint)
    if state.get("format") == SHARDED_FORMAT:   # a sweep split over processes: its shards, in replica order
        shards = [load_checkpoint(args.checkpoint.parent / name) for name in state["shards"]]
        state = {**shards[0], "extra": state["extra"],
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
    if args.calibrate is not None and not guided:
        print("fastgan: --calibrate calibrates D for rejection or Metropolis-Hastings sampling: add --rejection Q "
              "or --metropolis L", file=sys.stderr)
        return 2
    if model["data"] not in ("digits", "ring", "grid"):
        print("fastgan: evaluate knows digits, ring and grid; MNIST needs its own classifier", file=sys.stderr)
        return 2
    if guided and model.get("num_classes"):
        option = "--rejection" if args.rejection is not None else "--metropolis"
        print(f"fastgan: {option} is for unconditional runs (this checkpoint's GAN takes labels)", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    features = 784 if model["data"] in ("digits", "mnist") else 2
    generator, discriminator = _models(features, model)
    n = args.samples or _default_samples(model["data"])
    start = time.perf_counter()
    acceptance = []
    real = datasets.load(model["data"], device=device) if args.calibrate else None
    guide = _sample_guide(False if args.rejection is None else args.rejection, args.metropolis or 0, args.sharpen,
                          args.metropolis_step)   # (checked above: the one-line errors)

    def draw(g, d):
        if not guided:
            return generate(g, n, model["latent_dim"], args.seed, device)
        if args.calibrate:
            d = calibrate_discriminator(g, d, real, model["latent_dim"], args.calibrate, args.seed, device,
                                        model.get("pack", 1), lr=args.calibrate_lr, batch=args.calibrate_batch)
        samples, rate = _guided_sample(g, d, n, model["latent_dim"], args.seed, device, guide, model.get("pack", 1))
        acceptance.append(rate)
        return samples

    from .replicas import REPLICA_FORMAT, StackedMLP
    if state.get("format") == REPLICA_FORMAT:   # K replicas: each one's metrics, their mean and standard error
        flat = state["ema"] if state.get("ema") is not None else state["generator"]
        stacked, stacked_d = StackedMLP([generator]), StackedMLP([discriminator])
        flat_d = state["discriminator"]
        if flat.shape[1] != stacked.flat.shape[1] or (guided and (
                flat_d.shape != (flat.shape[0], stacked_d.flat.shape[1]))):
            raise CheckpointError(f"{args.checkpoint}: its weights do not fit the model it describes")
        per_replica = []
        for k in range(flat.shape[0]):
            g = stacked.load_into(generator, k, flat).to(device).eval()
            d = stacked_d.load_into(discriminator, k, flat_d).to(device).eval() if guided else None
            per_replica.append(_quality(model["data"], draw(g, d)))
        result = replica_summary(per_replica)
        weights = "ema" if state.get("ema") is not None else "generator"
    else:
        weights = "ema" if state.get("ema") else "generator"
        generator.load_state_dict(state.get("ema") or state["generator"])
        generator.to(device).eval()
        if model.get("num_classes"):
            labels = torch.arange(n, device=device) % model["num_classes"]
            samples = generate(generator, n, model["latent_dim"], args.seed, device, labels=labels)
        else:
            labels = None
            if guided:
                discriminator.load_state_dict(state["discriminator"])
                discriminator.to(device).eval()
            samples = draw(generator, discriminator)
        result = _quality(model["data"], samples, labels)
    report = {"checkpoint": str(args.checkpoint), "step": state["step"], "data": model["data"],
              "weights": weights, "samples": n, "seed": args.seed,
              "sampling": "plain" if not guided else {
                  **({"rejection_quantile": args.rejection} if args.rejection is not None
                     else {"metropolis_chain": args.metropolis, "sharpen": args.sharpen,
                           "metropolis_step": args.metropolis_step}),
                  "calibrate": args.calibrate or 0,
                  **({"calibrate_lr": args.calibrate_lr, "calibrate_batch": args.calibrate_batch}
                     if args.calibrate else {}),
                  "acceptance": acceptance[0] if len(acceptance) == 1 else acceptance},
              "device": str(device), "metrics": result,
              "seconds": round(time.perf_counter() - start, 2)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def run_profile(args: argparse.Namespace) -> int:
    from .profiling import format_table, print_commands, profile_trainer
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 0
    from .distributed import DistributedError
    from .native import NativeKernelsUnavailable
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, CheckpointError, DistributedError, NativeKernelsUnavailable,
            FloatingPointError) as e:
        print(f"fastgan: error: {e}", file=sys.stderr)
        return 2
    except torch.distributed.DistError as e:   # a collective failed: a peer died, or the timeout passed
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"fastgan: error: a collective between the processes failed (did another process die or stop? "
              f"the timeout is FASTGAN_DIST_TIMEOUT seconds): {first}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # outside training (set-up, metrics): nothing to keep, no traceback
        print("fastgan: interrupted", file=sys.stderr)
        return 130
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
