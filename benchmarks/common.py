"""Shared pieces of the benchmark scripts: the card's name, versions, ceilings, timing, result files."""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import re
import shutil
import statistics
import sys
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


# Results, per card folder (``results/<card>/``): ``runs.jsonl``, one record per run, in the order the runs started,
# append-only; ``<benchmark>.json``/``.md``/``-<kind>.png``, the latest run of each benchmark, drawn from it;
# ``runs.md``, every run's table, drawn from it; ``runs/``, each run's pictures (and logs), named by its run id.
RUNS_FILE, RUNS_TABLES, RUN_FILES = "runs.jsonl", "runs.md", "runs"
VERSIONS = ("python", "torch", "triton", "cuda", "driver")

# (folder, benchmark) -> this process's current run of it: a run replaces its own record as it goes (after every
# group of rows), never another run's.
_run_ids: dict[tuple[Path, str], str] = {}


def new_run() -> None:
    """A benchmark's ``main`` starts a run: its results get a record of their own, not that of an earlier run in
    the same process (which would replace that run's record)."""
    _run_ids.clear()


def write_results(name: str, payload: dict, table: str, out_dir: Path | None = None, quick: bool = False,
                  draw=None, label: str | None = None) -> tuple[Path, ...]:
    """Record a run: its line in ``results/<card>/runs.jsonl`` and the latest files of its benchmark,
    ``<name>[-quick].json`` (the record) and ``.md`` (the table); returns their paths, then the pictures'.

    A run's first write appends its record, with an id new to the file (``<date>-<benchmark>[-<label>][-N]``);
    its later writes replace that record in place. No other line is ever changed: committed results are never
    overwritten. Quick runs are the benchmark ``<name>-quick``, so they never replace the latest full result.
    ``draw(folder, stem)`` draws the run's pictures as ``folder / f"{stem}-<kind>.png"`` and returns their
    paths: they are kept as ``runs/<run id>-<kind>.png`` and copied to ``<benchmark>-<kind>.png``.
    """
    folder = (out_dir or RESULTS) / card_slug()
    benchmark = name + ("-quick" if quick else "")
    env = payload.get("environment") or environment()
    with _locked(folder):
        lines = _lines(folder)
        records = [json.loads(line) for line in lines]
        key = (folder.resolve(), benchmark)
        if key not in _run_ids:
            day = (env.get("date") or _dt.date.today().isoformat())[:10]   # (the day the record says)
            base = "-".join([day, benchmark] + ([label] if label else []))
            taken, run, n = {r["run"] for r in records}, base, 1
            while run in taken:
                n += 1
                run = f"{base}-{n}"
            _run_ids[key] = run
        run = _run_ids[key]
        before = next((r for r in records if r["run"] == run), {})
        if draw is not None:
            (folder / RUN_FILES).mkdir(exist_ok=True)
            files = [Path(p).relative_to(folder).as_posix() for p in draw(folder / RUN_FILES, run)]
        else:   # (pictures drawn by an earlier write of the run stay its own)
            files = before.get("files", [])
        record = {"run": run, "benchmark": benchmark, "date": env.get("date"), "card": env.get("card") or card_name(),
                  "quick": quick, "versions": {k: env[k] for k in VERSIONS if k in env}, "files": files,
                  "table": table, "payload": payload}
        records = _save_record(folder, lines, records, record)
        written = write_latest(folder, benchmark, records)
        write_runs_table(folder, records)
    return written


def read_runs(folder: Path | None = None, benchmark: str | None = None) -> list[dict]:
    """The records of ``folder/runs.jsonl`` (default: this machine's card), in the order the runs started;
    only ``benchmark``'s when given. Each: ``run`` (its id), ``benchmark``, ``date``, ``card``, ``quick``,
    ``versions``, ``files`` (under ``runs/``), ``table`` (markdown or None), ``payload`` (what it measured)."""
    records = [json.loads(line) for line in _lines(folder or RESULTS / card_slug())]
    return [r for r in records if benchmark is None or r["benchmark"] == benchmark]


