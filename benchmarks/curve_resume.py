"""``quality_curve.py --resume``: a stopped run's settings, rows and trainer checkpoint, read back and checked
against what the resumed run is given (a flag that contradicts them is an error)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from common import RESULTS, RUNS_FILE, card_slug, read_runs

import fastgan
from fastgan.app.args import lr_schedule_arg
from fastgan.checkpoint import CheckpointError, load_checkpoint

# how a step runs, not what it computes: a resumed run may change these
_HOW = ("cuda_graph", "steps_per_replay", "graph_warmup", "device")


def check_same_run(saved: dict, ours: fastgan.TrainConfig, path) -> None:
    """The checkpoint's trainer settings are the resumed run's (but for ``_HOW``)."""
    differ = {k: v for k, v in ours.changes_from(saved).items() if k not in _HOW}
    if differ:
        raise CheckpointError(f"{path} was saved by a trainer with other settings than this run's: "
                              + ", ".join(f"{k} {old!r} (this run: {new!r})" for k, (old, new) in differ.items()))


# the run's settings: a resumed run takes them from its JSON; here the defaults of a new run
SETTINGS = {"data": "ring", "variant": "vanilla", "preset": "mixture-benchmark", "seeds": 5, "first_seed": 0,
            "lr": 1e-4, "lr_schedule": (), "batch": 100,
            "pack_convention": "rows", "kernels": "torch", "rejection": None, "check_every": 0, "calibrate": 0,
            "calibrate_lr": 1e-4, "calibrate_batch": 500, "metropolis": 0, "sharpen": 1.0, "metropolis_step": 1.0,
            "jacobian": None}


def _saved_settings(payload: dict) -> dict:
    """A results JSON's run settings (as ``SETTINGS``), for ``--resume``."""
    protocol = payload["protocol"]
    return {"data": payload["data"], "variant": payload["variant"],
            "preset": protocol.get("preset", "mixture-benchmark"),
            "seeds": payload["seeds"], "first_seed": payload.get("first_seed", 0), "lr": protocol["lr"],
            "lr_schedule": tuple(map(tuple, protocol.get("lr_schedule") or ())), "batch": protocol["batch"],
            "pack_convention": protocol["pack_convention"], "kernels": payload["kernels"],
            "rejection": payload["rejection"], "check_every": payload["check_every"],
            "calibrate": payload.get("calibrate", 0), "calibrate_lr": payload.get("calibrate_lr", 1e-4),
            "calibrate_batch": payload.get("calibrate_batch", 500), "metropolis": payload.get("metropolis", 0),
            "sharpen": payload.get("sharpen", 1.0), "metropolis_step": payload.get("metropolis_step", 1.0),
            "jacobian": payload.get("jacobian")}


def load_resume(args, parser) -> dict:
    """``--resume``: the stopped run (its id in runs.jsonl, or a results file), checked; fills ``args``' settings
    from it (a contradiction is an error) and returns what ``main`` continues from."""
    path = args.resume
    try:
        if path.exists() or path.suffix == ".json":
            record = json.loads(path.read_text())
        else:   # a run's id
            folder = (args.out or RESULTS) / card_slug()
            record = next((r for r in read_runs(folder) if r["run"] == str(path)), None)
            if record is None:
                parser.error(f"--resume {path}: neither a file nor a run of {folder / RUNS_FILE}")
        payload = record.get("payload", record)   # (a record, or a bare payload)
        saved = _saved_settings(payload)
        rows, first = payload["curve"], payload["first_reached"]
    except (OSError, ValueError) as error:
        parser.error(f"--resume {path}: cannot read it ({error})")
    except (KeyError, TypeError, AttributeError) as error:
        parser.error(f"--resume {path}: not a quality_curve.py results file (no {error})")
    if not rows:
        parser.error(f"--resume {path}: the run has no rows to go on from")
    for name, value in saved.items():
        given = getattr(args, name)
        if name == "lr_schedule" and given is not None:
            given = lr_schedule_arg(given) or ()
        if given is not None and given != value:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} {given!r} differs from the resumed run's {value!r} (a resumed run keeps its "
                         "settings: leave the flag out)")
        setattr(args, name, value)
    checkpoint = args.save_checkpoint or (Path(payload["checkpoint"]) if payload.get("checkpoint") else None)
    saved_device = payload.get("device") or ("cpu" if (payload.get("environment") or {}).get("card") == "cpu"
                                             else "cuda")
    if args.device is None:
        args.device = saved_device
    elif torch.device(args.device).type != saved_device:
        parser.error(f"--device {args.device}: the resumed run trained on {saved_device} (its random streams are "
                     "that device's: a resumed run stays on its kind of device)")
    if checkpoint is None:
        parser.error(f"--resume {path}: the run recorded no trainer checkpoint; give the file it saved with "
                     "--save-checkpoint PATH")
    if not checkpoint.is_file():
        parser.error(f"--resume: the trainer checkpoint {checkpoint} does not exist")
    args.save_checkpoint = checkpoint   # (and the resumed run saves there in turn)
    try:
        step = load_checkpoint(checkpoint, map_location="cpu").get("step")
    except CheckpointError as error:
        parser.error(f"--resume: {error}")
    done = [row["steps"] for row in rows]
    if step not in done:
        parser.error(f"--resume: {checkpoint} holds a trainer at step {step}, but the run has no row there (rows at "
                     f"{done}): not this run's trainer")
    if step != done[-1]:   # a kill after a row was written, before the trainer was saved
        print(f"  the trainer saved is at step {step}: the rows after it are measured again", flush=True)
        rows = rows[:done.index(step) + 1]
        first = [f if f is not None and f["steps"] <= step else None for f in first]
        done = done[:len(rows)]
    missing = [c for c in args.checkpoints if c <= done[-1] and c not in done]
    if missing:
        parser.error(f"--checkpoints {missing} lie before the resumed run's last row ({done[-1]} steps) and it has "
                     "no row there")
    if args.checkpoints[-1] <= done[-1]:
        parser.error(f"--checkpoints: the resumed run is at {done[-1]} steps already; give checkpoints past it")
    history = payload.get("resumed_from", []) + [{
        "results": record.get("run", path.name), "steps": done[-1], "environment": payload.get("environment"),
        "device": saved_device, "cuda_graph": payload.get("cuda_graph"),
        "steps_per_replay": payload.get("steps_per_replay")}]
    return {"checkpoint": checkpoint, "rows": rows, "first": first, "history": history,
            "protocol": payload["protocol"]}
