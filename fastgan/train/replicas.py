"""K independent GANs trained at once: stacked weights, batched kernels, one step for all.

``GANTrainer(G, D, data, replicas=K, ...)`` returns a ``ReplicaTrainer`` (the layers: ``fastgan.nn.stacked``;
the step: ``fastgan.train.replica_step``). Its contract:

* **What replica k is.** The single-GAN run ``GANTrainer(G_k, D_k, data, config.for_replica(k))`` where
  ``(G_k, D_k) = replica_models(G, D, seed, k)``: the template models' structure with weights from
  ``reset_parameters()`` of every module, in ``modules()`` order (G's first, then D's; a model with a
  ``reset_parameters()`` of its own: that), under ``torch.manual_seed(seed + k)`` on the CPU (the template's own
  weights are not used), in the template's train/eval mode, and seed ``seed + k``
  for the run's RNG (its batches, noise and instance noise). Replica k of ``seed=s`` is therefore the run
  with ``seed=s + k``: ``replicas=10, seed=0`` trains exactly the ten runs ``seed=0 ... 9``. A replica's
  per-replica settings are its entries of the sequences given (``config.for_replica``).
* **How.** Each model's weights sit in one ``(K, P)`` parameter (``StackedMLP``): replica k's row holds its
  layers back to back; a layer is a strided ``(K, out, in)`` view, run by one batched matmul
  (``torch.baddbmm``) or, with ``kernels="triton"``, by the fused linear kernel with a grid axis over
  replicas. No Python loop over replicas touches a matmul, a loss or the optimizer (``ReplicaAdam``: one
  update of the ``(K, P)`` buffer with per-replica lr and betas). The draws: with ``sampler="philox"`` (the
  CUDA fast path's choice) every replica's batch and noise in one launch, replica k keyed by its seed as
  the single run with ``sampler="philox"`` is; with ``sampler="torch"`` each replica's from its own
  ``torch.Generator``, K small launches a draw. With Philox the instance noise is one launch too, and the
  kernels a step launches are the same for every K. Augmentation (``augment=...``): each replica its own p
  and ADA target (``fastgan.train.augment.ReplicaAugment``), its uniforms drawn as its single run's (with
  Philox in the same one launch for all K), the transforms once for all K.
* Models: an ``nn.Sequential``, the module itself or its ``.net``. Plain MLPs (``Linear`` layers and
  activations: ``fuse``'s whole-MLP rule, ``fastgan.nn.fused.whole_mlp_spec``; ``MLPGenerator``,
  ``MLPDiscriminator``) stack as a ``StackedMLP``, whose backward is written by hand; with ``BatchNorm1d`` and
  ``fastgan.nn.Maxout`` layers too (PacGAN's ``BatchNormGenerator`` and ``MaxoutDiscriminator``) as a
  ``StackedNet`` (per-replica batch statistics; autograd's backward). A template with a
  ``reset_parameters()`` of its own (PacGAN's models: N(0, 0.02) weights) is reset by it rather than layer
  by layer. Conditional GANs (``ConditionalMLPGenerator``, ``ProjectionDiscriminator``, ``labels=``) stack as
  ``StackedConditional``s, each replica drawing its classes as its single run does. Not yet: the settings
  ``TrainConfig`` names when refusing.
"""
from __future__ import annotations

import copy
import math
import os

import torch
from torch import nn

from ..checks import positive_int
from ..nn.adapters import final_sigmoid
from ..nn.spectral import ReplicaSpectralNorm
from ..nn.stacked import StackedMLP, check_stackable, replica_models, stack_models
from ..ops.sampler import DeviceSampler
from ..optim import ReplicaAdam, ReplicaEMA
from ..sampling import SampleOptions
from .augment import ReplicaAugment, parse_transforms
from .backends import plan
from .checkpoints import load_replicas, replica_state
from .config import TrainConfig, config_from
from .loop import Trainer, TrainingLoop
from .replica_step import make_replica_step

__all__ = ["ReplicaTrainer", "diverged_replicas"]


def diverged_replicas(history: dict) -> dict[int, int]:
    """``{replica: step}`` of a replica run's ``history``: each replica whose losses became non-finite, at the
    first step they did."""
    out = {}
    for step, row_d, row_g in zip(*(history[key] for key in ("step", "loss_d", "loss_g"))):
        for k, (d, g) in enumerate(zip(row_d, row_g)):
            if k not in out and not _finite(d, g):
                out[k] = step
    return dict(sorted(out.items()))


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _postfix(row) -> dict:
    """The progress bar's losses: the mean over the replicas still finite."""
    pairs = [(d, g) for d, g in zip(row[1], row[2]) if _finite(d, g)] or [(math.nan, math.nan)]
    return {"loss_d": f"{sum(d for d, _ in pairs) / len(pairs):.4f}",
            "loss_g": f"{sum(g for _, g in pairs) / len(pairs):.4f}"}


