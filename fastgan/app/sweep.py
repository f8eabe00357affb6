"""``fastgan train``'s sweeps: a grid of settings on the command line, trained at once as replicas.

``--lr 1e-4 2e-4 4e-4 --real-label 0.9 1.0 --seeds 10`` is the product of the values given (3 x 2 settings),
each trained with 10 seeds: 60 replicas of one ``ReplicaTrainer`` (sharded over torchrun's ranks as any replica
run). Replica k is the single run with seed ``--seed + k``; the settings vary slowest in the order of the
flags below, the seeds fastest. After the run, ``sweep.md`` has a table per setting (mean +- standard error
over its seeds) and per replica, and ``sweep_<setting>.png`` each metric against each swept setting.
"""
from __future__ import annotations

import argparse
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Sweep", "sweep_of", "headline", "write_sweep"]

# the per-replica settings the command line sweeps, in the order their product is taken (config field: flag)
SWEPT = {"lr": "--lr", "lr_g": "--lr-g", "lr_d": "--lr-d", "real_label": "--real-label",
         "instance_noise": "--instance-noise", "r1_gamma": "--r1-gamma", "mmd_weight": "--mmd-weight",
         "augment_p": "--augment-p", "augment_target": "--augment-target"}


@dataclass(frozen=True)
class Sweep:
    """A run's grid: ``swept`` (setting -> its values, in flag order: only those given several values),
    ``seeds`` per setting, and each replica's values (``settings[k]``)."""
    swept: dict
    seeds: int
    settings: tuple

    @property
    def replicas(self) -> int:
        return len(self.settings)

    def values(self, name: str) -> tuple:
        """Each replica's value of the swept setting ``name`` (a per-replica sequence for ``TrainConfig``)."""
        return tuple(s[name] for s in self.settings)


def sweep_of(args: argparse.Namespace) -> Sweep | None:
    """The grid of ``args`` (``ValueError`` for a value given twice), or None for one GAN (one seed, nothing
    swept)."""
    swept = {}
    for name, flag in SWEPT.items():
        values = getattr(args, name, None)
        if isinstance(values, list) and len(values) > 1:
            if len(set(values)) != len(values):
                raise ValueError(f"{flag} has a value twice ({' '.join(map(str, values))}): give each once "
                                 "(--seeds sets how many runs each setting gets)")
            swept[name] = tuple(values)
    if not swept and args.seeds == 1:
        return None
    settings = tuple(dict(zip(swept, combo)) for combo in itertools.product(*swept.values())
                     for _ in range(args.seeds))
    return Sweep(swept, args.seeds, settings)


def sweep_from_config(config) -> Sweep:
    """The grid a replica run's ``TrainConfig`` was trained as (what ``fastgan evaluate`` reads back from a
    checkpoint): the per-replica settings that vary, in ``sweep_of``'s order (settings slowest); as many seeds a
    setting as its first run of equal replicas is long, or one each where the replicas do not form such a
    grid."""
    per = {name: config.per_replica(name) for name in SWEPT}
    names = [name for name in SWEPT if len(set(per[name])) > 1]
    settings = tuple({name: per[name][k] for name in names} for k in range(config.replicas))
    seeds = next((k for k in range(1, len(settings)) if settings[k] != settings[0]), len(settings))
    if len(settings) % seeds or any(settings[k] != settings[k - k % seeds] for k in range(len(settings))):
        seeds = 1
    return Sweep({name: tuple(dict.fromkeys(per[name])) for name in names}, seeds, settings)


def per_setting(sweep: Sweep, figures: list[dict]) -> list[dict]:
    """Each setting's values and its metrics' mean, standard error and count of finite values over its seeds
    (the JSON form of ``summary_table``)."""
    return [{"setting": setting, "seeds": sweep.seeds,
             "metrics": {key: dict(zip(("mean", "stderr", "n"), stats)) for key, stats in figures_of.items()}}
            for setting, figures_of in _per_setting(sweep, figures)]


def headline(data_name: str, quality: dict | None) -> dict:
    """The figures a sweep compares, from one replica's ``metrics.evaluate`` (empty where there are none)."""
    if not quality:
        return {}
    if data_name in ("ring", "grid"):
        return {k: quality[k] for k in ("modes", "high_quality", "kl", "spread", "swd_ratio")}
    generated, floor = quality["generated"], quality["real_floor"]
    figures = {"fd": generated["frechet_distance"],
               "fd_over_floor": generated["frechet_distance"] / floor["frechet_distance"],
               "precision@5": generated["precision@5"], "recall@5": generated["recall@5"],
               "class_kl": generated["class_kl"]}
    if "conditional" in quality:   # a conditional GAN: how often its samples read as the class asked for
        figures["class_accuracy"] = quality["conditional"]["accuracy"]
    return figures


