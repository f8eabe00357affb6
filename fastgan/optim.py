"""The optimizers: FlatAdam (one model), ReplicaAdam (K stacked replicas), and the EMA of G's weights.

FlatAdam: a model's parameters and gradients as views into two flat buffers, Adam in one kernel. Zeroing the
gradients is one fill of the flat gradient buffer (autograd accumulates into the views),
and the update is one ``fastgan.ops.adam_step`` launch per model, with its step count on the device:
what a captured CUDA graph needs. Same update as ``torch.optim.Adam``.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .checks import non_negative_int
from .ops.adam import (MOMENT_DTYPES, AdamFold, adam_fold, adam_programs, adam_step, replica_adam_fold,
                       replica_adam_hyper, replica_adam_step)

__all__ = ["FlatAdam", "moment_dtype", "flatten_parameters", "ReplicaAdam", "EMA", "adam_state", "load_adam_state",
           "check_adam_state"]


def flatten_parameters(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Move ``module``'s parameters into one flat fp32 buffer (and their ``.grad`` into another), in place.

    Each parameter keeps its identity (same ``nn.Parameter`` object, so optimisers, hooks and
    ``state_dict`` keep working) but its ``.data`` and ``.grad`` become views. Moving the module to
    another device or dtype afterwards would detach them: flatten on the final device.
    """
    params = list(module.parameters())
    if not params:
        raise ValueError("the module has no parameters to flatten")
    device = params[0].device
    for p in params:
        if p.dtype != torch.float32 or p.device != device:
            raise ValueError("flatten_parameters needs float32 parameters on one device, got "
                             f"{p.dtype} on {p.device}")
    total = sum(p.numel() for p in params)
    data = torch.empty(total, device=device, dtype=torch.float32)
    grad = torch.zeros(total, device=device, dtype=torch.float32)
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            data[offset:offset + n].copy_(p.reshape(-1))
            p.data = data[offset:offset + n].view_as(p)
            p.grad = grad[offset:offset + n].view_as(p)
            offset += n
    return data, grad


