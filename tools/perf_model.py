#!/usr/bin/env python3
"""A performance model of one training step's kernel launches, computed on a CPU (the compile lane).

For the classic MLP GAN at a batch size it records the Triton launches of one training step (after a warm-up
step) of two backends: ``kernels="triton-mlp"`` (the fused step) and ``kernels="triton"`` with FlatAdam (the
per-layer kernels); nothing runs, as in ``tools/compile_check.py``, whose recording and compile-only driver it
uses. For each launch and each autotune config Triton would try (after the kernel's own pruning, if any):

- CTAs: the launch's grid evaluated for the config; active CTAs (those that do work) and the serial loop
  iterations one CTA walks, from the kernel's entry in ``WORK``;
- from the config's compile for sm_90: the ``cp.async`` sizes, the deepest ``cp.async.wait_group`` (0: no
  prefetch), the widest ``ld.global``, whether tl.dot became wgmma or mma.sync, registers, shared memory;
- a predicted time, ``c_node + c_iter * serial iterations * waves``, waves = active CTAs over the CTAs the
  132 SMs hold at once (per SM: registers, shared memory, 64 warps, 32 blocks).

The two constants are fitted, exactly, to the H200 step times at batch 128 of ``triton-mlp+graph(k=8)`` and
``triton+graph(k=8)+flat_adam``, read from the newest train_step run in benchmarks/results/<card>/runs.jsonl
(``--card``, default nvidia-h200), and to the launches of the code that run measured: ``--refit`` records this
code's (kernels, serial work) per backend in perf_model_fit.json beside it. After a GPU run's results are
merged, ``--refit --card <card>`` on the commit it measured refits; later code is predicted with those
constants, so old and new kernels compare side by side. A step's prediction is the sum over its Triton launches (each
at its best-predicted config) plus ``c_node`` for each PyTorch kernel of the step (counted by
``fastgan.profiling.count_launches``). The gate (``--gate``): every launch of the fused step at batch 128 that
does matmuls must give at least half the SMs active CTAs under every config it may be tuned to.

    python tools/perf_model.py [--batch 128] [--gate] [--no-compile] [--json out.json] [--refit] [--card CARD]
                               [--replicas K ...]   # the step of K GANs at once, and its bandwidth floor

``--no-compile`` skips the compiles (no PTX columns; occupancy from warps alone). Exit status: 0, 1 when the
gate fails, 2 when the tool cannot run.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compile_check  # noqa: E402 - tools/ is not a package

REPO = compile_check.REPO
RESULTS = REPO / "benchmarks" / "results"
CARD = "nvidia-h200"                                # the card whose step times fit the constants (--card)
FIT = RESULTS / CARD / "perf_model_fit.json"       # the measured code's (nodes, work) per backend (--refit)
BACKENDS = {"fused": dict(kernels="triton-mlp"), "per-layer": dict(kernels="triton", fused_optimizer="flat")}
MEASURED = {"fused": "triton-mlp+graph(k=8)", "per-layer": "triton+graph(k=8)+flat_adam"}   # their rows in a run
# K replicas (--replicas): the fused step, and the per-layer step as the CUDA fast path runs replicas
REPLICA_BACKENDS = {"fused": BACKENDS["fused"], "per-layer": dict(BACKENDS["per-layer"], sampler="philox")}
FIT_BATCH = 128
SMS = 132                       # H100 SXM and H200
HBM_BYTES_PER_S = {"nvidia-h200": 4.8e12, "nvidia-h100": 3.35e12}   # peak memory bandwidth (the cards' data sheets)
TF32_FLOPS_PER_S = 4.95e14   # H100 SXM and H200: dense tf32 tensor-core peak (989 TFLOP/s with sparsity, halved)
REGISTERS_PER_SM = 65_536
SHARED_MEMORY_PER_SM = 233_472  # 228 KB
WARPS_PER_SM, BLOCKS_PER_SM = 64, 32
MATMUL = {"_mlp_rows_kernel", "_mlp_weight_grad_kernel", "_linear_act_fwd_kernel", "_linear_act_bwd_input_kernel",
          "_linear_act_bwd_weight_kernel"}
CP_ASYNC = re.compile(r"cp\.async\.c[ag]\.shared(?:::cta)?\.global[\w.:]*\s+\[[^\]]*\],\s*\[[^\]]*\],\s*"
                      r"(0x[0-9a-fA-F]+|\d+)")   # the copy size in bytes
WAIT_GROUP = re.compile(r"cp\.async\.wait_group\s+(0x[0-9a-fA-F]+|\d+)")
LD_GLOBAL = re.compile(r"\bld\.global[\w.:]*?(?:\.v(\d))?\.[bfsu](\d+)\s")   # vector count, element bits


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _layers(meta) -> list[tuple[int, int]]:
    """(d_in, d_out) per layer: the rows kernel's constexpr ``DIMS``, or the whole-MLP kernels' table
    (``MLPSpec.table``: d_in, d_out, offset, column; the rows kernel's too at e33d711)."""
    if "DIMS" in meta:
        return list(zip(meta["DIMS"][:-1], meta["DIMS"][1:]))
    return [(d_in, d_out) for d_in, d_out, _, _ in meta["meta_ptr"].view(-1, 4).tolist()]


def _mlp_rows_work(m):
    """The chain of the row block's last program: its slice of the wide end, then (once it has arrived and
    added the slices, 8 a step) the rest. Forward: each layer's (d_out / BLOCK_N) x (d_in / BLOCK_K) tiles, the
    wide end's over the slice only; backward: g of the last layer from dy (times dy_k / BLOCK_K when dy is
    formed in the kernel), each layer's (d_in / BLOCK_N) x (d_out / BLOCK_K) down to layer 1, layer 0 for dX."""
    layers, bn, bk = _layers(m), m["BLOCK_N"], m["BLOCK_K"]
    # (.get: the kernel before slices, e33d711, is the one the H200 measured, which --refit records)
    split, width, slices = m.get("SPLIT", "none"), m.get("slice_width", 0), m.get("slices", 1)
    def sliced(tiles):   # a slice's tiles, the arrival (an atomic), then the slices' sums tile by tile
        return tiles * cdiv(width, bk) + 1 + tiles * cdiv(slices, 8)

    forward = [cdiv(d_out, bn) * cdiv(d_in, bk) for d_in, d_out in layers]
    if split == "input":
        forward[0] = sliced(cdiv(layers[0][1], bn))
    elif split == "output":
        forward[-1] = cdiv(width, bn) * cdiv(layers[-1][0], bk)
    serial = sum(forward) if m["FORWARD"] else 0
    if m["BACKWARD"]:
        dy = cdiv(m["dy_k"], bk) if m.get("DY_LINEAR") else 1
        if not m["LOSS"]:
            serial += cdiv(width if split == "output" else layers[-1][1], bn) * dy
        chain = [cdiv(d_in, bn) * cdiv(d_out, bk) for d_in, d_out in layers]
        if split == "output":
            chain[-1] = sliced(cdiv(layers[-1][0], bn))
        serial += sum(chain[1:]) + (chain[0] if m["NEED_DX"] else 0)
    return math.prod(m["grid"]), serial


def _mlp_weight_grad_work(m):
    """Active: each layer's (d_out / BLOCK_N) x (d_in / BLOCK_K) tiles per split (the rest return at once);
    serial: a split's rows / BLOCK_M, plus program 0's sum of the rows kernel's loss partials (128 an iteration;
    their number is read on the device, so the loss buffer's length bounds it)."""
    layers, splits = _layers(m), m["grid"][2]
    active = splits * sum(cdiv(d_out, m["BLOCK_N"]) * cdiv(d_in, m["BLOCK_K"]) for d_in, d_out in layers)
    loss = cdiv(m["loss_ptr"].numel() - 1, 128) if m["HAS_LOSS"] else 0
    return active, cdiv(min(m["rows_per_split"], m["M"]), m["BLOCK_M"]) + loss


def _grid_stride(m, n, block):
    """A grid-stride loop: every program works, each walks n / (programs x block) blocks."""
    return m["grid"][0], cdiv(n, m["grid"][0] * block)


# kernel -> meta -> (active CTAs, serial loop iterations per CTA); meta: the launch's arguments by name, the
# config's meta-parameters and "grid" (the evaluated grid, 3 axes)
WORK = {
    "_mlp_rows_kernel": _mlp_rows_work,                 # row blocks x slices of the wide end; the last one goes on
    "_mlp_weight_grad_kernel": _mlp_weight_grad_work,   # tile x layer x split; loop over the split's rows
    "_linear_act_fwd_kernel": lambda m: (math.prod(m["grid"]), cdiv(m["K"], m["BLOCK_K"])),        # loop over K
    "_linear_act_bwd_input_kernel": lambda m: (math.prod(m["grid"]), cdiv(m["N"], m["BLOCK_N"])),  # loop over N
    "_linear_act_bwd_weight_kernel": lambda m: (math.prod(m["grid"]),   # tiles x replicas x batch splits;
                                                cdiv(min(m["rows_per_split"], m["M"]), m["BLOCK_M"])),  # a split's M
    "_adam_step_kernel": lambda m: _grid_stride(m, m["n"], m["BLOCK"]),             # grid-stride over the buffer
    "_replica_adam_kernel": lambda m: (m["grid"][0] * m["grid"][1], cdiv(m["n"], m["grid"][0] * m["BLOCK"])),
    # ^ programs over a replica's row x replicas, each a grid-stride loop over its row
    "_sigmoid_bce_fwd_kernel": lambda m: _grid_stride(m, m["n"], m["BLOCK"]),       # grid-stride over the logits
    "_linear_bce_head_fwd_kernel": lambda m: (m["grid"][0], cdiv(m["M"], m["grid"][0] * m["BLOCK_M"])
                                              * cdiv(m["H"], m["BLOCK_H"])),        # row blocks x width blocks
    "_linear_bce_head_bwd_kernel": lambda m: (m["grid"][0], cdiv(m["M"], m["grid"][0] * m["BLOCK_M"])
                                              * cdiv(m["H"], m["BLOCK_H"])),        # width blocks x row blocks
    "_maxout_fwd_kernel": lambda m: (math.prod(m["grid"]), 1),   # one block of outputs per CTA, pieces unrolled
    "_maxout_bwd_kernel": lambda m: (math.prod(m["grid"]), 1),   # one block of outputs per CTA, pieces unrolled
    "_sample_kernel": lambda m: (math.prod(m["grid"]), cdiv(m["features"], m["BLOCK_F"] * m["grid"][1])
                                 + cdiv(m["latent"], m["BLOCK_F"] * m["grid"][1])),
    # ^ BLOCK_M rows x (grid[1] = 1 at e33d711: every) BLOCK_F columns per CTA: the gathered features, the noise
    "_fill_kernel": lambda m: (math.prod(m["grid"]), 1),   # one BLOCK_M x BLOCK_F tile of noise per CTA
    "_spectral_normalize_kernel": lambda m: (m["grid"][0], max(  # one CTA per layer: three passes over W's tiles
        3 * cdiv(d_out, m["BLOCK_N"]) * cdiv(d_in, m["BLOCK_K"])
        for d_out, d_in, *_ in m["meta_ptr"].view(-1, 5).tolist())),
}


# -- recording, grids, compiles -----------------------------------------------------------------------------

def record_step(settings: dict, batch: int):
    """``(launches, torch kernels)``: the (kernel, args, kwargs, grid) of one step after a warm-up step, and how
    many PyTorch kernels the step launches besides them."""
    import torch
    import fastgan
    from fastgan.profiling import count_launches
    torch.manual_seed(0)
    trainer = fastgan.GANTrainer(fastgan.MLPGenerator(), fastgan.MLPDiscriminator(), torch.rand(max(batch, 256), 784),
                                 batch_size=batch, device="cpu", precision="tf32", **settings)
    launches, grids = [], []
    undo = compile_check._recording(launches, grids)
    try:
        trainer.step()
        del launches[:], grids[:]
        _, count = count_launches(trainer.step)
    finally:
        undo()
    return [(*launch, grid) for launch, grid in zip(launches, grids)], sum(count.torch_ops.values())


def surviving_configs(kernel, args, kwargs) -> list:
    """``(index, config)`` of each autotune config Triton would time for this launch (its ``prune_configs_by``
    applied as Triton applies it); ``[(None, None)]`` for a kernel without autotuning."""
    from triton.runtime.autotuner import Autotuner
    if not isinstance(kernel, Autotuner):
        return [(None, None)]
    kernel.nargs = dict(zip(kernel.arg_names, args))
    try:
        kept = kernel.prune_configs(kwargs)
    finally:
        kernel.nargs = None
    return [(i, c) for i, c in enumerate(kernel.configs) if c in kept]


def evaluate(jit, args, kwargs, grid, config) -> dict:
    """The launch's meta dict for one config (Triton's convention: arguments by name, then keyword arguments,
    then the config's), with "grid" evaluated on it and padded to 3 axes."""
    defaults = {name: p.default for name, p in inspect.signature(jit.fn).parameters.items() if p.default is not p.empty}
    meta = defaults | dict(zip(jit.arg_names, args)) | kwargs | (config.all_kwargs() if config is not None else {})
    dims = tuple(grid(meta) if callable(grid) else grid)
    meta["grid"] = dims + (1,) * (3 - len(dims))
    return meta


def ptx_facts(ptx: str) -> dict:
    """Load widths and pipelining from PTX: cp.async sizes (bytes), deepest wait_group, widest ld.global (bytes;
    scalar 64-bit loads, the pointers and int64 tables, left out), what tl.dot became."""
    loads = [int(vector or 1) * int(bits) // 8 for vector, bits in LD_GLOBAL.findall(ptx) if vector or bits != "64"]
    return {"cp_async": sorted({int(size, 0) for size in CP_ASYNC.findall(ptx)}),
            "wait_group": max((int(n, 0) for n in WAIT_GROUP.findall(ptx)), default=0),
            "ld_global": max(loads, default=0), "dot": compile_check._dot_kind(ptx)}


def compile_facts(jit, args, kwargs, config, cache: dict) -> dict:
    """PTX facts, registers and shared memory of one config's compile; Triton compiles a specialisation once,
    and the facts are read once per compiled kernel (its hash)."""
    options = dict(kwargs, **(config.all_kwargs() if config is not None else {}))
    compiled = jit.warmup(*args, grid=(1,), **options)
    if compiled.hash not in cache:
        usage = compile_check._resource_usage(compiled.asm.get("cubin", b""))
        cache[compiled.hash] = dict(ptx_facts(compiled.asm.get("ptx", "")), regs=usage.get("REG"),
                                    smem=compiled.metadata.shared + usage.get("SHARED", 0),   # dynamic + static
                                    num_warps=compiled.metadata.num_warps, num_stages=compiled.metadata.num_stages)
    return cache[compiled.hash]


def ctas_per_sm(num_warps: int, facts: dict) -> int:
    limits = [BLOCKS_PER_SM, WARPS_PER_SM // num_warps]
    if facts.get("regs"):
        limits.append(REGISTERS_PER_SM // (facts["regs"] * 32 * num_warps))
    if facts.get("smem"):
        limits.append(SHARED_MEMORY_PER_SM // facts["smem"])
    return min(limits)


def model_step(settings: dict, batch: int, compile_: bool, cache: dict) -> dict:
    """Every launch of one step, one row per surviving config: CTAs, work, compile facts, waves."""
    from triton.runtime.autotuner import Autotuner
    launches, torch_kernels = record_step(settings, batch)
    rows = []
    for index, (kernel, args, kwargs, grid) in enumerate(launches):
        jit = kernel.fn if isinstance(kernel, Autotuner) else kernel
        launch = {"index": index, "kernel": jit.__name__, "variant": compile_check._describe(kernel, args, kwargs),
                  "modelled": jit.__name__ in WORK, "configs": [],
                  "meta": evaluate(jit, args, kwargs, grid, surviving_configs(kernel, args, kwargs)[0][1])}
        for config_index, config in surviving_configs(kernel, args, kwargs):
            meta = evaluate(jit, args, kwargs, grid, config)
            row = {"config": "-" if config is None else f"cfg {config_index}/{len(kernel.configs)}",
                   "kwargs": {} if config is None else dict(config.kwargs),
                   "num_warps": config.num_warps if config is not None else kwargs.get("num_warps", 4),
                   "num_stages": config.num_stages if config is not None else kwargs.get("num_stages", 3),
                   "ctas": math.prod(meta["grid"]), "active": None, "serial": None}
            if launch["modelled"]:
                row["active"], row["serial"] = WORK[jit.__name__](meta)
            row.update(compile_facts(jit, args, kwargs, config, cache) if compile_ else {})
            per_sm = ctas_per_sm(row["num_warps"], row)
            row["waves"] = cdiv(row["active"], SMS * per_sm) if launch["modelled"] and per_sm else None
            launch["configs"].append(row)
        rows.append(launch)
    return {"batch": batch, "settings": settings, "launches": rows, "torch_kernels": torch_kernels}


# -- the latency model ---------------------------------------------------------------------------------------

def best_work(launch: dict) -> int | None:
    """serial x waves of the launch's best config (the same for any c_iter > 0), None without a model."""
    works = [c["serial"] * c["waves"] for c in launch["configs"] if c["waves"] is not None]
    return min(works) if works else None


def step_terms(step: dict) -> tuple[int, int]:
    """``(nodes, work)``: the kernels of a step (Triton and PyTorch), the sum of its launches' best serial x waves."""
    return len(step["launches"]) + step["torch_kernels"], sum(best_work(launch) or 0 for launch in step["launches"])


def measured_steps(batch: int, card: str = CARD) -> dict:
    """``{label: (µs per step, kernels per step, run id)}`` from the newest train_step run on ``card`` that has
    the backend at this batch (width 128)."""
    found = {}
    runs = RESULTS / card / "runs.jsonl"
    lines = runs.read_text().splitlines() if runs.exists() else []
    for record in map(json.loads, reversed(lines)):
        if not record.get("benchmark", "").startswith("train_step"):
            continue
        for row in record["payload"]["rows"]:
            if row["batch"] != batch or row["width"] != 128:
                continue
            for label, name in MEASURED.items():
                entry = row["backends"].get(name, {})
                if label not in found and "ms_per_step" in entry:
                    found[label] = (1000 * entry["ms_per_step"], entry["kernels_per_step"], record["run"])
    return found


def fit(terms: dict, measured: dict) -> tuple[float, float]:
    """``(c_node, c_iter)`` in µs solving nodes * c_node + work * c_iter = measured µs for both backends, from
    each backend's ``(nodes, work)`` (``step_terms``) of the code that was measured."""
    (n1, w1), (n2, w2) = (terms[label] for label in MEASURED)
    (t1, _, _), (t2, _, _) = (measured[label] for label in MEASURED)
    det = n1 * w2 - n2 * w1
    if det == 0:
        raise RuntimeError("the two steps' (nodes, work) are proportional: the fit has no unique solution")
    return (t1 * w2 - t2 * w1) / det, (n1 * t2 - n2 * t1) / det


def predict(step: dict, c_node: float, c_iter: float) -> float:
    """Each row's predicted µs, the best config of each launch marked; returns the step's µs."""
    for launch in step["launches"]:
        best = None
        for row in launch["configs"]:
            row["predicted_us"] = None if row["waves"] is None else c_node + c_iter * row["serial"] * row["waves"]
            if row["predicted_us"] is not None and (best is None or row["predicted_us"] < best["predicted_us"]):
                best = row
        for row in launch["configs"]:
            row["best"] = row is best
    return sum(row["predicted_us"] for launch in step["launches"] for row in launch["configs"] if row["best"]) \
        + c_node * step["torch_kernels"]


def adam_bytes(step: dict) -> int:
    """Bytes FlatAdam's updates of a step move: each parameter's value (4 bytes) and two moments (4 bytes each,
    2 in bf16), read and written, and its gradient (4 bytes: its partial sums read by Adam's kernel; written by
    the weight-gradient kernel that folds the update in): 28 bytes a parameter, 20 with bf16 moments."""
    total = 0
    for launch in step["launches"]:
        meta = launch["meta"]
        moments = 2 * 2 * meta["exp_avg_ptr"].element_size() if "exp_avg_ptr" in meta else 0
        if launch["kernel"] in ("_adam_step_kernel", "_replica_adam_kernel"):
            replicas = meta["grid"][1] if launch["kernel"] == "_replica_adam_kernel" else 1
            total += replicas * meta["n"] * (8 + moments + 4 * meta.get("PARTIALS", 1))
        elif launch["kernel"] == "_mlp_weight_grad_kernel" and meta.get("ADAM"):
            n = sum(d_in * d_out + (d_out if meta["HAS_BIAS"] else 0) for d_in, d_out in _layers(meta))
            total += (meta["grid"][2] // meta["splits"]) * n * (8 + moments + 4)
    return total


def _products(layers, rows: int) -> int:
    return sum(2 * rows * d_in * d_out for d_in, d_out in layers)


def matmul_flops(step: dict) -> int:
    """The floating-point operations of a step's matmuls, from its launches' shapes (every replica, and the
    layers below the cut that each slice of a G's output end recomputes)."""
    total = 0
    for launch in step["launches"]:
        meta, kernel = launch["meta"], launch["kernel"]
        if kernel == "_mlp_rows_kernel":
            layers, rows, replicas = _layers(meta), meta["M"], meta["grid"][2]
            flops = 0
            if meta["FORWARD"]:
                redo = meta["slices"] if meta.get("SPLIT") == "output" else 1
                flops += _products(layers[:-1], rows) * redo + _products(layers[-1:], rows)
            if meta["BACKWARD"]:
                flops += _products(layers[1:], rows) + (_products(layers[:1], rows) if meta["NEED_DX"] else 0)
                flops += 2 * rows * meta["dy_k"] * layers[-1][1] if meta.get("DY_LINEAR") else 0
            total += flops * replicas
        elif kernel == "_mlp_weight_grad_kernel":
            total += _products(_layers(meta), meta["M"]) * (meta["grid"][2] // meta["splits"])
        elif kernel in ("_linear_act_fwd_kernel", "_linear_act_bwd_input_kernel", "_linear_act_bwd_weight_kernel"):
            total += 2 * meta["M"] * meta["N"] * meta["K"] * meta["grid"][2]
    return total


def print_replicas(label: str, replicas: int, step: dict, predicted: float, card: str) -> None:
    """The K-replica step's summary: the latency model's µs and two floors it knows nothing of — Adam's
    traffic at the card's peak bandwidth, the matmuls at the dense tf32 peak — and GAN-steps/s at the largest."""
    memory = adam_bytes(step) / HBM_BYTES_PER_S[card] * 1e6 if card in HBM_BYTES_PER_S else None
    compute = matmul_flops(step) / TF32_FLOPS_PER_S * 1e6
    bound = max(predicted, memory or 0.0, compute)
    memory_text = "no bandwidth figure for this card" if memory is None else \
        f"Adam's {adam_bytes(step) / 1e6:.1f} MB at {HBM_BYTES_PER_S[card] / 1e12:.2f} TB/s: >= {memory:.1f} µs"
    print(f"{label}: latency model {predicted:.1f} µs a step; {memory_text}; {matmul_flops(step) / 1e9:.1f} GFLOP "
          f"at {TF32_FLOPS_PER_S / 1e12:.0f} TFLOP/s: >= {compute:.1f} µs; so >= {bound:.1f} µs, "
          f"<= {replicas / bound:.2f} M GAN-steps/s (predicted, not measured)")


def gate(step: dict) -> list[str]:
    """FAIL lines for matmul launches of which some config gives fewer active CTAs than half the SMs."""
    failures = []
    for launch in step["launches"]:
        for row in launch["configs"]:
            matmul = launch["kernel"] in MATMUL or row.get("dot", "-") != "-"
            if matmul and row["active"] is not None and row["active"] < SMS // 2:
                failures.append(f"FAIL {launch['kernel']} {row['config']} {_config_text(row)} (launch "
                                f"{launch['index']}): {row['active']} active CTAs < {SMS // 2} (half of {SMS} SMs)")
    return failures


# -- the report ----------------------------------------------------------------------------------------------

def _config_text(row: dict) -> str:
    blocks = " ".join(f"{k.replace('BLOCK_', '')}={v}" for k, v in row["kwargs"].items())
    return f"[{blocks + ' ' if blocks else ''}w{row['num_warps']} s{row['num_stages']}]"


def print_step(label: str, step: dict, predicted: float, measured: tuple | None, commit: str) -> None:
    triton_launches = len(step["launches"])
    against = "not measured" if measured is None else \
        f"measured {measured[0]:.1f} µs at {commit} ({measured[1]:g} kernels/step on the H200, run {measured[2]})"
    print(f"\n{label} step, batch {step['batch']}: {triton_launches} Triton launches + {step['torch_kernels']} "
          f"PyTorch kernels; predicted {predicted:.1f} µs, {against}")
    head = (f"{'#':>3} {'kernel':30} {'config':32} {'active/SMs':>10} {'grid':>5} {'iters':>5} {'waves':>5} "
            f"{'cp.async':>8} {'wait':>4} {'ld.gl':>5} {'dot':>5} {'regs':>4} {'smem':>6} {'µs':>7}")
    print(head)
    for launch in step["launches"]:
        for i, row in enumerate(launch["configs"]):
            first = i == 0
            cp = ("/".join(map(str, row["cp_async"])) or "-") if "cp_async" in row else "?"
            widest = row.get("ld_global", "?") or "-"   # 0: every global load goes through cp.async
            facts = (f"{cp:>8} {row.get('wait_group', '?'):>4} {widest:>5} {row.get('dot', '?'):>5} "
                     f"{row.get('regs') or '?':>4} {row.get('smem', '?'):>6}")
            if not launch["modelled"]:
                work = f"{'no model':>10} {row['ctas']:>5} {'-':>5} {'-':>5}"
            else:
                work = f"{row['active']:>6}/{SMS:<3} {row['ctas']:>5} {row['serial']:>5} {row['waves'] or '-':>5}"
            us = "-" if row["predicted_us"] is None else f"{row['predicted_us']:.1f}"
            config = f"{row['config']} {_config_text(row)}"
            print(f"{launch['index'] if first else '':>3} {launch['kernel'] if first else '':30} {config:32} "
                  f"{work} {facts} {us:>6}{'*' if row['best'] else ' '}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=FIT_BATCH, help="batch size of the modelled step (default 128)")
    parser.add_argument("--gate", action="store_true",
                        help="exit 1 when a matmul launch of the fused step at batch 128 fills < half the SMs")
    parser.add_argument("--no-compile", action="store_true", help="grids and work only: no PTX, registers, smem")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--refit", action="store_true",
                        help="fit the constants to this code's launches (run it on the code a GPU run measured, "
                             "its results merged; writes perf_model_fit.json in the card's results folder)")
    parser.add_argument("--replicas", type=int, nargs="+", default=[], metavar="K",
                        help="also model the step of K classic GANs at once (replicas=K; the fused and the per-layer "
                             "step) at --batch: µs a step, the floor of Adam's memory traffic, GAN-steps/s")
    parser.add_argument("--adam-state", choices=["fp32", "bf16"], default="fp32",
                        help="the replica steps' FlatAdam moments (bf16: 20 bytes of Adam traffic a parameter, not 28)")
    parser.add_argument("--card", default=CARD, help=f"the card whose train_step run fits the constants "
                                                     f"(benchmarks/results/CARD; default {CARD})")
    args = parser.parse_args(argv)
    fit_file = RESULTS / args.card / "perf_model_fit.json"
    started = time.time()
    # before triton is imported: compile for real, every autotune config kept
    os.environ.update(TRITON_INTERPRET="0", FASTGAN_AUTOTUNE="1")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    try:
        measured = measured_steps(FIT_BATCH, args.card)
        if set(measured) != set(MEASURED):
            raise RuntimeError(f"benchmarks/results/{args.card} has no train_step run at batch {FIT_BATCH} with "
                               f"{' and '.join(MEASURED.values())}: the constants cannot be fitted")
        compile_check._compile_only(90)
        cache: dict = {}
        batches = dict.fromkeys((FIT_BATCH, args.batch))
        steps = {(label, batch): model_step(settings, batch, not args.no_compile, cache)
                 for batch in batches for label, settings in BACKENDS.items()}
        steps.update({(f"{label} x {k} replicas", args.batch): model_step(
            dict(REPLICA_BACKENDS[label], replicas=k, adam_state=args.adam_state), args.batch, not args.no_compile,
            cache)
                      for k in args.replicas for label in REPLICA_BACKENDS})
        if args.refit:   # the code here is the code the GPU run measured
            terms = {label: step_terms(steps[label, FIT_BATCH]) for label in BACKENDS}
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                    text=True).stdout.strip()
            fit_file.write_text(json.dumps({"commit": commit, "run": measured["fused"][2], "terms": terms}, indent=1)
                           + "\n")
        fitted = json.loads(fit_file.read_text())
        c_node, c_iter = fit(fitted["terms"], measured)
        predicted = {key: predict(step, c_node, c_iter) for key, step in steps.items()}
    except Exception:  # noqa: BLE001
        print("ERROR the performance model could not run:\n" + traceback.format_exc(), flush=True)
        return 2
    compiles = "no compiles" if args.no_compile else f"{len(cache)} compiles"
    print(f"performance model: sm_90, {SMS} SMs, the {args.card} run's constants, {compiles}; "
          f"fitted to {', '.join(f'{MEASURED[k]} {v[0]:.1f} µs' for k, v in measured.items())} "
          f"(run {measured['fused'][2]}, batch {FIT_BATCH}) as launched by the code at {fitted['commit']}")
    print(f"c_node = {c_node:.3f} µs per kernel, c_iter = {c_iter:.3f} µs per serial iteration per wave")
    measured_here = measured if args.batch == FIT_BATCH else measured_steps(args.batch, args.card)
    for label in BACKENDS:
        print_step(label, steps[label, args.batch], predicted[label, args.batch], measured_here.get(label),
                   fitted["commit"])
    for k in args.replicas:
        for backend in REPLICA_BACKENDS:
            label = f"{backend} x {k} replicas"
            print_step(label, steps[label, args.batch], predicted[label, args.batch], None, fitted["commit"])
            print_replicas(label, k, steps[label, args.batch], predicted[label, args.batch], args.card)
    failures = gate(steps["fused", FIT_BATCH])
    print()
    for line in failures:
        print(line)
    print(f"gate (fused step, batch {FIT_BATCH}, every config of every matmul launch >= {SMS // 2} active CTAs): "
          f"{'FAIL' if failures else 'OK'}, {len(failures)} failing configs{'' if args.gate else ' (not enforced)'}; "
          f"{time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "sms": SMS, "fit_batch": FIT_BATCH, "c_node_us": c_node, "c_iter_us": c_iter,
            "compiled": not args.no_compile,
            "measured": {label: dict(zip(("us", "kernels_per_step", "run"), m)) for label, m in measured.items()},
            "steps": [dict(step, label=label, predicted_us=predicted[label, batch], adam_bytes=adam_bytes(step),
                           matmul_flops=matmul_flops(step),
                           launches=[{k: v for k, v in launch.items() if k != "meta"} for launch in step["launches"]])
                      for (label, batch), step in steps.items()],
            "gate": failures}, indent=1))
    return 1 if failures and args.gate else 0


if __name__ == "__main__":
    sys.exit(main())
