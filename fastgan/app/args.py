"""The ``fastgan`` command's parser: its subcommands, flags, their checks and the defaults the CLI chooses."""
from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import torch

from .. import data as datasets
from ..nn.presets import PRESETS
from ..sampling import JACOBIAN_FACTOR
from ..train.config import (ADAM_STATES, KERNELS, LOSSES, PACK_CONVENTIONS, PER_REPLICA, PRECISIONS, SAMPLERS, UPDATES,
                            TrainConfig)
from .sweep import sweep_of

DESCRIPTION = """\
fastgan: fast GAN training in PyTorch.

Train an MLP GAN on the bundled handwritten digits, with no download:

  fastgan train --out runs/digits

writes samples.png (a grid of generated digits), losses.png, checkpoint.pt and
metrics.json into the output folder. The defaults (G 100-256-256-784 and
D 784-256-256-1 with leaky-ReLU, label smoothing 0.9, PacGAN packing 2, an
EMA of G's weights, R1 on real data with weight 0.1, 20,000 steps) give digits
at FD ~3.6 (1.1x the real floor 3.25) in a few minutes on a 2-core CPU;
`--hidden 128 128 --real-label 1.0 --pack 1 --ema 0 --r1-gamma 0` is the
classic GAN. Run `fastgan train --help` for the options."""

TRAIN_EPILOG = """\
examples:
  fastgan train                                 # digits, default steps, into runs/digits
  fastgan train --data ring --steps 3000        # the 8-Gaussian ring, 2-D scatter plot
  fastgan train --data mnist --data-root ~/mnist --steps 20000
  fastgan train --out runs/digits --steps 8000 --resume   # continue a run up to 8000 steps
  fastgan train --data ring --lr 1e-4 2e-4 4e-4 --real-label 0.9 1.0 --seeds 10   # a sweep: 60 GANs at once"""

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


def positive(kind):
    """An argparse type: ``kind(text)``, refused unless > 0."""
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


def _factor(text):
    value = float(text)
    if not 1 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite factor >= 1, got {text}")
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
    group.add_argument("--kernels", choices=KERNELS, default="auto",
                       help="torch, triton (fused per layer; fastest in a CUDA graph with FlatAdam), triton-mlp "
                            "(each network one fused kernel per pass: the fastest without a graph), cuda (fastgan's "
                            "native CUDA kernels: a GPU and the CMake build) or auto (default: triton in a CUDA graph "
                            "at batch <= 512, else torch)")
    group.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True,
                       help="decide the settings left unset (kernels, --cuda-graph, --steps-per-replay, "
                            "--fused-optimizer) for the fastest measured step on this device, said in one line "
                            "(default); --no-fast: the plain eager step")
    group.add_argument("--sampler", choices=SAMPLERS, default="auto",
                       help="batch and noise draws: torch (PyTorch's generator), philox (one Triton kernel; "
                            "triton-mlp) or auto (default: philox where triton-mlp's fused step runs)")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    group.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                       help="torch.compile the step (optionally a mode: reduce-overhead, max-autotune)")
    group.add_argument("--fused-optimizer", nargs="?", const="flat", default=None, choices=["flat", "torch"],
                       help="flat (the default when given): FlatAdam, flat parameter buffers and Adam in one "
                            "Triton kernel per model; torch: torch.optim.Adam(fused=True) (unset: --fast decides)")
    group.add_argument("--adam-state", choices=ADAM_STATES, default="fp32",
                       help="FlatAdam's moments in fp32 (default) or bf16, stochastically rounded: 20 bytes of Adam "
                            "traffic per parameter and update instead of 28 (implies --fused-optimizer flat)")
    group.add_argument("--precision", choices=PRECISIONS, default="tf32",
                       help="matmul precision for every kernel: exact fp32, tf32 (default) or bf16 autocast")
    group.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                       help="capture whole steps in a CUDA graph (CUDA only; unset: --fast decides)")
    group.add_argument("--steps-per-replay", type=positive(int), default=None,
                       help="steps captured per graph replay (with a CUDA graph; unset: --fast decides)")


