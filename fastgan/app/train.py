"""``fastgan train``: a run on a bundled or local data set, its checkpoint, pictures and metrics.json; a sweep
of replicas (sharded over torchrun's ranks) or one GAN, data-parallel across ranks."""
from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from .. import data as datasets
from .. import metrics as quality_metrics
from ..checkpoint import load_checkpoint, save_checkpoint
from ..nn.presets import DATA_PRESETS, PRESETS, ModelPreset, build_models, model_description
from ..train import distributed
from ..train.checkpoints import SHARDED_FORMAT
from ..train.config import TrainConfig
from ..train.replicas import diverged_replicas
from ..train.tensorboard import Board
from ..train.trainer import GANTrainer, NonFiniteLossError, TrainingInterrupted
from .args import QUALITY_SEED, apply_recipe, config_from_args, resolve_device
from .plots import save_image_grid, save_loss_curve, save_scatter, save_scatter_panels
from .starts import score_starts
from .sweep import headline, summary_table, sweep_of, write_sweep


def run_train(args: argparse.Namespace) -> int:
    out: Path = args.out or Path("runs") / args.data
    checkpoint = out / "checkpoint.pt"
    preset = PRESETS[DATA_PRESETS[args.data]]
    saved = load_checkpoint(checkpoint) if args.resume and checkpoint.exists() else None
    # (a resumed run keeps the settings it was trained with where no flag is given, its model included)
    own_starts = None if saved is None else saved.get("extra", {}).get("starts", 1)
    chosen = apply_recipe(args, None if saved is None else {**(saved.get("config") or {}), "starts": own_starts})
    model_config = model_description(args.data, ModelPreset(args.latent_dim or preset.latent_dim,
                                                            tuple(args.hidden or preset.hidden),
                                                            preset.output_activation,
                                                            minibatch_std=args.minibatch_std), args.pack)
    if args.conditional:
        if args.data not in ("digits", "mnist"):
            raise ValueError(f"--conditional needs class labels: --data digits or mnist, not {args.data}")
        if args.pack > 1 or args.minibatch_std:
            raise ValueError(f"--conditional does not combine with {'--pack' if args.pack > 1 else '--minibatch-std'}")
        model_config["num_classes"] = 10
    device = resolve_device(args.device)
    multi = distributed.init(device)
    rank, world = distributed.rank(), distributed.world_size()
    grid = sweep_of(args)   # (a ValueError for a bad grid, before anything starts)
    starts = _starts(args.starts, own_starts, "starts" in chosen, grid, multi)
    sweep = multi and grid is not None
    if multi and not sweep and chosen.get("mmd_weight"):
        raise ValueError(f"--data {args.data}'s recipe adds the MMD term (--mmd-weight {chosen['mmd_weight']:g}), "
                         "which data-parallel training does not split over processes: give --mmd-weight 0, or "
                         "train it in one process")
    shard_path = out / f"checkpoint.rank{rank}-of-{world}.pt" if sweep else checkpoint
    if args.resume:
        if saved is None:
            print(f"fastgan: --resume given but {checkpoint} does not exist", file=sys.stderr)
            return 2
        if saved.get("format") == SHARDED_FORMAT:
            if saved["world_size"] != world:
                raise ValueError(f"{checkpoint} holds a sweep of {saved['replicas']} replicas trained by "
                                 f"{saved['world_size']} processes; this run has {world}: resume it with "
                                 f"torchrun --nproc_per_node={saved['world_size']} (each process resumes its shard)")
        elif sweep:
            raise ValueError(f"{checkpoint} is not a sweep's index (it was written by one process): resume it "
                             "without torchrun")
        model_config = saved.get("extra", {}).get("model", model_config)
        if model_config.get("data") != args.data:
            print(f"fastgan: {checkpoint} was trained on --data {model_config.get('data')}, not {args.data}",
                  file=sys.stderr)
            return 2

    if args.real_label is None:
        args.real_label = [1.0 if args.loss == "hinge" else 0.9]
        if args.loss != "hinge" and rank == 0:   # the API's default is 1.0: say which one this run uses, and why
            print("fastgan: real_label 0.9 (the CLI's default: one-sided label smoothing, steadier on digits; the "
                  "Python API's default is 1.0, the plain GAN loss: pass --real-label 1.0 for it)")
    config = config_from_args(args, pack=model_config.get("pack", 1), data_parallel=multi and not sweep,
                              **({"replicas": starts} if starts > 1 else {}))
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
    g, d = build_models(real.shape[1], {**model_config, "pack": config.pack})
    trainer = GANTrainer(g, d, real, config, labels=labels)
    if saved is not None:
        trainer.load(shard_path)
        if rank == 0:
            print(f"fastgan: resumed {checkpoint} at step {trainer.step_count}")
        changed = whole.changes_from(saved.get("config", {}))
        if changed and rank == 0:  # a resumed run equals an uninterrupted one only with the same settings
            print("fastgan: note: settings differ from the checkpoint's run: " +
                  ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()))

    extra = {"model": model_config, **({"starts": starts} if starts > 1 else {})}
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
                  + (f", step: {trainer.step_path}" if trainer.step_path not in ("generic", "replicas") else "")
                  + (f", {whole.replicas} {'starts' if starts > 1 else 'replicas'} (seeds {args.seed}.."
                     f"{args.seed + whole.replicas - 1}){', the nearest its data kept' if starts > 1 else ''}"
                     if whole.replicas else "")
                  + (f", {world} processes ({'replicas split over them' if sweep else 'data-parallel'})"
                     if multi else ""))
        try:
            trainer.fit(remaining, log_every=args.log_every, progress=not args.no_progress and rank == 0,
                        checkpoint=shard_path if writes_checkpoint else None, checkpoint_extra=extra,
                        log_dir=args.tensorboard if rank == 0 else None)
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
    results = scores = None
    if starts > 1:   # (an unfinished run keeps none: its outputs show the first start)
        scores = score_starts(trainer) if status == "completed" else {"kept": None}
        if status == "completed" and scores["kept"] is None:
            status = "diverged (every start)"
            print("fastgan: stopped: every start's samples became non-finite", file=sys.stderr)
        elif status == "completed":
            extra["start_scores"] = scores
            print(f"fastgan: kept seed {scores['seeds'][scores['kept']]} of {starts} starts, the nearest its data "
                  f"(MMD / floor: {', '.join('-' if r is None else f'{r:.2f}' for r in scores['data_mmd_ratio'])})")
    elif whole.replicas is not None:   # every rank's replicas, gathered on rank 0 in replica order
        parts = distributed.gather(_replica_results(trainer, args, status))
        results = _merge_replica_results(parts) if rank == 0 else None
    if rank == 0:
        if results is not None and results["status"] != "completed" and status == "completed":
            status = f"diverged ({results['status']})"
            print(f"fastgan: stopped: {results['status']}: some replicas' losses became non-finite", file=sys.stderr)
        _write_outputs(trainer, out, args, model_config, status, seconds, max(remaining, 0), results, whole, scores)
        reported = _report_sweep(out, grid, args, results, trainer.step_count) if grid is not None else []
    if status == "completed" and writes_checkpoint:
        trainer.save(shard_path, extra=extra)
    if rank == 0:
        print(f"fastgan: wrote {out}/samples.png, losses.png, metrics.json, checkpoint.pt"
              + "".join(f", {path.name}" for path in reported)
              + (f" (an index of the {world} ranks' checkpoint.rank*-of-{world}.pt)" if sweep else ""))
    code = 0 if status == "completed" else 1
    if multi:
        _leave_process_group(code)
    return code