class ReplicaTrainer(Trainer):
    """K GANs at once (see the module's docstring). Made by ``GANTrainer(..., replicas=K)``.

    ``step()`` returns ``(K, 2)`` losses (D, G); ``history`` holds lists of K values per step;
    ``sample(n, replica=k)`` samples replica k as its single run would (``replica=None``: all, ``(K, n, f)``);
    ``replica(k)`` gives plain ``(G, D)`` modules; ``save``/``load`` resume exactly.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, data, config: TrainConfig | None = None, *,
                 labels=None, **settings):
        config = config_from(config, settings)
        if config.replicas is None:
            raise ValueError("ReplicaTrainer needs replicas=K")
        self._take(generator, discriminator, data, config, labels)
        if self.labels is not None:   # (sampler="auto" would pick Philox for replicas on CUDA)
            if config.sampler == "philox":
                raise ValueError("sampler='philox' draws no labels: a conditional GAN draws with sampler='torch'")
            config = config.replace(sampler="torch")
        check_stackable(generator), check_stackable(discriminator)   # clear errors before any copy
        config, self.backend, graph_optional = plan(config, self.device)
        self.config, self.kernels = config, self.backend.name
        self.replicas = config.replicas
        self.templates = (copy.deepcopy(generator).cpu(), copy.deepcopy(discriminator).cpu())
        labels = (self.labels[:1].cpu(),) if self.labels is not None else ()
        if final_sigmoid(self.templates[1], self.data[: config.pack].reshape(1, -1).cpu(), *labels) is not None:
            raise ValueError(f"replicas train a discriminator that returns logits, but {type(discriminator).__name__} "
                             "ends in nn.Sigmoid: drop it (the loss applies the sigmoid; a single GANTrainer folds "
                             "it for you)")
        models = [replica_models(*self.templates, config.seed, k) for k in range(self.replicas)]
        kernels = self.backend.replica_kernels
        self.generator = stack_models([g for g, _ in models], kernels).to(self.device)
        self.discriminator = stack_models([d for _, d in models], kernels).to(self.device)
        per = [config.for_replica(k) for k in range(self.replicas)]
        self.spectral = ReplicaSpectralNorm(self.discriminator, config.seed) if config.spectral_norm else None
        flat = self.backend.flat_adam(config)   # FlatAdam's kernel with a replica axis (else PyTorch's Adam math)
        self.optimizer_g = ReplicaAdam(self.generator, [c.generator_lr for c in per], [c.betas for c in per],
                                       weight_decay=config.weight_decay_g, l1=config.l1_g, flat=flat,
                                       state_dtype=config.adam_state)
        self.optimizer_d = ReplicaAdam(self.discriminator, [c.discriminator_lr for c in per],
                                       [c.betas for c in per], weight_decay=config.weight_decay_d, l1=config.l1_d,
                                       flat=flat, state_dtype=config.adam_state)
        self.generators = [torch.Generator(device=self.device).manual_seed(c.seed) for c in per]
        self.rng = self.generators[0]
        self.sampler = DeviceSampler(config.seed, self.device, self.replicas) if config.sampler == "philox" else None
        self.ema = ReplicaEMA(self.generator, config.ema) if config.ema is not None else None
        self.augment = ReplicaAugment(parse_transforms(config.augment), self.data.shape[1],
                                      [c.augment_start_p for c in per], [c.augment_target for c in per],
                                      self.generators, self.device) if config.augment else None
        step, self.step_path = self.backend.fused_replica_step(self, *self._whole_mlps())
        # a replica whose losses went non-finite goes on as NaNs, alone (nothing mixes replicas); the run stops
        # only when every replica has (``diverged`` says which and when)
        self.loop = TrainingLoop(step or make_replica_step(self), config, self.generators, self.device, self._set_lr_factor,
                                 lambda row: any(_finite(d, g) for d, g in zip(row[1], row[2])), _postfix,
                                 graph_optional=graph_optional)

    @property
    def ema_flat(self) -> torch.Tensor | None:
        """G's EMA weights, ``(K, P)`` (None without ``ema``)."""
        return self.ema.flat if self.ema is not None else None

    @property
    def diverged(self) -> dict[int, int]:
        """``{replica: step}``: the replicas whose logged losses became non-finite, each at its first such step
        (from ``history``, so a resumed run knows them too). The others train on unaffected."""
        self.flush_losses()
        return diverged_replicas(self.history)

    def _set_lr_factor(self, factor: float) -> None:
        self.optimizer_g.scale_lr(factor)
        self.optimizer_d.scale_lr(factor)

    def _set_batch_size(self, value: int) -> None:
        self.config = self.loop.config = self.config.replace(batch_size=value)
        self.loop.replace_step(self.backend.fused_replica_step(self, *self._whole_mlps())[0]
                               or make_replica_step(self))

    def _whole_mlps(self) -> tuple:
        """The whole MLPs the stacked G and D are (None for a ``StackedNet``)."""
        return tuple(m.spec if isinstance(m, StackedMLP) else None for m in (self.generator, self.discriminator))

    @property
    def kernels_run(self) -> str:
        """What the stacked layers run (``GANTrainer.kernels_run``'s values)."""
        return self.backend.kernels_run(self.generator, self.discriminator, self.data)

    def step(self) -> torch.Tensor:
        """One D update then one G update of every replica; returns ``(K, 2)`` losses (D, G) on the device."""
        loss_d, loss_g = self.loop.step()
        return torch.stack((loss_d, loss_g), dim=1)

    def replica(self, k: int, ema: bool = False) -> tuple[nn.Module, nn.Module]:
        """Replica ``k``'s ``(G, D)`` as plain modules of the templates' classes, on the trainer's device
        (copies: training does not change them). ``ema=True``: G's EMA weights."""
        k = self._replica_index(k)
        if ema and self.ema_flat is None:
            raise ValueError("this trainer keeps no EMA generator (pass ema=DECAY)")
        g = self.generator.load_into(copy.deepcopy(self.templates[0]).to(self.device), k,
                                     self.ema_flat if ema else None)
        d = self.discriminator.load_into(copy.deepcopy(self.templates[1]).to(self.device), k)
        return g.eval(), d.eval()

    def _replica_index(self, k) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.replicas:
            raise ValueError(f"replica must be an integer in [0, {self.replicas}), got {k!r}")
        return k

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, ema: bool | None = None, labels=None, rejection: bool | float = False,
               replica: int | None = None, calibrate: int = 0, calibrate_lr: float = 1e-4,
               calibrate_batch: int = 500, metropolis: int = 0, sharpen: float = 1.0,
               metropolis_step: float = 1.0, jacobian: bool | float = False) -> torch.Tensor:
        """Replica ``replica``'s ``n`` samples, as its single run's ``sample(n, seed)`` gives them; with
        ``replica=None``, every replica's: ``(K, n, features)``. A conditional GAN takes ``labels`` as
        ``GANTrainer.sample`` does. EMA weights when kept (``ema=False``: raw).
        ``rejection``, ``metropolis`` (``sharpen``, ``metropolis_step``), ``calibrate`` (``calibrate_lr``,
        ``calibrate_batch``) and ``jacobian``: as ``GANTrainer.sample``, each replica picked by its own D or G;
        ``self.last_acceptance`` is the rate kept (a list, one per replica, with ``replica=None``)."""
        n = positive_int("n", n)
        options = SampleOptions.from_arguments(rejection, metropolis, sharpen, metropolis_step, calibrate,
                                               calibrate_lr, calibrate_batch, jacobian)   # refused before any work
        if ema and self.ema_flat is None:
            raise ValueError("this trainer keeps no EMA generator (pass ema=DECAY to GANTrainer)")
        use_ema = self.ema_flat is not None and ema is not False
        ks = range(self.replicas) if replica is None else [self._replica_index(replica)]
        out, rates = [], []
        for k in ks:
            g, d = self.replica(k, ema=use_ema)
            samples, rate = options.draw(g, d, self.data, n, self.latent_dim, seed, self.device, self.config.pack,
                                         labels)
            out.append(samples)
            rates.append(rate)
        if options.picked:
            self.last_acceptance = rates[0] if replica is not None else rates
        return out[0] if replica is not None else torch.stack(out)

    def _pictured(self, n: int) -> torch.Tensor:
        return self.sample(n, replica=0)

    # -- checkpoints (the schema: fastgan.train.checkpoints) ----------------------------------------------
    def state_dict(self) -> dict:
        return replica_state(self)

    def load(self, path: str | os.PathLike) -> dict:
        return load_replicas(self, path)
