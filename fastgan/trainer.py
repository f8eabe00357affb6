"""GANTrainer: validates the set-up, owns models/optimizers/RNG, runs steps, logs, checkpoints.

Orchestration only: the step itself is built in ``fastgan.step``.
"""
from __future__ import annotations

import math
import os
import signal
import threading
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import data as _data
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .ema import EMA
from .graph import GraphedStep
from .losses import LOSSES, bce_with_logits, check_real_label
from .models import first_linear, generate, last_linear
from .optim import FlatAdam
from .profiling import phase
from .step import CUDAGRAPH_COMPILE_MODES, COMPILE_MODES, PRECISIONS, StepParts, make_step

__all__ = ["GANTrainer", "NonFiniteLossError", "TrainingInterrupted"]

KERNELS = ("torch", "triton", "auto")
# fused_optimizer: False (torch.optim.Adam, for-each), "flat" (FlatAdam; True means the same) or "torch"
# (torch.optim.Adam(fused=True): PyTorch's own one-kernel-per-dtype Adam, the baseline FlatAdam must beat)
FUSED_OPTIMIZERS = (False, "flat", "torch")
CHECKPOINT_FORMAT = "fastgan.GANTrainer"


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf during ``fit``; the last good checkpoint (if any) was kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during ``fit``: the step in flight finished, the checkpoint (if any) was written.

    ``step`` is the trainer's step count; ``checkpoint`` the path written, or None.
    """

    def __init__(self, step: int, checkpoint: Path | None):
        self.step, self.checkpoint = step, checkpoint
        where = f"; checkpoint written to {checkpoint}" if checkpoint else ""
        super().__init__(f"interrupted at step {step}{where}")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _in_features(module: nn.Module, attribute: str) -> int | None:
    value = getattr(module, attribute, None)
    if isinstance(value, int):
        return value
    linear = first_linear(module)
    if linear is None or isinstance(linear, nn.modules.lazy.LazyModuleMixin):
        return None  # unknown until the first forward
    return linear.in_features


def _check_models(generator: nn.Module, discriminator: nn.Module, features: int, pack: int,
                  latent_dim: int | None) -> int:
    """Check G's output and D's input against the data; returns G's latent size."""
    g_in = _in_features(generator, "latent_dim")
    if g_in is None:
        raise ValueError("cannot infer the generator's latent size: give it a `latent_dim` attribute "
                         "or an nn.Linear first layer")
    if latent_dim is not None and latent_dim != g_in:
        raise ValueError(f"latent_dim={latent_dim} does not match the generator, which takes {g_in} inputs")
    d_in = _in_features(discriminator, "in_dim")
    if d_in is not None and d_in != pack * features:
        packed = f" x pack={pack} = {pack * features}" if pack > 1 else ""
        raise ValueError(f"data has {features} features per sample{packed} but the discriminator takes {d_in}")
    g_out = getattr(generator, "out_dim", None)
    if not isinstance(g_out, int):
        g_out = last_linear(generator).out_features if last_linear(generator) is not None else None
    if g_out is not None and g_out != features:
        raise ValueError(f"the generator makes {g_out} features per sample but the data has {features}")
    return g_in


class _deferred_interrupt:
    """Within the block, the first SIGINT only sets a flag (``bool(flag)`` is True afterwards) so the caller
    can finish a step and save; a second SIGINT raises KeyboardInterrupt at once. Outside the main thread
    (where signal handlers cannot be set) it does nothing."""

    def __enter__(self):
        self.count = 0
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt

    def __bool__(self):
        return self.count > 0

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


