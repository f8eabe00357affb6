"""One object per ``kernels=`` value: what computes a trainer's layers, loss and step.

A ``Backend`` converts the user's modules (``convert``), names the BCE the step uses (``bce``), says whether its
models train with FlatAdam unless told otherwise (``flat_optimizer``), builds the step (``make_step``), states
what it supports (``check``: the refusals of combinations, in one place) and what really ran
(``kernels_run``). ``resolve_backend`` turns the setting into one, once, with ``"auto"`` decided there;
``fast_path`` decides the settings a run leaves unset for its device; ``plan`` does both for a trainer.
The trainers ask their backend; nothing else tests the ``kernels`` string.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import ops
from ..log import say
from ..nn.adapters import Shaped
from ..nn.fused import FusedLinear, FusedMLP, fuse
from ..ops import native
from ..ops.sampler import DeviceSampler
from ..ops.mlp import MLPSpec
from ..optim import FlatAdam, ReplicaAdam
from .config import CUDAGRAPH_COMPILE_MODES, TrainConfig
from .fused_step import make_fused_step
from .parts import StepParts
from .step import make_step

__all__ = ["Backend", "BACKENDS", "plan", "resolve_backend", "fast_path", "AUTO_TRITON_MAX_BATCH",
           "FAST_STEPS_PER_REPLAY", "whole_mlp", "fused_step_blocker"]

# kernels="auto" picks fastgan's per-layer kernels up to this batch in a CUDA graph, and the fast path replays
# this many steps per graph launch (docs/benchmarks.md: the measurements behind both)
AUTO_TRITON_MAX_BATCH = 512
FAST_STEPS_PER_REPLAY = 8
MAX_STEPS_PER_REPLAY = 64   # (with R1, a replay takes a multiple of r1_every steps: up to this many)


def whole_mlp(module: torch.nn.Module) -> FusedMLP | None:
    """The FusedMLP that *is* ``module``'s forward: the module itself, or the ``.net`` of a class that declares
    ``forward_is_net`` itself (fastgan's MLPGenerator and MLPDiscriminator; a subclass may override forward, so
    it does not inherit the claim); None otherwise."""
    if isinstance(module, Shaped) and module.shape == (-1,):   # image rows flattened for an MLP D: the same MLP
        module = module.module
    if isinstance(module, FusedMLP):
        return module
    if vars(type(module)).get("forward_is_net") and isinstance(module.net, FusedMLP):
        return module.net
    return None


def fused_step_blocker(config: TrainConfig, g: MLPSpec | None, d: MLPSpec | None, optimizer_g, optimizer_d,
                       use_triton: bool, conditional: bool = False) -> str | None:
    """Why the fused step cannot run this configuration (None: it can): ``g`` and ``d`` are the whole MLPs G
    and D are (None: not one), for K replicas their ``StackedMLP``'s, with their ``ReplicaAdam``s."""
    if not use_triton:
        return "Triton cannot run here (no CUDA, no TRITON_INTERPRET=1)"
    if conditional:
        return "conditional models (labels) not in the fused step"
    if g is None or d is None:
        return f"{'G' if g is None else 'D'} is not one whole MLP (fastgan.fuse(model, whole=True) could not fuse it)"
    if d.dims[-1] != 1 or d.output_activation != "none":
        return "D's last layer is not Linear(h, 1) without an activation (logits)"
    flat = all(isinstance(opt, FlatAdam) or isinstance(opt, ReplicaAdam) and opt.flat
               for opt in (optimizer_g, optimizer_d))
    blockers = {"update='simultaneous'": config.update != "alternating",
                "loss='hinge'": config.loss != "non_saturating",
                "instance_noise": any(sigma > 0 for sigma in config.per_replica("instance_noise")),
                "r1_gamma": config.has_r1, "mmd_weight": config.has_mmd, "augment": bool(config.augment),
                "compile": bool(config.compile),
                "fused_optimizer='torch'": not flat,
                "sampler='torch' with replicas": config.replicas is not None and config.sampler != "philox"}
    named = [name for name, on in blockers.items() if on]
    return f"{', '.join(named)} not in the fused step" if named else None