def _starts(starts: int, own: int | None, recipe: bool, grid, multi: bool) -> int:
    """How many starts the run trains: ``--starts`` (``recipe``: not given, the data set's recipe's or a resumed
    run's ``own``), one in a sweep or under torchrun unless given; a ValueError, before anything starts, where it
    cannot be: given with a sweep or under torchrun, or unlike the resumed run's."""
    if own is not None and not recipe and starts != own:
        raise ValueError(f"the checkpoint was trained with --starts {own}: resume it with that, or without --starts")
    if recipe and (grid is not None or multi):
        return 1   # (a sweep's replicas are its GANs; torchrun splits one GAN or a sweep)
    if starts > 1 and grid is not None:
        raise ValueError(f"--starts {starts} keeps one GAN of {starts}; a sweep (--seeds, several values of a flag) "
                         "keeps every one: give one of them")
    if starts > 1 and multi:
        raise ValueError(f"--starts {starts} trains its starts in one process: run it without torchrun")
    return starts


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
    if status == "completed":   # (a conditional GAN: each class in turn, as a single run's metrics ask for them)
        n = quality_metrics.default_samples(args.data)
        labels = torch.arange(n) % trainer.num_classes if trainer.num_classes else None
        samples = trainer.sample(n, seed=QUALITY_SEED, labels=labels)
        quality = [quality_metrics.evaluate(args.data, samples[k], labels) for k in range(trainer.replicas)]
    return {"pictures": pictures, "quality": quality, "history": trainer.history, "status": status,
            "weights": "ema" if trainer.ema_flat is not None else "generator"}