def write_latest(folder: Path, benchmark: str, records: list[dict] | None = None) -> tuple[Path, ...]:
    """``<benchmark>.json`` (the record), ``.md`` (its table) and ``-<kind>.png`` (copies of its pictures) from the
    benchmark's last run in ``runs.jsonl``; the pictures of the run they replace go (they stay under ``runs/``)."""
    record = [r for r in (read_runs(folder) if records is None else records) if r["benchmark"] == benchmark][-1]
    json_path, md_path = folder / f"{benchmark}.json", folder / f"{benchmark}.md"
    pictures = {folder / f"{benchmark}{Path(f).name[len(record['run']):]}": folder / f
                for f in record["files"] if f.endswith(".png")}
    if json_path.exists():
        old = json.loads(json_path.read_text(encoding="utf-8"))
        for f in old.get("files", []):
            stale = folder / f"{benchmark}{Path(f).name[len(old['run']):]}"
            if f.endswith(".png") and stale not in pictures:
                stale.unlink(missing_ok=True)
    _write_atomically(json_path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    if record["table"] is not None:
        _write_atomically(md_path, record["table"] + "\n")
    else:
        md_path.unlink(missing_ok=True)
    for latest, kept in pictures.items():
        shutil.copyfile(kept, latest)
    return (json_path, md_path, *pictures)


def write_runs_table(folder: Path, records: list[dict] | None = None) -> Path:
    """``runs.md``: an index of ``runs.jsonl`` and every run's table, each under a heading named by its run id
    (a link to ``runs.md#<run id>`` stays valid: the file only grows)."""
    return _write_atomically(folder / RUNS_TABLES, runs_table(folder, records))


def runs_table(folder: Path, records: list[dict] | None = None) -> str:
    """What ``write_runs_table`` writes, drawn from ``records`` (default: ``folder``'s runs.jsonl)."""
    records = read_runs(folder) if records is None else records
    lines = [f"# Every run: {folder.name}", "",
             f"Drawn from [`{RUNS_FILE}`]({RUNS_FILE}) by `benchmarks/common.py` (run N is its line N); the "
             "tables as each run wrote them, its pictures under `runs/`. Do not edit: the next run redraws it.", "",
             "| # | run | benchmark | date | versions |", "|---|---|---|---|---|"]
    lines += [f"| {i} | [{r['run']}](#{r['run']}) | {r['benchmark']} | "
              f"{(r['date'] or '')[:16]} | {_versions(r)} |" for i, r in enumerate(records, 1)]
    for i, r in enumerate(records, 1):
        lines += ["", f"## {r['run']}", "",
                  f"Run {i}: {r['benchmark']}, {r['date']}, {r['card']}; {_versions(r)}."
                  + (" Files: " + ", ".join(f"[{Path(f).name}]({f})" for f in r["files"]) + "." if r["files"] else "")]
        if r.get("note"):   # (a record folded in from before runs.jsonl: the lab note that tells its story)
            note = os.path.relpath(RESULTS.parents[1] / r["note"], folder)
            lines[-1] += f" Described in [{Path(note).name}]({note})."
        lines += ["", _demoted(r["table"]) if r["table"] is not None else
                  f"No table: the data is line {i} of `{RUNS_FILE}`."]
    return "\n".join(lines) + "\n"


def merge_results(source: Path, into: Path | None = None) -> int:
    """Add the runs of another results folder (a device_check archive's ``results/``) to ``into`` (default
    ``benchmarks/results``), card by card: records appended (an id already taken by another run gets ``-N``), their
    files copied, the latest files and ``runs.md`` redrawn. A run already there is left as it is. Returns how many
    runs were added."""
    added = 0
    for runs_file in sorted(Path(source).glob(f"*/{RUNS_FILE}")):
        folder = (into or RESULTS) / runs_file.parent.name
        with _locked(folder):
            lines = _lines(folder)
            records = [json.loads(line) for line in lines]
            taken = {r["run"]: r for r in records}
            here = [_measured(r) for r in records]
            touched = []
            for record in read_runs(runs_file.parent):
                if _measured(record) in here:
                    continue
                run, n = record["run"], 1
                while run in taken:
                    n += 1
                    run = f"{record['run']}-{n}"
                (folder / RUN_FILES).mkdir(exist_ok=True)
                files = []
                for f in record["files"]:
                    name = run + Path(f).name[len(record["run"]):]
                    shutil.copyfile(runs_file.parent / f, folder / RUN_FILES / name)
                    files.append(f"{RUN_FILES}/{name}")
                record = {**record, "run": run, "files": files}
                records = _save_record(folder, lines, records, record)
                taken[run] = record
                touched.append(record["benchmark"])
                added += 1
            for benchmark in dict.fromkeys(touched):
                write_latest(folder, benchmark, records)
            if touched:
                write_runs_table(folder, records)
    return added


def _measured(record: dict) -> dict:
    """A record without its id and file names: the same run, wherever it was recorded."""
    return {k: v for k, v in record.items() if k not in ("run", "files")}


def _lines(folder: Path) -> list[str]:
    path = folder / RUNS_FILE
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line] if path.exists() else []


def _save_record(folder: Path, lines: list[str], records: list[dict], record: dict) -> list[dict]:
    """The run's line replaced where it is, or appended; every other line kept byte for byte. ``lines`` and
    ``records``: the file as read under the same lock, updated in place; returns the records."""
    line = json.dumps(record, ensure_ascii=False)
    mine = [i for i, old in enumerate(records) if old["run"] == record["run"]]
    if mine:
        lines[mine[0]], records[mine[0]] = line, record
    else:
        lines.append(line)
        records.append(record)
    _write_atomically(folder / RUNS_FILE, "\n".join(lines) + "\n")
    return records


def _versions(record: dict) -> str:
    v = record.get("versions")
    if not v:
        return "versions not recorded"
    return ", ".join(f"{'CUDA' if k == 'cuda' else k} {v[k]}" for k in VERSIONS if v.get(k))


def _demoted(table: str) -> str:
    """A run's table inside ``runs.md``: its headings two levels down, under the run's own."""
    out, fenced = [], False
    for line in table.splitlines():
        fenced ^= line.startswith("```")
        out.append("##" + line if not fenced and re.match(r"#{1,4} ", line) else line)
    return "\n".join(out)


@contextlib.contextmanager
def _locked(folder: Path):
    """One writer at a time per card folder (two benchmarks of one machine may run side by side)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:   # (Windows: no lock)
        yield
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)   # (releases the lock)


def _write_atomically(path: Path, text: str) -> Path:
    """A run killed while writing leaves the previous version whole, never half a file."""
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)
    return path


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


if __name__ == "__main__":
    # python benchmarks/common.py merge SOURCE: add a device_check archive's results (SOURCE/<card>/runs.jsonl)
    if len(sys.argv) != 3 or sys.argv[1] != "merge":
        sys.exit("usage: python benchmarks/common.py merge RESULTS_FOLDER   (e.g. device_check's results/)")
    print(f"{merge_results(Path(sys.argv[2]))} runs added to {RESULTS}")
