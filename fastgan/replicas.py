"""K independent GANs trained at once: stacked weights, batched kernels, one step for all.

``GANTrainer(G, D, data, replicas=K, ...)`` returns a ``ReplicaTrainer``. Its contract:

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
  update of the ``(K, P)`` buffer with per-replica lr and betas). The draws are the exception: replica k's
  batches and noise come from its own ``torch.Generator`` (that is what makes it equal its single run),
  so each draw is K small launches; a CUDA graph (``cuda_graph=True``) replays them with the rest.
* Models: an ``nn.Sequential``, the module itself or its ``.net``. Plain MLPs (``Linear`` layers and
  activations: ``fuse``'s whole-MLP rule, ``fastgan.nn.whole_mlp_spec``; ``MLPGenerator``,
  ``MLPDiscriminator``) stack as a ``StackedMLP``, whose backward is written by hand; with ``BatchNorm1d`` and
  ``fastgan.nn.Maxout`` layers too (PacGAN's ``BatchNormGenerator`` and ``MaxoutDiscriminator``) as a
  ``StackedNet`` (per-replica batch statistics; autograd's backward). A template with a
  ``reset_parameters()`` of its own (PacGAN's models: N(0, 0.02) weights) is reset by it rather than layer
  by layer. Not yet: conditional GANs and the settings ``TrainConfig`` names when refusing.
"""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig, _positive_int, resolve_kernels
from .models import _check_calibrate, _guided_sample, _sample_guide, calibrate_discriminator, check_gan_models, generate
from .phases import phase

__all__ = ["replica_models", "stack_models", "StackedMLP", "StackedNet", "ReplicaAdam", "ReplicaTrainer",
           "REPLICA_FORMAT"]

REPLICA_FORMAT = "fastgan.ReplicaTrainer"


def _reset(module: nn.Module) -> None:
    if callable(getattr(module, "reset_parameters", None)):   # a model that knows its own init (PacGAN's)
        module.reset_parameters()
        return
    for name, m in module.named_modules():
        if any(True for _ in m.parameters(recurse=False)):
            if not hasattr(m, "reset_parameters"):
                raise ValueError(f"replicas re-initialise the template's weights, but its module {name!r} "
                                 f"({type(m).__name__}) has parameters and no reset_parameters()")
            m.reset_parameters()