def _report_sweep(out: Path, grid, args, results: dict, steps: int) -> list[Path]:
    """sweep.md and the sweep's plots from the gathered results (the files written), and the per-setting table
    on stdout: each replica's headline metrics (its final losses where there are none: MNIST, a diverged run)."""
    quality = results["quality"] or [None] * grid.replicas
    keys = next((list(headline(args.data, q)) for q in quality if q), None)
    if keys:   # (a diverged replica has none: NaN in its row, left out of its setting's mean)
        figures = [headline(args.data, q) if q else dict.fromkeys(keys, math.nan) for q in quality]
    elif results["history"]["loss_d"]:
        figures = [{"loss_d": d, "loss_g": g} for d, g in zip(results["history"]["loss_d"][-1],
                                                            results["history"]["loss_g"][-1])]
    else:
        return []
    written = write_sweep(out, grid, args.seed, figures, f"{args.data}: {steps} steps",
                          diverged_replicas(results["history"]), "fastgan " + shlex.join(args.argv))
    print("fastgan: per setting, mean ± s.e. over its seeds (every replica: sweep.md)\n"
          + summary_table(grid, figures), end="")
    return written


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


# The Jacobian sampler's factor each mixture recipe was measured with (the README's quality section):
# samples.png's second panel and metrics.json's "quality_jacobian" use it.
JACOBIAN_FACTORS = {"ring": 4.0, "grid": 8.0}


def _mixture_samples(trainer: GANTrainer, data: str, draw) -> dict:
    """A single ring/grid run's samples (``draw``: its ``trainer.sample``), drawn once for samples.png and
    metrics.json (its noise seed): G's 2,500 (``plain``) and, where they are finite (not after a divergence), those
    its Jacobian keeps at the recipe's factor (``kept``, with ``factor`` and the ``share`` kept)."""
    plain = draw(quality_metrics.default_samples(data), seed=QUALITY_SEED)
    if not bool(torch.isfinite(plain).all()):
        return {"plain": plain}
    factor = JACOBIAN_FACTORS[data]
    kept = draw(plain.shape[0], seed=QUALITY_SEED, jacobian=factor)
    return {"plain": plain, "kept": kept, "factor": factor, "share": trainer.last_acceptance}


