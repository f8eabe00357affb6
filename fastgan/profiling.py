"""Profiling a trainer, fit for Nsight Systems / Nsight Compute and torch.profiler.

This is the upper floor (it drives a GANTrainer); the ranges the step marks are the lower one,
``fastgan.phases`` (re-exported here: ``phase``, ``enable_phases``).

``profile_trainer`` runs warm-up steps, then N steps between ``cudaProfilerStart``/``Stop`` (so
``nsys --capture-range=cudaProfilerApi`` records exactly them) under torch.profiler, writes the trace
(chrome/perfetto JSON) and a per-kernel table (launches, total and per-step time per kernel name).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import torch

from .phases import enable_phases, phase

__all__ = ["phase", "enable_phases", "profile_trainer", "nsight_commands", "count_launches", "LaunchCount",
           "stubbed_launches"]

# aten ops that launch no kernel on a GPU: views, metadata, allocation
_NO_KERNEL = frozenset({
    "view", "_unsafe_view", "as_strided", "slice", "select", "t", "transpose", "permute", "expand", "squeeze",
    "unsqueeze", "alias", "detach", "_reshape_alias", "unbind", "split", "split_with_sizes", "chunk",
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh", "is_same_size",
    "set_", "resize_", "_has_compatible_shallow_copy_type", "view_as", "expand_as", "reshape", "flatten",
    "unflatten", "narrow", "diagonal", "real", "conj", "_conj", "_neg_view", "record_stream",
    "_record_function_enter_new", "_record_function_exit",   # profiler ranges (fastgan.phases)
})


def _inside_triton_interpreter() -> bool:
    """Whether the current PyTorch op is Triton's interpreter handling a launch's arguments (on a GPU the
    launch is one kernel, which ``kernel_launches`` counts)."""
    frame = sys._getframe(2)
    while frame is not None:
        if "triton" in frame.f_code.co_filename and "interpreter" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


class LaunchCount:
    """Kernels one call would launch on a GPU, counted on any device: Triton launches (``kernel_launches``)
    plus every PyTorch operator that launches a kernel (views, metadata and allocation excluded)."""

    def __init__(self, triton: dict, torch_ops: dict):
        self.triton, self.torch_ops = triton, torch_ops

    @property
    def total(self) -> int:
        return sum(self.triton.values()) + sum(self.torch_ops.values())

    def __eq__(self, other) -> bool:
        return isinstance(other, LaunchCount) and (dict(self.triton), dict(self.torch_ops)) == (
            dict(other.triton), dict(other.torch_ops))

    __hash__ = None

    def __repr__(self) -> str:
        return f"LaunchCount(total={self.total}, triton={dict(self.triton)}, torch={dict(self.torch_ops)})"


def count_launches(fn, *args, **kwargs) -> tuple[object, LaunchCount]:
    """``(fn(*args, **kwargs), LaunchCount)``. PyTorch operators are seen at the dispatcher (a
    ``TorchDispatchMode``), where a CUDA run would launch their kernels; Triton's come from its launch counter."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from .ops import kernel_launches

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: dict[str, int] = defaultdict(int)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name not in _NO_KERNEL and not _inside_triton_interpreter():
                self.ops[name] += 1
            return func(*args, **(kwargs or {}))

    before = dict(kernel_launches)
    with Counter() as counter:
        out = fn(*args, **kwargs)
    triton_launches = {k: v - before.get(k, 0) for k, v in kernel_launches.items() if v != before.get(k, 0)}
    return out, LaunchCount(triton_launches, dict(counter.ops))


class _StubLaunch:
    """Stands for a Triton kernel: ``kernel[grid](*args, **meta)`` evaluates ``grid`` (a callable gets the
    launch's keywords, any block size it asks for 64) and launches nothing."""

    def __getitem__(self, grid):
        def launch(*args, **meta):
            if callable(grid):
                grid(defaultdict(lambda: 64, meta))
        return launch


@contextlib.contextmanager
def stubbed_launches():
    """Inside the block every Triton kernel of ``fastgan.ops``'s kernel modules launches nothing (its grid is
    still evaluated; yields how many were replaced): the host's side of each op alone, with outputs left as
    allocated. For timing that side (benchmarks/host_cost.py), and for counting a step's launches
    (``count_launches``, where ``kernel_launches`` counts them) at sizes the interpreter would take minutes
    over: the step never reads a tensor on the host, so what it launches does not depend on the values."""
    from triton.runtime.jit import KernelInterface   # (a JITFunction, the interpreter's, an Autotuner)

    from . import ops
    saved = []
    for info in pkgutil.iter_modules(ops.__path__):
        if info.name.endswith("_kernels"):
            module = importlib.import_module(f"fastgan.ops.{info.name}")
            saved += [(module, name, value) for name, value in vars(module).items()
                      if isinstance(value, KernelInterface)]
    try:
        for module, name, _ in saved:
            setattr(module, name, _StubLaunch())
        yield len(saved)
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def nsight_commands(argv: list[str],
                    kernel_regex: str = "_linear_act|_sigmoid_bce|_linear_bce_head|_adam|_mlp|_sample") -> dict:
    """The nsys and ncu command lines that profile the same run (``argv``: the fastgan command's args)."""
    rerun = shlex.join(["fastgan", *argv, "--no-trace"])
    return {
        "nsys": f"nsys profile --capture-range=cudaProfilerApi --capture-range-end=stop -t cuda,nvtx,osrt "
                f"-o fastgan-profile {rerun}",
        "ncu": f"ncu --clock-control none --profile-from-start off -k regex:'{kernel_regex}' "
               f"--launch-count 50 -o fastgan-kernels {rerun}",
    }