def _philox(parts: StepParts) -> DeviceSampler | None:
    """The generic step's Philox sampler where ``sampler="philox"`` (``"auto"`` there is PyTorch's generator)."""
    if parts.config.sampler != "philox":
        return None
    if parts.labels is not None:
        raise ValueError("sampler='philox' draws no labels: a conditional GAN draws with sampler='torch'")
    return DeviceSampler(parts.config.seed, parts.data.device)


class Backend:
    """PyTorch's own layers and loss (``kernels="torch"``): the reference every other backend is tested against."""
    name = "torch"
    flat_optimizer = False      # train with FlatAdam when fused_optimizer is unset
    replica_kernels = "torch"   # what stacked replicas run (None: replicas refused)
    bce = staticmethod(ops.sigmoid_bce_reference)

    def check(self, config: TrainConfig, device: torch.device) -> None:
        """``ValueError`` for a setting this backend cannot run with, before anything is built."""
        if config.sampler == "philox":
            if not ops.use_triton(torch.empty(0, device=device)):
                raise ValueError(f"sampler='philox' draws with a Triton kernel, which cannot run on {device} here "
                                 "(a CUDA device with Triton, or TRITON_INTERPRET=1 on the CPU): use sampler='torch'")
            if config.data_parallel:
                raise ValueError("sampler='philox' does not combine with data_parallel yet: use sampler='torch'")
        if config.replicas is not None and self.replica_kernels is None:
            raise ValueError(f"with replicas, these settings are not available yet: kernels={self.name!r} "
                             "(replicas train with the plain step, the torch or per-layer triton kernels and "
                             "their own batched Adam)")

    def convert(self, module: nn.Module, keep=()) -> nn.Module:
        """The module the step runs for the user's ``module`` (parameters shared, ``state_dict`` unchanged);
        the modules in ``keep`` stay as they are."""
        return module

    def flat_adam(self, config: TrainConfig) -> bool:
        """Whether the models train with FlatAdam's kernel (``ReplicaAdam(flat=True)`` for replicas)."""
        return config.fused_optimizer == "flat" or (self.flat_optimizer and not config.fused_optimizer)

    def make_step(self, parts: StepParts) -> tuple:
        """``(step, sampler, step_path)``: the step function, the Philox sampler it draws with (or None) and
        which step it is (``"generic"``, ``"fused"``, or ``"generic (why not fused)"``)."""
        sampler = _philox(parts)
        return make_step(parts, sampler), sampler, "generic"

    def fused_replica_step(self, t, g: MLPSpec | None, d: MLPSpec | None) -> tuple:
        """``(step, step_path)`` for a ``ReplicaTrainer`` ``t`` whose stacked models are the whole MLPs ``g`` and
        ``d`` (None: they are not): the fused step for its K replicas (``"fused replicas"``), or None and
        ``"replicas"`` (``"replicas (why not fused)"``): the replica step then."""
        return None, "replicas"

    def kernels_run(self, generator: nn.Module, discriminator: nn.Module, data: torch.Tensor) -> str:
        """What the step's layers and loss really run (``GANTrainer.kernels_run`` documents the values)."""
        return "torch"


class TritonBackend(Backend):
    """fastgan's fused per-layer Triton kernels and the fused sigmoid-BCE (``kernels="triton"``)."""
    name = "triton"
    replica_kernels = "triton"
    bce = staticmethod(ops.sigmoid_bce_with_logits)

    def convert(self, module: nn.Module, keep=()) -> nn.Module:
        return fuse(module, keep=keep)

    def kernels_run(self, generator, discriminator, data) -> str:
        if not ops.use_triton(data):
            return "reference"
        return "triton" if data.is_cuda else "triton-interpreter"