def replica_models(generator: nn.Module, discriminator: nn.Module, seed: int, k: int) -> tuple[nn.Module, nn.Module]:
    """Replica ``k``'s initial ``(G, D)``: copies of the templates, every module's ``reset_parameters()`` run
    in ``modules()`` order (a template with a ``reset_parameters()`` of its own, such as PacGAN's models: that
    one), G's then D's, under ``torch.manual_seed(seed + k)`` on the CPU; returned on the templates' devices.
    The global RNG is left as it was."""
    copies = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + k)
        for template in (generator, discriminator):
            param = next(template.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            model = copy.deepcopy(template).to("cpu")
            _reset(model)
            copies.append(model.to(device))
    return copies[0], copies[1]


def _sequential_of(model: nn.Module) -> nn.Sequential:
    """The ``nn.Sequential`` that computes ``model``: itself or its only child ``.net``."""
    if isinstance(model, nn.Sequential):
        return model
    if isinstance(getattr(model, "net", None), nn.Sequential) and getattr(model, "num_classes", None) is None \
            and set(dict(model.named_children())) == {"net"}:
        return model.net
    raise ValueError(f"replicas train MLPs: an nn.Sequential of Linear, BatchNorm1d, Maxout and activation layers, "
                     f"or a model whose only child is one under .net (MLPGenerator, MLPDiscriminator, PacGAN's "
                     f"BatchNormGenerator and MaxoutDiscriminator); got {type(model).__name__}")


def _mlp_of(model: nn.Module):
    """The ``nn.Sequential`` that computes ``model`` (itself or its ``.net``) and its ``MLPSpec``."""
    from .nn import whole_mlp_spec
    seq = _sequential_of(model)
    spec, why = whole_mlp_spec(seq)
    if spec is None:
        raise ValueError(f"replicas cannot stack {type(model).__name__}: {why}")
    return seq, spec


def _layer_plan(model: nn.Module) -> list[tuple]:
    """``StackedNet``'s steps for ``model``'s Sequential: ``("linear", in, out, bias, activation, slope)``
    (an activation right after a Linear joins it), ``("batchnorm", features, eps, momentum)``,
    ``("maxout", pieces)``, ``("act", activation, slope)``; ``ValueError`` naming a layer it cannot stack."""
    from .nn import FusedLinear, Maxout, _activation_of
    seq = _sequential_of(model)
    params = list(seq.parameters())
    if any(p.dtype != torch.float32 for p in params) or len({p.device for p in params}) > 1:
        raise ValueError(f"replicas stack fp32 parameters on one device; {type(model).__name__}'s are not "
                         "(the trainer's precision setting runs lower precisions)")
    plan: list[tuple] = []
    width = None
    for name, m in seq.named_children():
        if type(m) is nn.Identity:
            continue
        act = _activation_of(m)
        if type(m) is nn.Linear or isinstance(m, FusedLinear):
            if isinstance(m, nn.modules.lazy.LazyModuleMixin) or m.in_features < 1:
                raise ValueError(f"replicas cannot stack {type(model).__name__}: its layer {name!r} is lazy")
            if width is not None and m.in_features != width:
                raise ValueError(f"replicas cannot stack {type(model).__name__}: widths do not chain at {name!r} "
                                 f"({width} -> {m.in_features})")
            fused = (m.activation, m.negative_slope) if isinstance(m, FusedLinear) else ("none", 0.0)
            plan.append(("linear", m.in_features, m.out_features, m.bias is not None, *fused))
            width = m.out_features
        elif act is not None:
            if plan and plan[-1][0] == "linear" and plan[-1][4] == "none":
                plan[-1] = (*plan[-1][:4], *act)
            else:
                plan.append(("act", *act))
        elif type(m) is nn.BatchNorm1d:
            if not (m.affine and m.track_running_stats) or m.momentum is None:
                raise ValueError(f"replicas stack a BatchNorm1d with affine weights, running statistics and a "
                                 f"momentum; {type(model).__name__}'s {name!r} lacks one")
            if width is not None and m.num_features != width:
                raise ValueError(f"replicas cannot stack {type(model).__name__}: {name!r} normalises "
                                 f"{m.num_features} features of {width}")
            plan.append(("batchnorm", m.num_features, float(m.eps), float(m.momentum)))
            width = m.num_features
        elif type(m) is Maxout:
            if width is not None and width % m.pieces:
                raise ValueError(f"replicas cannot stack {type(model).__name__}: {name!r} groups {width} "
                                 f"features in {m.pieces}s")
            plan.append(("maxout", m.pieces))
            width = None if width is None else width // m.pieces
        else:
            raise ValueError(f"replicas cannot stack {type(model).__name__}: its layer {name!r} "
                             f"({type(m).__name__}) is not a Linear, BatchNorm1d, Maxout or one of the "
                             "activations ReLU, LeakyReLU (slope >= 0), Sigmoid, Tanh")
    if not any(step[0] == "linear" for step in plan):
        raise ValueError(f"replicas cannot stack {type(model).__name__}: it has no Linear layer")
    return plan


def stack_models(models: list[nn.Module], kernels: str = "torch") -> nn.Module:
    """K models of one structure as one module over ``(K, N, in)`` inputs with weights in one ``(K, P)``
    parameter ``flat``: a ``StackedMLP`` (hand-written backward) when they are plain MLPs, else a
    ``StackedNet`` (BatchNorm, maxout; autograd's backward)."""
    from .nn import whole_mlp_spec
    spec, _ = whole_mlp_spec(_sequential_of(models[0]))
    return StackedMLP(models, kernels) if spec is not None else StackedNet(models, kernels)


def check_stackable(model: nn.Module) -> None:
    """``ValueError`` unless replicas can stack ``model`` (before any copy is made)."""
    from .nn import whole_mlp_spec
    if whole_mlp_spec(_sequential_of(model))[0] is None:
        _layer_plan(model)


# applied in place: to the fresh output of a matmul
_ACTIVATIONS = {"none": lambda h, s: h, "relu": lambda h, s: h.relu_(),
                "leaky_relu": lambda h, s: F.leaky_relu(h, s, inplace=True), "sigmoid": lambda h, s: h.sigmoid_(),
                "tanh": lambda h, s: h.tanh_()}


def _activation_grad(g: torch.Tensor, y: torch.Tensor, act: str, slope: float, inplace: bool) -> torch.Tensor:
    """``g * act'(x)`` from the layer's output ``y = act(x)`` (PyTorch's own backward kernels); ``inplace``
    where ``g`` is the backward's own temporary."""
    if act == "leaky_relu":
        if inplace:
            return torch.ops.aten.leaky_relu_backward.grad_input(g, y, slope, True, grad_input=g)
        return torch.ops.aten.leaky_relu_backward(g, y, slope, True)
    if act == "relu":
        return torch.ops.aten.threshold_backward(g, y, 0.0)
    if act == "sigmoid":
        return torch.ops.aten.sigmoid_backward(g, y)
    if act == "tanh":
        return torch.ops.aten.tanh_backward(g, y)
    return g


def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` batched. CPU BLAS multiplies slowly into a narrow output (N <= 16, e.g. a GAN's 2-wide data)
    from a row-major ``b``: measured 4x faster with ``b`` stored transposed (a tiny copy)."""
    if a.device.type == "cpu" and b.shape[2] <= 16 < b.shape[1] and b.stride(2) == 1:
        b = b.transpose(1, 2).contiguous().transpose(1, 2)
    return torch.bmm(a, b)


class _StackedForward(torch.autograd.Function):
    """Every layer of a ``StackedMLP`` forward (batched matmuls), and a hand-written backward that writes
    each layer's weight and bias gradient straight into one fresh ``(K, P)`` gradient (no per-layer
    gradient tensors to accumulate, no zero fill: every entry is written), skips it when the weights need
    none (D during G's update) and stops before dX of the first layer when the input needs none."""

    @staticmethod
    def forward(ctx, x, flat, mlp):
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else None
        with torch.autocast(x.device.type, enabled=False):
            outputs = [x if dtype is None else x.to(dtype)]
            for i, (weight, bias) in enumerate(mlp.weights(flat)):
                if dtype is not None:
                    weight, bias = weight.to(dtype), bias.to(dtype) if bias is not None else None
                h = torch.baddbmm(bias.unsqueeze(1), outputs[-1], weight.transpose(1, 2)) if bias is not None \
                    else torch.bmm(outputs[-1], weight.transpose(1, 2))
                outputs.append(_ACTIVATIONS[mlp.activation(i)](h, mlp.negative_slope))
        ctx.save_for_backward(flat, *outputs)
        ctx.mlp, ctx.dtype = mlp, dtype
        return outputs[-1]

    @staticmethod
    def backward(ctx, dy):
        flat, *outputs = ctx.saved_tensors
        mlp = ctx.mlp
        need_x, need_w = ctx.needs_input_grad[:2]
        grad = torch.empty_like(flat) if need_w else None
        layers = mlp.weights(flat)
        grads = mlp.weights(grad) if need_w else None
        g = dy.to(outputs[-1].dtype)
        dx = None
        for i in reversed(range(len(layers))):
            g = _activation_grad(g, outputs[i + 1], mlp.activation(i), mlp.negative_slope, inplace=g is not dy)
            x = outputs[i]
            if need_w:
                weight_grad, bias_grad = grads[i]
                if x.shape[2] <= 16 < g.shape[2]:   # a narrow layer input: (x^T g)^T, as _bmm explains
                    weight_grad.copy_(torch.bmm(x.transpose(1, 2), g).transpose(1, 2))
                else:   # (bmm with out= a strided view measured slower than this copy)
                    weight_grad.copy_(torch.bmm(g.transpose(1, 2), x))
                if bias_grad is not None:
                    bias_grad.copy_(g.sum(dim=1))
            if i > 0 or need_x:
                weight = layers[i][0] if ctx.dtype is None else layers[i][0].to(ctx.dtype)
                g = _bmm(g, weight)
                dx = g
        return (dx if need_x else None), grad, None


class StackedMLP(nn.Module):
    """K MLPs of one shape: ``flat`` is a ``(K, P)`` parameter, replica k's layers back to back in row k
    (``weight`` then ``bias`` per layer, each row-major); ``weights()`` gives each layer's ``(K, out, in)``
    weight and ``(K, out)`` bias as views of it. ``forward(x)`` maps ``(K, N, in)`` to ``(K, N, out)``:
    with ``kernels="torch"`` every layer one ``torch.baddbmm`` (a hand-written backward fills
    ``flat.grad`` in place of per-layer gradients), with ``"triton"`` the fused linear kernel with a grid
    axis over replicas."""

    def __init__(self, models: list[nn.Module], kernels: str = "torch"):
        super().__init__()
        _, self.spec = _mlp_of(models[0])
        self.kernels = kernels
        self.negative_slope = self.spec.negative_slope
        # a row: the Sequential's parameters in order (W_0, b_0, W_1, ...), the whole-MLP kernels' layout
        self.flat = nn.Parameter(torch.stack([torch.cat([p.detach().reshape(-1).cpu() for p in
                                                         _mlp_of(m)[0].parameters()]).float() for m in models]))

    @property
    def replicas(self) -> int:
        return self.flat.shape[0]

    def activation(self, i: int) -> str:
        return self.spec.activation(i)

    def weights(self, flat: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Each layer's ``(K, out, in)`` weight and ``(K, out)`` bias, as views of ``flat`` (default: mine)."""
        flat = self.flat if flat is None else flat
        out = []
        for fan_in, fan_out, w, _ in self.spec.table():
            b = w + fan_in * fan_out
            out.append((flat[:, w:b].view(-1, fan_out, fan_in), flat[:, b:b + fan_out] if self.spec.has_bias else None))
        return out

    def forward(self, x: torch.Tensor, flat: torch.Tensor | None = None) -> torch.Tensor:
        flat = self.flat if flat is None else flat
        if self.kernels != "triton":
            return _StackedForward.apply(x, flat, self)
        from .ops import fused_linear
        h = x
        for i, (weight, bias) in enumerate(self.weights(flat)):
            h = fused_linear(h, weight, bias, self.activation(i), self.negative_slope)
        return h

    @torch.no_grad()
    def load_into(self, model: nn.Module, k: int, flat: torch.Tensor | None = None) -> nn.Module:
        """Copy replica ``k``'s weights (from ``flat``, default mine) into ``model`` (shaped like the template)."""
        flat = self.flat if flat is None else flat
        linears = [m for m in _mlp_of(model)[0].children() if isinstance(m, nn.Linear)]
        for linear, (weight, bias) in zip(linears, self.weights(flat)):
            linear.weight.copy_(weight[k])
            if bias is not None:
                linear.bias.copy_(bias[k])
        return model


def _stacked_batch_norm(x: torch.Tensor, weight, bias, mean, var, training: bool, momentum: float,
                        eps: float) -> torch.Tensor:
    """BatchNorm of each replica's ``(N, F)`` slice of ``x`` ``(K, N, F)`` over its own batch: one
    ``F.batch_norm`` over an ``(N, K * F)`` layout, each (replica, feature) a channel of its own, so each
    replica's statistics (and running statistics, ``(K, F)`` buffers) are its own."""
    k, n, f = x.shape
    y = F.batch_norm(x.transpose(0, 1).reshape(n, k * f), mean.view(-1), var.view(-1), weight.reshape(-1),
                     bias.reshape(-1), training, momentum, eps)
    return y.view(n, k, f).transpose(0, 1)


class StackedNet(nn.Module):
    """K copies of one ``nn.Sequential`` of ``Linear``, ``BatchNorm1d``, ``Maxout`` and activation layers
    (PacGAN's BatchNorm G and maxout D) run at once: ``flat`` is a ``(K, P)`` parameter holding replica k's
    parameters in ``parameters()`` order in row k; BatchNorm's running statistics are ``(K, F)`` buffers.
    ``forward`` maps ``(K, N, in)`` to ``(K, N, out)``: each Linear one batched matmul (``"triton"``: the fused
    linear kernel with a replica axis), each BatchNorm one ``F.batch_norm`` with per-replica statistics
    (batch statistics in train mode, running ones in eval mode, as ``nn.BatchNorm1d``), maxout
    ``fastgan.ops.maxout``; autograd differentiates it."""

    def __init__(self, models: list[nn.Module], kernels: str = "torch"):
        super().__init__()
        self.plan = _layer_plan(models[0])
        if any(_layer_plan(m) != self.plan for m in models[1:]):
            raise ValueError("replicas stack models of one structure; these differ")
        if len({m.training for m in models}) > 1:
            raise ValueError("replicas stack models in one mode; some are in train mode, some in eval mode")
        self.train(models[0].training)   # as the single run: a template in eval mode normalises by running stats
        self.kernels = kernels
        seqs = [_sequential_of(m) for m in models]
        self.flat = nn.Parameter(torch.stack([torch.cat([p.detach().reshape(-1).cpu() for p in seq.parameters()])
                                              .float() for seq in seqs]))
        self.sizes: list[int] = []   # each parameter's size in a row, in order
        for step in self.plan:
            if step[0] == "linear":
                _, fan_in, fan_out, bias = step[:4]
                self.sizes += [fan_in * fan_out, fan_out] if bias else [fan_in * fan_out]
            elif step[0] == "batchnorm":
                self.sizes += [step[1], step[1]]
        if sum(self.sizes) != self.flat.shape[1]:
            raise ValueError("replicas cannot stack these models: parameters outside their layers")
        norms = [[m for m in seq.children() if type(m) is nn.BatchNorm1d] for seq in seqs]
        for j in range(len(norms[0])):
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                dtype = torch.long if name == "num_batches_tracked" else torch.float32
                self.register_buffer(f"bn{j}_{name}",
                                     torch.stack([getattr(ns[j], name).detach().cpu() for ns in norms]).to(dtype))

    @property
    def replicas(self) -> int:
        return self.flat.shape[0]

    def forward(self, x: torch.Tensor, flat: torch.Tensor | None = None) -> torch.Tensor:
        from .ops import fused_linear, maxout
        flat = self.flat if flat is None else flat
        k = flat.shape[0]
        # one split, not a slice per tensor: its backward is one concatenation, where each slice's would be
        # a zero-filled (K, P) gradient summed with the rest
        pieces = iter(flat.split(self.sizes, dim=1))
        h, norm = x, 0
        for step in self.plan:
            kind = step[0]
            if kind == "linear":
                _, fan_in, fan_out, has_bias, act, slope = step
                weight = next(pieces).view(k, fan_out, fan_in)
                bias = next(pieces) if has_bias else None
                if self.kernels == "triton":
                    h = fused_linear(h, weight, bias, act, slope)
                    continue
                h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2)) if bias is not None else \
                    torch.bmm(h, weight.transpose(1, 2))
                h = _activate(h, act, slope)
            elif kind == "act":
                h = _activate(h, step[1], step[2])
            elif kind == "maxout":
                h = maxout(h, step[1])
            else:
                _, _, eps, momentum = step
                mean, var = getattr(self, f"bn{norm}_running_mean"), getattr(self, f"bn{norm}_running_var")
                if self.training:
                    getattr(self, f"bn{norm}_num_batches_tracked").add_(1)
                h = _stacked_batch_norm(h, next(pieces), next(pieces), mean, var, self.training, momentum, eps)
                norm += 1
        return h

    @torch.no_grad()
    def load_into(self, model: nn.Module, k: int, flat: torch.Tensor | None = None) -> nn.Module:
        """Copy replica ``k``'s weights (from ``flat``, default mine) and BatchNorm statistics into ``model``
        (shaped like the template)."""
        flat = self.flat if flat is None else flat
        seq = _sequential_of(model)
        for p, piece in zip(seq.parameters(), flat[k].split(self.sizes)):
            p.copy_(piece.view_as(p))
        for j, m in enumerate(c for c in seq.children() if type(c) is nn.BatchNorm1d):
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                getattr(m, name).copy_(getattr(self, f"bn{j}_{name}")[k])
        return model


def _activate(h: torch.Tensor, act: str, slope: float) -> torch.Tensor:
    if act == "none":
        return h
    if act == "leaky_relu":
        return F.leaky_relu(h, slope)
    return {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[act](h)


class ReplicaAdam:
    """Adam over a ``StackedMLP``'s or ``StackedNet``'s ``(K, P)`` weights with per-replica ``lr`` and ``betas``
    (K values each):
    ``torch.optim.Adam``'s update (no weight decay, no amsgrad) for every replica at once. Where every
    replica has the same lr and betas (a seed sweep) it is PyTorch's fused Adam kernel (``torch._fused_adam_``,
    one launch); otherwise eight whole-buffer ops with ``(K, 1)`` hyper-parameters. The step count lives on
    the device either way (capturable)."""

    def __init__(self, model: StackedMLP, lr, betas, eps: float = 1e-8):
        param = model.flat
        k = param.shape[0]
        self.param, self.eps = param, eps
        lr, betas = [float(v) for v in lr], [tuple(map(float, b)) for b in betas]
        self.base_lr = lr
        self.uniform = (lr[0], *betas[0]) if len(set(lr)) == 1 and len(set(betas)) == 1 else None
        as_col = lambda v: torch.tensor(v, dtype=torch.float32, device=param.device).reshape(k, 1)  # noqa: E731
        self.lr = as_col(lr)
        self.beta1 = as_col([b[0] for b in betas])
        self.beta2 = as_col([b[1] for b in betas])
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.step_count = torch.zeros((), dtype=torch.float32, device=param.device)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.param.grad = None

    @torch.no_grad()
    def scale_lr(self, factor: float) -> None:
        """Every replica's learning rate set to its base value times ``factor`` (a learning-rate schedule)."""
        lr = [base * factor for base in self.base_lr]
        self.lr.copy_(torch.tensor(lr, dtype=torch.float32).reshape(self.lr.shape))
        if self.uniform is not None:
            self.uniform = (lr[0], *self.uniform[1:])

    @torch.no_grad()
    def step(self) -> None:
        grad = self.param.grad
        if grad is None:
            return
        self.step_count += 1   # (the fused kernel reads the count; it does not advance it)
        if self.uniform is not None:
            lr, beta1, beta2 = self.uniform
            torch._fused_adam_([self.param], [grad], [self.exp_avg], [self.exp_avg_sq], [], [self.step_count],
                               lr=lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=self.eps, amsgrad=False,
                               maximize=False)
            return
        self.exp_avg.lerp_(grad, 1 - self.beta1)
        self.exp_avg_sq.lerp_(grad.square(), 1 - self.beta2)
        step_size = self.lr / (1 - self.beta1 ** self.step_count)                  # (K, 1)
        bias_correction2_sqrt = (1 - self.beta2 ** self.step_count).sqrt()
        # p -= step_size * m / (sqrt(v) / sqrt(bc2) + eps), with one temporary of the buffer's size
        denom = self.exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(self.eps).div_(step_size)
        self.param.addcdiv_(self.exp_avg, denom, value=-1.0)

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone(),
                "step": self.step_count.clone()}

    def check_state(self, state: dict) -> None:
        for key in ("exp_avg", "exp_avg_sq"):
            if not isinstance(state.get(key), torch.Tensor) or state[key].shape != self.param.shape:
                raise ValueError(f"the optimizer state's {key} does not have shape {tuple(self.param.shape)}")
        if not isinstance(state.get("step"), torch.Tensor) or state["step"].numel() != 1:
            raise ValueError("the optimizer state has no step count")

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.check_state(state)
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.step_count.copy_(state["step"].reshape(()))


def _bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-replica mean sigmoid-BCE of ``(K, N, 1)`` logits against ``(K, 1, 1)`` targets: ``(K,)``."""
    return F.binary_cross_entropy_with_logits(logits, target.expand_as(logits), reduction="none").mean(dim=(1, 2))


def make_replica_step(t: ReplicaTrainer):
    """``step(index) -> (loss_d, loss_g)``, each ``(K,)``: the single-GAN step (``fastgan.step``) for K
    replicas at once, each drawing from its own generator in the order the single step draws."""
    config, device = t.config, t.device
    n, features = t.data.shape
    pack, K = config.pack, t.replicas
    per = [config.for_replica(k) for k in range(K)]
    col = lambda vals: torch.tensor(vals, dtype=torch.float32, device=device).reshape(K, 1, 1)  # noqa: E731
    real_label = col([c.real_label for c in per])
    zero, one = torch.zeros_like(real_label), torch.ones_like(real_label)
    sigmas = [c.instance_noise for c in per]
    noise_scale = col(sigmas)
    hinge = config.loss == "hinge"

    def instance_noise(shape) -> list[torch.Tensor | None]:   # each replica's draw; none where its sigma is 0
        return [torch.randn(shape, device=device, generator=g) if s > 0 else None for g, s in zip(t.generators, sigmas)]

    def add_noise(x: torch.Tensor, draws: list) -> torch.Tensor:   # x: (K, B, features)
        if not any(sigmas):
            return x
        return x + noise_scale * torch.stack([z if z is not None else x.new_zeros(x.shape[1:]) for z in draws])

    def noisy(x: torch.Tensor) -> torch.Tensor:
        return add_noise(x, instance_noise(x.shape[1:]))

    def d_input(x):
        x = noisy(x)
        return x.reshape(K, x.shape[1] // pack, pack * features) if pack > 1 else x

    def d_loss(real_logits, fake_logits):
        if hinge:
            return torch.relu(1.0 - real_logits).mean(dim=(1, 2)) + torch.relu(1.0 + fake_logits).mean(dim=(1, 2))
        return _bce(real_logits, real_label) + _bce(fake_logits, zero)

    def d_loss_of_inputs(real, fake):   # two passes, as the single step: its gradient sums, not one over both
        return d_loss(t.discriminator(real), t.discriminator(fake))

    def g_loss(fake_logits):
        return -fake_logits.mean(dim=(1, 2)) if hinge else _bce(fake_logits, one)

    def g_loss_of_input(fake_in):
        return g_loss(t.discriminator(fake_in))

    from .config import CUDAGRAPH_COMPILE_MODES
    from .step import compiled_regions, forward_autocast, with_precision
    generator, d_loss_of_inputs, g_loss_of_input = compiled_regions(config, t.generator, d_loss_of_inputs,
                                                                    g_loss_of_input)
    cudagraph_trees = config.compile in CUDAGRAPH_COMPILE_MODES
    autocast = forward_autocast(config.precision, device)

    def draw():   # the single step's order: batch, its noise, z
        samples = config.samples_per_step
        with phase("data"):
            indices, noise, zs = [], [], []
            for g, s in zip(t.generators, sigmas):
                indices.append(torch.randint(0, n, (samples,), device=device, generator=g))
                noise.append(torch.randn((samples, features), device=device, generator=g) if s > 0 else None)
                zs.append(torch.randn(samples, t.latent_dim, device=device, generator=g))
            real = add_noise(t.data.index_select(0, torch.cat(indices)).view(K, samples, features), noise)
            real = real.reshape(K, samples // pack, pack * features) if pack > 1 else real
            return real, torch.stack(zs)

    d_params, g_params = [t.discriminator.flat], [t.generator.flat]

    def simultaneous_step():
        """The single simultaneous step: both losses from one pass of D over real and fake, each network's
        gradient of its own loss, then both updates (PacGAN's code)."""
        real, z = draw()
        with phase("G.forward"), autocast():
            fake = generator(z)
        with phase("D.forward"), autocast():
            real_logits = t.discriminator(real)
            fake_logits = t.discriminator(d_input(fake))
            loss_d = d_loss(real_logits, fake_logits)
            loss_g = g_loss(fake_logits)
        with phase("D.backward"):
            t.optimizer_d.zero_grad()
            loss_d.sum().backward(inputs=d_params, retain_graph=True)
        with phase("G.backward"):
            t.optimizer_g.zero_grad()
            loss_g.sum().backward(inputs=g_params)
        with phase("D.optim"):
            t.optimizer_d.step()
        return loss_d, loss_g

    def alternating_step():
        """``d_steps`` updates of D, each on a fresh draw, then G's loss and gradient through the last draw's
        fake batch (D frozen)."""
        for d_step in range(config.d_steps):
            last = d_step == config.d_steps - 1
            real, z = draw()
            with phase("G.forward"), autocast():
                if last:
                    fake = generator(z)
                else:
                    with torch.no_grad():
                        fake = generator(z)
                fake_for_d = d_input(fake.detach())
            with phase("D.forward"), autocast():
                loss_d = d_loss_of_inputs(real, fake_for_d)
            with phase("D.backward"):
                t.optimizer_d.zero_grad()
                loss_d.sum().backward()
            with phase("D.optim"):
                t.optimizer_d.step()
        t.discriminator.requires_grad_(False)
        try:
            with phase("G.loss"), autocast():
                loss_g = g_loss_of_input(d_input(fake))
            with phase("G.backward"):
                t.optimizer_g.zero_grad()
                loss_g.sum().backward()
        finally:
            t.discriminator.requires_grad_(True)
        return loss_d, loss_g

    def step(index: int):
        if cudagraph_trees:
            torch.compiler.cudagraph_mark_step_begin()
        # the simultaneous step is never compiled (TrainConfig says so)
        loss_d, loss_g = simultaneous_step() if config.update == "simultaneous" else alternating_step()
        with phase("G.optim"):
            t.optimizer_g.step()
            if t.ema_flat is not None:
                with torch.no_grad():
                    t.ema_flat.lerp_(t.generator.flat, 1.0 - config.ema)
        loss_d, loss_g = loss_d.detach().float(), loss_g.detach().float()
        if cudagraph_trees:
            loss_d, loss_g = loss_d.clone(), loss_g.clone()
        return loss_d, loss_g

    return with_precision(step, config.precision)


from .trainer import GANTrainer, training_device  # noqa: E402  (the base; trainer.py imports us lazily)


class ReplicaTrainer(GANTrainer):
    """K GANs at once (see the module's docstring). Made by ``GANTrainer(..., replicas=K)``.

    ``step()`` returns ``(K, 2)`` losses (D, G); ``history`` holds lists of K values per step;
    ``sample(n, replica=k)`` samples replica k as its single run would (``replica=None``: all, ``(K, n, f)``);
    ``replica(k)`` gives plain ``(G, D)`` modules; ``save``/``load`` resume exactly.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, data, config: TrainConfig | None = None, *,
                 labels=None, **settings):
        from . import data as _data
        from .graph import GraphedStep
        from .history import LossLog
        if config is not None and not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a fastgan.TrainConfig, got {type(config).__name__}")
        config = TrainConfig(**settings) if config is None else config.replace(**settings)
        if config.replicas is None:
            raise ValueError("ReplicaTrainer needs replicas=K")
        if labels is not None:
            raise ValueError("replicas do not train conditional GANs yet (labels given)")
        if not isinstance(generator, nn.Module) or not isinstance(discriminator, nn.Module):
            raise TypeError("generator and discriminator must be torch.nn.Module instances")
        self.device = training_device(config, data)
        self.config = config
        self.replicas = config.replicas
        self.data = _data.from_tensor(data, device=self.device)
        self.latent_dim = check_gan_models(generator, discriminator, self.data.shape[1], config.pack,
                                           config.latent_dim)
        check_stackable(generator), check_stackable(discriminator)   # clear errors before any copy
        self.labels, self.num_classes = None, None
        self.kernels = resolve_kernels(config, self.device)
        self.templates = (copy.deepcopy(generator).cpu(), copy.deepcopy(discriminator).cpu())
        models = [replica_models(*self.templates, config.seed, k) for k in range(self.replicas)]
        self.generator = stack_models([g for g, _ in models], self.kernels).to(self.device)
        self.discriminator = stack_models([d for _, d in models], self.kernels).to(self.device)
        per = [config.for_replica(k) for k in range(self.replicas)]
        self.optimizer_g = ReplicaAdam(self.generator, [c.generator_lr for c in per], [c.betas for c in per])
        self.optimizer_d = ReplicaAdam(self.discriminator, [c.discriminator_lr for c in per],
                                       [c.betas for c in per])
        self.generators = [torch.Generator(device=self.device).manual_seed(c.seed) for c in per]
        self.rng = self.generators[0]
        self.ema = None
        self.ema_flat = self.generator.flat.detach().clone() if config.ema is not None else None
        self.augment = self.spectral = self.sampler = self.parallel = None
        self.step_path = "replicas"
        self._step = make_replica_step(self)
        self._graphed = GraphedStep(self._step, self.generators, self.device, config.steps_per_replay,
                                    config.graph_warmup) if config.cuda_graph else None
        self.step_count = 0
        self._lr_factor = 1.0
        self.losses = LossLog()

    def _set_lr_factor(self, factor: float) -> None:
        self.optimizer_g.scale_lr(factor)
        self.optimizer_d.scale_lr(factor)

    @GANTrainer.batch_size.setter
    def batch_size(self, value: int) -> None:
        self.config = self.config.replace(batch_size=value)
        self._step = make_replica_step(self)
        if self._graphed is not None:
            self._graphed.step = self._step
            self._graphed.reset()

    def step(self) -> torch.Tensor:
        """One D update then one G update of every replica; returns ``(K, 2)`` losses (D, G) on the device."""
        loss_d, loss_g = super().step()
        return torch.stack((loss_d, loss_g), dim=1)

    @staticmethod
    def _row_is_finite(row) -> bool:
        return all(math.isfinite(v) for v in (*row[1], *row[2]))

    @staticmethod
    def _postfix(row) -> dict:
        return {"loss_d": f"{sum(row[1]) / len(row[1]):.4f}", "loss_g": f"{sum(row[2]) / len(row[2]):.4f}"}

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
               metropolis_step: float = 1.0) -> torch.Tensor:
        """Replica ``replica``'s ``n`` samples, as its single run's ``sample(n, seed)`` gives them; with
        ``replica=None``, every replica's: ``(K, n, features)``. EMA weights when kept (``ema=False``: raw).
        ``rejection``: as ``GANTrainer.sample``, each replica judged by its own D; ``self.last_acceptance`` is the
        rate kept (a list, one per replica, with ``replica=None``); ``metropolis=L``: Metropolis-Hastings instead
        (``sharpen``: its beta; ``metropolis_step``: its proposals' step), as ``GANTrainer.sample``.
        ``calibrate=N``: as ``GANTrainer.sample``, a copy of each replica's D trained N steps against the generator
        sampled from before it judges (Adam ``calibrate_lr``, ``calibrate_batch`` rows of each kind per step)."""
        n = _positive_int("n", n)
        guide = _sample_guide(rejection, metropolis, sharpen, metropolis_step)   # refused before any work
        guided = guide["quantile"] is not None or guide["chain"] is not None
        calibrate = _check_calibrate(calibrate, guided, calibrate_lr, calibrate_batch)
        if labels is not None:
            raise ValueError("replicas are unconditional GANs: no labels")
        if ema and self.ema_flat is None:
            raise ValueError("this trainer keeps no EMA generator (pass ema=DECAY to GANTrainer)")
        use_ema = self.ema_flat is not None and ema is not False
        ks = range(self.replicas) if replica is None else [self._replica_index(replica)]
        out, rates = [], []
        for k in ks:
            g, d = self.replica(k, ema=use_ema)
            if guided:
                if calibrate:
                    d = calibrate_discriminator(g, d, self.data, self.latent_dim, calibrate, seed, self.device,
                                                self.config.pack, lr=calibrate_lr, batch=calibrate_batch)
                samples, rate = _guided_sample(g, d, n, self.latent_dim, seed, self.device, guide, self.config.pack)
                rates.append(rate)
            else:
                samples = generate(g, n, self.latent_dim, seed, self.device)
            out.append(samples)
        if rates:
            self.last_acceptance = rates[0] if replica is not None else rates
        return out[0] if replica is not None else torch.stack(out)

    # -- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        self.flush_losses()
        return {
            "format": REPLICA_FORMAT, "version": 1, "step": self.step_count, "replicas": self.replicas,
            "generator": self.generator.flat.detach().clone(),
            "discriminator": self.discriminator.flat.detach().clone(),
            "optimizer_g": self.optimizer_g.state_dict(), "optimizer_d": self.optimizer_d.state_dict(),
            "rng": [g.get_state() for g in self.generators], "history": self.history,
            "ema": self.ema_flat.clone() if self.ema_flat is not None else None,
            "buffers": {name: {key: b.clone() for key, b in getattr(self, name).named_buffers()}
                        for name in ("generator", "discriminator")},
            "config": self.config.to_dict(),
        }

    def load(self, path: str | os.PathLike) -> dict:
        state = load_checkpoint(path, map_location=self.device)
        try:
            if state.get("format") != REPLICA_FORMAT:
                raise ValueError(f"format is {state.get('format')!r}, expected {REPLICA_FORMAT!r} (a checkpoint of "
                                 "a single-GAN trainer: load it with replicas unset)")
            if state["replicas"] != self.replicas:
                raise ValueError(f"it holds {state['replicas']} replicas, this trainer {self.replicas}")
            for name in ("generator", "discriminator"):
                ours = getattr(self, name).flat
                if not isinstance(state[name], torch.Tensor) or state[name].shape != ours.shape:
                    raise ValueError(f"{name} weights have shape {tuple(getattr(state[name], 'shape', ()))}, "
                                     f"expected {tuple(ours.shape)}")
            buffers = state.get("buffers", {"generator": {}, "discriminator": {}})
            for name in ("generator", "discriminator"):
                ours, theirs = dict(getattr(self, name).named_buffers()), buffers[name]
                if set(ours) != set(theirs) or any(
                        not isinstance(theirs[key], torch.Tensor) or theirs[key].shape != b.shape
                        for key, b in ours.items()):
                    raise ValueError(f"its {name}'s BatchNorm statistics do not fit this trainer's" +
                                     (" (it has none)" if not theirs else ""))
            self.optimizer_g.check_state(state["optimizer_g"])
            self.optimizer_d.check_state(state["optimizer_d"])
            if (self.ema_flat is None) != (state.get("ema") is None):
                raise ValueError("one of this trainer and the checkpoint keeps an EMA generator, the other not")
            rng = state["rng"]
            if not isinstance(rng, list) or len(rng) != self.replicas:
                raise ValueError("the RNG states do not match the replicas")
            if any(not isinstance(s, torch.Tensor) or s.numel() != g.get_state().numel()
                   for g, s in zip(self.generators, rng)):
                raise ValueError(f"its RNG states are not those of {self.device.type} generators (a checkpoint "
                                 "saved on another kind of device)")
            if not isinstance(state["step"], int) or state["step"] < 0:
                raise ValueError(f"step must be a non-negative integer, got {state['step']!r}")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{path} does not fit this trainer: {e}") from e
        with torch.no_grad():
            self.generator.flat.copy_(state["generator"])
            self.discriminator.flat.copy_(state["discriminator"])
            if self.ema_flat is not None:
                self.ema_flat.copy_(state["ema"])
            for name in ("generator", "discriminator"):
                for key, b in getattr(self, name).named_buffers():
                    b.copy_(buffers[name][key])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        for g, s in zip(self.generators, rng):
            g.set_state(s.cpu())
        self.step_count = int(state["step"])
        self._lr_factor = None   # the next step sets lr_schedule's rates for it
        self.losses.reset(state["history"])
        if self._graphed is not None:
            self._graphed.reset()
        return state

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        state = self.state_dict()
        if extra is not None:
            state["extra"] = extra
        return save_checkpoint(state, path)
