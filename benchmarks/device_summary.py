"""The 30-second read of a device_check run: tests, headline steps/s and speedups, the fused linear
against the card's matmul ceiling, and how long each step took against its limit.

    python benchmarks/device_summary.py WORK_DIR      # what device_check.sh writes as summary.txt
    python benchmarks/device_summary.py --environment # versions and card (device_check's first step)
"""
from __future__ import annotations

import json
import statistics
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RUNS_FILE, read_runs  # noqa: E402

HEADLINE_BATCHES = (128, 4096)


def environment() -> str:
    import numpy
    import torch
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) | triton {triton_version} | "
            f"numpy {numpy.__version__} | {card}")


def _read(path: Path) -> dict | None:
    """A result file's JSON, or None where it is absent, empty or half-written (its step was killed at its
    time limit)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _runs(folder: Path, benchmarks: tuple[str, ...]) -> list[dict]:
    """The run's records of these benchmarks (or whose name starts with one ending in ``-``), in the order the
    runs started: from each card folder's ``runs.jsonl`` under ``folder/results`` (the scripts' ``--out``)."""
    return [r for path in sorted(folder.glob(f"results/*/{RUNS_FILE}")) for r in read_runs(path.parent)
            if r["benchmark"] in benchmarks or r["benchmark"].startswith(tuple(b for b in benchmarks if b[-1] == "-"))]


def _latest(folder: Path, benchmarks: tuple[str, ...]) -> dict | None:
    runs = _runs(folder, benchmarks)
    return runs[-1]["payload"] if runs else None


def tests(folder: Path) -> list[str]:
    xml = folder / "gpu_tests.xml"
    if not xml.exists():
        return ["tests: no report (the step did not finish: see gpu_tests.log)"]
    root = ElementTree.parse(xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    count = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    passed = count["tests"] - count["failures"] - count["errors"] - count["skipped"]
    lines = [f"tests: {passed} passed, {count['failures']} failed, {count['errors']} errors, "
             f"{count['skipped']} skipped"]
    failed = []
    for case in root.iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            message = (problem.get("message") or "").replace("\n", " ")[:160]
            failed.append(f"  FAILED {case.get('classname')}::{case.get('name')}: {message}")
    shown = 25
    return lines + failed[:shown] + ([f"  ... and {len(failed) - shown} more (gpu_tests.log)"] if len(failed) > shown else [])


def train_step(folder: Path) -> list[str]:
    """Every train_step result of the run (device_check runs batch 128 and 4096 as steps of their own)."""
    runs = _runs(folder, ("train_step", "train_step-quick"))
    if not runs:
        return ["train_step: no results"]
    return [line for run in runs for line in _train_step_file(run["payload"])]


def _train_step_file(payload: dict) -> list[str]:
    lines = [f"train_step ({payload['precision']}; steps/s, x eager, kernels and host launches per step):"]
    for row in payload["rows"]:
        if row["batch"] not in HEADLINE_BATCHES and len(payload["rows"]) > len(HEADLINE_BATCHES):
            continue
        lines.append(f"  width {row['width']} batch {row['batch']}:")
        for name, r in row["backends"].items():
            if "ms_per_step" not in r:
                lines.append(f"    {name:44s} {'skipped: ' + r['skipped'] if 'skipped' in r else 'FAILED: ' + r['failed']}"[:200])
                continue
            host = r.get("host_launches_per_step")
            launches = "" if r.get("kernels_per_step") is None else (
                f"  {r['kernels_per_step']:g} kernels / {'-' if host is None else format(host, 'g')} launches")
            lines.append(f"    {r['label']:44s} {r['steps_per_s']:9.0f} steps/s {r.get('speedup_vs_eager', 0):6.2f}x"
                         + launches)
        best = max(((r["steps_per_s"], n) for n, r in row["backends"].items() if "steps_per_s" in r), default=None)
        if best:
            lines.append(f"    best: {best[1]}")
    if payload.get("not_run"):
        lines.append(f"  not run (time limit): {', '.join(payload['not_run'])}")
    return lines


def kernels(folder: Path) -> list[str]:
    payload = _latest(folder, ("kernels", "kernels-quick"))
    if payload is None:
        return ["kernels: no results"]
    ceilings = payload["ceilings"]
    lines = ["kernels: ceilings measured now: " + ", ".join(f"{k} {v:.0f}" for k, v in ceilings.items())]
    for r in payload["rows"]:
        if r["op"] != "fused_linear" or r["batch"] < 16384:
            continue
        ours = r["timings"].get("fastgan", {}).get("median_ms")
        torch_ms = r["timings"].get("torch", {}).get("median_ms")
        if not ours:
            lines.append(f"  {r['mode']} {r['dtype']} {r['in']}->{r['out']} batch {r['batch']}: fastgan failed")
            continue
        key = "bf16_matmul_TFLOPs" if r["dtype"] == "bfloat16" else (
            "fp32_matmul_TFLOPs" if r["precision"] == "ieee" else "tf32_matmul_TFLOPs")
        tflops = r["flops"] / ours / 1e9
        lines.append(f"  fused_linear {r['mode']:7s} {r['dtype']:8s} {r['in']}->{r['out']} batch {r['batch']}: "
                     f"{tflops:.1f} TFLOP/s = {100 * tflops / ceilings[key]:.0f}% of {key}"
                     + (f", {torch_ms / ours:.2f}x torch" if torch_ms else ""))
    if payload.get("not_run"):
        lines.append("  stopped by its time limit")
    return lines


def replicas(folder: Path) -> list[str]:
    lines = []
    for names, what in ((("replicas", "replicas-quick"), "mixture GANs"), (("replicas-classic",), "classic MLP GANs")):
        payload = _latest(folder, names)
        if payload is None:
            lines.append(f"replicas ({what}): no results")
            continue
        lines.append(f"replicas: aggregate GAN-steps/s against K ({what}, batch {payload.get('batch')} per GAN)")
        for row in payload.get("sweep", []):
            cells = [f"{name} {t['gan_steps_per_s']:,.0f}" if "gan_steps_per_s" in t else f"{name} -"
                     for name, t in row["backends"].items() if "skipped" not in t]
            lines.append(f"  K={row['k']:4d}  " + "  ".join(cells))
    return lines


def host_cost(folder: Path) -> list[str]:
    payload = _latest(folder, ("host_cost",))
    if payload is None:
        return ["host_cost: no results"]
    lines = ["host_cost (µs per call on the host; stubbed: fastgan's Python alone, launched: with Triton's launcher):"]
    for name, row in payload["results"].items():
        lines.append(f"  {name:52s} {row['median_us']:8.1f} us  {row['x_pytorch']:5.2f}x PyTorch's")
    return lines


def micro(folder: Path) -> list[str]:
    benchmarks = (_read(folder / "results" / "micro.json") or {}).get("benchmarks")
    if benchmarks is None:   # absent, or empty: the step was stopped at its time limit
        return ["micro: no results (pytest-benchmark writes its JSON only when the run ends)"]
    lines = [f"micro: {len(benchmarks)} benchmarks in results/micro.json; the train steps:"]
    for b in benchmarks:
        if b["group"].startswith("train step"):
            steps = b["extra_info"].get("inner_calls", 1) * b["extra_info"].get("steps_per_call", 1)
            lines.append(f"  {b['name']:56s} {b['stats']['median'] * 1e6 / steps:10.1f} us per training step")
    return lines


def profiles(folder: Path, top: int = 8) -> list[str]:
    """Where a step's device time goes: each ``results/profile-*/profile.json`` (``fastgan profile``), its
    heaviest kernels per step."""
    lines = []
    for path in sorted((folder / "results").glob("profile-*/profile.json")):
        data = _read(path) or {}
        rows = data.get("table")
        if rows is None:
            lines.append(f"profile {path.parent.name}: no results")
            continue
        total = sum(r["us_per_step"] for r in rows)
        lines.append(f"profile {path.parent.name} ({data.get('device')}, kernels={data.get('kernels')}): "
                     f"{total:.1f} us of kernel time per step, heaviest:")
        for r in sorted(rows, key=lambda r: -r["us_per_step"])[:top]:
            lines.append(f"  {r['name'][:60]:60s} {r['per_step']:6.1f} x {r['us_per_step']:9.1f} us/step")
    return lines


def _chain(setting: dict) -> str:
    """A Metropolis-Hastings row's (or evaluate report's) chain length, with its beta and latent step when set."""
    chain = setting.get("chain", setting.get("metropolis_chain"))
    sharpen, step = setting.get("sharpen", 1.0), setting.get("step", setting.get("metropolis_step", 1.0))
    return f"{chain}" + (f" beta {sharpen:g}" if sharpen != 1 else "") + (f" step {step:g}" if step != 1 else "")


def quality_curves(folder: Path) -> list[str]:
    """``quality_curve.py`` results (``device_check.sh --quality``): modes / HQ / KL at each checkpoint."""
    lines = []
    for run in _runs(folder, ("quality_curve-",)):
        data = run["payload"]
        lr = data.get("protocol", {}).get("lr")
        lines.append(f"quality {data['data']} {data['variant']} ({data['seeds']} seeds, mean"
                     + (f", lr {lr:g}" if lr else "") + "):")
        for row in data["curve"]:
            m, h, k = (row["summary"][key][0] for key in ("modes", "high_quality", "kl"))
            line = f"  {row['steps']:7d} steps {row['seconds']:6.0f} s: modes {m:5.2f}  HQ {100 * h:5.1f}%  KL {k:.3f}"
            for key in ("rejection", "calibrated", "metropolis", "jacobian"):   # apart: the same checkpoint, picked
                if key in row:
                    r = row[key]["summary"]
                    steps_d = f" (D +{row[key]['calibrate']} steps)" if row[key].get("calibrate") else ""
                    setting = (_chain(row[key]) if key == "metropolis" else f"{row[key]['factor']:g}"
                               if key == "jacobian" else f"{row[key]['quantile']:g}")
                    line += (f"  | {key}{steps_d} {setting}: HQ {100 * r['high_quality'][0]:5.1f}%  "
                             f"KL {r['kl'][0]:.3f}")
            lines.append(line)
        first = [f for f in data.get("first_reached") or [] if f]
        if data.get("check_every"):
            lines.append(f"  every mode with >= 90% HQ: {len(first)}/{data['seeds']} seeds"
                         + (f", median step {statistics.median(f['steps'] for f in first):.0f}" if first else ""))
    evaluated = sorted(folder.glob("results/quality-*-calibrated.json")) + sorted(
        folder.glob("results/quality-*-latent-mh.json"))
    for path in evaluated:   # fastgan evaluate on the last checkpoint
        report = _read(path)
        if report is None or "mean" not in report.get("metrics", {}):
            lines.append(f"quality: {path.name} unreadable")
            continue
        sampling, mean = report["sampling"], report["metrics"]["mean"]
        how = (f"rejection {sampling['rejection_quantile']:g}" if "rejection_quantile" in sampling
               else f"Metropolis-Hastings chains of {_chain(sampling)}")
        judge = f"D calibrated {sampling['calibrate']} steps" if sampling["calibrate"] else "the trained D"
        lines.append(f"quality {report['data']}, step {report['step']}, {how} "
                     f"with {judge} (mean of {len(report['metrics']['replicas'])}"
                     f" replicas, noise seed {report['seed']}"
                     + (f", calibration Adam {sampling['calibrate_lr']:g} batch {sampling['calibrate_batch']}"
                        if "calibrate_lr" in sampling else "") + f"): modes {mean['modes']:5.2f}  "
                     f"HQ {100 * mean['high_quality']:5.1f}%  KL {mean['kl']:.3f}")
    return lines


def steps(folder: Path) -> list[str]:
    table = folder / "steps.tsv"
    if not table.exists():
        return []
    lines = ["steps (exit, seconds / limit; exit 124 or 137 = killed at the limit):"]
    for line in table.read_text().splitlines():
        name, rc, seconds, limit = line.split("\t")
        lines.append(f"  {name:12s} exit {rc:>3s}  {seconds:>4s} s / {limit} s")
    return lines


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--environment"]:
        print(environment())
        return 0
    if len(args) != 1:
        print(__doc__)
        return 2
    folder = Path(args[0])
    environment_file = folder / "environment.txt"
    head = [line for line in environment_file.read_text().splitlines() if line.startswith("torch ")] \
        if environment_file.exists() else []
    print("\n".join(["device_check: " + (head[-1] if head else "environment unknown")]
                    + tests(folder) + train_step(folder) + kernels(folder) + host_cost(folder) + profiles(folder)
                    + replicas(folder)
                    + micro(folder) + quality_curves(folder)
                    + steps(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