# TrainConfig's fields that `fastgan train` takes from elsewhere than a flag of the same name, and why.
# Every other field is a flag (tests/test_cli.py checks): a new setting cannot be forgotten here.
NOT_TRAIN_FLAGS = {
    "betas": "DCGAN's (0.5, 0.999), as every run in the benchmarks",
    "graph_warmup": "3 eager steps before a CUDA-graph capture, enough to create and tune everything",
    "data_parallel": "set by the process count: under torchrun a run that is not a sweep is data-parallel",
    "replicas": "set by the sweep (--seeds times the product of the swept flags' value counts) or --starts",
}
# Each data set's recipe: the settings `fastgan train` uses where their flags are not given, chosen by measurement
# (a resumed run keeps its own instead). Unconditional digits/MNIST: FD 1.09x the real floor over 8 seeds (the
# README). Ring and grid: the quality benchmarks' (benchmarks/quality_curve.py with 2-d noise, 128 wide, batch 100
# packed rows), measured on twenty fresh seeds each with `fastgan evaluate --jacobian 4` (ring) and `8` (grid): the
# README's quality section. PLAIN: the rest's, and every setting a recipe leaves out.
PLAIN = {"steps": 20000, "batch_size": 128, "lr": 2e-4, "lr_schedule": (), "real_label": None, "pack": 1,
         "ema": None, "r1_gamma": 0.0, "mmd_weight": 0.0, "mmd_from": 0,
         "mmd_fine": 0.0, "mmd_fine_from": 0, "mmd_fine_shape": None, "starts": 1}
_MIXTURE = {"batch_size": 200, "real_label": 1.0, "pack": 2, "ema": 0.999}
RECIPES = {"digits": {"pack": 2, "ema": 0.999, "r1_gamma": 0.1},
           "ring": {**_MIXTURE, "steps": 75000, "lr_schedule": ((50000, 0.6), (80000, 0.4)), "mmd_weight": 8.0},
           "grid": {**_MIXTURE, "steps": 75000, "lr": 3e-4, "lr_schedule": ((50000, 0.7),), "mmd_weight": 5.0,
                    "mmd_fine": 0.5, "mmd_fine_from": 50000, "mmd_fine_shape": 0.75, "starts": 2}}
RECIPES["mnist"] = RECIPES["digits"]
# Flags whose default is not TrainConfig's, and why (the others share it: tests/test_config.py checks).
CLI_DEFAULTS = {**{name: "the data set's recipe (RECIPES), else PLAIN's" for name in PLAIN if name != "steps"},
                "real_label": "the recipe's; where it sets none 0.9 (one-sided label smoothing) with the BCE loss, "
                              "1.0 with hinge"}


def apply_recipe(args: argparse.Namespace, saved: dict | None = None) -> dict:
    """Set the recipe's flags that were not given (None): from ``saved`` (a resumed run's settings) where it has
    them, else from the data set's recipe (none for a conditional run). Returns the recipe's settings it chose."""
    recipe = {**PLAIN, **({} if args.conditional else RECIPES.get(args.data, {}))}
    chosen = {}
    for name, value in recipe.items():
        if getattr(args, name) is not None:
            continue
        # (a saved list is a sweep's values, one a replica, which a resumed sweep is given again; a schedule is one)
        if saved is not None and name in saved and (name == "lr_schedule" or not isinstance(saved[name], list)):
            value = saved[name]
        elif saved and name not in saved and name != "steps":   # (saved before the setting existed: trained without)
            value = PLAIN[name]
        chosen[name] = value
        setattr(args, name, [value] if name in PER_REPLICA and value is not None else value)
    args.ema = args.ema or None   # --ema 0: off
    # --mmd-weight 0: no term, so no start or weighting for it; --mmd-fine 0: no weights to shape
    for name, kept in (("mmd_from", any(args.mmd_weight)), ("mmd_fine", any(args.mmd_weight)),
                       ("mmd_fine_shape", any(args.mmd_weight) and args.mmd_fine)):
        if name in chosen and not kept:
            setattr(args, name, PLAIN[name])
            chosen[name] = PLAIN[name]
    args.lr_schedule = lr_schedule_arg(args.lr_schedule) or ()   # (none: a constant rate)
    return chosen