def _write_outputs(trainer: GANTrainer, out: Path, args, model_config: dict, status: str, seconds: float,
                   steps_run: int, results: dict | None = None, config: TrainConfig | None = None,
                   scores: dict | None = None) -> None:
    """samples.png, losses.png and metrics.json. A replica run passes its (gathered) ``results`` and the
    whole run's ``config`` (a sharded rank's trainer holds only its slice); a run of several starts its
    ``score_starts`` (its outputs are the kept start's, as one GAN's)."""
    out.mkdir(parents=True, exist_ok=True)
    config = config or trainer.config
    replicas = config.replicas if scores is None else None
    start = None if scores is None else scores["kept"] or 0
    draw = trainer.sample if start is None else functools.partial(trainer.sample, replica=start)
    of_starts = "" if start is None else f", seed {config.seed + start} of {config.replicas} starts" + (
        ", the nearest its data" if scores["kept"] is not None else "")
    mixture = _mixture_samples(trainer, args.data, draw) if replicas is None and args.data in JACOBIAN_FACTORS \
        else None
    if replicas is not None:
        _replica_pictures(results["pictures"], replicas, trainer, out, args)
    elif mixture is not None:
        centers = datasets.ring_centers() if args.data == "ring" else datasets.grid_centers()
        # G alone leaves samples on its way between the modes; its own Jacobian leaves them out (docs/sampling.md)
        panels = {"G alone": mixture["plain"]}
        if "kept" in mixture:
            panels[f"kept by G's Jacobian (F {mixture['factor']:g}): {mixture['share']:.0%} of G's"] = mixture["kept"]
        save_scatter(panels, out / "samples.png", centers=centers, real=trainer.data,
                     title=f"{args.data}: {mixture['plain'].shape[0]:,} samples after {trainer.step_count} steps"
                           f"{of_starts}")
    elif trainer.num_classes is not None:   # one row per class
        classes = trainer.num_classes
        rows = torch.arange(classes, device=trainer.device).repeat_interleave(10)
        save_image_grid(draw(10 * classes, labels=rows), out / "samples.png", columns=10,
                        title=f"{args.data}: one row per class (0 at the top), after {trainer.step_count} steps"
                              f"{of_starts}")
    else:
        save_image_grid(draw(64), out / "samples.png",
                        title=f"{args.data}: 64 samples after {trainer.step_count} steps{of_starts}")
    history = trainer.history
    if replicas is not None:   # the curve of the replicas' mean loss; metrics.json has each one's
        history = results["history"]
        history = {"step": history["step"], "loss_d": [sum(v) / len(v) for v in history["loss_d"]],
                   "loss_g": [sum(v) / len(v) for v in history["loss_g"]]}
    elif start is not None:   # the kept start's
        history = {"step": history["step"], **{key: [v[start] for v in history[key]] for key in ("loss_d", "loss_g")}}
    save_loss_curve(history, out / "losses.png", title=f"{args.data}: losses per step"
                    + (f" (mean of {replicas} replicas)" if replicas else "") + of_starts)
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
        diverged = diverged_replicas(results["history"])
        if diverged:   # they trained on as NaNs; the others are unaffected (their metrics stand)
            metrics["diverged_replicas"] = {str(k): step for k, step in diverged.items()}
            print(f"fastgan: {len(diverged)} of {replicas} replicas diverged (replica: first non-finite step) "
                  f"{diverged}; the others trained on, unaffected", file=sys.stderr)
        last = results["history"]["loss_d"][-1] if results["history"]["loss_d"] else None
        metrics["final_loss_d_per_replica"] = last
        metrics["final_loss_g_per_replica"] = results["history"]["loss_g"][-1] if last is not None else None
    if status == "completed" and replicas is not None:
        metrics["quality"] = quality_metrics.replica_summary(results["quality"])
        metrics["quality_samples"] = {"seed": QUALITY_SEED, "device": str(trainer.device),
                                      "weights": results["weights"]}
    elif status == "completed":
        n = quality_metrics.default_samples(args.data)
        labels = torch.arange(n) % trainer.num_classes if trainer.num_classes else None
        samples = mixture["plain"] if mixture else draw(n, seed=QUALITY_SEED, labels=labels)
        metrics["quality"] = quality_metrics.evaluate(args.data, samples, labels)
        metrics["quality_samples"] = {"seed": QUALITY_SEED, "device": str(trainer.device),
                                      "weights": "ema" if trainer.ema is not None else "generator"}
        if mixture and "kept" in mixture:   # (G's samples kept by its Jacobian)
            metrics["quality_jacobian"] = {"factor": mixture["factor"], "kept": round(mixture["share"], 4),
                                           **quality_metrics.evaluate(args.data, mixture["kept"])}
    if scores is not None:   # which start these figures are, and how near each start was to its data
        metrics["starts"] = {"count": config.replicas, **scores}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if args.tensorboard is not None and metrics.get("quality"):
        board = Board(args.tensorboard)
        board.metrics(metrics["quality"].get("mean", metrics["quality"]), trainer.step_count)
        board.close()


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
        classes = ", classes 0 to 9 left to right" if trainer.num_classes else ""
        save_image_grid(samples.reshape(-1, samples.shape[-1]), out / "samples.png", columns=10,
                        title=f"{args.data}: a row per replica (0 at the top{classes}), after {trainer.step_count} "
                              f"steps{more}")