class TritonMLPBackend(TritonBackend):
    """Whole-MLP kernels, FlatAdam and, where the settings allow, the fused step (``kernels="triton-mlp"``)."""
    name = "triton-mlp"
    flat_optimizer = True
    replica_kernels = "triton"   # (what the replica step runs where the fused step cannot)

    def check(self, config, device) -> None:
        if config.data_parallel:
            raise ValueError("data_parallel does not combine with kernels='triton-mlp' (its fused step draws and "
                             "updates the whole batch in one place)")
        super().check(config, device)

    def convert(self, module: nn.Module, keep=()) -> nn.Module:
        return fuse(module, whole=True, keep=keep)

    def make_step(self, parts: StepParts) -> tuple:
        config = parts.config
        g, d = (whole_mlp(m) for m in (parts.generator, parts.discriminator))
        g, d = (m.spec if m is not None else None for m in (g, d))
        blocker = fused_step_blocker(config, g, d, parts.optimizer_g, parts.optimizer_d, ops.use_triton(parts.data),
                                     getattr(parts.generator, "num_classes", None) is not None)
        if blocker is None:
            sampler = DeviceSampler(config.seed, parts.data.device) if config.sampler != "torch" else None
            return make_fused_step(parts, g, d, sampler), sampler, "fused"
        sampler = _philox(parts)
        return make_step(parts, sampler), sampler, f"generic ({blocker})"

    def fused_replica_step(self, t, g, d) -> tuple:
        blocker = fused_step_blocker(t.config, g, d, t.optimizer_g, t.optimizer_d, ops.use_triton(t.data))
        if blocker is not None:
            return None, f"replicas ({blocker})"
        # (the loss is the kernels' epilogue: no loss functions; the EMA: the replicas' flat average)
        parts = StepParts(t.generator, t.discriminator, t.optimizer_g, t.optimizer_d, t.data, t.latent_dim, t.rng,
                          None, None, t.config, t.ema, None, t.spectral)
        return make_fused_step(parts, g, d, t.sampler, t.replicas), "fused replicas"


class CudaBackend(Backend):
    """fastgan's native CUDA kernels, whole MLPs (``kernels="cuda"``): a GPU and the CMake build."""
    name = "cuda"
    replica_kernels = None
    bce = staticmethod(native.cuda_bce_with_logits)

    def check(self, config, device) -> None:
        super().check(config, device)
        if device.type != "cuda":
            raise ValueError(f"kernels='cuda' runs fastgan's native CUDA kernels: it needs a CUDA device, but the "
                             f"trainer runs on {device} (use kernels='torch' or 'triton' there)")
        native.load()   # the CMake build, or a clear error now

    def convert(self, module: nn.Module, keep=()) -> nn.Module:
        return fuse(module, whole=True, backend="cuda", keep=keep)

    def kernels_run(self, generator, discriminator, data) -> str:
        """``"cuda"``; ``"cuda (D: triton whole-MLP)"`` when a model is wider or deeper than the native kernels
        take, ``"... triton per layer"`` when it is no plain MLP."""
        fell_back = []
        for name, model in (("G", generator), ("D", discriminator)):
            modules = list(model.modules())
            if any(isinstance(m, FusedMLP) and m.backend != "cuda" for m in modules):
                fell_back.append(f"{name}: triton whole-MLP")
            elif any(isinstance(m, FusedLinear) for m in modules) and not any(isinstance(m, FusedMLP) for m in modules):
                fell_back.append(f"{name}: triton per layer")
        return f"cuda ({', '.join(fell_back)})" if fell_back else "cuda"


BACKENDS: dict[str, Backend] = {b.name: b for b in (Backend(), TritonBackend(), TritonMLPBackend(), CudaBackend())}


