"""TrainConfig: every training setting of a GANTrainer, declared once, validated once, serialised once.

``GANTrainer(G, D, data, config)`` takes one; ``GANTrainer(G, D, data, batch_size=64, ...)`` builds one
from the keywords. It is stored in checkpoints and in the CLI's metrics.json (``to_dict``/``from_dict``),
and the CLI's ``train`` flags are its fields (``tests/test_cli.py`` checks that none is forgotten).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..checks import non_negative_int, positive_int
from .augment import parse_transforms
from .values import (check_augment_p, check_augment_target, check_betas, check_lr_schedule, check_real_label, finite)

__all__ = ["TrainConfig", "config_from", "LOSSES", "KERNELS", "COMPILE_MODES",
           "CUDAGRAPH_COMPILE_MODES", "PRECISIONS", "FUSED_OPTIMIZERS",
           "SAMPLERS", "PACK_CONVENTIONS", "PER_REPLICA", "UPDATES"]

KERNELS = ("torch", "triton", "triton-mlp", "cuda", "auto")
SAMPLERS = ("auto", "torch", "philox")
PACK_CONVENTIONS = ("samples", "rows")
UPDATES = ("alternating", "simultaneous")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# torch.compile modes that record CUDA graphs of their own (cudagraph trees): each call's outputs are
# overwritten by the next call, so the step marks its boundaries and copies out what outlives it.
CUDAGRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")
PRECISIONS = ("fp32", "tf32", "bf16")
LOSSES = ("non_saturating", "hinge")
# False: torch.optim.Adam (for-each); "flat": FlatAdam (True means the same); "torch":
# torch.optim.Adam(fused=True), PyTorch's own fused Adam, the baseline FlatAdam must beat.
FUSED_OPTIMIZERS = (False, "flat", "torch")
ADAM_STATES = ("fp32", "bf16")
# the settings ``fast`` decides when they are left at these values (fastgan.train.backends.fast_path)
AUTOMATIC = {"kernels": "auto", "cuda_graph": None, "steps_per_replay": None, "fused_optimizer": None}
# settings that may take one value per replica (a sequence of length ``replicas``); betas: a sequence of pairs
PER_REPLICA = ("lr", "lr_g", "lr_d", "betas", "real_label", "instance_noise", "r1_gamma", "mmd_weight", "augment_p",
               "augment_target")


@dataclass
class TrainConfig:
    """The settings of one GAN training run; a bad value is a ``ValueError`` naming it, when the config is
    made (or ``replace``d). ``GANTrainer`` reads:

        batch_size: samples per step, drawn with replacement (so it may exceed N).
        lr, betas: Adam settings for both models (DCGAN's defaults).
        seed: seeds the trainer's RNG, which draws every batch and every noise vector.
        device: defaults to the data's device if it is a tensor on CUDA, else CUDA when present, else CPU.
        kernels: ``"torch"`` (PyTorch ops), ``"triton"`` (fused Triton layers and loss, via ``fastgan.fuse``),
            ``"triton-mlp"`` (G and D each one whole-MLP kernel per pass, via ``fuse(whole=True)``, and where
            the settings allow, the fused 7-launch step of ``fastgan.train.fused_step``; Adam is ``FlatAdam`` unless
            ``fused_optimizer="torch"``), ``"cuda"`` (fastgan's native CUDA kernels, ``fastgan.ops.native``: G and D
            each one whole-MLP kernel per pass and the native sigmoid-BCE; needs a GPU and the library built
            with CMake) or ``"auto"`` (``fastgan.train.backends.resolve_backend``: triton where the
            step runs in a CUDA graph at batch <= 512, otherwise torch).
        sampler: how batches and noise are drawn: ``"torch"`` (``torch.randint``/``index_select``/``randn``
            with the trainer's generator), ``"philox"`` (one Triton kernel, counter-based RNG whose counter
            lives on the device, wherever Triton runs, instance noise included; with replicas one launch draws
            all K, replica k what the single run with its seed draws) or ``"auto"`` (philox where triton-mlp's fused step runs, and for
            replicas on the CUDA fast path; else torch).
        compile: ``True`` (or a ``torch.compile`` mode such as ``"reduce-overhead"``) compiles the step's
            regions (see ``fastgan.step``); the Triton ops enter as opaque custom ops (no graph breaks).
        cuda_graph: capture whole steps in one CUDA graph (``fastgan.train.graph``): after ``graph_warmup``
            eager warm-up steps, each ``step()`` replays ``steps_per_replay`` steps with one launch. CUDA only.
        fast: leave ``kernels`` (``"auto"``), ``cuda_graph``, ``steps_per_replay`` and ``fused_optimizer`` (None)
            unset and the trainer picks the fastest measured configuration for the device once, and says it in
            one line (``fastgan.train.backends.fast_path``): on CUDA a CUDA graph of 8 steps per replay, FlatAdam
            and triton's kernels up to batch 512, each falling back with its reason where a setting rules it out;
            on a CPU the plain eager step. ``fast=False``: the plain eager step everywhere.
        precision: applied alike to PyTorch's and fastgan's kernels, so comparisons are fair: ``"fp32"``
            (exact fp32), ``"tf32"`` (default: fp32 matmuls on TF32 tensor cores) or ``"bf16"`` (forward
            passes autocast to bf16: bf16 matmul operands, fp32 accumulation, fp32 weights and Adam state).
        fused_optimizer: ``True`` or ``"flat"``: ``FlatAdam`` for both models (parameters and gradients in one
            flat buffer each, the update in one Triton kernel with a device-side step count); ``"torch"``:
            ``torch.optim.Adam(fused=True)``; ``False``: ``torch.optim.Adam``; None (default): ``fast`` decides.
            With replicas: ``"flat"`` is FlatAdam's kernel with a replica axis (``ReplicaAdam(flat=True)``),
            anything else PyTorch's Adam arithmetic on the stacked buffer.
        adam_state: ``"fp32"`` (default) or ``"bf16"``: FlatAdam's moments stored in bf16, stochastically
            rounded (computed in fp32; 20 bytes of Adam traffic per parameter and update instead of 28). FlatAdam's
            option: ``fused_optimizer`` unset becomes ``"flat"``, and ``"torch"`` or ``False`` is refused.
        latent_dim: checked against the generator's input size when given.
        real_label: target for real samples in D's loss; < 1 is one-sided label smoothing.

    Stabilisation options (see ``fastgan.step``; all off by default):
        loss: ``"non_saturating"`` (default) or ``"hinge"``.
        lr_g, lr_d: separate learning rates (TTUR); each defaults to ``lr``.
        lr_schedule: a step-down schedule, ``(step, factor)`` pairs with increasing steps: from step ``step``
            on (the update numbered ``step + 1``; ``step_count`` counts those done) both models' learning
            rates are their base values times ``factor``, e.g. ``((200_000, 0.5), (300_000, 0.1))``. A pure
            function of the step, so a resumed run equals an uninterrupted one; default ``()``: constant.
        d_steps: D updates per G update.
        ema: decay of an exponential moving average of G's weights (e.g. 0.999), used by ``sample``.
        pack: PacGAN packing: D sees ``pack`` samples per row, so its input size is ``pack * features``.
        pack_convention: what ``batch_size`` counts when packing: ``"samples"`` (default, fastgan's: a step
            draws ``batch_size`` real and fake samples, D sees ``batch_size / pack`` rows of each, and
            ``batch_size`` must be a multiple of ``pack``) or ``"rows"`` (PacGAN's code: D sees ``batch_size``
            packed rows of each, so a step draws ``pack * batch_size`` samples).
        instance_noise: std of Gaussian noise added to D's real and fake inputs.
        r1_gamma, r1_every: R1 penalty weight on real data, applied every ``r1_every`` steps (with
            ``replicas``, a weight per replica may be given).
        mmd_weight: G's loss plus this times MMD²(G's samples, the step's real rows), Gaussian kernels from the
            real rows' finest scale to their layout's (``fastgan.train.mmd``): widens modes that D cannot resolve
            and evens their masses (with ``replicas``, a weight per replica may be given). Not with ``data_parallel``.
        mmd_from: the term joins G's loss from step ``mmd_from`` on (the update numbered ``mmd_from + 1``); before
            it G learns from D alone (default 0: from the first update).
        mmd_fine, mmd_fine_from: from step ``mmd_fine_from`` on (the update numbered ``mmd_fine_from + 1``), the
            term's kernel at bandwidth h weighs ``(widest / h)^mmd_fine``: the fine kernels, which set the modes'
            width, count more than the wide ones, which place their masses (default 0: all alike; the grid's recipe
            weighs them with 0.5 from its step-down at 50k, in 0.75's shape: the notes of 2026-12-07).
        mmd_fine_shape: with ``mmd_fine``, the weights share their total (``mmd_fine``'s) as ``(widest / h)^shape``
            does: a steeper (larger) or flatter shape at the same strength (default None: ``mmd_fine``'s own).
        update: ``"alternating"`` (default: D's update, then G's loss through the updated D) or
            ``"simultaneous"`` (both losses from one forward pass of D on the same batch, both updates
            after it: what PacGAN's code does, through ALI's training algorithm). Simultaneous needs
            ``d_steps=1`` and runs eagerly (no ``compile``, R1 or data_parallel).

    Weight regularisation, per network (off by default):
        weight_decay_g, weight_decay_d: decoupled weight decay (AdamW's: each step shrinks the weights by
            ``lr * weight_decay``), in torch.optim's path and in FlatAdam alike.
        l1_g, l1_d: an L1 penalty ``l1 * sum |w|``: its (sub)gradient ``l1 * sign(w)`` joins the gradient.

    Differentiable augmentation of what D sees (``fastgan.augment``; off by default):
        augment: transforms, comma-separated: translation, cutout, brightness, contrast, flip.
        augment_p: the probability each is applied to a sample; default 1 (always, as DiffAugment), or 0
            when adaptive (ADA starts there), where it is the starting probability.
        augment_target: adapt p (ADA) so that E[sign(D(real))] approaches this target, e.g. 0.6.
        (With ``replicas``, ``augment_p`` and ``augment_target`` may be given per replica; None: not adaptive.)

    K replicas (``fastgan.replicas``; off by default):
        replicas: train K independent GANs at once in batched kernels (``GANTrainer`` then runs a
            ``ReplicaTrainer``). Replica k is the single-GAN run with seed ``seed + k`` started from weights
            ``fastgan.replicas.replica_models`` makes; ``for_replica(k)`` is that run's config. ``lr``, ``lr_g``,
            ``lr_d``, ``betas``, ``real_label``, ``instance_noise``, ``r1_gamma``, ``mmd_weight``, ``augment_p`` and
            ``augment_target`` (``PER_REPLICA``) may then be sequences of K values (betas: K pairs), one per
            replica; a single value applies to all.

    Across processes (``fastgan.distributed``, under ``torchrun``):
        data_parallel: one GAN, each rank its slice of every batch, gradients averaged over the ranks (needs
            an initialised process group; ``samples_per_step`` a multiple of world size x pack).
    """
    batch_size: int = 128
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    seed: int = 0
    lr_g: float | None = None
    lr_d: float | None = None
    lr_schedule: tuple[tuple[int, float], ...] = ()
    device: str | None = None
    kernels: str = "auto"
    sampler: str = "auto"
    compile: bool | str = False
    cuda_graph: bool | None = None
    steps_per_replay: int | None = None
    graph_warmup: int = 3
    precision: str = "tf32"
    fused_optimizer: bool | str | None = None
    adam_state: str = "fp32"
    fast: bool = True
    latent_dim: int | None = None
    loss: str = "non_saturating"
    real_label: float = 1.0
    d_steps: int = 1
    ema: float | None = None
    pack: int = 1
    pack_convention: str = "samples"
    instance_noise: float = 0.0
    r1_gamma: float = 0.0
    r1_every: int = 16
    mmd_weight: float = 0.0
    mmd_from: int = 0
    mmd_fine: float = 0.0
    mmd_fine_from: int = 0
    mmd_fine_shape: float | None = None
    update: str = "alternating"
    weight_decay_g: float = 0.0
    weight_decay_d: float = 0.0
    l1_g: float = 0.0
    l1_d: float = 0.0
    augment: str = ""
    spectral_norm: bool = False
    augment_p: float | None = None
    augment_target: float | None = None
    replicas: int | None = None
    data_parallel: bool = False

    def __post_init__(self):
        if self.replicas is not None:
            positive_int("replicas", self.replicas)
        if self.kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {', '.join(map(repr, KERNELS))}, got {self.kernels!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(map(repr, SAMPLERS))}, got {self.sampler!r}")
        if self.compile not in (False, True, *COMPILE_MODES):
            raise ValueError(f"compile must be False, True or a torch.compile mode name "
                             f"({', '.join(COMPILE_MODES)}), got {self.compile!r}")
        if self.fused_optimizer is True:
            self.fused_optimizer = "flat"
        if self.fused_optimizer is not None and self.fused_optimizer not in FUSED_OPTIMIZERS:
            raise ValueError(f"fused_optimizer must be False, True (= 'flat': FlatAdam) or 'torch' "
                             f"(torch.optim.Adam(fused=True)), got {self.fused_optimizer!r}")
        if self.adam_state not in ADAM_STATES:
            raise ValueError(f"adam_state must be one of {', '.join(map(repr, ADAM_STATES))}, got {self.adam_state!r}")
        if self.adam_state == "bf16":
            if self.fused_optimizer is None:
                self.fused_optimizer = "flat"
            elif self.fused_optimizer != "flat":
                raise ValueError(f"adam_state='bf16' is FlatAdam's (its moments in bf16): use fused_optimizer='flat' "
                                 f"or leave it unset, not {self.fused_optimizer!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {self.precision!r}")
        for name in ("batch_size", "graph_warmup", "d_steps", "pack", "r1_every"):
            positive_int(name, getattr(self, name))
        if self.steps_per_replay is not None:
            positive_int("steps_per_replay", self.steps_per_replay)
        if self.cuda_graph not in (None, True, False):
            raise ValueError(f"cuda_graph must be True, False or None (automatic), got {self.cuda_graph!r}")
        if self.fast not in (True, False):
            raise ValueError(f"fast must be True or False, got {self.fast!r}")
        if self.cuda_graph and self.compile in CUDAGRAPH_COMPILE_MODES:
            raise ValueError(f"compile={self.compile!r} makes CUDA graphs of its own (cudagraph trees): use it with "
                             "cuda_graph=False, or compile=True (or 'max-autotune-no-cudagraphs') with "
                             "cuda_graph=True")
        self._each("r1_gamma", lambda v: finite("r1_gamma", v, 0.0, strict=False))
        self._each("mmd_weight", lambda v: finite("mmd_weight", v, 0.0, strict=False))
        self.mmd_fine = finite("mmd_fine", self.mmd_fine, 0.0, strict=False)
        self.mmd_from = non_negative_int("mmd_from", self.mmd_from)
        self.mmd_fine_from = non_negative_int("mmd_fine_from", self.mmd_fine_from)
        if self.mmd_fine_shape is not None:
            self.mmd_fine_shape = finite("mmd_fine_shape", self.mmd_fine_shape, 0.0, strict=False)
            if not self.mmd_fine:
                raise ValueError(f"mmd_fine_shape={self.mmd_fine_shape:g} shares the weights mmd_fine gives the MMD "
                                 "term's kernels: give mmd_fine > 0 too")
        if (self.mmd_fine > 0 or self.mmd_from > 0) and not self.has_mmd:
            setting = (f"mmd_fine={self.mmd_fine:g} weighs the MMD term's kernels" if self.mmd_fine > 0 else
                       f"mmd_from={self.mmd_from} starts the MMD term")
            raise ValueError(f"{setting}, but there is no term: give mmd_weight > 0 too")
        if self.cuda_graph and self.has_r1 and self.steps_per_replay is not None \
                and self.steps_per_replay % self.r1_every:
            raise ValueError(f"r1_gamma > 0 with cuda_graph=True: a replay must hold whole R1 periods (the R1 steps "
                             f"are every r1_every={self.r1_every} steps, fixed where the graph was captured), so "
                             f"steps_per_replay must be a multiple of {self.r1_every}, got {self.steps_per_replay}; "
                             "or cuda_graph=False")
        self._each("lr", lambda v: finite("lr", v, 0.0, strict=True))
        for name in ("lr_g", "lr_d"):
            if getattr(self, name) is not None:
                self._each(name, lambda v, name=name: finite(name, v, 0.0, strict=True))
        self.lr_schedule = check_lr_schedule(self.lr_schedule)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {self.loss!r}")
        self._each("real_label", check_real_label)
        if self.loss == "hinge" and any(r != 1.0 for r in self.per_replica("real_label")):
            raise ValueError("real_label (label smoothing) applies to the BCE loss, not to loss='hinge'")
        self._each("instance_noise", lambda v: finite("instance_noise", v, 0.0, strict=False))
        for name in ("weight_decay_g", "weight_decay_d", "l1_g", "l1_d"):
            setattr(self, name, finite(name, getattr(self, name), 0.0, strict=False))
        parse_transforms(self.augment)
        if not isinstance(self.spectral_norm, bool):
            raise ValueError(f"spectral_norm must be True or False, got {self.spectral_norm!r}")
        self._each("augment_p", check_augment_p)
        self._each("augment_target", check_augment_target)
        if not self.augment and any(target is not None for target in self.per_replica("augment_target")):
            raise ValueError("augment_target adapts the augmentation's p: name the augmentations too "
                             "(augment='translation,cutout')")
        self._each("betas", check_betas)
        if self.ema is not None and not (isinstance(self.ema, (int, float)) and 0.0 < self.ema < 1.0):
            raise ValueError(f"ema decay must be in (0, 1), e.g. 0.999, got {self.ema!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.latent_dim is not None:
            positive_int("latent_dim", self.latent_dim)
        if self.pack_convention not in PACK_CONVENTIONS:
            raise ValueError(f"pack_convention must be one of {', '.join(map(repr, PACK_CONVENTIONS))}, got "
                             f"{self.pack_convention!r}")
        if self.pack_convention == "samples" and self.batch_size % self.pack:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of pack={self.pack} (or count D's "
                             "rows: pack_convention='rows')")
        if self.device is not None:
            try:
                self.device = str(torch.device(self.device))
            except (RuntimeError, TypeError, ValueError):
                raise ValueError(f"device {self.device!r} is not a device: use cpu, cuda or cuda:N") from None

        if self.update not in UPDATES:
            raise ValueError(f"update must be one of {', '.join(map(repr, UPDATES))}, got {self.update!r}")
        if self.update == "simultaneous":
            off = {"d_steps > 1": self.d_steps > 1, "compile": bool(self.compile), "r1_gamma": self.has_r1,
                   "data_parallel": self.data_parallel is True}
            unsupported = [name for name, on in off.items() if on]
            if unsupported:
                raise ValueError(f"update='simultaneous' does not combine with {', '.join(unsupported)} (one "
                                 "forward pass of D feeds both losses; use update='alternating')")
        if not isinstance(self.data_parallel, bool):
            raise ValueError(f"data_parallel must be True or False, got {self.data_parallel!r}")
        if self.data_parallel:
            off = {"replicas": self.replicas is not None, "augment": bool(self.augment), "mmd_weight": self.has_mmd,
                   "adam_state='bf16' (FlatAdam's)" if self.adam_state == "bf16" else "fused_optimizer='flat'":
                       self.fused_optimizer == "flat"}
            unsupported = [name for name, on in off.items() if on]
            if unsupported:
                raise ValueError(f"data_parallel does not combine with {', '.join(unsupported)} (a sweep of "
                                 "replicas shards them over the ranks instead of splitting a batch)")

    @staticmethod
    def _is_sequence(name: str, value) -> bool:
        """Whether ``value`` is a per-replica sequence (betas: a sequence of pairs) rather than one value."""
        if not isinstance(value, (list, tuple)):
            return False
        return name != "betas" or (len(value) > 0 and all(isinstance(v, (list, tuple)) for v in value))

    def _each(self, name: str, check) -> None:
        """Validate ``name``: one value, or with ``replicas`` a sequence of one per replica (kept a tuple)."""
        value = getattr(self, name)
        if not self._is_sequence(name, value):
            setattr(self, name, check(value))
            return
        if self.replicas is None:
            raise ValueError(f"{name} is a sequence of {len(value)} values: one value per replica needs "
                             f"replicas=K (or give a single value)")
        if len(value) != self.replicas:
            raise ValueError(f"{name} has {len(value)} values but replicas={self.replicas}: give one per replica, "
                             "or a single value for all")
        setattr(self, name, tuple(check(v) for v in value))

    def per_replica(self, name: str) -> list:
        """``name``'s value per replica (one value when there are no replicas)."""
        value = getattr(self, name)
        return list(value) if self._is_sequence(name, value) else [value] * (self.replicas or 1)

    def for_replica(self, k: int) -> TrainConfig:
        """The single-GAN config replica ``k`` of this run equals: seed ``seed + k`` and replica k's values of
        the per-replica settings (``replicas`` unset)."""
        if self.replicas is None:
            raise ValueError("for_replica needs a config with replicas=K")
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.replicas:
            raise ValueError(f"replica must be an integer in [0, {self.replicas}), got {k!r}")
        return self._part(replicas=None, seed=self.seed + k,
                          **{name: self.per_replica(name)[k] for name in PER_REPLICA})

    def shard(self, start: int, stop: int) -> TrainConfig:
        """The config of replicas ``[start, stop)`` of this run as a run of their own: seed ``seed + start``
        and those replicas' per-replica values, so each keeps its seed and settings (``fastgan.distributed``)."""
        if self.replicas is None:
            raise ValueError("shard needs a config with replicas=K")
        if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop <= self.replicas):
            raise ValueError(f"a shard is 0 <= start < stop <= {self.replicas}, got [{start}, {stop})")
        sliced = {name: tuple(self.per_replica(name)[start:stop]) for name in PER_REPLICA
                  if self._is_sequence(name, getattr(self, name))}
        return self._part(replicas=stop - start, seed=self.seed + start, **sliced)

    def _part(self, **changes) -> TrainConfig:
        """``replace(**changes)`` for some of the replicas: where none of them has the MMD term, no start or power
        for it."""
        term = {"mmd_from": self.mmd_from, "mmd_fine": self.mmd_fine, "mmd_fine_from": self.mmd_fine_from,
                "mmd_fine_shape": self.mmd_fine_shape}
        part = dataclasses.replace(self, **changes, mmd_from=0, mmd_fine=0.0, mmd_fine_from=0, mmd_fine_shape=None)
        return part.replace(**term) if part.has_mmd else part

    @property
    def has_r1(self) -> bool:
        """Whether any replica (or the one GAN) trains with the R1 penalty."""
        return any(gamma > 0 for gamma in self.per_replica("r1_gamma"))

    @property
    def has_mmd(self) -> bool:
        """Whether any replica (or the one GAN) trains G with the MMD term."""
        return any(weight > 0 for weight in self.per_replica("mmd_weight"))

    @property
    def augment_start_p(self) -> float:
        """``augment_p``, or its default: 1 for a fixed augmentation, 0 for an adaptive one."""
        if self.augment_p is not None:
            return self.augment_p
        return 0.0 if self.augment_target is not None else 1.0

    @property
    def samples_per_step(self) -> int:
        """Real (and fake) samples one D update draws: ``batch_size``, times ``pack`` when counting rows."""
        return self.batch_size * self.pack if self.pack_convention == "rows" else self.batch_size

    def lr_factor(self, step: int) -> float:
        """The factor ``lr_schedule`` sets for the update that follows ``step`` done (1.0 before its first step)."""
        factor = 1.0
        for start, f in self.lr_schedule:
            if step < start:
                break
            factor = f
        return factor

    def mmd_at(self, step: int) -> dict | None:
        """The MMD term's kernel weighting for the update that follows ``step`` done, ``mmd2``'s ``fine`` and
        ``shape`` (``mmd_fine`` and ``mmd_fine_shape`` from ``mmd_fine_from`` on, none before), or ``None`` where
        G's loss has no term: none at all, or before ``mmd_from``."""
        if not self.has_mmd or step < self.mmd_from:
            return None
        if step < self.mmd_fine_from:
            return {"fine": 0.0, "shape": None}
        return {"fine": self.mmd_fine, "shape": self.mmd_fine_shape}

    def schedule_changes_within(self, step: int, count: int) -> bool:
        """Whether the learning rates' factor or the MMD term (its start, its ``fine`` power) changes among the
        ``count`` updates that follow ``step`` done (a CUDA graph's replay holds no such change)."""
        starts = [start for start, _ in self.lr_schedule]
        if self.has_mmd:
            starts += [self.mmd_from] + ([self.mmd_fine_from] if self.mmd_fine else [])
        return any(step < start < step + count for start in starts)

    @property
    def generator_lr(self) -> float:
        return self.lr if self.lr_g is None else self.lr_g

    @property
    def discriminator_lr(self) -> float:
        return self.lr if self.lr_d is None else self.lr_d

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain values (lists for tuples, nested ones too): what checkpoints and metrics.json store."""
        def plain(value):
            return [plain(v) for v in value] if isinstance(value, tuple) else value
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def changes_from(self, saved: dict) -> dict[str, tuple]:
        """``{name: (saved value, mine)}`` for the settings that differ from ``saved`` (a checkpoint's ``to_dict``):
        a setting newer than the checkpoint ran with its default; one the checkpoint has and I do not is ignored;
        one I leave automatic (``AUTOMATIC``) matches whatever the checkpoint's run resolved it to."""
        mine, theirs = self.to_dict(), {**TrainConfig().to_dict(), **saved}
        return {k: (v, mine[k]) for k, v in theirs.items()
                if k in mine and mine[k] != v and mine[k] != AUTOMATIC.get(k, object())}

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """The inverse of ``to_dict``; an unknown key is a ``ValueError`` naming it (missing keys: defaults)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig settings: {', '.join(unknown)}")
        return cls(**values)

    def __getitem__(self, name: str):
        """``config["pack"]``: dict-style reads, as code written against the earlier settings dict does."""
        if name not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(name)
        return getattr(self, name)


def config_from(config: TrainConfig | None, settings: dict) -> TrainConfig:
    """A trainer's config: ``config`` with ``settings`` (keywords) replacing its values, or the keywords alone."""
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a fastgan.TrainConfig, got {type(config).__name__} (settings go "
                        "in as keywords: GANTrainer(G, D, data, batch_size=64, ...))")
    return TrainConfig(**settings) if config is None else config.replace(**settings)
