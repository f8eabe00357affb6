"""Quality along training: a mixture protocol's modes / high-quality share / KL / spread / SWD at several step
counts.

The seeds of one variant train at once as a K-replica trainer (``fastgan.replicas``: replica k is the
single run with seed k) and are evaluated at each checkpoint on 2,500 samples (noise seed 10,000 + k),
as ``quality.py`` evaluates its runs; the trainer keeps going after each evaluation. ``--first-seed S`` trains
seeds S, S+1, ... instead (on the same 100,000 points, noise seeds 10,000 + S + k): fresh trials of a recipe
chosen on seeds 0-9, each what seed S+k of one larger run would be.

    python benchmarks/quality_curve.py --data ring --variant ema --checkpoints 20000 40000 80000
    python benchmarks/quality_curve.py --data grid --variant ema_pack2 --checkpoints 50000 100000 200000
    python benchmarks/quality_curve.py --data ring --variant ema --seeds 10 --cuda-graph --steps-per-replay 8 \
        --checkpoints 100000 200000 400000    # a GPU: PacGAN's length, 10 seeds at once
    python benchmarks/quality_curve.py --data ring --variant ema_pack2 --lr 2e-4 --seeds 10 \
        --lr-schedule 200000:0.5 300000:0.1 --checkpoints 200000 300000 400000   # step-down rates
    python benchmarks/quality_curve.py --resume 2026-11-28-quality-curve-ring-pack2-2 \
        --checkpoints 300000 400000    # go on from the last checkpoint a run saved (--save-checkpoint)
    python benchmarks/quality_curve.py --preset pacgan --data ring --variant pack2 --seeds 10 --cuda-graph \
        --checkpoints 100000 200000 400000    # PacGAN's own models and settings (a GPU: 10 at once)

Defaults are PacGAN's settings on our models (``quality.py``'s mixture-benchmark preset): Adam 1e-4
(0.5, 0.999), batch 100 packed rows, 5 seeds. ``--preset pacgan``: PacGAN's own models (4 x 400 BatchNorm G,
maxout D) and settings (Adam 1e-4 (0.8, 0.999), simultaneous updates), stacked as replicas too. Records the
run in results/<card>/runs.jsonl (id ``<date>-quality_curve-<data>-<variant>[-N]``, ``pacgan-`` before the
variant with that preset); the latest run of each data set: quality_curve-<data>.{json,md} and -<data>.png.

``--resume RUN`` goes on with a run stopped after a checkpoint (a time limit, Ctrl-C, a session's end); RUN is
its id in runs.jsonl (of ``--out``'s card folder) or a results file (a record, as quality_curve-ring.json, or its
payload): the trainer it saved there (``--save-checkpoint``, recorded in the run) is loaded, the run's settings
are taken from it (a flag that contradicts them is an error), its rows and time-to-quality marks are kept, and
the curve continues to the checkpoints given past its last one — the same rows an unbroken run gives, as a new
run (the stopped run's record stays as it was). Training seconds go on from the last row's.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from common import environment, markdown_table, new_run, write_results  # noqa: E402
from curve_resume import SETTINGS, check_same_run, load_resume  # noqa: E402
from mixture_protocol import (IMAGE_ONLY, PACGAN_PROTOCOL, PROTOCOL, VARIANTS, checkpoint_model, describe,  # noqa: E402
                              mixture_trainer, trainer_settings)

import fastgan  # noqa: E402
from fastgan import metrics  # noqa: E402
from fastgan.checkpoint import CheckpointError  # noqa: E402
from fastgan.app.args import lr_milestone, lr_schedule_arg, positive  # noqa: E402
from fastgan.sampling import JACOBIAN_FACTOR  # noqa: E402


def _reached(result: dict, kind: str) -> bool:
    """The issue's time-to-quality mark: every mode, with >= 90% high-quality samples (``result``: a seed's
    ``evaluate_mixture`` at a check, with its ``seed`` and ``steps``)."""
    return result["modes"] == MODES[kind] and result["high_quality"] >= 0.9


MODES = {"ring": 8, "grid": 25}


def curve(kind: str, variant: str, seeds: int, checkpoints: list[int], protocol: dict, device, kernels="torch",
          report=None, rejection: float | None = None, check_every: int = 0, calibrate: int = 0,
          checkpoint: Path | None = None, calibrate_lr: float = 1e-4, calibrate_batch: int = 500,
          resume: dict | None = None, first_seed: int = 0, metropolis: int = 0, sharpen: float = 1.0,
          metropolis_step: float = 1.0, jacobian: float | None = None, **options) -> list[dict]:
    """The rows (one per checkpoint); ``report(rows, first, pictures)`` after each (``pictures``: the first seed's
    samples at that checkpoint), so a run stopped by a time limit keeps what it measured.

    ``rejection``: each checkpoint is also evaluated with discriminator rejection sampling at that quantile
    (G's samples kept by D's verdict: the replica trainer's ``sample(rejection=...)``), reported apart under
    ``row["rejection"]``; with ``calibrate=N`` also with each D first trained N steps against the generator
    sampled from (``sample(calibrate=N, calibrate_lr=..., calibrate_batch=...)``), under ``row["calibrated"]``.
    ``metropolis=L``: also with Metropolis-Hastings over D's scores, chains of L proposals (``sample(metropolis=L,
    sharpen=sharpen, metropolis_step=metropolis_step)``, each D calibrated first when ``calibrate``), under
    ``row["metropolis"]``. ``jacobian=F``: also with G's samples kept by its own Jacobian (``sample(jacobian=F)``,
    no D), under ``row["jacobian"]``.
    ``checkpoint``: the trainer is saved
    there at each checkpoint (to evaluate it again later: ``fastgan evaluate`` reads it). ``check_every``: every
    that many steps, each seed's 2,500 samples (seed 20,000 + k, not the checkpoints') are checked for every mode
    with >= 90% HQ; ``first[k]`` is the first step (and the trainer's training seconds then, all seeds at once)
    at which seed k was. ``resume``: ``{"checkpoint": path, "rows": [...], "first": [...]}`` of a stopped run,
    up to the row of the step of the trainer saved there: it is loaded, and the curve goes on from that row.
    ``first_seed``: the seeds are ``first_seed + k`` (trainer seed, noise seeds), on seed 0's data."""
    trainer = mixture_trainer(kind, variant, first_seed, device, kernels=kernels, protocol=protocol,
                                      replicas=seeds, data_seed=0, **options)
    rows, first = [], [None] * seeds
    if resume is not None:
        state = trainer.load(resume["checkpoint"])
        if trainer.step_count != resume["rows"][-1]["steps"]:
            raise CheckpointError(f"{resume['checkpoint']} holds the trainer at step {trainer.step_count}, not at "
                                  f"the resumed row's {resume['rows'][-1]['steps']}")
        check_same_run(state.get("config") or {}, trainer.config, resume["checkpoint"])
        rows, first = list(resume["rows"]), list(resume["first"])
    start = time.perf_counter() - (rows[-1]["seconds"] if rows else 0.0)
    model = checkpoint_model(kind, variant, protocol)   # what fastgan evaluate rebuilds the models from

    def check(trained: float):
        for k in range(seeds):
            result = metrics.evaluate_mixture(trainer.sample(2500, seed=20_000 + first_seed + k, replica=k), kind)
            if first[k] is None and _reached({**result, "seed": first_seed + k, "steps": trainer.step_count}, kind):
                first[k] = {"steps": trainer.step_count, "seconds": trained}

    for steps in checkpoints:
        if rows and steps <= rows[-1]["steps"]:
            continue   # a resumed run's row
        while trainer.step_count < steps:
            chunk = steps - trainer.step_count
            if check_every:
                chunk = min(chunk, check_every - trainer.step_count % check_every)
            trainer.fit(chunk, log_every=5000, progress=False)
            if check_every and trainer.step_count % check_every == 0 and None in first:
                paused = time.perf_counter()
                check(paused - start)
                start += time.perf_counter() - paused   # checking is not training time
        seconds = time.perf_counter() - start
        samples = [trainer.sample(2500, seed=10_000 + first_seed + k, replica=k) for k in range(seeds)]
        runs = [{**metrics.evaluate_mixture(x, kind), "data_mmd_ratio": _data_mmd_ratio(trainer, first_seed, k)}
                for k, x in enumerate(samples)]
        pictures = {(kind, f"{steps} steps"): samples[0].cpu()}
        row = {"steps": steps, "seconds": seconds, "runs": runs, "summary": _summary(runs)}
        m, h, k = row["summary"]["modes"], row["summary"]["high_quality"], row["summary"]["kl"]
        line = (f"  {kind} {variant} {steps:7d} steps ({seconds:6.0f} s): modes {m[0]:.2f}±{m[1]:.2f}  "
                f"HQ {100 * h[0]:.1f}±{100 * h[1]:.1f}%  KL {k[0]:.3f}±{k[1]:.3f}")
        guides = ([("rejection", 0, {"rejection": rejection})] if rejection is not None else []) + (
            [("calibrated", calibrate, {"rejection": rejection})] if rejection is not None and calibrate else []) + (
            [("metropolis", calibrate, {"metropolis": metropolis, "sharpen": sharpen,
                                        "metropolis_step": metropolis_step})] if metropolis else []) + (
            [("jacobian", 0, {"jacobian": jacobian})] if jacobian is not None else [])
        for key, steps_d, guide in guides:
            kept = []
            for j in range(seeds):
                guided = trainer.sample(2500, seed=10_000 + first_seed + j, replica=j, calibrate=steps_d,
                                        calibrate_lr=calibrate_lr, calibrate_batch=calibrate_batch, **guide)
                kept.append({**metrics.evaluate_mixture(guided, kind), "acceptance": trainer.last_acceptance})
                if j == 0:
                    what = f", D calibrated {steps_d} steps" if steps_d else ""
                    how = (f"Jacobian sampling, factor {jacobian:g}" if key == "jacobian" else
                           f"rejection sampling {rejection:g}" if key != "metropolis" else
                           f"Metropolis-Hastings, chains of {metropolis}"
                           + (f", beta {sharpen:g}" if sharpen != 1 else "")
                           + (f", step {metropolis_step:g}" if metropolis_step != 1 else ""))
                    pictures[(kind, f"{steps} steps, {how}{what}")] = guided.cpu()
            setting = {"metropolis": {"chain": metropolis, "sharpen": sharpen, "step": metropolis_step},
                       "jacobian": {"factor": jacobian}}.get(key, {"quantile": rejection})
            row[key] = {**setting,
                        "calibrate": steps_d, "runs": kept, "summary": _summary(kept),
                        **({"calibrate_lr": calibrate_lr, "calibrate_batch": calibrate_batch} if steps_d else {})}
            r = row[key]["summary"]
            line += (f"  | {key} {next(iter(setting.values())):g}: "
                     f"HQ {100 * r['high_quality'][0]:.1f}"
                     f"±{100 * r['high_quality'][1]:.1f}%  KL {r['kl'][0]:.3f}  modes {r['modes'][0]:.2f}  "
                     f"kept {100 * r['acceptance'][0]:.0f}%")
        rows.append(row)
        print(line, flush=True)
        if report is not None:
            report(rows, first, pictures)
        if checkpoint is not None:   # after the report: a resume finds the row of the trainer's step
            trainer.save(checkpoint, extra={"model": model} if model else None)
        start = time.perf_counter() - seconds   # evaluation time is not training time
    return rows, first


# samples a seed's distance to its training data is measured on: at 2,500 (the runs of 2026-12-07) a balanced grid
# seed's ratio moved by about 1.5 with the draw, and one unbalanced seed of 30 ranked third; at 5,000 it stood apart
# (8.7 against at most 3.1), though on ten fresh seeds an unbalanced one led by less (5.6 against 4.7:
# docs/notes/2026-12-07-two-starts.md)
DATA_MMD_SAMPLES = 5000


def _data_mmd_ratio(trainer, first_seed: int, k: int) -> float:
    """Replica k's distance to its training data (``metrics.kernel_distance``'s ratio, the layout's bandwidth) on
    ``DATA_MMD_SAMPLES`` samples of noise seed 30,000 + seed: what a run may judge itself by (``starts.py`` keeps
    the start nearest its data), apart from the evaluation's noise and the mixture's known modes."""
    own = trainer.sample(DATA_MMD_SAMPLES, seed=30_000 + first_seed + k, replica=k)
    return metrics.kernel_distance(own, trainer.data)["mmd_ratio"]


def mmd_weight_arg(weights: list[float], seeds: int, parser) -> float | list[float]:
    """``--mmd-weight``: one weight for every seed, or one a seed (a sweep)."""
    if len(weights) not in (1, seeds):
        parser.error(f"--mmd-weight: one weight, or one for each of the {seeds} seeds; got {len(weights)}")
    return weights[0] if len(weights) == 1 else list(weights)


def _summary(runs: list[dict]) -> dict:
    keys = quality.SUMMARY_KEYS + ("acceptance",)
    return {key: quality._mean_se([r[key] for r in runs]) for key in keys if key in runs[0]}


def main(argv=None) -> int:
    new_run()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the run's settings default to None here: SETTINGS' values, or a resumed run's
    parser.add_argument("--data", choices=["ring", "grid"], help="default ring")
    parser.add_argument("--variant", choices=[v for v in VARIANTS if v not in IMAGE_ONLY],
                        help="default vanilla")
    parser.add_argument("--checkpoints", type=int, nargs="+", required=True, help="step counts to evaluate at")
    parser.add_argument("--seeds", type=int, help="default 5")
    parser.add_argument("--first-seed", type=int, metavar="S",
                        help="train seeds S, S+1, ... (default 0; the same data, noise seeds 10,000 + S + k): "
                             "fresh trials of a recipe chosen on other seeds")
    parser.add_argument("--preset", choices=["mixture-benchmark", "pacgan"],
                        help="the models: mixture-benchmark (default: ours, 2-128-128-2 leaky-ReLU) or pacgan "
                             "(PacGAN's 4x400 BatchNorm G and maxout D, with its betas (0.8, 0.999) and "
                             "simultaneous updates)")
    parser.add_argument("--lr", type=float, help="default 1e-4")
    parser.add_argument("--latent-dim", type=int, metavar="N", help="G's noise size (default: the preset's)")
    parser.add_argument("--hidden", type=positive(int), nargs="+", metavar="W",
                        help="G's and D's hidden widths, e.g. 256 256 (default: the preset's)")
    parser.add_argument("--ema", type=float, metavar="DECAY",
                        help="an EMA of G's weights with this decay in place of the variant's (0: none)")
    parser.add_argument("--lr-schedule", type=lr_milestone, nargs="+", metavar="STEP:FACTOR",
                        help="step-down learning rates: x FACTOR from STEP on, e.g. 200000:0.5 300000:0.1")
    parser.add_argument("--minibatch-std", type=int, metavar="G",
                        help="D's last layer also reads the minibatch standard deviation over groups of G rows")
    parser.add_argument("--adam-state", choices=["fp32", "bf16"],
                        help="train with FlatAdam, its moments in fp32 or bf16 (stochastically rounded); default: "
                             "the trainer's own choice of Adam")
    parser.add_argument("--mmd-weight", type=float, nargs="+", metavar="W",
                        help="G's loss plus W x MMD² between its samples and the step's real rows (Gaussian kernels "
                             "from the real rows' finest scale to their layout's; default 0: none); one W a seed: "
                             "a sweep, seed k with the k-th (the summary then mixes weights: read the seeds' rows)")
    parser.add_argument("--mmd-from", type=int, metavar="STEP",
                        help="the term joins G's loss from step STEP on (as fastgan train's; default 0)")
    parser.add_argument("--mmd-fine", type=float, metavar="P",
                        help="from step --mmd-fine-from on, the term's kernel at bandwidth h weighs (widest / h)^P "
                             "(as fastgan train's; default 0: all alike)")
    parser.add_argument("--mmd-fine-from", type=int, metavar="STEP", help="the step --mmd-fine starts at (default 0)")
    parser.add_argument("--mmd-fine-shape", type=float, metavar="Q",
                        help="the kernels share --mmd-fine's total weight as (widest / h)^Q does (as fastgan train's)")
    parser.add_argument("--batch", type=int, help="default 100")
    parser.add_argument("--pack-convention", choices=["samples", "rows"], help="default rows")
    parser.add_argument("--device", default=None)
    parser.add_argument("--kernels", choices=["torch", "triton"], help="default torch")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="capture the replicas' steps in a CUDA graph (a GPU: PacGAN's 400k steps in minutes)")
    parser.add_argument("--steps-per-replay", type=int, default=1, metavar="K",
                        help="with --cuda-graph: steps per graph replay (the checkpoints must be multiples of K)")
    parser.add_argument("--rejection", type=float, default=None, metavar="Q",
                        help="also evaluate each checkpoint with discriminator rejection sampling at quantile Q "
                             "(reported apart; a packed D scores each candidate with fixed partners)")
    parser.add_argument("--check-every", type=int, metavar="N",
                        help="every N steps, check each seed for every mode with >= 90%% high-quality samples: "
                             "the first step (and seconds) each seed gets there")
    parser.add_argument("--metropolis", type=int, metavar="L",
                        help="also evaluate each checkpoint with Metropolis-Hastings over D's scores, chains of L "
                             "proposals (e.g. 100; reported apart; with --calibrate each D is calibrated first, "
                             "as MH needs D's logit to be the density ratio)")
    parser.add_argument("--sharpen", type=float, metavar="BETA",
                        help="with --metropolis: the chains sample p_G exp(BETA logit) (default 1, the exact "
                             "correction; above 1 D's best-scored samples are favoured over the modes' balance)")
    parser.add_argument("--metropolis-step", type=float, metavar="S",
                        help="with --metropolis: proposals in G's latent space, z' = sqrt(1 - S^2) z + S noise, S in "
                             "(0, 1] (default 1: independent proposals); a small S (e.g. 0.1) refines each sample "
                             "within its mode and keeps G's mode shares")
    parser.add_argument("--jacobian", type=float, nargs="?", const=JACOBIAN_FACTOR, metavar="F",
                        help="also evaluate each checkpoint with G's samples kept by its own Jacobian (norm at most F "
                             f"times the median, default {JACOBIAN_FACTOR:g}; no D), reported apart")
    parser.add_argument("--calibrate", type=int, metavar="N",
                        help="with --rejection: also evaluate with each D first trained N steps against the "
                             "generator sampled from, G held fixed (reported apart; 2000 is a good start); with "
                             "--metropolis: MH's D is calibrated so")
    parser.add_argument("--calibrate-lr", type=float, metavar="LR",
                        help="with --calibrate: the calibration's Adam rate (default 1e-4; after a step-down "
                             "schedule, the run's final D rate)")
    parser.add_argument("--calibrate-batch", type=int, metavar="N",
                        help="with --calibrate: real and generated rows per calibration step (default 500)")
    parser.add_argument("--save-checkpoint", type=Path, default=None, metavar="PATH",
                        help="save the trainer there at each checkpoint (--resume goes on from it; fastgan "
                             "evaluate reads it, but for --preset pacgan, whose models the CLI does not build)")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN",
                        help="go on with a run from its last checkpoint (its settings, rows and saved trainer; "
                             "--checkpoints past its last): its id in runs.jsonl, or its results file")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.checkpoints and (sorted(set(args.checkpoints)) != args.checkpoints or args.checkpoints[0] < 1):
        parser.error("--checkpoints must be increasing positive step counts")
    resume = load_resume(args, parser) if args.resume is not None else None
    for name, value in SETTINGS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.seeds < 1 or args.first_seed < 0:
        parser.error("--seeds must be >= 1 and --first-seed >= 0")
    if args.calibrate < 0 or (args.calibrate and args.rejection is None and not args.metropolis):
        parser.error("--calibrate N needs --rejection Q or --metropolis L, and N >= 0")
    if args.metropolis < 0:
        parser.error(f"--metropolis must be a chain length >= 1, got {args.metropolis}")
    if not 1 <= args.sharpen < float("inf") or (args.sharpen != 1 and not args.metropolis):
        parser.error(f"--sharpen {args.sharpen:g}: Metropolis-Hastings' beta, a finite number >= 1 with --metropolis")
    if not 0 < args.metropolis_step <= 1 or (args.metropolis_step != 1 and not args.metropolis):
        parser.error(f"--metropolis-step {args.metropolis_step:g}: the proposals' step, a number in (0, 1] with "
                     "--metropolis")
    if args.jacobian is not None and not 1 <= args.jacobian < float("inf"):
        parser.error(f"--jacobian {args.jacobian:g}: a finite factor >= 1 of the median Jacobian norm")
    if not args.calibrate_lr > 0 or args.calibrate_batch < 1:
        parser.error("--calibrate-lr must be > 0 and --calibrate-batch >= 1")
    if args.rejection is not None and not 0 <= args.rejection < 1:
        parser.error(f"--rejection must be a quantile in [0, 1), got {args.rejection}")
    if args.steps_per_replay < 1 or (args.steps_per_replay > 1 and not args.cuda_graph):
        parser.error("--steps-per-replay K needs --cuda-graph and K >= 1")
    if args.check_every < 0 or args.check_every % args.steps_per_replay:
        parser.error(f"--check-every must be >= 0 and a multiple of --steps-per-replay {args.steps_per_replay}")
    if any(c % args.steps_per_replay for c in args.checkpoints):
        parser.error(f"--checkpoints must be multiples of --steps-per-replay {args.steps_per_replay}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        trained = " (the resumed run trained on one)" if resume else ""
        parser.error(f"--device cuda: this machine has no CUDA device{trained}")
    # (betas, models, update: the preset's, or the resumed run's)
    base = resume["protocol"] if resume else PACGAN_PROTOCOL if args.preset == "pacgan" else PROTOCOL
    protocol = {**base, "lr": args.lr, "batch": args.batch, "pack_convention": args.pack_convention,
                "lr_schedule": lr_schedule_arg(args.lr_schedule),
                "latent_dim": args.latent_dim if args.latent_dim is not None else base["latent_dim"],
                "hidden": list(args.hidden) if args.hidden is not None else base.get("hidden"),
                "ema": args.ema if args.ema is not None else base.get("ema"),
                "minibatch_std": args.minibatch_std if args.minibatch_std is not None else base.get("minibatch_std", 0),
                "adam_state": args.adam_state or base.get("adam_state"),
                "mmd_weight": mmd_weight_arg(args.mmd_weight, args.seeds, parser) if args.mmd_weight is not None
                else base.get("mmd_weight", 0.0),
                "mmd_from": args.mmd_from if args.mmd_from is not None else base.get("mmd_from", 0),
                "mmd_fine": args.mmd_fine if args.mmd_fine is not None else base.get("mmd_fine", 0.0),
                "mmd_fine_from": args.mmd_fine_from if args.mmd_fine_from is not None else base.get("mmd_fine_from", 0),
                "mmd_fine_shape": args.mmd_fine_shape if args.mmd_fine_shape is not None
                else base.get("mmd_fine_shape")}
    if protocol["mmd_fine_shape"] is not None and not protocol["mmd_fine"]:
        parser.error("--mmd-fine-shape shares the weights --mmd-fine gives the kernels: give --mmd-fine too")
    if (protocol["mmd_fine"] or protocol["mmd_from"]) and not protocol["mmd_weight"]:
        flag = "--mmd-fine weighs the MMD term's kernels" if protocol["mmd_fine"] else "--mmd-from starts the MMD term"
        parser.error(f"{flag}: give --mmd-weight too")
    if protocol["preset"] == "pacgan" and protocol["latent_dim"] != 2:
        parser.error("--preset pacgan: its G takes 2-d noise (no --latent-dim)")
    if protocol["preset"] == "pacgan" and protocol["hidden"]:
        parser.error("--preset pacgan: its models are PacGAN's (no --hidden)")
    if protocol["preset"] == "pacgan" and protocol["minibatch_std"]:
        parser.error("--preset pacgan: its maxout D has no minibatch standard deviation (no --minibatch-std)")
    try:   # settings the trainer refuses (a schedule, a variant the preset cannot take) fail here, before hours
        fastgan.TrainConfig(**trainer_settings(args.variant, protocol)[0], replicas=args.seeds)
    except ValueError as error:
        parser.error(f"variant {args.variant} with these settings: {error}")
    env = environment()
    if args.cuda_graph and device.type != "cuda":
        parser.error("--cuda-graph needs a CUDA device")
    options = {"cuda_graph": True, "steps_per_replay": args.steps_per_replay} if args.cuda_graph else {}
    written = []

    def save(rows, first, pictures):
        def cell(summary, key, scale=1.0, digits=3):   # (a row of an older run may lack a key: "-")
            if key not in summary:
                return "-"
            return f"{scale * summary[key][0]:.{digits}f} ± {scale * summary[key][1]:.{digits}f}"

        def spread(summary):   # an older row's spread, marked: pooled (before 2026-12-05), or about the centre
            mark = ("" if "spread" not in summary or "offset" in summary else " †" if "swd_ratio" in summary
                    else " *")
            return cell(summary, "spread", digits=2) + mark

        quality_head = ["modes", "high-quality %", "KL (high-quality)", "KL (all samples)", "spread (data: 1)",
                        "offset (std)", "SWD / floor (data: 1)"]
        head = ["steps", "training seconds (all seeds)"] + quality_head

        def figures(summary):
            return [cell(summary, "modes", digits=2), cell(summary, "high_quality", 100, 1), cell(summary, "kl"),
                    cell(summary, "kl_all"), spread(summary), cell(summary, "offset", digits=2),
                    cell(summary, "swd_ratio", digits=2)]

        body = [[r["steps"], f"{r['seconds']:.0f}"] + figures(r["summary"]) for r in rows]
        graph = f", CUDA graph ({args.steps_per_replay} steps per replay)" if args.cuda_graph else ""
        seeds_text = (f"{args.seeds} seeds" if not args.first_seed else
                      f"{args.seeds} seeds ({args.first_seed} to {args.first_seed + args.seeds - 1}, on seed 0's data)")
        chosen = VARIANTS[args.variant]
        text = (f"# Quality along training — {env['card']}, {env['date'][:10]}\n\n{args.data}, variant "
                f"{args.variant} ({', '.join(f'{k} {v}' for k, v in chosen.items()) or 'no options'}), "
                f"{seeds_text} at once (replicas), mean ± s.e.; kernels {args.kernels}{graph}\n\n"
                f"{describe(protocol)}\n\n")
        for old in (resume or {}).get("history", []):
            was = old.get("environment") or {}
            text += (f"Resumed at step {old['steps']} from `{old['results']}` (its trainer checkpoint; that run: "
                     f"{was.get('card', '?')}, {str(was.get('date', '?'))[:10]}, CPU {was.get('cpu', 'not recorded')}"
                     f"): the rows up to step {old['steps']} are that run's.\n\n")
        text += markdown_table(head, body)
        for key in ("rejection", "calibrated", "metropolis", "jacobian"):
            if key not in rows[0]:
                continue
            body = [[r["steps"]] + figures(r[key]["summary"]) + [cell(r[key]["summary"], "acceptance", 100, 0)]
                    for r in rows]
            calibrated = (f"each D first trained {args.calibrate} more steps against the generator sampled from, G "
                          f"held fixed (`calibrate_discriminator`, Adam {args.calibrate_lr:g}, {args.calibrate_batch} "
                          "rows of each kind a step), then judging")
            if key == "metropolis":
                beta = f", beta {args.sharpen:g}: p_G exp(beta logit)" if args.sharpen != 1 else ""
                beta += (f", latent steps of {args.metropolis_step:g}" if args.metropolis_step != 1 else "")
                what = (f"**with Metropolis-Hastings over D's scores** (chains of {args.metropolis} proposals of "
                        f"G{beta}, each sample a chain's last state; "
                        f"{calibrated if args.calibrate else 'the trained D'})")
                rate = "proposals taken %"
            elif key == "jacobian":
                what = (f"**with G's samples kept by its own Jacobian** (norm at most {args.jacobian:g} times the "
                        "median, no D)")
                rate = "candidates kept %"
            else:
                how = (calibrated if key == "calibrated" else
                       "G's candidates kept by the trained D's verdict, no retraining")
                what = f"**with discriminator rejection sampling** (quantile {args.rejection:g}; {how})"
                rate = "candidates kept %"
            text += (f"\n\nThe same checkpoints {what}, apart from the plain figures above:\n\n"
                     + markdown_table(["steps"] + quality_head + [rate], body))
        if any("spread" in r["summary"] and "offset" not in r["summary"] and "swd_ratio" in r["summary"]
               for r in rows):
            text += ("\n\n† spread as measured from 2026-12-05 until 2026-12-06: the high-quality samples' RMS "
                     "distance to their mode's centre (its offset included), over the data's, mean over the modes.")
        if any("spread" in r["summary"] and "swd_ratio" not in r["summary"] for r in rows):
            text += ("\n\n\\* spread as measured before 2026-12-05: the high-quality samples' RMS distance to their "
                     "mode over std·√2, pooled over the modes (the data: 0.97).")
        if args.check_every:
            mark = f"{MODES[args.data]}/{MODES[args.data]} modes with >= 90% high-quality samples"
            body = [[args.first_seed + k, f["steps"], f"{f['seconds']:.0f}"] if f else
                    [args.first_seed + k, f"not within {rows[-1]['steps']}", "-"] for k, f in enumerate(first)]
            text += (f"\n\nFirst reached {mark} (checked every {args.check_every} steps on 2,500 samples of "
                     "noise seed 20,000 + seed; seconds: the K-replica trainer's training time then, all seeds "
                     "at once):\n\n" + markdown_table(["seed", "steps", "seconds (all seeds)"], body))
        payload = {"environment": env, "data": args.data, "variant": args.variant, "kernels": args.kernels,
                   "cuda_graph": args.cuda_graph, "steps_per_replay": args.steps_per_replay, "options": chosen,
                   "seeds": args.seeds, "first_seed": args.first_seed, "protocol": protocol,
                   "architecture": describe(protocol),
                   "rejection": args.rejection, "calibrate": args.calibrate, "calibrate_lr": args.calibrate_lr,
                   "calibrate_batch": args.calibrate_batch, "metropolis": args.metropolis,
                   "sharpen": args.sharpen, "metropolis_step": args.metropolis_step, "jacobian": args.jacobian,
                   "check_every": args.check_every, "data_mmd_samples": DATA_MMD_SAMPLES,
                   "first_reached": first, "curve": rows,
                   "device": device.type,
                   "checkpoint": str(args.save_checkpoint.resolve()) if args.save_checkpoint else None}
        if resume:
            payload["resumed_from"] = resume["history"]
        preset = "pacgan-" if protocol["preset"] == "pacgan" else ""
        written[:] = write_results(f"quality_curve-{args.data}", payload, text, args.out,
                                   draw=lambda folder, stem: quality.draw(pictures, {}, folder, stem, args.first_seed),
                                   label=f"{preset}{args.variant}")

    try:
        curve(args.data, args.variant, args.seeds, args.checkpoints, protocol, device, args.kernels, report=save,
              rejection=args.rejection, check_every=args.check_every, calibrate=args.calibrate,
              calibrate_lr=args.calibrate_lr, calibrate_batch=args.calibrate_batch,
              checkpoint=args.save_checkpoint, resume=resume, first_seed=args.first_seed,
              metropolis=args.metropolis, sharpen=args.sharpen, metropolis_step=args.metropolis_step,
              jacobian=args.jacobian, **options)
    except CheckpointError as error:   # only loading raises it: the resumed trainer does not fit the run
        if resume is None:
            raise
        parser.error(f"--resume: {error}")
    print("wrote " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