def moment_dtype(state_dtype) -> torch.dtype:
    """The moments' dtype for ``state_dtype``: ``torch.float32``/``"fp32"`` or ``torch.bfloat16``/``"bf16"``."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(state_dtype, state_dtype)
    if dtype not in MOMENT_DTYPES:
        raise ValueError(f"state_dtype must be torch.float32 ('fp32') or torch.bfloat16 ('bf16': the moments "
                         f"stored stochastically rounded), got {state_dtype!r}")
    return dtype


class FlatAdam:
    """Adam over one flat buffer per model: ``torch.optim.Adam`` semantics, with ``weight_decay`` (L2 in the
    gradient, as Adam's), ``decoupled_weight_decay`` (as ``torch.optim.AdamW``'s) and ``l1`` (``l1 sign(p)``
    added to the gradient). ``state_dtype=torch.bfloat16``: the moments stored in bf16, stochastically rounded
    (``fastgan.ops.adam``), computed in fp32 as before: 20 bytes moved per parameter and update instead of 28."""

    def __init__(self, module: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled_weight_decay: float = 0.0,
                 l1: float = 0.0, state_dtype=torch.float32):
        dtype = moment_dtype(state_dtype)
        self.params = list(module.parameters())
        self.data, self.grad = flatten_parameters(module)
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), (float(betas[0]), float(betas[1])), \
            float(eps), float(weight_decay)
        self.decoupled_weight_decay, self.l1 = float(decoupled_weight_decay), float(l1)
        self.exp_avg = torch.zeros_like(self.data, dtype=dtype)
        self.exp_avg_sq = torch.zeros_like(self.data, dtype=dtype)
        self.counter = torch.zeros((), dtype=torch.int64, device=self.data.device)

    def zero_grad(self, set_to_none: bool = False) -> None:
        """One fill of the flat gradient buffer (the views stay: ``set_to_none`` is ignored)."""
        self.grad.zero_()
        self._reattach_gradients()

    @torch.no_grad()
    def step(self) -> None:
        self._reattach_gradients()
        adam_step(self.data, self.grad, self.exp_avg, self.exp_avg_sq, self.counter, self.lr, *self.betas,
                  self.eps, self.weight_decay, self.decoupled_weight_decay, self.l1)

    @torch.no_grad()
    def step_with(self, grad: torch.Tensor, partials: int = 1) -> None:
        """The update from ``grad`` instead of ``self.grad``: ``partials`` partial sums back to back
        (``partials * n`` elements, added in the kernel), as a split gradient reduction writes them."""
        adam_step(self.data, grad, self.exp_avg, self.exp_avg_sq, self.counter, self.lr, *self.betas, self.eps,
                  self.weight_decay, self.decoupled_weight_decay, self.l1, partials=partials)

    def fold(self, arrivals: torch.Tensor) -> AdamFold:
        """This update for the kernel that forms the gradient to apply (``ops.mlp.mlp_weight_grad(adam=...)``):
        the same arithmetic and counter as ``step_with``; ``arrivals`` a zero int32 the kernel counts in."""
        return adam_fold(self.data, self.exp_avg, self.exp_avg_sq, self.counter, arrivals, self.lr, *self.betas,
                         self.eps, self.weight_decay, self.decoupled_weight_decay, self.l1)

    def _reattach_gradients(self) -> None:
        """Autograd accumulates into the gradient views in place, except where it cannot (a backward with
        ``create_graph=True``, or ``.grad`` set to None or replaced by the user): such gradients are copied
        back into the flat buffer, so the update never reads a stale one. Host-side checks only."""
        offset = 0
        for p in self.params:
            n = p.numel()
            view = self.grad[offset:offset + n]
            if p.grad is None:
                view.zero_()
                p.grad = view.view_as(p)
            elif p.grad.data_ptr() != view.data_ptr():
                view.copy_(p.grad.reshape(-1))
                p.grad = view.view_as(p)
            offset += n

    @property
    def steps_taken(self) -> int:
        """Updates so far (reads the device: for inspection, not inside a step)."""
        return int(self.counter) // adam_programs(self.data.numel())

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone(),
                "counter": self.counter.clone(), "lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay, "decoupled_weight_decay": self.decoupled_weight_decay,
                "l1": self.l1}

    def load_state_dict(self, state: dict) -> None:
        for key in ("exp_avg", "exp_avg_sq"):
            if state[key].shape != self.data.shape:
                raise ValueError(f"{key} has shape {tuple(state[key].shape)}, expected {tuple(self.data.shape)}")
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.counter.copy_(state["counter"])
        self.lr, self.betas = float(state["lr"]), tuple(state["betas"])
        self.eps, self.weight_decay = float(state["eps"]), float(state["weight_decay"])
        # (checkpoints written before these existed had neither)
        self.decoupled_weight_decay = float(state.get("decoupled_weight_decay", 0.0))
        self.l1 = float(state.get("l1", 0.0))


class ReplicaAdam:
    """Adam over a ``StackedMLP``'s or ``StackedNet``'s ``(K, P)`` weights with per-replica ``lr`` and ``betas``
    (K values each): ``torch.optim.Adam``'s update (no amsgrad) for every replica at once, or with
    ``weight_decay`` ``torch.optim.AdamW``'s (decoupled: ``p *= 1 - lr * weight_decay`` first); ``l1`` adds
    ``l1 * sign(p)`` to the gradient first (the single trainer's L1 hook). With ``flat=True`` it is FlatAdam's
    kernel with a replica axis (``ops.replica_adam_step``: one launch, each replica's arithmetic its single
    run's FlatAdam's); otherwise, where every replica has the same lr and betas (a seed sweep), PyTorch's fused
    Adam(W) kernel (``torch._fused_adam_``/``_fused_adamw_``, one launch), else eight whole-buffer ops with
    ``(K, 1)`` hyper-parameters. The step count lives on the device either way (capturable). ``state_dtype``
    (``flat=True`` only): FlatAdam's, each replica's moments rounded as its single run's."""

    def __init__(self, model: nn.Module, lr, betas, eps: float = 1e-8, weight_decay: float = 0.0, l1: float = 0.0,
                 flat: bool = False, state_dtype=torch.float32):
        dtype = moment_dtype(state_dtype)
        if dtype != torch.float32 and not flat:
            raise ValueError("bf16 moments are FlatAdam's kernel's: ReplicaAdam(..., flat=True)")
        param = model.flat
        k = param.shape[0]
        self.data, self.eps, self.weight_decay, self.l1 = param, eps, float(weight_decay), float(l1)
        lr, betas = [float(v) for v in lr], [tuple(map(float, b)) for b in betas]
        self.base_lr, self.base_betas, self.flat = lr, betas, flat
        self.exp_avg = torch.zeros_like(param, dtype=dtype)
        self.exp_avg_sq = torch.zeros_like(param, dtype=dtype)
        if flat:   # the kernel's table and counter (advancing by its grid size per update)
            self.hyper = replica_adam_hyper(lr, betas, self.weight_decay).to(param.device)
            self.counter = torch.zeros(1, dtype=torch.int64, device=param.device)
            self.programs = adam_programs(param.shape[1]) * k
        else:   # PyTorch's arithmetic: (K, 1) columns (or one fused call where all are equal), a float count
            self.uniform = (lr[0], *betas[0]) if len(set(lr)) == 1 and len(set(betas)) == 1 else None
            as_col = lambda v: torch.tensor(v, dtype=torch.float32, device=param.device).reshape(k, 1)  # noqa: E731
            self.lr = as_col(lr)
            self.beta1 = as_col([b[0] for b in betas])
            self.beta2 = as_col([b[1] for b in betas])
            self.step_count = torch.zeros((), dtype=torch.float32, device=param.device)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.data.grad = None

    @torch.no_grad()
    def scale_lr(self, factor: float) -> None:
        """Every replica's learning rate set to its base value times ``factor`` (a learning-rate schedule)."""
        lr = [base * factor for base in self.base_lr]
        if self.flat:
            self.hyper.copy_(replica_adam_hyper(lr, self.base_betas, self.weight_decay))
            return
        self.lr.copy_(torch.tensor(lr, dtype=torch.float32).reshape(self.lr.shape))
        if self.uniform is not None:
            self.uniform = (lr[0], *self.uniform[1:])

    @torch.no_grad()
    def step(self) -> None:
        grad = self.data.grad
        if grad is None:
            return
        if self.flat:
            self.step_with(grad)
            return
        if self.l1:
            grad.add_(self.data.sign(), alpha=self.l1)
        self.step_count += 1   # (the fused kernel reads the count; it does not advance it)
        if self.uniform is not None:
            lr, beta1, beta2 = self.uniform
            fused = torch._fused_adamw_ if self.weight_decay else torch._fused_adam_
            fused([self.data], [grad], [self.exp_avg], [self.exp_avg_sq], [], [self.step_count], lr=lr,
                  beta1=beta1, beta2=beta2, weight_decay=self.weight_decay, eps=self.eps, amsgrad=False,
                  maximize=False)
            return
        if self.weight_decay:
            self.data.mul_(1 - self.lr * self.weight_decay)
        self.exp_avg.lerp_(grad, 1 - self.beta1)
        self.exp_avg_sq.lerp_(grad.square(), 1 - self.beta2)
        step_size = self.lr / (1 - self.beta1 ** self.step_count)                  # (K, 1)
        bias_correction2_sqrt = (1 - self.beta2 ** self.step_count).sqrt()
        # p -= step_size * m / (sqrt(v) / sqrt(bc2) + eps), with one temporary of the buffer's size
        denom = self.exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(self.eps).div_(step_size)
        self.data.addcdiv_(self.exp_avg, denom, value=-1.0)

    @torch.no_grad()
    def step_with(self, grad: torch.Tensor, partials: int = 1) -> None:
        """The update (``flat=True``: FlatAdam's replica kernel) from ``grad`` instead of ``data.grad``: ``(K, n)``,
        or each replica's ``partials`` partial sums (``(K, partials * n)`` or ``(K, partials, n)``) added in the
        kernel, as a split gradient reduction writes them."""
        if not self.flat:
            raise ValueError("step_with is the flat kernel's update: ReplicaAdam(..., flat=True)")
        K, n = self.data.shape
        replica_adam_step(self.data, grad.view(K, n) if partials == 1 else grad.view(K, partials, n), self.exp_avg,
                          self.exp_avg_sq, self.counter, self.hyper, self.eps, self.l1, partials=partials)

    def fold(self, arrivals: torch.Tensor) -> AdamFold:
        """``FlatAdam.fold`` for the replicas (``flat=True``): ``step_with``'s update, applied by the kernel that
        forms the gradient."""
        if not self.flat:
            raise ValueError("fold is the flat kernel's update: ReplicaAdam(..., flat=True)")
        return replica_adam_fold(self.data, self.exp_avg, self.exp_avg_sq, self.counter, arrivals, self.hyper,
                                 self.eps, self.l1)

    def state_dict(self) -> dict:
        """The moments and the update count (``step``, as a float tensor: the same for both arithmetics, so a
        checkpoint resumes under either)."""
        step = (self.counter // self.programs).float().reshape(()) if self.flat else self.step_count.clone()
        return {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone(), "step": step}

    def check_state(self, state: dict) -> None:
        for key in ("exp_avg", "exp_avg_sq"):
            if not isinstance(state.get(key), torch.Tensor) or state[key].shape != self.data.shape:
                raise ValueError(f"the optimizer state's {key} does not have shape {tuple(self.data.shape)}")
        if not isinstance(state.get("step"), torch.Tensor) or state["step"].numel() != 1:
            raise ValueError("the optimizer state has no step count")

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.check_state(state)
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        if self.flat:
            self.counter.copy_(state["step"].reshape(1).to(torch.int64) * self.programs)
        else:
            self.step_count.copy_(state["step"].reshape(()))


class EMA:
    """``average = decay * average + (1 - decay) * weights`` after every update, on the device.

    ``module`` is a frozen deep copy of the tracked model (same class, fused layers included); buffers are
    copied as they are. One ``torch._foreach_lerp_`` per update: no host sync.
    """

    def __init__(self, model: nn.Module, decay: float):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be a number in (0, 1), e.g. 0.999; got {decay!r}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).requires_grad_(False).eval()
        for m in self.module.modules():   # a deep copy gives each parameter its own buffer: one again,
            if hasattr(m, "keep_flat"):   # (a FusedMLP) so the whole-MLP op reads them in place, not a copy
                m.keep_flat()
        self._averaged = list(self.module.parameters())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        torch._foreach_lerp_(self._averaged, list(model.parameters()), 1.0 - self.decay)
        for mine, theirs in zip(self.module.buffers(), model.buffers()):
            mine.copy_(theirs)


class ReplicaEMA:
    """``EMA`` of K replicas' stacked weights: ``flat`` ``(K, P)`` moved toward the model's ``flat`` after every
    update (one lerp), each replica's row its single run's ``EMA``."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.flat = model.flat.detach().clone()

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.flat.lerp_(model.flat, 1.0 - self.decay)


# -- one form of an Adam's state, whichever Adam holds it ----------------------------------------------------
# A checkpoint stores a single GAN's optimizers as {"adam": 1, "step", "lr", "betas", "exp_avg", "exp_avg_sq"}
# (the moments one tensor per parameter, in module.parameters() order), so a run saved with FlatAdam resumes
# with torch.optim.Adam/AdamW and back, and on another device.

def _parameters(optimizer) -> list[torch.Tensor]:
    return optimizer.params if isinstance(optimizer, FlatAdam) else [p for g in optimizer.param_groups
                                                                     for p in g["params"]]


def adam_state(optimizer) -> dict:
    """``optimizer``'s state (a ``FlatAdam``, or a ``torch.optim.Adam``/``AdamW`` of one group) in the one form."""
    params = _parameters(optimizer)
    if isinstance(optimizer, FlatAdam):
        sizes = [p.numel() for p in params]
        moments = [[m.view_as(p).clone() for m, p in zip(buffer.split(sizes), params)]
                   for buffer in (optimizer.exp_avg, optimizer.exp_avg_sq)]
        return {"adam": 1, "step": optimizer.steps_taken, "lr": optimizer.lr, "betas": list(optimizer.betas),
                "exp_avg": moments[0], "exp_avg_sq": moments[1]}
    group = optimizer.param_groups[0]
    states = [optimizer.state.get(p, {}) for p in params]
    step = max((int(s["step"]) for s in states if "step" in s), default=0)
    return {"adam": 1, "step": step, "lr": float(group["lr"]), "betas": [float(b) for b in group["betas"]],
            **{key: [s[key].clone() if key in s else torch.zeros_like(p) for s, p in zip(states, params)]
               for key in ("exp_avg", "exp_avg_sq")}}


def check_adam_state(optimizer, state: dict) -> None:
    """``ValueError`` unless ``state`` (the one form) fits ``optimizer``'s parameters."""
    params = _parameters(optimizer)
    for key in ("exp_avg", "exp_avg_sq"):
        moments = state.get(key)
        if not isinstance(moments, list) or len(moments) != len(params):
            raise ValueError(f"its {key} holds {len(moments) if isinstance(moments, list) else 'no'} tensors for "
                             f"{len(params)} parameters")
        for i, (m, p) in enumerate(zip(moments, params)):
            if not isinstance(m, torch.Tensor) or m.shape != p.shape:
                raise ValueError(f"its {key}[{i}] has shape {tuple(getattr(m, 'shape', ()))}, "
                                 f"expected {tuple(p.shape)}")
    non_negative_int("its step", state.get("step"))


@torch.no_grad()
def load_adam_state(optimizer, state: dict) -> None:
    """Set ``optimizer`` (FlatAdam, or torch's Adam/AdamW) from ``state`` in the one form (``adam_state``)."""
    check_adam_state(optimizer, state)
    if isinstance(optimizer, FlatAdam):
        optimizer.exp_avg.copy_(torch.cat([m.reshape(-1) for m in state["exp_avg"]]))
        optimizer.exp_avg_sq.copy_(torch.cat([m.reshape(-1) for m in state["exp_avg_sq"]]))
        optimizer.counter.fill_(state["step"] * adam_programs(optimizer.data.numel()))
        optimizer.lr, optimizer.betas = float(state["lr"]), tuple(state["betas"])
        return
    native = optimizer.state_dict()   # its own layout, filled in: load_state_dict then places every tensor
    for group in native["param_groups"]:
        group["lr"], group["betas"] = float(state["lr"]), tuple(state["betas"])
    native["state"] = {} if state["step"] == 0 else {
        i: {"step": torch.tensor(float(state["step"])), "exp_avg": m, "exp_avg_sq": v}
        for i, (m, v) in enumerate(zip(state["exp_avg"], state["exp_avg_sq"]))}
    optimizer.load_state_dict(native)