def fast_path(config: TrainConfig, device: torch.device) -> tuple[TrainConfig, str | None]:
    """``config`` with the settings it leaves automatic decided for ``device``, and the line that says so (None
    where nothing was automatic, or off CUDA). With ``fast`` on CUDA: a CUDA graph of ``FAST_STEPS_PER_REPLAY``
    steps per replay (with R1, the least multiple of ``r1_every`` too, up to ``MAX_STEPS_PER_REPLAY``) unless a
    compile mode with CUDA graphs of its own or data parallelism rules it out; FlatAdam up to batch
    ``AUTO_TRITON_MAX_BATCH`` unless data parallelism rules it out (replicas: its kernel with a replica axis, and
    their draws in one launch); the kernels ``resolve_backend`` picks for a graphed step. Off CUDA, or with
    ``fast=False``: the plain eager step with torch.optim.Adam."""
    fast = config.fast and device.type == "cuda"
    # a replay holds whole R1 periods (the steps with the penalty sit where the capture put them)
    per_replay = math.lcm(FAST_STEPS_PER_REPLAY, config.r1_every) if config.has_r1 else FAST_STEPS_PER_REPLAY
    graph_blocker = next((why for why, on in (
        (f"r1_every={config.r1_every} would need {per_replay} steps a replay", per_replay > MAX_STEPS_PER_REPLAY),
        (f"compile={config.compile!r} makes CUDA graphs of its own", config.compile in CUDAGRAPH_COMPILE_MODES),
        ("data_parallel's collectives", config.data_parallel)) if on), None)
    flat_blocker = "data_parallel" if config.data_parallel else None
    chosen = {}
    if config.cuda_graph is None:
        chosen["cuda_graph"] = fast and graph_blocker is None
    graph = chosen.get("cuda_graph", config.cuda_graph)
    if config.steps_per_replay is None:
        chosen["steps_per_replay"] = per_replay if graph else 1
    if config.fused_optimizer is None:   # (measured ahead up to batch 512; beyond, torch's Adam in the graph)
        small = config.batch_size <= AUTO_TRITON_MAX_BATCH
        chosen["fused_optimizer"] = "flat" if fast and small and flat_blocker is None else False
    if config.sampler == "auto" and config.replicas is not None:   # K replicas' draws in one launch
        fused = config.kernels == "triton-mlp" and ops.use_triton(torch.empty(0, device=device))
        chosen["sampler"] = "philox" if (fast and ops.HAS_TRITON or fused) and not config.data_parallel else "torch"
    resolved = config.replace(**chosen) if chosen else config
    if not fast or not chosen and config.kernels != "auto":
        return resolved, None
    backend = _auto_kernels(resolved, device) if config.kernels == "auto" else config.kernels
    parts = [f"{backend} + CUDA graph (k={resolved.steps_per_replay})" if resolved.cuda_graph else backend]
    if resolved.fused_optimizer == "flat":
        parts.append("FlatAdam" + (" (bf16 moments)" if resolved.adam_state == "bf16" else ""))
    if resolved.replicas is not None and resolved.sampler == "philox":
        parts.append("Philox draws")
    held = []   # what the fast path would have chosen but a setting ruled out, with the reason
    if "cuda_graph" in chosen and graph_blocker:
        held.append(f"no CUDA graph: {graph_blocker}")
    if "fused_optimizer" in chosen and flat_blocker:
        held.append(f"no FlatAdam: {flat_blocker}")
    return resolved, "fast path: " + " + ".join(parts) + (f" ({'; '.join(held)})" if held else "")


def _auto_kernels(config: TrainConfig, device: torch.device) -> str:
    fused = device.type == "cuda" and ops.HAS_TRITON and config.cuda_graph
    return "triton" if fused and config.batch_size <= AUTO_TRITON_MAX_BATCH else "torch"


def plan(config: TrainConfig, device: torch.device) -> tuple[TrainConfig, Backend, bool]:
    """A trainer's settings for ``device`` (``fast_path``'s, said in one line) and its backend; and whether its
    CUDA graph was the fast path's choice (a step the graph cannot capture then runs eagerly)."""
    graph_optional = config.cuda_graph is None
    config, line = fast_path(config, device)
    backend = resolve_backend(config, device)
    if line is not None:
        say(line)
    return config, backend, graph_optional


def resolve_backend(config: TrainConfig, device: torch.device) -> Backend:
    """The backend ``config.kernels`` names, checked against ``config`` and ``device``. ``"auto"`` chooses only
    how the step computes, never what: ``torch`` or ``triton`` (same optimizer, same draws, so a checkpoint
    resumes under either): ``triton`` on CUDA with Triton installed, in a CUDA graph, at batch size up to
    ``AUTO_TRITON_MAX_BATCH``; ``torch`` otherwise. Decided once, when the trainer is built."""
    backend = BACKENDS[_auto_kernels(config, device) if config.kernels == "auto" else config.kernels]
    backend.check(config, device)
    return backend
