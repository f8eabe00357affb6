"""The one training loop both trainers compose: eager steps or CUDA-graph replays, the learning-rate
schedule, the loss log, and ``fit`` with its checkpoints, Ctrl-C and the non-finite stop.

A trainer builds a ``TrainingLoop`` from its step (``step(index) -> (loss_d, loss_g)``), the RNGs a graph
must capture, and three small functions of its own: how to set the learning-rate factor, whether a logged
row is finite and what the progress bar shows. It keeps the models, optimizers and checkpoint schema.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import data as _data
from ..checkpoint import save_checkpoint
from ..checks import positive_int
from ..log import say
from ..nn.checks import check_gan_models, check_labels
from ..phases import phase
from .config import TrainConfig
from .graph import GraphedStep
from .history import LossLog
from .tensorboard import SAMPLES, Board

__all__ = ["Trainer", "TrainingLoop", "NonFiniteLossError", "TrainingInterrupted", "training_device"]


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


class TrainingLoop:
    """Runs a trainer's steps: ``step()`` (one eager step, or one graph replay of ``steps_per_replay`` steps) and
    ``fit(steps)``. ``count`` is the number of steps run; ``losses`` their log."""

    def __init__(self, step: Callable[[int], tuple], config: TrainConfig, rngs, device: torch.device,
                 set_lr_factor: Callable[[float], None], row_is_finite: Callable[[tuple], bool],
                 postfix: Callable[[tuple], dict], graph_optional: bool = False):
        self.config = config
        # the graph was the fast path's choice: a step it cannot capture then runs eagerly, said in one line
        self.graph_optional = graph_optional
        self.set_lr_factor = set_lr_factor
        self.row_is_finite, self.postfix = row_is_finite, postfix
        self.graphed = GraphedStep(step, rngs, device, config.steps_per_replay,
                                   config.graph_warmup) if config.cuda_graph else None
        self.step_fn = step
        self.count = 0
        self.lr_factor: float | None = 1.0   # what the optimizers were made with; None: set it at the next step
        self.mmd = config.mmd_at(0)   # the MMD term's weighting (None: off) a captured graph holds
        self.losses = LossLog()

    def replace_step(self, step: Callable[[int], tuple]) -> None:
        """Run ``step`` from the next call on (a captured graph is recorded anew for it)."""
        self.step_fn = step
        if self.graphed is not None:
            self.graphed.step = step
            self.graphed.reset()

    def forget_graph(self) -> None:
        """Record the graph anew at the next replay (state its capture baked in has changed)."""
        if self.graphed is not None:
            self.graphed.reset()

    def restart(self, count: int, history: dict, lr_factor: float | None) -> None:
        """Go on from a checkpoint's step count and history; ``lr_factor=None``: the next step sets the
        schedule's rate."""
        self.count = count
        self.lr_factor = lr_factor
        self.mmd = self.config.mmd_at(count)
        self.losses.reset(history)
        self.forget_graph()

    def schedule(self) -> None:
        """Give the optimizers the learning rates ``lr_schedule`` sets for the next update (host-side, only
        where the factor changed); a captured graph baked the old rates and the MMD term (its start, its power)
        in, so where either changed it is recorded anew."""
        factor, mmd = self.config.lr_factor(self.count), self.config.mmd_at(self.count)
        if factor != self.lr_factor:
            self.set_lr_factor(factor)
            self.lr_factor = factor
            self.forget_graph()
        if mmd != self.mmd:
            self.mmd = mmd
            self.forget_graph()

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One eager step, or with a CUDA graph one replay (the first call also warms up and captures); a call
        whose steps would span a change of ``lr_schedule``'s rate or of the MMD term (its start, its power) runs
        one eager step instead."""
        if self.graphed is None:
            return self.eager_step()
        self.schedule()   # (first: a change of rate forgets the graph, which adds warm-up steps to this call)
        if self.config.schedule_changes_within(self.count, self.steps_in_next_call()):
            return self.eager_step()   # a replay never spans a change of learning rate: that step runs eagerly
        if not self.graphed.captured:
            for loss_d, loss_g in self.graphed.warm_up(self.count):
                self.count += 1
                self.losses.add_step(self.count, loss_d, loss_g)
            try:
                self.graphed.capture(self.count)
            except Exception as e:  # noqa: BLE001 - whatever a module does that a graph cannot hold
                if not self.graph_optional:
                    raise
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
                say(f"no CUDA graph: the step cannot be captured ({reason}); it runs eagerly from here")
                self.graphed = None
                return loss_d, loss_g
        with phase("graph.replay"):
            losses = self.graphed.replay()
        self.losses.add_replay(self.count + 1, losses)
        self.count += losses.shape[0]
        return losses[-1, 0], losses[-1, 1]

    def eager_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.schedule()
        loss_d, loss_g = self.step_fn(self.count)
        self.count += 1
        self.losses.add_step(self.count, loss_d, loss_g)
        return loss_d, loss_g

    def steps_in_next_call(self) -> int:
        if self.graphed is None:
            return 1
        k = self.graphed.steps_per_replay
        return k if self.graphed.captured else self.graphed.warmup + k

    def fit(self, steps: int, save: Callable[[str | os.PathLike, dict | None], object], *, log_every: int = 100,
            progress: bool = True, checkpoint: str | os.PathLike | None = None, checkpoint_every: int | None = None,
            checkpoint_extra: dict | None = None, on_log: Callable[[list], None] | None = None) -> dict:
        """``steps`` more steps (the trainers' ``fit`` documents it); ``save(path, extra)`` writes a checkpoint,
        ``on_log(rows)`` gets each log point's finite loss rows."""
        steps = positive_int("steps", steps)
        log_every = positive_int("log_every", log_every)
        checkpoint_every = positive_int("checkpoint_every", checkpoint_every or log_every)
        end = self.count + steps
        # The bar counts the trainer's steps: a resumed run shows 3600/100000, not 0/96400.
        with tqdm(total=end, initial=self.count, disable=not progress, unit="step", desc="fastgan",
                  dynamic_ncols=True) as bar, _deferred_interrupt() as interrupted:
            while self.count < end:
                before = self.count
                self.schedule()   # (a change of rate forgets the graph: the next call's size depends on it)
                # a graph replay runs several steps; what does not fit before `end` runs eagerly
                if self.steps_in_next_call() <= end - before:
                    self.step()
                else:
                    self.eager_step()
                bar.update(self.count - before)
                at_end = self.count == end or bool(interrupted)
                crossed_log = self.count // log_every > before // log_every
                if not crossed_log and not at_end:
                    continue
                rows = self.losses.flush()
                bad = next((r for r in rows if not self.row_is_finite(r)), None)
                if bad is not None:
                    kept = f"; the last good checkpoint is {checkpoint}" if checkpoint and Path(checkpoint).exists() \
                        else ""
                    raise NonFiniteLossError(f"loss became non-finite at step {bad[0]} "
                                             f"(loss_d={bad[1]}, loss_g={bad[2]}){kept}")
                if rows:
                    bar.set_postfix(self.postfix(rows[-1]), refresh=False)
                    if on_log is not None:
                        on_log(rows)
                if checkpoint is not None and (self.count // checkpoint_every > before // checkpoint_every
                                               or at_end):
                    save(checkpoint, checkpoint_extra)
                if interrupted:
                    raise TrainingInterrupted(self.count, Path(checkpoint) if checkpoint is not None else None)
        return self.losses.history


class Trainer:
    """What both trainers share over their ``loop`` (a ``TrainingLoop``) and ``config``: the settings as
    read-only attributes, ``fit``, the loss log and ``save``. Each trainer keeps its own models, step and
    checkpoint schema (``state_dict``/``load``)."""

    seed = property(lambda self: self.config.seed)
    lr = property(lambda self: self.config.lr)
    lr_g = property(lambda self: self.config.generator_lr)
    lr_d = property(lambda self: self.config.discriminator_lr)
    betas = property(lambda self: self.config.betas)
    real_label = property(lambda self: self.config.real_label)
    step_count = property(lambda self: self.loop.count, doc="steps run so far (resumed runs included)")
    losses = property(lambda self: self.loop.losses)
    history = property(lambda self: self.loop.losses.history, doc="``{'step', 'loss_d', 'loss_g'}`` lists so far")
    batch_size = property(lambda self: self.config.batch_size,
                          lambda self, value: self._set_batch_size(value),
                          doc="settable: a new batch size takes effect at the next step (a graph is recorded anew)")

    def _take(self, generator: nn.Module, discriminator: nn.Module, data, config: TrainConfig, labels) -> None:
        """What every trainer does first: the models' types checked, the device the run takes, the data on it,
        G and D checked against it, and against the labels (``ValueError``/``TypeError`` naming the problem,
        before anything is built)."""
        if not isinstance(generator, nn.Module) or not isinstance(discriminator, nn.Module):
            raise TypeError("generator and discriminator must be torch.nn.Module instances")
        self.device = training_device(config, data)
        shape = tuple(data.shape if hasattr(data, "shape") else np.shape(data))
        # (C, H, W) of image data (its samples reach D in that shape), None for rows of features
        self.sample_shape = shape[1:] if len(shape) > 2 else None
        self.data = _data.from_tensor(data, device=self.device)
        self.latent_dim = check_gan_models(generator, discriminator, self.data.shape[1], config.pack,
                                           config.latent_dim)
        self.labels, self.num_classes = self._check_labels(generator, discriminator, labels, config)

    def _check_labels(self, generator, discriminator, labels, config) -> tuple[torch.Tensor | None, int | None]:
        """The labels on the device (int64), and the number of classes; ValueError where models and labels
        disagree. Conditional models are those with a ``num_classes`` attribute (``ConditionalMLPGenerator``,
        ``ProjectionDiscriminator``): G(z, y) and D(x, y)."""
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

    def flush_losses(self) -> list[tuple]:
        """Read the losses of the steps since the last flush (one host sync) into ``history``."""
        return self.loop.losses.flush()

    def fit(self, steps: int, *, log_every: int = 100, progress: bool = True,
            checkpoint: str | os.PathLike | None = None, checkpoint_every: int | None = None,
            checkpoint_extra: dict | None = None, log_dir: str | os.PathLike | None = None) -> dict:
        """Run ``steps`` more steps with a progress bar; losses are read every ``log_every`` steps.

        With ``checkpoint``, a checkpoint is written atomically every ``checkpoint_every`` steps (default:
        at every log point) and at the end, and only after the losses since the last one were checked
        finite. A NaN/inf loss raises ``NonFiniteLossError`` at the next log point; the checkpoint file
        then still holds the last good state. ``checkpoint_extra`` is stored in each checkpoint under
        ``"extra"`` (the CLI keeps its model configuration there). Returns ``history``.

        Ctrl-C (SIGINT, in the main thread) lets the step in flight finish, checks the losses, writes the
        checkpoint and raises ``TrainingInterrupted`` (a ``KeyboardInterrupt``); a second Ctrl-C stops at once.

        ``log_dir``: the losses go to TensorBoard at every log point, and a grid of samples at the end
        (``fastgan.train.tensorboard``; the optional extra ``fastgan[tensorboard]``).
        """
        board = Board(log_dir) if log_dir is not None else None
        try:
            history = self.loop.fit(steps, self.save, log_every=log_every, progress=progress, checkpoint=checkpoint,
                                    checkpoint_every=checkpoint_every, checkpoint_extra=checkpoint_extra,
                                    on_log=board.losses if board is not None else None)
            if board is not None:
                board.samples(self._pictured(SAMPLES), self.sample_shape, self.step_count)
        finally:
            if board is not None:
                board.close()
        return history

    def _pictured(self, n: int) -> torch.Tensor:
        """The ``n`` samples a picture of the run shows."""
        return self.sample(n)

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write everything needed to resume exactly (models, optimizer states, RNG, step, history)."""
        state = self.state_dict()
        if extra is not None:
            state["extra"] = extra
        return save_checkpoint(state, path)