def _kernel_table(prof, steps: int, on_cuda: bool) -> list[dict]:
    """Per kernel name (CUDA) or per operator (CPU): count, total µs, launches per step."""
    rows: dict[str, dict] = defaultdict(lambda: {"count": 0, "total_us": 0.0})
    for event in prof.events():
        if on_cuda and event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        if not on_cuda and (event.device_type != torch.autograd.DeviceType.CPU or not event.name.startswith("aten::")
                            or (event.cpu_parent is not None and event.cpu_parent.name.startswith("aten::"))):
            continue  # on a CPU: outermost aten operators, the closest thing to kernel launches
        row = rows[event.name]
        row["count"] += 1
        row["total_us"] += (event.device_time if on_cuda else event.cpu_time_total)
    table = [{"name": name, "count": r["count"], "per_step": r["count"] / steps, "total_us": r["total_us"],
              "us_per_step": r["total_us"] / steps} for name, r in rows.items()]
    return sorted(table, key=lambda r: -r["total_us"])


def profile_trainer(trainer, steps: int = 20, warmup: int = 10, out: str | os.PathLike | None = None,
                    trace: bool = True) -> dict:
    """Warm up, then profile ``steps`` steps; returns (and writes under ``out``) the per-kernel summary.

    With a captured graph the counts are per training step (a replay of k steps counts k); Triton's own
    launch counter sees only launches from Python, so under a graph it counts the capture, not replays.
    """
    from .ops import kernel_launches
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got {steps} and {warmup}")
    on_cuda = trainer.device.type == "cuda"
    start = trainer.step_count
    while trainer.step_count - start < warmup:  # a graph replay runs several steps per call
        trainer.step()
    trainer.flush_losses()
    if on_cuda:
        torch.cuda.synchronize(trainer.device)
    enable_phases(True)
    triton_before = dict(kernel_launches)
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if on_cuda else [])
    profiler = torch.profiler.profile(activities=activities) if trace else contextlib.nullcontext()
    try:
        if on_cuda:
            torch.cuda.profiler.start()
        start = trainer.step_count
        with profiler as prof:
            while trainer.step_count - start < steps:
                with phase("step"):
                    trainer.step()
            if on_cuda:
                torch.cuda.synchronize(trainer.device)
        if on_cuda:
            torch.cuda.profiler.stop()
    finally:
        enable_phases(os.environ.get("FASTGAN_NVTX", "0") == "1")
    trainer.flush_losses()
    steps = trainer.step_count - start
    triton = {k: (v - triton_before.get(k, 0)) / steps for k, v in kernel_launches.items()
              if v - triton_before.get(k, 0)}
    summary = {"steps": steps, "warmup": warmup, "device": str(trainer.device), "kernels": trainer.kernels,
               "triton_launches_per_step": triton}
    if trace:
        table = _kernel_table(prof, steps, on_cuda)
        summary["table"] = table
        summary["launches_per_step"] = sum(r["per_step"] for r in table)
        summary["what_is_counted"] = "CUDA kernels" if on_cuda else "top-level aten operators (CPU)"
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if trace:
            prof.export_chrome_trace(str(out / "trace.json"))
            summary["trace"] = str(out / "trace.json")
            (out / "kernels.md").write_text(format_table(summary) + "\n")
        (out / "profile.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def format_table(summary: dict, limit: int = 40) -> str:
    lines = [f"{summary['what_is_counted']} over {summary['steps']} steps on {summary['device']} "
             f"(kernels={summary['kernels']}): {summary['launches_per_step']:.1f} launches per step", "",
             "| kernel | launches | per step | total µs | µs per step |", "|---|---|---|---|---|"]
    for row in summary["table"][:limit]:
        lines.append(f"| `{row['name'][:90]}` | {row['count']} | {row['per_step']:.1f} | {row['total_us']:.1f} | "
                     f"{row['us_per_step']:.2f} |")
    if len(summary["table"]) > limit:
        lines.append(f"| ({len(summary['table']) - limit} more) | | | | |")
    return "\n".join(lines)


def print_commands(argv: list[str]) -> None:
    commands = nsight_commands(argv)
    print("Nsight Systems (records exactly the profiled steps):\n  " + commands["nsys"], file=sys.stdout)
    print("Nsight Compute (per-kernel metrics, clocks left alone):\n  " + commands["ncu"], file=sys.stdout)
