"""Shared pieces of the benchmark scripts: the card's name, versions, ceilings, timing, result files."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def card_name() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    return torch.cuda.get_device_name()


def card_slug() -> str:
    return re.sub(r"[^a-z0-9]+", "-", card_name().lower()).strip("-")


def environment() -> dict:
    info = {"card": card_name(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": torch.__version__, "host": platform.node(),
            # what CPU results depend on: a CPU of another kind (another BLAS code path) rounds differently, and a
            # GAN's training amplifies that, so runs repeat to the last digit only on the same kind of CPU
            "cpu": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads()}
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["driver"] = _driver_version()
        props = torch.cuda.get_device_properties(0)
        info["sm_count"] = props.multi_processor_count
        info["memory_gib"] = round(props.total_memory / 2**30, 1)
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _driver_version() -> str | None:
    try:
        import subprocess
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def cuda_time_ms(fn, warmup: int = 10, repeats: int = 20, inner: int = 10) -> dict:
    """Median and spread of ``repeats`` windows of ``inner`` calls each, timed with CUDA events."""
    result = interleaved_ms({"fn": fn}, warmup=warmup, repeats=repeats, inner=inner)["fn"]
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def run_steps(trainer, steps: int) -> int:
    """Call ``step()`` until at least ``steps`` training steps ran (a graph replay runs several); returns how many."""
    start = trainer.step_count
    while trainer.step_count - start < steps:
        trainer.step()
    return trainer.step_count - start


def seconds_per_step(trainer, steps: int) -> float:
    """Seconds per training step over about ``steps`` steps: CUDA events on a GPU, the wall clock on a CPU."""
    if trainer.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        ran = run_steps(trainer, steps)
        end.record()
        end.synchronize()
        trainer.flush_losses()
        return start.elapsed_time(end) / 1e3 / ran
    start = time.perf_counter()
    ran = run_steps(trainer, steps)
    trainer.flush_losses()
    return (time.perf_counter() - start) / ran


def measure_ceilings() -> dict:
    """The card's ceilings measured now: device-to-device copy bandwidth and large-matmul throughput."""
    n = 1 << 28  # 1 GiB of fp32
    src = torch.empty(n, device="cuda")
    dst = torch.empty_like(src)
    copy = cuda_time_ms(lambda: dst.copy_(src), warmup=3, repeats=10, inner=3)
    ceilings = {"copy_GBps": 2 * src.numel() * 4 / copy["median_ms"] / 1e6}
    del src, dst
    size = 8192
    for name, dtype, tf32 in (("bf16_matmul_TFLOPs", torch.bfloat16, False),
                              ("tf32_matmul_TFLOPs", torch.float32, True),
                              ("fp32_matmul_TFLOPs", torch.float32, False)):
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(size, size, device="cuda", dtype=dtype)
        b = torch.randn(size, size, device="cuda", dtype=dtype)
        t = cuda_time_ms(lambda: a @ b, warmup=3, repeats=5, inner=3)
        torch.backends.cuda.matmul.allow_tf32 = previous
        ceilings[name] = 2 * size**3 / t["median_ms"] / 1e9
        del a, b
    torch.cuda.empty_cache()
    return ceilings


# (folder, name) -> stem this run writes to: a run rewrites its own files as it goes (after every group of
# rows), never a file it did not write.
_stems: dict[tuple[Path, str], str] = {}


def new_run() -> None:
    """A benchmark's ``main`` starts a run: its results get stems of their own, not those of an earlier run in
    the same process (which would overwrite that run's files)."""
    _stems.clear()


def write_results(name: str, payload: dict, table: str, out_dir: Path | None = None,
                  quick: bool = False) -> tuple[Path, Path]:
    """``results/<card>/<date>-<name>[-quick][-N].json`` and ``.md``; returns both paths.

    Committed results are never overwritten: the first write of a run picks a stem whose files do not
    exist yet (``-2``, ``-3``, ... after the date), and later writes of the same run reuse it. Quick runs
    carry ``-quick`` in the name, so they never pass for a full run.
    """
    folder = (out_dir or RESULTS) / card_slug()
    folder.mkdir(parents=True, exist_ok=True)
    key = (folder.resolve(), name + ("-quick" if quick else ""))
    if key not in _stems:
        base = f"{_dt.date.today().isoformat()}-{key[1]}"
        stem, n = base, 1
        while any(folder.glob(f"{stem}.*")) or any(folder.glob(f"{stem}-*.png")):
            n += 1
            stem = f"{base}-{n}"
        _stems[key] = stem
    stem = _stems[key]
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    _write_atomically(json_path, json.dumps(payload, indent=2) + "\n")
    _write_atomically(md_path, table + "\n")
    return json_path, md_path


def _write_atomically(path: Path, text: str) -> None:
    """A run killed while writing leaves the previous version whole, never half a file."""
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    os.replace(part, path)


class TimeBudget:
    """Stops a benchmark from *starting* a row it cannot finish: a row starts only while the time used so
    far plus the longest row yet fits in ``seconds`` (None: no limit). What was not run is listed."""

    def __init__(self, seconds: float | None):
        self.seconds, self.start, self.longest = seconds, time.perf_counter(), 0.0
        self.skipped: list[str] = []

    def allows(self, what: str) -> bool:
        used = time.perf_counter() - self.start
        if self.seconds is not None and used + self.longest > self.seconds:
            self.skipped.append(what)
            return False
        self._row_start = time.perf_counter()
        return True

    def done(self) -> None:
        self.longest = max(self.longest, time.perf_counter() - self._row_start)


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def interleaved_ms(contenders: dict, warmup: int = 10, repeats: int = 15, inner: int = 20) -> dict:
    """Time each contender in turn, window after window, so drift (clocks, heat) hits them alike.

    Returns ``{name: {"median_ms", "min_ms", "max_ms", "p20_ms", "p80_ms"}}`` per call, from CUDA events.
    A contender that raises is reported as ``{"error": "..."}`` and left out of later windows.
    """
    windows: dict[str, list[float]] = {name: [] for name in contenders}
    errors: dict[str, str] = {}
    for name, fn in contenders.items():
        try:
            for _ in range(warmup):
                fn()
        except Exception as e:  # noqa: BLE001 - a failing contender is a result, not a crash
            errors[name] = f"{type(e).__name__}: {e}"[:300]
    torch.cuda.synchronize()
    for _ in range(repeats):
        for name, fn in contenders.items():
            if name in errors:
                continue
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            windows[name].append(start.elapsed_time(end) / inner)
    result = {}
    for name, w in windows.items():
        if name in errors:
            result[name] = {"error": errors[name]}
            continue
        w.sort()
        result[name] = {"median_ms": statistics.median(w), "min_ms": w[0], "max_ms": w[-1],
                        "p20_ms": w[len(w) // 5], "p80_ms": w[(4 * len(w)) // 5]}
    return result
