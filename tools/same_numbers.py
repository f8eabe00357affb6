#!/usr/bin/env python3
"""Same numbers: proof that a refactor changed no numbers, and that old checkpoints resume exactly.

Four small fixed-seed GANs on the 2-d ring mixture (latent 8, hidden (32, 32), batch 64, seed 0):
``torch``, ``triton`` and ``triton-mlp`` kernels (Triton's CPU interpreter) and ``replicas`` (3 replicas,
torch kernels). Each runs 10 steps, saves a checkpoint, runs 10 more. Recorded: every step's losses as
exact float hex, and a SHA-256 of every final tensor: G's and D's state_dicts, both Adams' moments one tensor per
parameter (whatever the optimizer's own layout or its checkpoint form) with their step counts, the RNGs' and the
Philox sampler's states. Only the stable public API is used (``fastgan.GANTrainer``,
``MLPGenerator``, ``MLPDiscriminator``, ``data``, ``step``/``flush_losses``/``save``/``load``), so one
script runs on both sides of a refactor. It runs on one CPU thread: the numbers do not depend on the core count.

    python tools/same_numbers.py record OUT_DIR           # OUT_DIR/numbers.json + OUT_DIR/<case>.pt (step 10)
    python tools/same_numbers.py compare OLD_DIR NEW_DIR  # bit-identical? exit 1 naming the first difference
    python tools/same_numbers.py resume OLD_DIR OUT_DIR   # OLD_DIR's step-10 checkpoints, 10 steps at this code

``compare OLD NEW`` where NEW was written by ``resume`` checks steps 11-20 and the final tensors against the
old run: checkpoints written before the change load after it and continue exactly. To run the old code,
put its checkout first: ``PYTHONPATH=/path/to/old/checkout python tools/same_numbers.py record ...``
(numbers.json names the fastgan package that ran). Exit status: 0 same, 1 different, 2 bad usage.
"""
from __future__ import annotations

import os

# before torch, triton or fastgan are imported: Triton kernels in the CPU interpreter, one pinned config each
os.environ["TRITON_INTERPRET"] = "1"
os.environ["FASTGAN_AUTOTUNE"] = "0"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import fastgan  # noqa: E402

FORMAT = "fastgan-same-numbers/1"
SEED, STEPS, SAVE_AT = 0, 20, 10
MODELS = {"latent_dim": 8, "hidden": [32, 32], "data": "gaussian_ring(n=4096, seed=0)"}
CASES = {name: {"kernels": kernels, "batch_size": 64, "seed": SEED, **more}   # name -> GANTrainer settings
         for name, kernels, more in (("torch", "torch", {}), ("triton", "triton", {}),
                                     ("triton-mlp", "triton-mlp", {}), ("replicas", "torch", {"replicas": 3}))}


def build(settings: dict):
    """A fresh trainer: models from a fixed global seed, the ring data, ``settings``."""
    torch.manual_seed(SEED)
    g = fastgan.MLPGenerator(latent_dim=MODELS["latent_dim"], hidden=MODELS["hidden"], out_dim=2,
                             output_activation=None)
    d = fastgan.MLPDiscriminator(in_dim=2, hidden=MODELS["hidden"])
    return fastgan.GANTrainer(g, d, fastgan.data.gaussian_ring(4096, seed=0), **settings)


def run_steps(trainer, n: int) -> list:
    """``n`` steps; their ``[step, loss_d, loss_g]`` rows in float hex (lists of K values for replicas)."""
    def hexed(v):
        return [float.hex(x) for x in v] if isinstance(v, (list, tuple)) else float.hex(v)

    for _ in range(n):
        trainer.step()
    return [[int(s), hexed(d), hexed(g)] for s, d, g in trainer.flush_losses()]


def tensors(obj, prefix: str):
    """Every tensor in a nested dict/list, with a path name."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from tensors(value, f"{prefix}.{i}")


def digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
    return f"{t.dtype} {list(t.shape)} {hashlib.sha256(raw).hexdigest()}"


def adam(optimizer) -> dict:
    """An Adam's numbers, the same whatever holds them: moments per parameter (FlatAdam's flat buffers split in
    parameter order; a replica Adam's (K, P) buffers as they are) and the number of updates taken."""
    if hasattr(optimizer, "param_groups"):   # torch.optim
        params = [p for group in optimizer.param_groups for p in group["params"]]
        states = [optimizer.state.get(p, {}) for p in params]
        return {"exp_avg": [s.get("exp_avg") for s in states], "exp_avg_sq": [s.get("exp_avg_sq") for s in states],
                "step": torch.tensor([float(s["step"]) for s in states if "step" in s][:1], dtype=torch.float64)}
    if hasattr(optimizer, "params"):   # FlatAdam
        sizes = [p.numel() for p in optimizer.params]
        return {"exp_avg": list(optimizer.exp_avg.split(sizes)), "exp_avg_sq": list(optimizer.exp_avg_sq.split(sizes)),
                "step": torch.tensor([float(optimizer.steps_taken)], dtype=torch.float64)}
    return {"exp_avg": optimizer.exp_avg, "exp_avg_sq": optimizer.exp_avg_sq,   # the replica Adam
            "step": optimizer.state_dict()["step"].double().reshape(1)}


def case_numbers(name: str, trainer, rows: list, start: int) -> dict:
    """One case's record: its settings, step rows from ``start + 1`` on, and its final tensors' hashes."""
    generators = getattr(trainer, "generators", None) or [trainer.rng]
    sampler = getattr(trainer, "sampler", None)
    final = {"G": trainer.generator.state_dict(), "D": trainer.discriminator.state_dict(),
             "adam_g": adam(trainer.optimizer_g), "adam_d": adam(trainer.optimizer_d),
             "rng": [g.get_state() for g in generators],
             "sampler": sampler.state_dict() if sampler is not None else None}
    return {"settings": CASES[name], "start": start, "steps": rows,
            "tensors": {key: digest(t) for key, t in tensors(final, "")},
            "kernels_run": str(getattr(trainer, "kernels_run", "?")),
            "step_path": str(getattr(trainer, "step_path", "?"))}


