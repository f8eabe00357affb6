"""Two starts, one kept: each group of S consecutive seeds of ``quality_curve.py`` runs keeps the seed whose G is
nearest its training data at step ``--at`` (``metrics.kernel_distance``'s ratio, which each row records as
``data_mmd_ratio``: no evaluation noise, no knowledge of the modes), and the kept seeds' figures from then on are
reported beside every seed's.

A GAN can leave a mixture's modes unevenly fed for good (a line of the grid's modes at a tenth of its share:
docs/notes/2026-12-07-two-starts.md), and the training data shows it; ``fastgan train --starts N`` is the rule
for users (docs/notes/2026-12-08-two-starts-kept-at-the-end.md). The starts train as replicas of one trainer
(on a launch-bound GPU, K replicas cost less than K runs: ``replicas.py`` measures how much).

    python benchmarks/starts.py DATE-quality_curve-grid-ema_pack2 DATE-quality_curve-grid-ema_pack2-2 --at 75000

RUN: a run's id in ``results/<card>/runs.jsonl`` (``--results`` another folder) or a results file; the runs' seeds
are taken in the order given and grouped as they come (runs of 10 seeds from 100 and 110 with ``--starts 2``:
100 and 101, 102 and 103, ...). Prints the markdown table; records nothing (the runs are the record).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from common import RESULTS, card_slug, markdown_table, read_runs  # noqa: E402

GUIDES = ("jacobian", "metropolis", "rejection", "calibrated")


def load_run(name: str, folder: Path) -> dict:
    """A quality_curve run's payload: from a results file, or by its id in ``folder``'s runs.jsonl."""
    path = Path(name)
    if path.exists():
        record = json.loads(path.read_text())
    else:
        record = next((r for r in read_runs(folder) if r["run"] == name), None)
        if record is None:
            raise ValueError(f"{name}: neither a file nor a run of {folder}")
    payload = record.get("payload", record)
    if "curve" not in payload:
        raise ValueError(f"{name}: not a quality_curve.py run (no curve)")
    return payload


def kept_seeds(payloads: list[dict], starts: int, at: int) -> tuple[list[int], list[list[tuple[int, float]]]]:
    """``(indices kept, groups)``: over the runs' seeds in order, each group of ``starts`` keeps the one with the
    smallest ``data_mmd_ratio`` at step ``at``; a group is ``[(seed, ratio), ...]``."""
    seeds, ratios = [], []
    for p in payloads:
        row = next((r for r in p["curve"] if r["steps"] == at), None)
        if row is None:
            raise ValueError(f"the run of seeds {p['first_seed']}.. has no checkpoint at step {at}")
        if "data_mmd_ratio" not in row["runs"][0]:
            raise ValueError(f"the run of seeds {p['first_seed']}.. records no data_mmd_ratio (before 2026-12-07)")
        seeds += [p["first_seed"] + k for k in range(p["seeds"])]
        ratios += [r["data_mmd_ratio"] for r in row["runs"]]
    if len(seeds) % starts:
        raise ValueError(f"{len(seeds)} seeds do not make groups of {starts}")
    kept, groups = [], []
    for g in range(0, len(seeds), starts):
        group = list(zip(seeds[g:g + starts], ratios[g:g + starts]))
        kept.append(g + min(range(starts), key=lambda i: ratios[g + i]))
        groups.append(group)
    return kept, groups


def _cell(values: list[float], scale: float = 1.0, digits: int = 3, worst=max) -> str:
    mean, se = quality._mean_se(values)
    return f"{scale * mean:.{digits}f} ± {scale * se:.{digits}f} ({scale * worst(values):.{digits}f})"


def table(payloads: list[dict], starts: int, at: int) -> str:
    kept, groups = kept_seeds(payloads, starts, at)
    steps = [r["steps"] for r in payloads[0]["curve"] if r["steps"] >= at]
    head = ["step", "seeds", "sampler", "modes", "HQ %", "KL", "spread", "SWD / floor", "data MMD / floor"]
    body = []
    for step in steps:
        rows = [next(r for r in p["curve"] if r["steps"] == step) for p in payloads]
        for sampler in ("G alone",) + tuple(g for g in GUIDES if g in rows[0]):
            runs = [x for r in rows for x in (r["runs"] if sampler == "G alone" else r[sampler]["runs"])]
            ratios = [x["data_mmd_ratio"] for r in rows for x in r["runs"]]
            for which, picked in ((f"kept, {len(kept)}", kept), (f"all, {len(runs)}", range(len(runs)))):
                chosen = [runs[i] for i in picked]
                body.append([step, which, sampler,
                             _cell([x["modes"] for x in chosen], digits=2, worst=min),
                             _cell([x["high_quality"] for x in chosen], 100, 1, worst=min),
                             _cell([x["kl"] for x in chosen]),
                             _cell([x["spread"] for x in chosen], digits=3, worst=min),
                             _cell([x["swd_ratio"] for x in chosen], digits=2),
                             _cell([ratios[i] for i in picked], digits=2)])
    pairs = "; ".join(" vs ".join(f"{s} ({r:.2f})" for s, r in g) for g in groups)
    samples = sorted({p.get("data_mmd_samples", 2500) for p in payloads})   # (2,500 before it was recorded)
    return (f"Groups of {starts} starts, each keeping the seed nearest its training data at step {at} "
            f"(data MMD / floor then, on {' and '.join(map(str, samples))} samples): {pairs}.\n\n"
            "Mean ± s.e. (worst seed):\n\n" + markdown_table(head, body))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN")
    parser.add_argument("--starts", type=int, default=2, help="seeds a group (default 2)")
    parser.add_argument("--at", type=int, required=True, metavar="STEP",
                        help="the checkpoint at which each group keeps one seed")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: this card's)")
    args = parser.parse_args(argv)
    if args.starts < 1:
        parser.error(f"--starts must be >= 1, got {args.starts}")
    folder = args.results or RESULTS / card_slug()
    try:
        payloads = [load_run(name, folder) for name in args.runs]
        print(table(payloads, args.starts, args.at))
    except (OSError, ValueError) as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