def _mean_stderr(values: list[float]) -> tuple[float, float, int]:
    """Mean and standard error of the finite values, and how many there were (an empty mode's KL is inf)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, 0.0, 1
    variance = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return mean, math.sqrt(variance / len(finite)), len(finite)


def _figure(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _rows(sweep: Sweep, first_seed: int, figures: list[dict], diverged: dict) -> list[dict]:
    return [{"replica": k, "seed": first_seed + k, **sweep.settings[k], **figures[k],
             **({"diverged at step": diverged.get(k, "")} if diverged else {})} for k in range(sweep.replicas)]


def _per_setting(sweep: Sweep, figures: list[dict]) -> list[tuple[dict, dict]]:
    """Each setting (in grid order) with its metrics' (mean, stderr) over its seeds."""
    out = []
    for start in range(0, sweep.replicas, sweep.seeds):
        block = figures[start:start + sweep.seeds]
        out.append((sweep.settings[start], {key: _mean_stderr([f[key] for f in block]) for key in block[0]}))
    return out


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def summary_table(sweep: Sweep, figures: list[dict]) -> str:
    """Per setting: its values and each metric's mean +- standard error over its seeds (markdown; "(n of N)"
    where only n seeds' values were finite)."""
    def cell(mean, stderr, n):
        return f"{_figure(mean)} ± {_figure(stderr)}" + (f" ({n} of {sweep.seeds})" if n < sweep.seeds else "")

    metrics = list(figures[0])
    rows = [[_figure(s[n]) for n in sweep.swept] + [cell(*stats[key]) for key in metrics]
            for s, stats in _per_setting(sweep, figures)]
    return _markdown([*sweep.swept, *metrics], rows)


def write_sweep(out: Path, sweep: Sweep, first_seed: int, figures: list[dict], title: str,
                diverged: dict | None = None, command: str | None = None) -> list[Path]:
    """``sweep.md`` (per setting, then per replica) and a ``sweep_<setting>.png`` per swept setting; returns
    the files written. ``figures[k]``: replica k's metrics (``headline``, or its final losses; NaN where it
    has none); ``diverged``: ``{replica: step}`` of those whose losses became non-finite; ``command``: the
    command line that ran it."""
    rows = _rows(sweep, first_seed, figures, diverged or {})
    header = list(rows[0])
    parts = [f"# {title}\n", *([f"`{command}`\n"] if command else []),
             f"{len(sweep.settings) // sweep.seeds} settings x {sweep.seeds} seeds; replica k ran "
             f"seed {first_seed} + k. Per setting (mean ± standard error over its seeds):\n",
             summary_table(sweep, figures), "\nPer replica:\n",
             _markdown(header, [[_figure(r[h]) for h in header] for r in rows])]
    written = [out / "sweep.md"]
    written[0].write_text("\n".join(parts))
    for name in sweep.swept:
        written.append(_plot_against(out / f"sweep_{name}.png", sweep, name, rows, list(figures[0]), title))
    return written


def _plot_against(path: Path, sweep: Sweep, name: str, rows: list[dict], metrics: list[str], title: str) -> Path:
    """Each metric against ``name``: every replica a dot, each setting's mean +- s.e. a line, one line per
    combination of the other swept settings."""
    from .plots import pyplot, save_figure
    plt = pyplot()
    others = [n for n in sweep.swept if n != name]
    columns = min(len(metrics), 3)
    fig, axes = plt.subplots(math.ceil(len(metrics) / columns), columns, figsize=(4.2 * columns,
                             3.2 * math.ceil(len(metrics) / columns) + 0.4), squeeze=False)
    xs = sweep.swept[name]
    log_x = min(xs) > 0 and max(xs) / min(xs) >= 10 or name.startswith("lr")
    groups = sorted({tuple(r[o] for o in others) for r in rows})
    for ax, metric in zip(axes.flat, metrics):
        for i, group in enumerate(groups):
            color = f"C{i % 10}"
            mine = [r for r in rows if tuple(r[o] for o in others) == group]
            ax.scatter([r[name] for r in mine], [r[metric] for r in mine], s=9, color=color, alpha=0.35)
            stats = [_mean_stderr([r[metric] for r in mine if r[name] == x]) for x in xs]
            label = ", ".join(f"{o} {_figure(v)}" for o, v in zip(others, group)) or None
            ax.errorbar(xs, [m for m, _, _ in stats], yerr=[e for _, e, _ in stats], color=color, marker="o",
                        capsize=3, label=label)
        ax.set_xscale("log" if log_x else "linear")
        ax.set_xticks(xs, [_figure(x) for x in xs])
        ax.minorticks_off()
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_axis_off()
    if others:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{title}: against {name} (dots: each seed; line: mean ± s.e. of {sweep.seeds})", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