def config_from_args(args: argparse.Namespace, **fixed) -> TrainConfig:
    """The TrainConfig of a command: every field whose flag the command has (same name), then ``fixed``.
    Flags given several values (``--lr 1e-4 2e-4``) and ``--seeds`` make a sweep (``fastgan.app.sweep``): replicas,
    each swept flag a per-replica sequence."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    sweep = sweep_of(args) if hasattr(args, "seeds") else None
    for name in PER_REPLICA:
        if isinstance(values.get(name), list):
            values[name] = sweep.values(name) if sweep is not None and name in sweep.swept else values[name][0]
    if sweep is not None:
        values["replicas"] = sweep.replicas
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
    train.add_argument("--steps", type=positive(int), default=None,
                       help="total training steps; a resumed run continues up to it (default: 20000; the ring's "
                            "and the grid's recipes 75000)")
    train.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<data>)")
    train.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    train.add_argument("--conditional", action="store_true",
                       help="class-conditional GAN (digits, mnist): G(z, label) and a projection D; samples.png "
                            "has one row per class and metrics.json the classifier's per-class accuracy")
    train.add_argument("--batch-size", type=positive(int), default=None,
                       help="samples a step (default: 128; ring and grid 200, D's 100 rows of pack 2)")
    train.add_argument("--lr", type=positive(float), nargs="+", default=None, metavar="LR",
                       help="Adam learning rate (default: 2e-4; the grid's recipe 3e-4); several values sweep them "
                            "(see --seeds)")
    train.add_argument("--seeds", type=positive(int), default=1, metavar="N",
                       help="train N GANs per setting (default: 1). With N > 1, or several values for --lr, "
                            "--lr-g, --lr-d, --real-label, --instance-noise, --r1-gamma, --mmd-weight, --augment-p or "
                            "--augment-target (their product), the run is a sweep: every GAN at once as replicas of "
                            "one trainer, replica k exactly the single run with seed --seed + k (settings vary "
                            "slowest, seeds fastest); samples.png gets a row (a panel) per replica, metrics.json each "
                            "replica's quality, sweep.md a table per setting and per replica, sweep_<setting>.png the "
                            "metrics against each swept setting")
    train.add_argument("--starts", type=positive(int), default=None, metavar="N",
                       help="train N GANs of one setting at once (replicas: seeds --seed to --seed + N - 1) and keep "
                            "the one whose samples lie nearest its training data at the end (kernel MMD to the "
                            "data): samples.png, metrics.json and `fastgan evaluate` are that one's, metrics.json "
                            "says which and each start's distance; checkpoint.pt holds all N (--resume trains them "
                            "all on). Default 1, the grid's recipe 2 (not in a sweep or under torchrun); a resumed "
                            "run keeps its own")
    train.add_argument("--hidden", type=positive(int), nargs="+", default=None,
                       help="hidden widths of G and D (default: the data set's preset, 256 256 for images and "
                            "128 128 for ring/grid; the classic GAN is 128 128)")
    train.add_argument("--real-label", type=float, nargs="+", default=None,
                       help="D's target for real data: 0.9 (the default with the BCE loss; ring and grid 1.0) is "
                            "one-sided label smoothing, 1.0 the plain GAN loss; not used by --loss hinge")
    train.add_argument("--latent-dim", type=positive(int), default=None,
                       help="G's noise size (default: the data set's preset: 100 for images, 2 for ring/grid)")
    train.add_argument("--seed", type=int, default=0, help="seeds model init, batches and noise (default: 0)")
    _add_fast_step_options(train)
    stabilise = train.add_argument_group("stabilisation options")
    stabilise.add_argument("--loss", choices=LOSSES, default="non_saturating")
    stabilise.add_argument("--lr-g", type=positive(float), nargs="+", default=None, help="G's learning rate (TTUR)")
    stabilise.add_argument("--lr-d", type=positive(float), nargs="+", default=None, help="D's learning rate (TTUR)")
    stabilise.add_argument("--lr-schedule", type=lr_milestone, nargs="+", default=None, metavar="STEP:FACTOR",
                           help="step-down learning rates: from STEP on, G's and D's rates are their base values "
                                "times FACTOR, e.g. 200000:0.5 300000:0.1 (steps increasing); a resumed run keeps "
                                "its own unless this is given (none: a constant rate; default: none, the ring's "
                                "recipe 50000:0.6 80000:0.4, the grid's 50000:0.7)")
    stabilise.add_argument("--d-steps", type=positive(int), default=1, help="D updates per G update")
    stabilise.add_argument("--ema", type=float, default=None,
                           help="EMA decay of G's weights (samples and metrics use the average); default 0.999 "
                                "for unconditional digits/MNIST, ring and grid, else off; 0 turns it off")
    stabilise.add_argument("--pack", type=positive(int), default=None,
                           help="PacGAN packing degree: D sees this many samples per row; default 2 for "
                                "unconditional digits/MNIST, ring and grid, else 1")
    stabilise.add_argument("--pack-convention", choices=PACK_CONVENTIONS, default="samples",
                           help="what --batch-size counts when packing: samples (default: D sees batch/pack rows) "
                                "or rows (PacGAN's code: D sees batch packed rows, pack x batch samples a step)")
    stabilise.add_argument("--update", choices=UPDATES, default="alternating",
                           help="alternating (default: D's update, then G's through the updated D) or simultaneous "
                                "(both from one pass of D: PacGAN's code)")
    stabilise.add_argument("--instance-noise", type=float, nargs="+", default=0.0,
                           help="std of noise on D's inputs")
    stabilise.add_argument("--r1-gamma", type=float, nargs="+", default=None,
                           help="R1 penalty weight on real data (default 0.1 for unconditional digits/MNIST, else "
                                "0; 0 turns it off); several values sweep them")
    stabilise.add_argument("--r1-every", type=positive(int), default=16, help="R1 every N steps")
    stabilise.add_argument("--mmd-weight", type=float, nargs="+", default=None, metavar="W",
                           help="G's loss plus W x MMD² between its samples and the step's real rows, Gaussian "
                                "kernels from the real rows' finest scale to their layout's: widens modes D cannot "
                                "resolve and evens their masses (default: 0; the ring's recipe 8, the grid's 5); "
                                "several values sweep them")
    stabilise.add_argument("--mmd-from", type=int, default=None, metavar="STEP",
                           help="G's loss has the MMD term from step STEP on, before it D's loss alone (default: 0)")
    stabilise.add_argument("--mmd-fine", type=float, default=None, metavar="P",
                           help="from step --mmd-fine-from on, the MMD term's kernel at bandwidth h weighs "
                                "(widest / h)^P: the modes' width counts more than their masses (default: 0; the "
                                "grid's recipe 0.5 from its step-down)")
    stabilise.add_argument("--mmd-fine-from", type=int, default=None, metavar="STEP",
                           help="the step --mmd-fine starts at (default: 0; the grid's recipe 50000)")
    stabilise.add_argument("--mmd-fine-shape", type=float, default=None, metavar="Q",
                           help="the kernels share the total weight --mmd-fine gives them as (widest / h)^Q does: "
                                "a steeper or flatter shape at the same strength (default: --mmd-fine's own)")
    for net, name in (("g", "G"), ("d", "D")):
        stabilise.add_argument(f"--weight-decay-{net}", type=float, default=0.0,
                               help=f"decoupled weight decay of {name} (AdamW's), e.g. 0.01")
        stabilise.add_argument(f"--l1-{net}", type=float, default=0.0, help=f"L1 penalty weight on {name}'s weights")
    stabilise.add_argument("--augment", default="", metavar="T1,T2",
                           help="differentiable augmentation of D's inputs (images): translation, cutout, "
                                "brightness, contrast, flip; e.g. translation,cutout")
    stabilise.add_argument("--augment-p", type=float, nargs="+", default=None, metavar="P",
                           help="probability each augmentation is applied (default 1; with --augment-target, "
                                "the starting one, default 0); several values sweep them")
    stabilise.add_argument("--augment-target", type=float, nargs="+", default=None, metavar="R",
                           help="adapt the probability (ADA) so E[sign(D(real))] approaches this, e.g. 0.6; "
                                "several values sweep them")
    stabilise.add_argument("--minibatch-std", type=positive(int), default=0, metavar="G",
                           help="D's last layer also reads the minibatch standard deviation over groups of G rows "
                                "(a diversity signal against collapse; G >= 2, e.g. 4; default: none)")
    stabilise.add_argument("--spectral-norm", action="store_true",
                           help="spectral normalisation of D's layers (one power iteration per step)")
    train.add_argument("--log-every", type=positive(int), default=200,
                       help="read losses and checkpoint every N steps (default: 200)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--tensorboard", type=Path, default=None, metavar="DIR",
                       help="also log the losses, a sample grid and the quality metrics to TensorBoard in DIR "
                            '(pip install "fastgan[tensorboard]")')
    train.set_defaults(run="train")

    evaluate = sub.add_parser("evaluate", help="quality metrics of a checkpoint's generator",
                              description="Sample a checkpoint's generator (its EMA weights when it kept them) "
                                          "and print the quality metrics of its data set as JSON: mode coverage "
                                          "for ring/grid; Fréchet distance, precision/recall, density/coverage "
                                          "and class coverage for digits, each beside its real-vs-real floor.")
    evaluate.add_argument("checkpoint", type=Path,
                          help="a checkpoint.pt written by `fastgan train`, or the run's folder holding one")
    evaluate.add_argument("--samples", type=positive(int), default=None,
                          help="generated samples (default: 2500 for ring/grid; for digits 8 x 899, the floor's size: "
                               "each figure the mean over the 8 draws)")
    evaluate.add_argument("--seed", type=int, default=QUALITY_SEED,
                          help=f"seed of the noise the samples are drawn from (default: {QUALITY_SEED}, the one "
                               "fastgan train used for metrics.json: same checkpoint, seed and device give the "
                               "same figures; CPU and CUDA draw different noise from one seed)")
    evaluate.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    evaluate.add_argument("--rejection", type=_quantile, default=None, metavar="Q",
                          help="discriminator rejection sampling: G's candidates kept by the checkpoint's D, gamma at "
                               "quantile Q in [0, 1) (e.g. 0.5; higher: stricter); the report says so and gives the "
                               "rate kept. Unconditional runs.")
    evaluate.add_argument("--metropolis", type=positive(int), default=None, metavar="L",
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
    evaluate.add_argument("--jacobian", type=_factor, nargs="?", const=JACOBIAN_FACTOR, default=None, metavar="F",
                          help="instead of D: keep G's samples where the norm of its Jacobian is at most F times the "
                               f"median (default {JACOBIAN_FACTOR:g}): the samples G stretched between modes left out, "
                               "the modes' shares kept as G draws them. Unconditional runs.")
    evaluate.add_argument("--calibrate", type=positive(int), default=None, metavar="N",
                          help="with --rejection or --metropolis: first train a copy of the checkpoint's D N steps "
                               "(e.g. 2000) against the generator sampled from, G held fixed, on the run's data, so D "
                               "judges that generator (its EMA weights included) and the modes keep their balance")
    evaluate.add_argument("--calibrate-lr", type=positive(float), default=1e-4, metavar="LR",
                          help="with --calibrate: its Adam learning rate (default 1e-4; after a step-down schedule, "
                               "the run's final D rate)")
    evaluate.add_argument("--calibrate-batch", type=positive(int), default=500, metavar="N",
                          help="with --calibrate: real and generated rows per step (default 500)")
    evaluate.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    evaluate.set_defaults(run="evaluate")

    prof = sub.add_parser("profile", help="profile training steps: trace, per-kernel table, Nsight commands",
                          description="Warm up, then profile N training steps of the MLP GAN (classic 128-wide "
                                      "by default) between cudaProfilerStart/Stop under torch.profiler: writes "
                                      "trace.json (chrome://tracing, ui.perfetto.dev), kernels.md (launches and "
                                      "time per kernel) and profile.json, and prints the nsys and ncu command "
                                      "lines for the same run. Phases are NVTX ranges (D.forward.real, "
                                      "D.backward, D.optim, ...).")
    prof.add_argument("--data", choices=datasets.DATASETS, default="digits")
    prof.add_argument("--data-root")
    prof.add_argument("--steps", type=positive(int), default=20, help="profiled steps (default: 20)")
    prof.add_argument("--warmup", type=int, default=10, help="steps before profiling (default: 10)")
    prof.add_argument("--batch-size", type=positive(int), default=128)
    prof.add_argument("--hidden", type=positive(int), nargs="+", default=list(PRESETS["classic"].hidden),
                      help="hidden widths of G and D (default: the classic GAN's, 128 128)")
    _add_fast_step_options(prof)
    prof.add_argument("--out", type=Path, default=Path("runs/profile"))
    prof.add_argument("--no-trace", action="store_true",
                      help="no torch.profiler (for runs under nsys/ncu): NVTX ranges and the capture range only")
    prof.set_defaults(run="profile")
    return parser