def meta(mode: str) -> dict:
    import triton
    return {"format": FORMAT, "mode": mode, "fastgan": fastgan.__file__, "torch": torch.__version__,
            "triton": triton.__version__, "threads": torch.get_num_threads(), "models": MODELS, "cases": {}}


def record(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    numbers = meta("record")
    for name, settings in CASES.items():
        began = time.perf_counter()
        trainer = build(settings)
        rows = run_steps(trainer, SAVE_AT)
        trainer.save(out / f"{name}.pt")
        rows += run_steps(trainer, STEPS - SAVE_AT)
        case = numbers["cases"][name] = case_numbers(name, trainer, rows, 0)
        print(f"{name}: {STEPS} steps ({case['kernels_run']}) in {time.perf_counter() - began:.1f} s", flush=True)
    (out / "numbers.json").write_text(json.dumps(numbers, indent=1) + "\n")
    print(f"wrote {out / 'numbers.json'} (fastgan from {fastgan.__file__})")
    return 0


def resume(old: Path, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    numbers, failed = meta("resume"), False
    for name, settings in CASES.items():
        trainer = build(settings)
        try:
            trainer.load(old / f"{name}.pt")
        except Exception as e:   # a finding, not a crash: the old checkpoint does not load here
            print(f"{name}: FAIL: {old / name}.pt does not load: {type(e).__name__}: {e}")
            failed = True
            continue
        rows = run_steps(trainer, STEPS - SAVE_AT)
        numbers["cases"][name] = case_numbers(name, trainer, rows, SAVE_AT)
        print(f"{name}: loaded step {SAVE_AT}, ran steps {SAVE_AT + 1}-{STEPS}", flush=True)
    (out / "numbers.json").write_text(json.dumps(numbers, indent=1) + "\n")
    print(f"wrote {out / 'numbers.json'}; check it with: compare {old} {out}")
    return 1 if failed else 0


def first_difference(old: dict, new: dict) -> str | None:
    """The first thing that differs between one case's old and new numbers (None: bit-identical)."""
    if old["settings"] != new["settings"]:
        return f"settings differ: old {old['settings']}, new {new['settings']}"
    expected = [row for row in old["steps"] if row[0] > new["start"]]
    got = {row[0]: row for row in new["steps"]}
    for row in expected:
        if row[0] not in got:
            return f"step {row[0]} missing from NEW"
        for i, what in ((1, "loss_d"), (2, "loss_g")):
            if got[row[0]][i] != row[i]:
                return f"step {row[0]} {what}: old {row[i]}, new {got[row[0]][i]}"
    if len(got) != len(expected):
        return f"NEW has {len(got)} steps, OLD {len(expected)} after step {new['start']}"
    for key, value in old["tensors"].items():
        if key not in new["tensors"]:
            return f"tensor {key} missing from NEW"
        if new["tensors"][key] != value:
            return f"tensor {key}: old {value}, new {new['tensors'][key]}"
    extra = sorted(set(new["tensors"]) - set(old["tensors"]))
    return f"tensor {extra[0]} only in NEW" if extra else None


def compare(old: dict, new: dict) -> int:
    print(f"old: {old['fastgan']} ({old['mode']})\nnew: {new['fastgan']} ({new['mode']})")
    failed = False
    for name, numbers in old["cases"].items():
        if name not in new["cases"]:
            print(f"{name}: FAIL: not in NEW")
            failed = True
            continue
        diff = first_difference(numbers, new["cases"][name])
        first = new["cases"][name]["start"] + 1
        kept = f"steps {first}-{STEPS} and {len(numbers['tensors'])} tensors"
        print(f"{name}: {'FAIL: ' + diff if diff else 'bit-identical: ' + kept}")
        for what in ("kernels_run", "step_path"):   # (a fallback to another path usually changes numbers too)
            if numbers[what] != new["cases"][name][what]:
                print(f"  note: {what} was {numbers[what]!r}, is {new['cases'][name][what]!r}")
        failed = failed or diff is not None
    print("DIFFERENT" if failed else "SAME NUMBERS")
    return 1 if failed else 0


def load_numbers(parser: argparse.ArgumentParser, directory: Path) -> dict:
    path = directory / "numbers.json"
    try:
        numbers = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        parser.error(f"cannot read {path}: {e}")
    if numbers.get("format") != FORMAT:
        parser.error(f"{path} is not a {FORMAT} file")
    return numbers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("record", help="run every case; write numbers.json and step-10 checkpoints").add_argument(
        "out", type=Path, metavar="OUT_DIR")
    for mode, second, text in (("compare", "NEW_DIR", "are OLD_DIR's and NEW_DIR's numbers bit-identical?"),
                               ("resume", "OUT_DIR", "resume OLD_DIR's step-10 checkpoints at this code")):
        p = sub.add_parser(mode, help=text)
        p.add_argument("old", type=Path, metavar="OLD_DIR")
        p.add_argument("second", type=Path, metavar=second)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.mode == "record":
        return record(args.out)
    if args.mode == "resume":
        load_numbers(parser, args.old)   # (refuses a directory that is no record before any work)
        return resume(args.old, args.second)
    return compare(load_numbers(parser, args.old), load_numbers(parser, args.second))


if __name__ == "__main__":
    sys.exit(main())
