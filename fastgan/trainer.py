"""GANTrainer: owns the models, optimizers, data and RNG of one run; runs steps, logs, checkpoints.

Orchestration only: the settings are a ``TrainConfig`` (``fastgan.config``), the step is built in
``fastgan.step`` (and captured by ``fastgan.graph``), the losses are kept by ``fastgan.history.LossLog``
and the checkpoint schema lives in ``fastgan.checkpoint``.
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
from .checkpoint import TRAINER_FORMAT, CheckpointError, check_trainer_state, load_checkpoint, save_checkpoint
from .augment import Augment, parse_transforms
from .config import KERNELS, TrainConfig, _positive_int, resolve_kernels
from .ema import EMA
from .graph import GraphedStep
from .history import LossLog
from .losses import bce_with_logits
from .models import _check_calibrate, _guided_sample, _sample_guide, calibrate_discriminator, check_gan_models, generate
from .optim import FlatAdam
from .phases import phase
from .spectral import SpectralNorm
from .step import StepParts, make_step

__all__ = ["GANTrainer", "NonFiniteLossError", "TrainingInterrupted", "KERNELS"]


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


def training_device(config: TrainConfig, data) -> torch.device:
    """Where a trainer runs: ``config.device``, else the data's CUDA device, else CUDA when present, else the
    CPU (a CUDA device with its index); ``ValueError`` for a CUDA graph off CUDA."""
    device = config.device
    if device is None:
        device = data.device if isinstance(data, torch.Tensor) and data.is_cuda else (
            "cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if config.cuda_graph and device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device, but the trainer runs on {device}")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _l1_subgradient(l1: float):
    """An optimizer pre-step hook adding ``l1 * sign(w)`` to every gradient: two foreach launches,
    capturable, no host sync (FlatAdam does the same inside its kernel)."""
    def hook(optimizer, args, kwargs):
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if params:
            torch._foreach_add_([p.grad for p in params], torch._foreach_sign(params), alpha=l1)
    return hook


class GANTrainer:
    """Trains a generator and a discriminator (D returns logits) with Adam and BCE losses.

    Args:
        generator: maps ``(N, latent_dim)`` noise to ``(N, features)`` samples.
        discriminator: maps ``(N, features)`` to ``(N, 1)`` logits.
        data: ``(N, features...)`` real samples (tensor or array); kept on the device, sampled by index.
        config: a ``TrainConfig``; or give its settings as keywords (``batch_size=64, lr=1e-4, ...``), or
            both (the keywords then replace the config's values).

    Every setting is documented on ``TrainConfig``. Raises ``ValueError`` for bad settings, inconsistent
    shapes and non-finite data.
    """

    def __new__(cls, generator=None, discriminator=None, data=None, config=None, **settings):
        """``replicas=K`` (a keyword or the config's) makes a ``fastgan.replicas.ReplicaTrainer``."""
        replicas = settings.get("replicas", getattr(config, "replicas", None))
        if cls is GANTrainer and replicas is not None:
            from .replicas import ReplicaTrainer
            cls = ReplicaTrainer
        return super().__new__(cls)

    def __init__(self, generator: nn.Module, discriminator: nn.Module, data, config: TrainConfig | None = None, *,
                 labels=None, **settings):
        if config is not None and not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a fastgan.TrainConfig, got {type(config).__name__} (settings go "
                            "in as keywords: GANTrainer(G, D, data, batch_size=64, ...))")
        config = TrainConfig(**settings) if config is None else config.replace(**settings)
        if config.replicas is not None:   # (GANTrainer itself makes a ReplicaTrainer; a subclass of it cannot)
            raise ValueError(f"replicas={config.replicas} trains with fastgan.replicas.ReplicaTrainer: subclass "
                             f"that one (a {type(self).__name__} trains one GAN)")
        if not isinstance(generator, nn.Module) or not isinstance(discriminator, nn.Module):
            raise TypeError("generator and discriminator must be torch.nn.Module instances")
        self.device = training_device(config, data)
        self.config = config
        self.data = _data.from_tensor(data, device=self.device)
        self.latent_dim = check_gan_models(generator, discriminator, self.data.shape[1], config.pack,
                                           config.latent_dim)
        self.labels, self.num_classes = self._check_labels(generator, discriminator, labels, config)
        self.kernels = resolve_kernels(config, self.device)
        self.generator = generator.to(self.device)
        self.discriminator = discriminator.to(self.device)
        bce = bce_with_logits
        if self.kernels in ("triton", "triton-mlp"):
            from . import ops
            from .nn import fuse
            whole = self.kernels == "triton-mlp"
            self.generator = fuse(self.generator, whole=whole)
            self.discriminator = fuse(self.discriminator, whole=whole)
            bce = ops.sigmoid_bce_with_logits
        elif self.kernels == "cuda":   # the native library: a GPU and the CMake build, or a clear error now
            from . import native
            from .nn import fuse
            if self.device.type != "cuda":
                raise ValueError(f"kernels='cuda' runs fastgan's native CUDA kernels: it needs a CUDA device, but the "
                                 f"trainer runs on {self.device} (use kernels='torch' or 'triton' there)")
            native.load()
            self.generator = fuse(self.generator, whole=True, backend="cuda")
            self.discriminator = fuse(self.discriminator, whole=True, backend="cuda")
            bce = native.cuda_bce_with_logits
        # data-parallel: the ranks' settings compared, rank 0's weights given to all, before anything is built
        self.parallel = self._data_parallel(config) if config.data_parallel else None
        self.rng = torch.Generator(device=self.device).manual_seed(config.seed)
        self.optimizer_g = self._optimizer(self.generator, self.lr_g, config.weight_decay_g, config.l1_g)
        self.optimizer_d = self._optimizer(self.discriminator, self.lr_d, config.weight_decay_d, config.l1_d)
        self.ema = EMA(self.generator, config.ema) if config.ema is not None else None
        self.augment = Augment(parse_transforms(config.augment), self.data.shape[1], config.augment_start_p,
                               config.augment_target, self.rng, self.device) if config.augment else None
        # after the optimizers: FlatAdam has put D's weights in one buffer, which one launch then normalises
        self.spectral = SpectralNorm(self.discriminator, config.seed) if config.spectral_norm else None
        if self.parallel is not None:   # every gradient averaged over the ranks before each update
            self.parallel.average(self.optimizer_d)
            self.parallel.average(self.optimizer_g)
        self._parts = StepParts(self.generator, self.discriminator, self.optimizer_g, self.optimizer_d, self.data,
                                self.latent_dim, self.rng, bce, config, self.ema, self.augment, self.spectral,
                                self.labels, self.parallel)
        self.sampler = None
        self.step_path = "generic"
        if self.kernels == "triton-mlp":
            from . import ops
            from .mlp_step import DeviceSampler, fused_step_blocker, make_fused_step
            blocker = fused_step_blocker(config, self.generator, self.discriminator, self.optimizer_g,
                                         self.optimizer_d, ops.use_triton(self.data))
            if blocker is None:
                self.sampler = DeviceSampler(config.seed, self.device) if config.sampler != "torch" else None
                self._step = make_fused_step(self._parts, self.sampler)
                self.step_path = "fused"
            elif config.sampler == "philox":
                raise ValueError(f"sampler='philox' needs triton-mlp's fused step, which this run cannot use: "
                                 f"{blocker}")
            else:
                self.step_path = f"generic ({blocker})"
        if self.step_path != "fused":
            self._step = make_step(self._parts)
        self._graphed = GraphedStep(self._step, self.rng, self.device, config.steps_per_replay,
                                    config.graph_warmup) if config.cuda_graph else None
        self.step_count = 0
        self._lr_factor = 1.0   # what the optimizers were made with; lr_schedule changes it (_schedule_lr)
        self.losses = LossLog()

    def _check_labels(self, generator, discriminator, labels, config) -> tuple[torch.Tensor | None, int | None]:
        """The labels on the device (int64), and the number of classes; ValueError where models and labels
        disagree. Conditional models are those with a ``num_classes`` attribute (``ConditionalMLPGenerator``,
        ``ProjectionDiscriminator``): G(z, y) and D(x, y)."""
        from .models import check_labels
        g_classes = getattr(generator, "num_classes", None)
        d_classes = getattr(discriminator, "num_classes", None)
        if labels is None:
            if g_classes is not None or d_classes is not None:
                raise ValueError("the models are conditional (they have num_classes) but no labels were given: "
                                 "GANTrainer(G, D, data, labels=y)")
            return None, None
        if g_classes is None or d_classes is None:
            which = "generator" if g_classes is None else "discriminator"
            raise ValueError(f"labels were given but the {which} is not conditional (no num_classes): use "
                             "fastgan.ConditionalMLPGenerator and fastgan.ProjectionDiscriminator")
        if g_classes != d_classes:
            raise ValueError(f"the generator has {g_classes} classes and the discriminator {d_classes}")
        if config.pack > 1:
            raise ValueError("pack > 1 is not available for conditional GANs")
        if not isinstance(labels, torch.Tensor):
            labels = torch.as_tensor(labels)
        check_labels(labels, g_classes, self.data.shape[0])
        return labels.to(self.device, torch.int64).contiguous(), g_classes

    def _data_parallel(self, config: TrainConfig):
        """This rank's ``DataParallel``: the ranks' settings compared (every rank reaches that collective
        before anything it could refuse alone), then rank 0's weights broadcast to every rank, as DDP does."""
        from . import distributed
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise ValueError("data_parallel=True needs torch.distributed's process group: start the run with "
                             "torchrun (fastgan train does the rest) or call torch.distributed.init_process_group")
        distributed.check_same_config({k: v for k, v in config.to_dict().items() if k != "device"})
        world = distributed.world_size()
        if config.samples_per_step % (world * config.pack):
            raise ValueError(f"data_parallel: {config.samples_per_step} samples per step do not split into "
                             f"{world} equal slices of whole packs of {config.pack}: use a batch size that is a "
                             f"multiple of {world * config.pack}")
        distributed.broadcast_state([self.generator, self.discriminator])
        return distributed.DataParallel()

    def _optimizer(self, module: nn.Module, lr: float, weight_decay: float, l1: float):
        config = self.config
        if config.fused_optimizer == "flat" or (self.kernels == "triton-mlp" and not config.fused_optimizer):
            # the regularisers inside its one kernel (triton-mlp's fused step updates through it)
            return FlatAdam(module, lr=lr, betas=config.betas, decoupled_weight_decay=weight_decay, l1=l1)
        # capturable: the step count and bias corrections live on the device, as a CUDA graph needs
        fused = {"fused": True} if config.fused_optimizer == "torch" else {}
        kind, decay = (torch.optim.AdamW, {"weight_decay": weight_decay}) if weight_decay else (torch.optim.Adam, {})
        optimizer = kind(module.parameters(), lr=lr, betas=config.betas, capturable=config.cuda_graph,
                         **decay, **fused)
        if l1:
            optimizer.register_step_pre_hook(_l1_subgradient(l1))
        return optimizer

    # the settings, as attributes (read-only views of ``config``)
    seed = property(lambda self: self.config.seed)
    lr = property(lambda self: self.config.lr)
    lr_g = property(lambda self: self.config.generator_lr)
    lr_d = property(lambda self: self.config.discriminator_lr)
    betas = property(lambda self: self.config.betas)
    real_label = property(lambda self: self.config.real_label)
    history = property(lambda self: self.losses.history, doc="``{'step', 'loss_d', 'loss_g'}`` lists so far")

    @property
    def kernels_run(self) -> str:
        """What the step's layers and loss really run: ``"torch"`` (PyTorch ops), ``"triton"`` (compiled
        Triton kernels, CUDA; per layer or whole MLPs as ``kernels`` says, see also ``step_path``),
        ``"triton-interpreter"`` (Triton's CPU interpreter, TRITON_INTERPRET=1: slow,
        for tests), ``"reference"`` (kernels="triton" where Triton cannot run: the ops' PyTorch reference
        path, the same math unfused) or ``"cuda"`` (the native kernels; ``"cuda (D: triton whole-MLP)"`` when
        a model is wider or deeper than they take and runs the Triton whole-MLP kernels instead, ``"... triton
        per layer"`` when it is no plain MLP and runs the fused layers)."""
        if self.kernels == "cuda":
            from .nn import FusedLinear, FusedMLP
            fell_back = []
            for name, model in (("G", self.generator), ("D", self.discriminator)):
                modules = list(model.modules())
                if any(isinstance(m, FusedMLP) and m.backend != "cuda" for m in modules):
                    fell_back.append(f"{name}: triton whole-MLP")
                elif any(isinstance(m, FusedLinear) for m in modules) and not any(isinstance(m, FusedMLP)
                                                                                  for m in modules):
                    fell_back.append(f"{name}: triton per layer")
            return f"cuda ({', '.join(fell_back)})" if fell_back else "cuda"
        if self.kernels not in ("triton", "triton-mlp"):
            return "torch"
        from . import ops
        if not ops.use_triton(self.data):
            return "reference"
        return "triton" if self.data.is_cuda else "triton-interpreter"

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        """A new batch size takes effect at the next step; a captured graph is recorded anew for it."""
        config = self.config.replace(batch_size=value)  # validated there
        if self.parallel is not None and config.samples_per_step % (self.parallel.world * config.pack):
            raise ValueError(f"data_parallel: batch size {value} does not split into {self.parallel.world} equal "
                             f"slices of whole packs of {config.pack}")
        self.config = self._parts.config = config
        if self._graphed is not None:
            self._graphed.reset()

    # -- training -------------------------------------------------------------------------------------
    def _schedule_lr(self) -> None:
        """Give both optimizers the learning rates ``lr_schedule`` sets for the next update (host-side, only
        where the factor changed; a captured graph baked the old rates in, so it is recorded anew)."""
        factor = self.config.lr_factor(self.step_count)
        if factor == self._lr_factor:
            return
        self._set_lr_factor(factor)
        self._lr_factor = factor
        if self._graphed is not None:
            self._graphed.reset()

    def _set_lr_factor(self, factor: float) -> None:
        for optimizer, base in ((self.optimizer_g, self.lr_g), (self.optimizer_d, self.lr_d)):
            if isinstance(optimizer, FlatAdam):
                optimizer.lr = base * factor
            else:
                for group in optimizer.param_groups:
                    group["lr"] = base * factor

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One D update then one G update. Returns ``(loss_d, loss_g)`` as device tensors (no host sync).

        With ``cuda_graph=True`` one call replays ``steps_per_replay`` steps (the first call also runs the
        warm-up steps and captures) and returns the last step's losses; a call whose steps would span a change
        of ``lr_schedule``'s learning rate runs one eager step instead (the graph is recorded anew after it).
        """
        if self._graphed is None:
            return self._eager_step()
        self._schedule_lr()   # (first: a change of rate forgets the graph, which adds warm-up steps to this call)
        if self.config.lr_changes_within(self.step_count, self._steps_in_next_call()):
            return self._eager_step()   # a replay never spans a change of learning rate: that step runs eagerly
        if not self._graphed.captured:
            for loss_d, loss_g in self._graphed.warm_up(self.step_count):
                self.step_count += 1
                self.losses.add_step(self.step_count, loss_d, loss_g)
            self._graphed.capture(self.step_count)
        with phase("graph.replay"):
            losses = self._graphed.replay()
        self.losses.add_replay(self.step_count + 1, losses)
        self.step_count += losses.shape[0]
        return losses[-1, 0], losses[-1, 1]

    def _eager_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._schedule_lr()
        loss_d, loss_g = self._step(self.step_count)
        self.step_count += 1
        self.losses.add_step(self.step_count, loss_d, loss_g)
        return loss_d, loss_g

    def _steps_in_next_call(self) -> int:
        if self._graphed is None:
            return 1
        k = self._graphed.steps_per_replay
        return k if self._graphed.captured else self._graphed.warmup + k

    @staticmethod
    def _row_is_finite(row) -> bool:
        return math.isfinite(row[1]) and math.isfinite(row[2])

    @staticmethod
    def _postfix(row) -> dict:
        return {"loss_d": f"{row[1]:.4f}", "loss_g": f"{row[2]:.4f}"}

    def flush_losses(self) -> list[tuple[int, float, float]]:
        """Read the losses of the steps since the last flush (one host sync) into ``history``."""
        return self.losses.flush()

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
                self._schedule_lr()   # (a change of rate forgets the graph: the next call's size depends on it)
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
                bad = next((r for r in rows if not self._row_is_finite(r)), None)
                if bad is not None:
                    kept = f"; the last good checkpoint is {checkpoint}" if checkpoint and Path(checkpoint).exists() \
                        else ""
                    raise NonFiniteLossError(f"loss became non-finite at step {bad[0]} "
                                             f"(loss_d={bad[1]}, loss_g={bad[2]}){kept}")
                if rows:
                    bar.set_postfix(self._postfix(rows[-1]), refresh=False)
                if checkpoint is not None and (self.step_count // checkpoint_every > before // checkpoint_every
                                               or at_end):
                    self.save(checkpoint, extra=checkpoint_extra)
                if interrupted:
                    raise TrainingInterrupted(self.step_count, Path(checkpoint) if checkpoint is not None else None)
        return self.history

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, ema: bool | None = None, labels=None,
               rejection: bool | float = False, calibrate: int = 0, calibrate_lr: float = 1e-4,
               calibrate_batch: int = 500, metropolis: int = 0, sharpen: float = 1.0,
               metropolis_step: float = 1.0) -> torch.Tensor:
        """``n`` generator samples from noise drawn with its own ``seed`` (training RNG untouched).

        Uses the EMA generator when one is kept (``ema=None`` or ``True``), the raw one with ``ema=False``.
        A conditional GAN takes ``labels``: a class for all, or one per sample (default 0, 1, ..., C-1, 0, ...).
        ``rejection=True`` (or a quantile in [0, 1), default 0.8): discriminator rejection sampling, G's
        candidates kept by D's verdict (``fastgan.models.rejection_sample``; the rate accepted is in
        ``self.last_acceptance``; a packed D scores each candidate with fixed partners). Not for conditional GANs.
        ``metropolis=L`` instead: Metropolis-Hastings over D's scores, chains of ``L`` proposals
        (``fastgan.models.metropolis_sample``: the share of proposals taken is in ``self.last_acceptance``); it
        weighs G's samples by the density ratio D's logit estimates, so calibrate D with it; ``sharpen`` (its
        beta, >= 1) weighs them by that ratio to the power beta; ``metropolis_step`` (in (0, 1], default 1:
        independent proposals) proposes in G's latent space at that step (``step_size``: small steps refine each
        sample within its mode and keep G's mode shares).
        ``calibrate=N`` (with either): first train a copy of D ``N`` steps against the generator sampled
        from, held fixed, on the training data (``fastgan.models.calibrate_discriminator``), so D judges that
        generator (the EMA one included) and the modes keep their balance; the trained D is untouched.
        The copy trains with Adam at ``calibrate_lr`` on ``calibrate_batch`` real and as many generated rows a step
        (after a run whose rate stepped down, its final D rate with a larger batch kept the modes more even:
        benchmarks/results/cpu/2026-11-28-mixture-probes-3.md).
        """
        n = _positive_int("n", n)
        guide = _sample_guide(rejection, metropolis, sharpen, metropolis_step)   # refused before any work
        guided = guide["quantile"] is not None or guide["chain"] is not None
        calibrate = _check_calibrate(calibrate, guided, calibrate_lr, calibrate_batch)
        if ema and self.ema is None:
            raise ValueError("this trainer keeps no EMA generator (pass ema=DECAY to GANTrainer)")
        generator = self.ema.module if self.ema is not None and ema is not False else self.generator
        if guided:
            if labels is not None:
                raise ValueError("rejection and Metropolis-Hastings sampling are for unconditional GANs")
            training = self.discriminator.training
            self.discriminator.eval()
            try:
                judge = self.discriminator if not calibrate else calibrate_discriminator(
                    generator, self.discriminator, self.data, self.latent_dim, calibrate, seed, self.device,
                    self.config.pack, lr=calibrate_lr, batch=calibrate_batch)
                samples, self.last_acceptance = _guided_sample(generator, judge, n, self.latent_dim, seed,
                                                               self.device, guide, self.config.pack)
            finally:
                self.discriminator.train(training)
            return samples
        return generate(generator, n, self.latent_dim, seed, self.device, labels=labels)

    # -- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume exactly (the schema: ``fastgan.checkpoint``)."""
        self.flush_losses()
        return {
            "format": TRAINER_FORMAT, "version": 1, "step": self.step_count,
            "generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
            "optimizer_g": self.optimizer_g.state_dict(), "optimizer_d": self.optimizer_d.state_dict(),
            "rng": self.rng.get_state(), "history": self.history,
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "augment": self.augment.state_dict() if self.augment is not None else None,
            "sampler": self.sampler.state_dict() if self.sampler is not None else None,
            "spectral_norm": self.spectral.state_dict() if self.spectral is not None else None,
            "config": self.config.to_dict(),
        }

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write everything needed to resume exactly (models, both Adam states, RNG, step, history)."""
        state = self.state_dict()
        if extra is not None:
            state["extra"] = extra
        return save_checkpoint(state, path)

    def load(self, path: str | os.PathLike) -> dict:
        """Resume from ``path``: everything is validated before anything is changed. Returns the state."""
        state = load_checkpoint(path, map_location=self.device)
        modules = {"generator": self.generator, "discriminator": self.discriminator}
        if self.ema is not None:
            modules["ema"] = self.ema.module
        try:
            check_trainer_state(state, modules, {"optimizer_g": self.optimizer_g, "optimizer_d": self.optimizer_d},
                                self.rng.get_state())
            if self.augment is not None and not isinstance(state.get("augment"), dict):
                raise ValueError("this trainer augments D's inputs but the checkpoint has no augmentation state")
            if self.spectral is not None and not isinstance(state.get("spectral_norm"), dict):
                raise ValueError("this trainer normalises D spectrally but the checkpoint has no spectral-norm state")
            if self.spectral is not None:
                if state["spectral_norm"]["u"].shape != self.spectral.u.shape:
                    raise ValueError("the checkpoint's spectral-norm state does not fit this discriminator")
            if self.sampler is not None:
                if not isinstance(state.get("sampler"), dict):
                    raise ValueError("this trainer draws batches with the Philox sampler but the checkpoint has no "
                                     "sampler state (it was written by another sampler: pass sampler='torch')")
                self.sampler.check_state(state["sampler"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{path} does not fit this trainer: {e}") from e
        for name, module in modules.items():
            module.load_state_dict(state[name])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        if self.augment is not None:
            self.augment.load_state_dict(state["augment"])
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])
        if self.spectral is not None:
            self.spectral.load_state_dict(state["spectral_norm"])
        self.rng.set_state(state["rng"].cpu())
        self.step_count = int(state["step"])
        # the optimizers' states carried the saved rates: with a schedule, the next step sets this run's (without
        # one, the saved rates stay, as they always have: a rate changed by hand survives a resume)
        self._lr_factor = None if self.config.lr_schedule else 1.0
        self.losses.reset(state["history"])
        if self._graphed is not None:  # optimizer state tensors were replaced: record the graph anew
            self._graphed.reset()
        return state
