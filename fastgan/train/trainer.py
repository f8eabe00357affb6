"""GANTrainer: one GAN's models, optimizers, data and RNG, composed with the training loop.

The settings are a ``TrainConfig``; the backend (``fastgan.train.backends``) converts the modules and builds
the step; ``TrainingLoop`` runs it (eagerly or in a CUDA graph); ``fastgan.train.checkpoints`` holds the
checkpoint schema. ``GANTrainer(..., replicas=K)`` makes a ``ReplicaTrainer`` instead.
"""
from __future__ import annotations

import math
import os
import warnings

import torch
from torch import nn

from ..checks import positive_int
from ..log import say
from ..nn.checks import begins_with_convolution
from ..nn.adapters import Logits, Shaped, final_activation, final_sigmoid
from ..nn.spectral import SpectralNorm
from ..optim import EMA, FlatAdam
from ..sampling import SampleOptions
from . import distributed
from .augment import Augment, parse_transforms
from .backends import plan
from .checkpoints import load_trainer, trainer_state
from .config import TrainConfig, config_from
from .losses import gan_losses
from .loop import NonFiniteLossError, Trainer, TrainingInterrupted, TrainingLoop
from .replicas import ReplicaTrainer
from .parts import StepParts

__all__ = ["GANTrainer", "NonFiniteLossError", "TrainingInterrupted"]


def _l1_subgradient(l1: float):
    """An optimizer pre-step hook adding ``l1 * sign(w)`` to every gradient: two foreach launches,
    capturable, no host sync (FlatAdam does the same inside its kernel)."""
    def hook(optimizer, args, kwargs):
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if params:
            torch._foreach_add_([p.grad for p in params], torch._foreach_sign(params), alpha=l1)
    return hook