class GANTrainer:
    """Trains a generator and a discriminator (D returns logits) with Adam and BCE losses.

    Args:
        generator: maps ``(N, latent_dim)`` noise to ``(N, features)`` samples.
        discriminator: maps ``(N, features)`` to ``(N, 1)`` logits.
        data: ``(N, features...)`` real samples (tensor or array); kept on ``device``, sampled by index.
        batch_size: samples per step, drawn with replacement (so it may exceed N).
        lr, betas: Adam settings for both models (DCGAN's defaults).
        seed: seeds the trainer's RNG, which draws every batch and every noise vector.
        device: defaults to the data's device if it is a tensor on CUDA, else CUDA when present, else CPU.
        kernels: ``"torch"`` (PyTorch ops), ``"triton"`` (fused Triton layers and loss, via ``fastgan.fuse``)
            or ``"auto"`` (triton on CUDA, torch on CPU).
        compile: ``True`` (or a ``torch.compile`` mode such as ``"reduce-overhead"``) compiles the step's
            regions (see ``fastgan.step``); the Triton ops enter as opaque custom ops (no graph breaks).
        cuda_graph: capture whole steps in one CUDA graph (``fastgan.graph``): after ``graph_warmup`` eager
            warm-up steps, each ``step()`` replays ``steps_per_replay`` steps with one launch. CUDA only.
        precision: applied alike to PyTorch's and fastgan's kernels, so comparisons are fair: ``"fp32"``
            (exact fp32), ``"tf32"`` (default: fp32 matmuls on TF32 tensor cores) or ``"bf16"`` (forward
            passes autocast to bf16: bf16 matmul operands, fp32 accumulation, fp32 weights and Adam state).
        fused_optimizer: ``True`` or ``"flat"``: ``FlatAdam`` for both models (parameters and gradients in one
            flat buffer each, the update in one Triton kernel with a device-side step count); ``"torch"``:
            ``torch.optim.Adam(fused=True)``; ``False`` (default): ``torch.optim.Adam``.
        latent_dim: checked against the generator's input size when given.
        real_label: target for real samples in D's loss; < 1 is one-sided label smoothing.

    Stabilisation options (see ``fastgan.step``; all off by default):
        loss: ``"non_saturating"`` (default) or ``"hinge"``.
        lr_g, lr_d: separate learning rates (TTUR); each defaults to ``lr``.
        d_steps: D updates per G update.
        ema: decay of an exponential moving average of G's weights (e.g. 0.999), used by ``sample``.
        pack: PacGAN packing: D sees ``pack`` samples per row, so its input size is ``pack * features``
            and ``batch_size`` must be a multiple of ``pack``.
        instance_noise: std of Gaussian noise added to D's real and fake inputs.
        r1_gamma, r1_every: R1 penalty weight on real data, applied every ``r1_every`` steps.

    Raises ``ValueError`` for inconsistent shapes, bad sizes, unknown ``kernels`` and non-finite data.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, data, *, batch_size: int = 128,
                 lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999), seed: int = 0, device=None,
                 kernels: str = "torch", compile: bool = False, cuda_graph: bool = False,
                 latent_dim: int | None = None, real_label: float = 1.0, loss: str = "non_saturating",
                 lr_g: float | None = None, lr_d: float | None = None, d_steps: int = 1, ema: float | None = None,
                 pack: int = 1, instance_noise: float = 0.0, r1_gamma: float = 0.0, r1_every: int = 16,
                 fused_optimizer: bool = False, steps_per_replay: int = 1, graph_warmup: int = 3,
                 precision: str = "tf32"):
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {', '.join(map(repr, KERNELS))}, got {kernels!r}")
        if compile not in (False, True, *COMPILE_MODES):
            raise ValueError(f"compile must be False, True or a torch.compile mode name "
                             f"({', '.join(COMPILE_MODES)}), got {compile!r}")
        if fused_optimizer is True:
            fused_optimizer = "flat"
        if fused_optimizer not in FUSED_OPTIMIZERS:
            raise ValueError(f"fused_optimizer must be False, True (= 'flat': FlatAdam) or 'torch' "
                             f"(torch.optim.Adam(fused=True)), got {fused_optimizer!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
        steps_per_replay = _positive_int("steps_per_replay", steps_per_replay)
        graph_warmup = _positive_int("graph_warmup", graph_warmup)
        if cuda_graph and compile in CUDAGRAPH_COMPILE_MODES:
            raise ValueError(f"compile={compile!r} makes CUDA graphs of its own (cudagraph trees): use it with "
                             "cuda_graph=False, or compile=True (or 'max-autotune-no-cudagraphs') with "
                             "cuda_graph=True")
        if cuda_graph and r1_gamma:
            raise ValueError("r1_gamma > 0 with cuda_graph=True is not supported: the R1 steps follow a host-side "
                             "schedule that one captured graph cannot vary; use cuda_graph=False")
        if not isinstance(generator, nn.Module) or not isinstance(discriminator, nn.Module):
            raise TypeError("generator and discriminator must be torch.nn.Module instances")
        for name, value in (("lr", lr), ("lr_g", lr if lr_g is None else lr_g), ("lr_d", lr if lr_d is None else lr_d)):
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {loss!r}")
        if loss == "hinge" and real_label != 1.0:
            raise ValueError("real_label (label smoothing) applies to the BCE loss, not to loss='hinge'")
        d_steps = _positive_int("d_steps", d_steps)
        pack = _positive_int("pack", pack)
        r1_every = _positive_int("r1_every", r1_every)
        for name, value in (("instance_noise", instance_noise), ("r1_gamma", r1_gamma)):
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        real_label = check_real_label(real_label)
        if not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if device is None:
            if isinstance(data, torch.Tensor) and data.is_cuda:
                device = data.device
            else:
                device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA device, but the trainer runs on {self.device}")
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())

        self.data = _data.from_tensor(data, device=self.device)
        n, features = self.data.shape
        # batches are drawn with replacement, so any batch size works, even one larger than the data set
        self._batch_size = _positive_int("batch_size", batch_size)
        if batch_size % pack:
            raise ValueError(f"batch_size {batch_size} must be a multiple of pack={pack}")

        self.latent_dim = _check_models(generator, discriminator, features, pack, latent_dim)

        self.kernels = ("triton" if self.device.type == "cuda" else "torch") if kernels == "auto" else kernels
        self.generator = generator.to(self.device)
        self.discriminator = discriminator.to(self.device)
        bce = bce_with_logits
        if self.kernels == "triton":
            from . import ops
            from .nn import fuse
            fuse(self.generator)
            fuse(self.discriminator)
            bce = ops.sigmoid_bce_with_logits

        self.seed = seed
        self.lr, self.betas = float(lr), (float(betas[0]), float(betas[1]))
        self.lr_g = float(lr if lr_g is None else lr_g)
        self.lr_d = float(lr if lr_d is None else lr_d)
        self.rng = torch.Generator(device=self.device).manual_seed(seed)
        if fused_optimizer == "flat":
            self.optimizer_g = FlatAdam(self.generator, lr=self.lr_g, betas=self.betas)
            self.optimizer_d = FlatAdam(self.discriminator, lr=self.lr_d, betas=self.betas)
        else:
            # capturable: the step count and bias corrections live on the device, as a CUDA graph needs
            fused = {"fused": True} if fused_optimizer == "torch" else {}
            self.optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=self.lr_g, betas=self.betas,
                                                capturable=bool(cuda_graph), **fused)
            self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr_d, betas=self.betas,
                                                capturable=bool(cuda_graph), **fused)
        self.real_label = real_label
        self.ema = EMA(self.generator, ema) if ema is not None else None
        self.options = {"loss": loss, "d_steps": d_steps, "pack": pack, "instance_noise": float(instance_noise),
                        "r1_gamma": float(r1_gamma), "r1_every": r1_every, "ema": ema, "compile": compile,
                        "fused_optimizer": fused_optimizer, "cuda_graph": bool(cuda_graph),
                        "steps_per_replay": steps_per_replay, "precision": precision}
        parts = StepParts(self.generator, self.discriminator, self.optimizer_g, self.optimizer_d, self.data,
                          self.batch_size, self.latent_dim, self.rng, bce, self.real_label, loss=loss,
                          d_steps=d_steps, pack=pack, instance_noise=float(instance_noise),
                          r1_gamma=float(r1_gamma), r1_every=r1_every, ema=self.ema, compile=compile,
                          precision=precision)
        self._parts = parts
        self._step = make_step(parts)
        self._graphed = GraphedStep(self._step, self.rng, self.device, steps_per_replay, graph_warmup) \
            if cuda_graph else None
        self.step_count = 0
        self.history: dict[str, list] = {"step": [], "loss_d": [], "loss_g": []}
        # (step, loss_d, loss_g) per eager step, (first step, (k, 2) losses) per graph replay
        self._pending: list[tuple] = []

    @property
    def kernels_run(self) -> str:
        """What the step's layers and loss really run: ``"torch"`` (PyTorch ops), ``"triton"`` (compiled
        Triton kernels, CUDA), ``"triton-interpreter"`` (Triton's CPU interpreter, TRITON_INTERPRET=1: slow,
        for tests) or ``"reference"`` (kernels="triton" where Triton cannot run: the ops' PyTorch reference
        path, the same math unfused)."""
        if self.kernels != "triton":
            return "torch"
        from . import ops
        if not ops.use_triton(self.data):
            return "reference"
        return "triton" if self.data.is_cuda else "triton-interpreter"

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        """A new batch size takes effect at the next step; a captured graph is recorded anew for it."""
        value = _positive_int("batch_size", value)
        if value % self.options["pack"]:
            raise ValueError(f"batch_size {value} must be a multiple of pack={self.options['pack']}")
        self._batch_size = value
        self._parts.batch_size = value
        if self._graphed is not None:
            self._graphed.reset()

    # -- training -------------------------------------------------------------------------------------
    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One D update then one G update. Returns ``(loss_d, loss_g)`` as device tensors (no host sync).

        With ``cuda_graph=True`` one call replays ``steps_per_replay`` steps (the first call also runs the
        warm-up steps and captures) and returns the last step's losses.
        """
        if self._graphed is None:
            return self._eager_step()
        if not self._graphed.captured:
            for loss_d, loss_g in self._graphed.warm_up(self.step_count):
                self.step_count += 1
                self._pending.append((self.step_count, loss_d, loss_g))
            self._graphed.capture(self.step_count)
        with phase("graph.replay"):
            losses = self._graphed.replay()
        self._pending.append((self.step_count + 1, losses))
        self.step_count += losses.shape[0]
        self._bound_pending()
        return losses[-1, 0], losses[-1, 1]

    def _eager_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        loss_d, loss_g = self._step(self.step_count)
        self.step_count += 1
        self._pending.append((self.step_count, loss_d, loss_g))
        self._bound_pending()
        return loss_d, loss_g

    def _bound_pending(self) -> None:
        if len(self._pending) >= 10_000:  # bound the memory of an un-logged run: one sync per 10k entries
            self.flush_losses()

    def _steps_in_next_call(self) -> int:
        if self._graphed is None:
            return 1
        k = self._graphed.steps_per_replay
        return k if self._graphed.captured else self._graphed.warmup + k

    def flush_losses(self) -> list[tuple[int, float, float]]:
        """Read the losses of the steps since the last flush (one host sync) into ``history``."""
        if not self._pending:
            return []
        steps, blocks = [], []
        for entry in self._pending:
            if len(entry) == 3:  # an eager step
                steps.append(entry[0])
                blocks.append(torch.stack(entry[1:])[None])
            else:  # a graph replay of several steps
                steps.extend(range(entry[0], entry[0] + entry[1].shape[0]))
                blocks.append(entry[1])
        values = torch.cat(blocks).float().cpu().tolist()
        self._pending.clear()
        rows = [(s, d, g) for s, (d, g) in zip(steps, values)]
        for s, d, g in rows:
            self.history["step"].append(s)
            self.history["loss_d"].append(d)
            self.history["loss_g"].append(g)
        return rows

    def fit(self, steps: int, *, log_every: int = 100, progress: bool = True,
            checkpoint: str | os.PathLike | None = None, checkpoint_every: int | None = None,
            checkpoint_extra: dict | None = None) -> dict:
        """Run ``steps`` more steps with a progress bar; losses are read every ``log_every`` steps.

        With ``checkpoint``, a checkpoint is written atomically every ``checkpoint_every`` steps (default:
        at every log point) and at the end, and only after the losses since the last one were checked
        finite. A NaN/inf loss raises ``NonFiniteLossError`` at the next log point; the checkpoint file
        then still holds the last good state. ``checkpoint_extra`` is stored in each checkpoint under
        ``"extra"`` (the CLI keeps its model configuration there). Returns ``history``.

        Ctrl-C (SIGINT, in the main thread) lets the step in flight finish, checks the losses, writes the
        checkpoint and raises ``TrainingInterrupted`` (a ``KeyboardInterrupt``); a second Ctrl-C stops at once.
        """
        steps = _positive_int("steps", steps)
        log_every = _positive_int("log_every", log_every)
        checkpoint_every = _positive_int("checkpoint_every", checkpoint_every or log_every)
        end = self.step_count + steps
        # The bar counts the trainer's steps: a resumed run shows 3600/100000, not 0/96400.
        with tqdm(total=end, initial=self.step_count, disable=not progress, unit="step", desc="fastgan",
                  dynamic_ncols=True) as bar, _deferred_interrupt() as interrupted:
            while self.step_count < end:
                before = self.step_count
                # a graph replay runs several steps; what does not fit before `end` runs eagerly
                if self._steps_in_next_call() <= end - before:
                    self.step()
                else:
                    self._eager_step()
                bar.update(self.step_count - before)
                at_end = self.step_count == end or bool(interrupted)
                crossed_log = self.step_count // log_every > before // log_every
                if not crossed_log and not at_end:
                    continue
                rows = self.flush_losses()
                bad = next((r for r in rows if not (math.isfinite(r[1]) and math.isfinite(r[2]))), None)
                if bad is not None:
                    kept = f"; the last good checkpoint is {checkpoint}" if checkpoint and Path(checkpoint).exists() \
                        else ""
                    raise NonFiniteLossError(f"loss became non-finite at step {bad[0]} "
                                             f"(loss_d={bad[1]}, loss_g={bad[2]}){kept}")
                if rows:
                    bar.set_postfix(loss_d=f"{rows[-1][1]:.4f}", loss_g=f"{rows[-1][2]:.4f}", refresh=False)
                if checkpoint is not None and (self.step_count // checkpoint_every > before // checkpoint_every
                                               or at_end):
                    self.save(checkpoint, extra=checkpoint_extra)
                if interrupted:
                    raise TrainingInterrupted(self.step_count, Path(checkpoint) if checkpoint is not None else None)
        return self.history

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, ema: bool | None = None) -> torch.Tensor:
        """``n`` generator samples from noise drawn with its own ``seed`` (training RNG untouched).

        Uses the EMA generator when one is kept (``ema=None`` or ``True``), the raw one with ``ema=False``.
        """
        n = _positive_int("n", n)
        if ema and self.ema is None:
            raise ValueError("this trainer keeps no EMA generator (pass ema=DECAY to GANTrainer)")
        generator = self.ema.module if self.ema is not None and ema is not False else self.generator
        return generate(generator, n, self.latent_dim, seed, self.device)

    # -- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        self.flush_losses()
        return {
            "format": CHECKPOINT_FORMAT, "version": 1, "step": self.step_count,
            "generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
            "optimizer_g": self.optimizer_g.state_dict(), "optimizer_d": self.optimizer_d.state_dict(),
            "rng": self.rng.get_state(), "history": self.history,
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "config": self.config,
        }

    @property
    def config(self) -> dict:
        """Every setting of this trainer, as plain values (stored in checkpoints and the CLI's metrics)."""
        return {"batch_size": self.batch_size, "lr": self.lr, "lr_g": self.lr_g, "lr_d": self.lr_d,
                "betas": list(self.betas), "seed": self.seed, "latent_dim": self.latent_dim,
                "kernels": self.kernels, "real_label": self.real_label, **self.options}

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write everything needed to resume exactly (models, both Adam states, RNG, step, history)."""
        state = self.state_dict()
        if extra is not None:
            state["extra"] = extra
        return save_checkpoint(state, path)

    def load(self, path: str | os.PathLike) -> dict:
        """Resume from ``path``: everything is validated before anything is changed. Returns the state."""
        state = load_checkpoint(path, map_location=self.device)
        try:
            self._check_state(state)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{path} does not fit this trainer: {e}") from e
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.rng.set_state(state["rng"].cpu())
        self.step_count = int(state["step"])
        self._pending.clear()
        if self._graphed is not None:  # optimizer state tensors were replaced: record the graph anew
            self._graphed.reset()
        self.history = {k: list(state["history"][k]) for k in ("step", "loss_d", "loss_g")}
        return state

    def _check_state(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format is {state.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        modules = [("generator", self.generator), ("discriminator", self.discriminator)]
        if self.ema is not None:
            if state.get("ema") is None:
                raise ValueError("this trainer keeps an EMA generator but the checkpoint has none")
            modules.append(("ema", self.ema.module))
        for name, module in modules:
            ours, theirs = module.state_dict(), state[name]
            if set(ours) != set(theirs):
                raise ValueError(f"{name} parameters differ: missing {sorted(set(ours) - set(theirs))}, "
                                 f"unexpected {sorted(set(theirs) - set(ours))}")
            for key, value in ours.items():
                if not isinstance(theirs[key], torch.Tensor) or theirs[key].shape != value.shape:
                    raise ValueError(f"{name}.{key} has shape {getattr(theirs[key], 'shape', None)}, "
                                     f"expected {tuple(value.shape)}")
        for name, opt in (("optimizer_g", self.optimizer_g), ("optimizer_d", self.optimizer_d)):
            if isinstance(opt, FlatAdam):
                for key in ("exp_avg", "exp_avg_sq"):
                    if not isinstance(state[name].get(key), torch.Tensor) or state[name][key].shape != opt.data.shape:
                        raise ValueError(f"{name} is not a FlatAdam state of {opt.data.numel()} parameters "
                                         "(was the checkpoint written with fused_optimizer=False?)")
                continue
            if "param_groups" not in state[name]:
                raise ValueError(f"{name} is not a torch.optim.Adam state (written with fused_optimizer=True?)")
            groups = state[name]["param_groups"]
            if [len(g["params"]) for g in groups] != [len(g["params"]) for g in opt.param_groups]:
                raise ValueError(f"{name} has a different number of parameters")
            params = [p for g in opt.param_groups for p in g["params"]]
            ids = [i for g in groups for i in g["params"]]
            for index, p in zip(ids, params):
                for key, value in state[name]["state"].get(index, {}).items():
                    if key in ("exp_avg", "exp_avg_sq") and value.shape != p.shape:
                        raise ValueError(f"{name} state {key} has shape {tuple(value.shape)}, "
                                         f"expected {tuple(p.shape)}")
        rng = state["rng"]
        if not isinstance(rng, torch.Tensor) or rng.shape != self.rng.get_state().shape:
            raise ValueError("the RNG state has the wrong size")
        if not isinstance(state["step"], int) or state["step"] < 0:
            raise ValueError(f"step must be a non-negative integer, got {state['step']!r}")
        for k in ("step", "loss_d", "loss_g"):
            if not isinstance(state["history"][k], list):
                raise ValueError(f"history[{k!r}] must be a list")