class GANTrainer(Trainer):
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
        """``replicas=K`` (a keyword or the config's) makes a ``fastgan.train.ReplicaTrainer``."""
        replicas = settings.get("replicas", getattr(config, "replicas", None))
        if cls is GANTrainer and replicas is not None:
            return ReplicaTrainer(generator, discriminator, data, config, **settings)
        return super().__new__(cls)

    def __init__(self, generator: nn.Module, discriminator: nn.Module, data, config: TrainConfig | None = None, *,
                 labels=None, **settings):
        config = config_from(config, settings)
        if config.replicas is not None:   # (GANTrainer itself makes a ReplicaTrainer; a subclass of it cannot)
            raise ValueError(f"replicas={config.replicas} trains with fastgan.train.ReplicaTrainer: subclass "
                             f"that one (a {type(self).__name__} trains one GAN)")
        self._take(generator, discriminator, data, config, labels)
        config, self.backend, graph_optional = plan(config, self.device)
        self.config, self.kernels = config, self.backend.name
        generator, discriminator = generator.to(self.device), discriminator.to(self.device)
        sigmoid = self._check_outputs(generator, discriminator)
        self.generator = self.backend.convert(generator)
        self.discriminator = self.backend.convert(discriminator, keep=(sigmoid,) if sigmoid is not None else ())
        # what the losses and D-guided sampling read: D's logits (its own final Sigmoid, if any, skipped), and its
        # samples in the data's shape; what the step draws from: G, given DCGAN-style noise where it wants it
        self.judge = self._as_judge(Logits(self.discriminator, sigmoid) if sigmoid is not None else self.discriminator)
        self.drawn_from = self._as_drawn_from(self.generator)
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
        losses = gan_losses(config.loss, config.real_label, self.backend.bce)
        self._parts = StepParts(self.drawn_from, self.judge, self.optimizer_g, self.optimizer_d, self.data,
                                self.latent_dim, self.rng, *losses, config, self.ema, self.augment, self.spectral,
                                self.labels, self.parallel)
        step, self.sampler, self.step_path = self.backend.make_step(self._parts)
        self.loop = TrainingLoop(step, config, self.rng, self.device, self._set_lr_factor,
                                 lambda row: math.isfinite(row[1]) and math.isfinite(row[2]),
                                 lambda row: {"loss_d": f"{row[1]:.4f}", "loss_g": f"{row[2]:.4f}"},
                                 graph_optional=graph_optional)

    def _as_judge(self, discriminator: nn.Module) -> nn.Module:
        """For image data, D given its samples as images (packed samples side by side in channels) where it begins
        with a convolution, else as rows (whatever shape G's samples have)."""
        if self.sample_shape is None:
            return discriminator
        conv = begins_with_convolution(discriminator)
        return Shaped(discriminator, (-1, *self.sample_shape[1:]) if conv else (-1,))

    def _as_drawn_from(self, generator: nn.Module) -> nn.Module:
        """G given its noise as ``(N, nz, 1, 1)`` where it begins with a convolution (DCGAN)."""
        return Shaped(generator, (-1, 1, 1)) if begins_with_convolution(generator) else generator

    def _check_outputs(self, generator: nn.Module, discriminator: nn.Module) -> nn.Sigmoid | None:
        """D's final ``nn.Sigmoid`` (trained through its logits, said in one line), or None; a warning for a G
        whose final activation cannot reach the data's range. One probe forward of each, before training."""
        real = self.data[: self.config.pack].reshape(1, -1)
        z = torch.zeros(1, self.latent_dim, device=self.device)
        labels = (self.labels[:1],) if self.labels is not None else ()
        sigmoid = final_sigmoid(self._as_judge(discriminator), real, *labels)
        if sigmoid is not None:
            say(f"the discriminator ({type(discriminator).__name__}) ends in nn.Sigmoid: its losses read the logits "
                "before it (the sigmoid folded into the sigmoid-BCE); the module itself is unchanged")
        output = final_activation(self._as_drawn_from(generator), z, *labels)
        if output is not None:
            low, high = (0.0, 1.0) if isinstance(output, nn.Sigmoid) else (-1.0, 1.0)
            data_low, data_high = self.data.min().item(), self.data.max().item()
            if data_low < low or data_high > high:
                warnings.warn(f"the generator ends in nn.{type(output).__name__}, whose outputs lie in ({low:g}, "
                              f"{high:g}), but the data spans [{data_low:.3g}, {data_high:.3g}]: G cannot reach it "
                              "(rescale the data, or change G's output activation)", stacklevel=3)
        return sigmoid

    def _data_parallel(self, config: TrainConfig):
        """This rank's ``DataParallel``: the ranks' settings compared (every rank reaches that collective
        before anything it could refuse alone), then rank 0's weights broadcast to every rank, as DDP does."""
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
        if self.backend.flat_adam(config):
            # the regularisers inside its one kernel (triton-mlp's fused step updates through it)
            return FlatAdam(module, lr=lr, betas=config.betas, decoupled_weight_decay=weight_decay, l1=l1,
                            state_dtype=config.adam_state)
        # capturable: the step count and bias corrections live on the device, as a CUDA graph needs
        fused = {"fused": True} if config.fused_optimizer == "torch" else {}
        kind, decay = (torch.optim.AdamW, {"weight_decay": weight_decay}) if weight_decay else (torch.optim.Adam, {})
        optimizer = kind(module.parameters(), lr=lr, betas=config.betas, capturable=config.cuda_graph,
                         **decay, **fused)
        if l1:
            optimizer.register_step_pre_hook(_l1_subgradient(l1))
        return optimizer

    def _set_lr_factor(self, factor: float) -> None:
        for optimizer, base in ((self.optimizer_g, self.lr_g), (self.optimizer_d, self.lr_d)):
            if isinstance(optimizer, FlatAdam):
                optimizer.lr = base * factor
            else:
                for group in optimizer.param_groups:
                    group["lr"] = base * factor

    def _set_batch_size(self, value: int) -> None:
        config = self.config.replace(batch_size=value)  # validated there
        if self.parallel is not None and config.samples_per_step % (self.parallel.world * config.pack):
            raise ValueError(f"data_parallel: batch size {value} does not split into {self.parallel.world} equal "
                             f"slices of whole packs of {config.pack}")
        self.config = self._parts.config = self.loop.config = config
        self.loop.forget_graph()

    @property
    def kernels_run(self) -> str:
        """What the step's layers and loss really run: ``"torch"`` (PyTorch ops), ``"triton"`` (compiled
        Triton kernels, CUDA; per layer or whole MLPs as ``kernels`` says, see also ``step_path``),
        ``"triton-interpreter"`` (Triton's CPU interpreter, TRITON_INTERPRET=1: slow, for tests),
        ``"reference"`` (kernels="triton" where Triton cannot run: the ops' PyTorch reference path, the same math
        unfused) or ``"cuda"`` (the native kernels; ``"cuda (D: triton whole-MLP)"`` when a model is wider or
        deeper than they take and runs the Triton whole-MLP kernels instead, ``"... triton per layer"`` when it
        is no plain MLP and runs the fused layers)."""
        return self.backend.kernels_run(self.generator, self.discriminator, self.data)

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One D update then one G update. Returns ``(loss_d, loss_g)`` as device tensors (no host sync).

        With ``cuda_graph=True`` one call replays ``steps_per_replay`` steps (the first call also runs the
        warm-up steps and captures) and returns the last step's losses; a call whose steps would span a change
        of ``lr_schedule``'s learning rate runs one eager step instead (the graph is recorded anew after it).
        """
        return self.loop.step()

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, ema: bool | None = None, labels=None,
               rejection: bool | float = False, calibrate: int = 0, calibrate_lr: float = 1e-4,
               calibrate_batch: int = 500, metropolis: int = 0, sharpen: float = 1.0,
               metropolis_step: float = 1.0, jacobian: bool | float = False) -> torch.Tensor:
        """``n`` generator samples from noise drawn with its own ``seed`` (training RNG untouched).

        Uses the EMA generator when one is kept (``ema=None`` or ``True``), the raw one with ``ema=False``.
        A conditional GAN takes ``labels``: a class for all, or one per sample (default 0, 1, ..., C-1, 0, ...).
        ``rejection=True`` (or a quantile in [0, 1), default 0.8): discriminator rejection sampling, G's
        candidates kept by D's verdict (``fastgan.sampling.rejection_sample``; the rate accepted is in
        ``self.last_acceptance``; a packed D scores each candidate with fixed partners). Not for conditional GANs.
        ``metropolis=L`` instead: Metropolis-Hastings over D's scores, chains of ``L`` proposals
        (``fastgan.sampling.metropolis_sample``: the share of proposals taken is in ``self.last_acceptance``); it
        weighs G's samples by the density ratio D's logit estimates, so calibrate D with it; ``sharpen`` (its
        beta, >= 1) weighs them by that ratio to the power beta; ``metropolis_step`` (in (0, 1], default 1:
        independent proposals) proposes in G's latent space at that step (``step_size``: small steps refine each
        sample within its mode and keep G's mode shares).
        ``calibrate=N`` (with either): first train a copy of D ``N`` steps against the generator sampled
        from, held fixed, on the training data (``fastgan.sampling.calibrate_discriminator``), so D judges that
        generator (the EMA one included) and the modes keep their balance; the trained D is untouched.
        The copy trains with Adam at ``calibrate_lr`` on ``calibrate_batch`` real and as many generated rows a step.
        ``jacobian=True`` (or a factor >= 1, default 8) instead of D: G's samples where its Jacobian norm is at
        most that many times the median (``fastgan.sampling.jacobian_sample``: the samples G stretched between
        modes left out, the modes' shares kept; the rate kept in ``self.last_acceptance``).
        """
        n = positive_int("n", n)
        options = SampleOptions.from_arguments(rejection, metropolis, sharpen, metropolis_step, calibrate,
                                               calibrate_lr, calibrate_batch, jacobian)   # refused before any work
        if ema and self.ema is None:
            raise ValueError("this trainer keeps no EMA generator (pass ema=DECAY to GANTrainer)")
        generator = self.ema.module if self.ema is not None and ema is not False else self.generator
        generator = self._as_drawn_from(generator)
        samples, acceptance = options.draw(generator, self.judge, self.data, n, self.latent_dim, seed,
                                           self.device, self.config.pack, labels)
        if acceptance is not None:
            self.last_acceptance = acceptance
        return samples

    # -- checkpoints (the schema: fastgan.train.checkpoints) ----------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume exactly."""
        return trainer_state(self)

    def load(self, path: str | os.PathLike) -> dict:
        """Resume from ``path``: everything is validated before anything is changed. Returns the state."""
        return load_trainer(self, path)
