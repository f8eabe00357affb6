"""K models of one structure stacked into one module: their weights in one ``(K, P)`` parameter, each layer
one batched matmul (or the fused linear kernel with a replica grid axis) over ``(K, N, features)`` inputs.

``StackedMLP`` (plain MLPs; a hand-written backward) and ``StackedNet`` (with ``BatchNorm1d``, ``Maxout`` and
``MinibatchStd`` layers; autograd's backward), made by ``stack_models``; ``replica_models`` gives replica k's
initial copies.
``fastgan.train.ReplicaTrainer`` trains them.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import ACTIVATIONS, fused_linear, maxout, reference_only
from .fused import FusedLinear, Maxout, activation_of, whole_mlp_spec
from .layers import MinibatchStd, minibatch_std

__all__ = ["replica_models", "stack_models", "check_stackable", "StackedMLP", "StackedNet", "StackedConditional"]


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
    raise ValueError(f"replicas train MLPs: an nn.Sequential of Linear, BatchNorm1d, Maxout, MinibatchStd and "
                     f"activation layers, or a model whose only child is one under .net (MLPGenerator, "
                     f"MLPDiscriminator, PacGAN's BatchNormGenerator and MaxoutDiscriminator); "
                     f"got {type(model).__name__}")


def _mlp_of(model: nn.Module):
    """The ``nn.Sequential`` that computes ``model`` (itself or its ``.net``) and its ``MLPSpec``."""
    seq = _sequential_of(model)
    spec, why = whole_mlp_spec(seq)
    if spec is None:
        raise ValueError(f"replicas cannot stack {type(model).__name__}: {why}")
    return seq, spec


def _layer_plan(model: nn.Module) -> list[tuple]:
    """``StackedNet``'s steps for ``model``'s Sequential: ``("linear", in, out, bias, activation, slope)``
    (an activation right after a Linear joins it), ``("batchnorm", features, eps, momentum)``,
    ``("maxout", pieces)``, ``("minibatch_std", group)``, ``("act", activation, slope)``; ``ValueError``
    naming a layer it cannot stack."""
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
        act = activation_of(m)
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
        elif type(m) is MinibatchStd:
            plan.append(("minibatch_std", m.group))
            width = None if width is None else width + 1
        else:
            raise ValueError(f"replicas cannot stack {type(model).__name__}: its layer {name!r} "
                             f"({type(m).__name__}) is not a Linear, BatchNorm1d, Maxout, MinibatchStd or one of the "
                             "activations ReLU, LeakyReLU (slope >= 0), Sigmoid, Tanh")
    if not any(step[0] == "linear" for step in plan):
        raise ValueError(f"replicas cannot stack {type(model).__name__}: it has no Linear layer")
    return plan


def _conditional_form(model: nn.Module) -> str | None:
    """How a conditional model uses its labels, as its class declares it (``ConditionalMLPGenerator``:
    ``"onehot_input"``, ``ProjectionDiscriminator``: ``"projection"``; a subclass may override forward, so it
    does not inherit the claim); None for an unconditional one."""
    return vars(type(model)).get("conditional_form")


def _conditional_plan(model: nn.Module) -> list[tuple]:
    """The ``_layer_plan`` of a conditional model's MLP (``.net`` of G, ``.body`` of D): Linear layers and
    activations only."""
    seq = model.net if _conditional_form(model) == "onehot_input" else model.body
    plan = _layer_plan(seq)
    if any(step[0] != "linear" for step in plan):
        raise ValueError(f"replicas stack a {type(model).__name__} of Linear layers and activations only")
    return plan


def stack_models(models: list[nn.Module], kernels: str = "torch") -> nn.Module:
    """K models of one structure as one module over ``(K, N, in)`` inputs with weights in one ``(K, P)``
    parameter ``flat``: a ``StackedMLP`` (hand-written backward) when they are plain MLPs, a
    ``StackedConditional`` for conditional models, else a ``StackedNet`` (BatchNorm, maxout; autograd's
    backward)."""
    if _conditional_form(models[0]) is not None:
        return StackedConditional(models, kernels)
    spec, _ = whole_mlp_spec(_sequential_of(models[0]))
    return StackedMLP(models, kernels) if spec is not None else StackedNet(models, kernels)


def check_stackable(model: nn.Module) -> None:
    """``ValueError`` unless replicas can stack ``model`` (before any copy is made)."""
    if _conditional_form(model) is not None:
        _conditional_plan(model)
    elif whole_mlp_spec(_sequential_of(model))[0] is None:
        _layer_plan(model)


def _stack_parameters(modules) -> nn.Parameter:
    """``(K, P)``: row k holds ``modules[k]``'s parameters, flattened in ``parameters()`` order (fp32, CPU)."""
    return nn.Parameter(torch.stack([torch.cat([p.detach().reshape(-1).cpu() for p in m.parameters()]).float()
                                     for m in modules]))


@torch.no_grad()
def _copy_row(module: nn.Module, row: torch.Tensor, sizes: list[int]) -> None:
    """``module``'s parameters, in ``parameters()`` order, from ``row`` (pieces of ``sizes``)."""
    for p, piece in zip(module.parameters(), row.split(sizes)):
        p.copy_(piece.view_as(p))


def _stacked_linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str,
                    slope: float, kernels: str) -> torch.Tensor:
    """One Linear and its activation for K models at once, ``(K, N, in) -> (K, N, out)``: a batched matmul, or
    with ``kernels="triton"`` the fused linear kernel with a replica axis."""
    if kernels == "triton":
        return fused_linear(h, weight, bias, activation, slope)
    h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2)) if bias is not None else \
        torch.bmm(h, weight.transpose(1, 2))
    return ACTIVATIONS[activation].forward(h, slope)


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
                outputs.append(ACTIVATIONS[mlp.activation(i)].forward_(h, mlp.negative_slope))
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
            # g * act'(x) from the layer's output, in place where g is the backward's own temporary
            g = ACTIVATIONS[mlp.activation(i)].backward(g, outputs[i + 1], mlp.negative_slope, g is not dy)
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
    axis over replicas; inside ``ops.reference_path()`` (R1's gradient of a gradient) either takes the
    fused linear's reference path, which autograd differentiates twice."""

    def __init__(self, models: list[nn.Module], kernels: str = "torch"):
        super().__init__()
        _, self.spec = _mlp_of(models[0])
        self.kernels = kernels
        self.negative_slope = self.spec.negative_slope
        # a row: the Sequential's parameters in order (W_0, b_0, W_1, ...), the whole-MLP kernels' layout
        self.flat = _stack_parameters([_mlp_of(m)[0] for m in models])

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
        if self.kernels != "triton" and not reference_only():   # (its backward is not differentiable again)
            return _StackedForward.apply(x, flat, self)
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
    """K copies of one ``nn.Sequential`` of ``Linear``, ``BatchNorm1d``, ``Maxout``, ``MinibatchStd`` and activation
    layers (PacGAN's BatchNorm G and maxout D) run at once: ``flat`` is a ``(K, P)`` parameter holding replica k's
    parameters in ``parameters()`` order in row k; BatchNorm's running statistics are ``(K, F)`` buffers.
    ``forward`` maps ``(K, N, in)`` to ``(K, N, out)``: each Linear one batched matmul (``"triton"``: the fused
    linear kernel with a replica axis), each BatchNorm one ``F.batch_norm`` with per-replica statistics
    (batch statistics in train mode, running ones in eval mode, as ``nn.BatchNorm1d``), maxout
    ``fastgan.ops.maxout``, the minibatch standard deviation over each replica's own rows; autograd
    differentiates it."""

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
        self.flat = _stack_parameters(seqs)
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
                h = _stacked_linear(h, weight, next(pieces) if has_bias else None, act, slope, self.kernels)
            elif kind == "act":
                h = ACTIVATIONS[step[1]].forward(h, step[2])
            elif kind == "maxout":
                h = maxout(h, step[1])
            elif kind == "minibatch_std":   # each replica's groups of its own rows: (K, N, F) -> (K, N, F + 1)
                h = minibatch_std(h, step[1])
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
        _copy_row(seq, flat[k], self.sizes)
        for j, m in enumerate(c for c in seq.children() if type(c) is nn.BatchNorm1d):
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                getattr(m, name).copy_(getattr(self, f"bn{j}_{name}")[k])
        return model


class StackedConditional(nn.Module):
    """K conditional models of one structure over ``(K, N, in)`` inputs and ``(K, N)`` labels:
    ``ConditionalMLPGenerator`` (G(z, y) = net([z, onehot(y)])) or ``ProjectionDiscriminator`` (D(x, y) =
    head(phi(x)) + <embed(y), phi(x)>, phi its ``.body``). ``flat`` is a ``(K, P)`` parameter holding replica k's
    ``parameters()`` in order in row k; each Linear is one batched matmul (``"triton"``: the fused linear
    kernel with a replica axis), the embedding one lookup for every replica; autograd's backward."""

    def __init__(self, models: list[nn.Module], kernels: str = "torch"):
        super().__init__()
        template = models[0]
        self.form, self.num_classes, self.plan = _conditional_form(template), template.num_classes, \
            _conditional_plan(template)
        if any(_conditional_form(m) != self.form or m.num_classes != self.num_classes or _conditional_plan(m)
               != self.plan for m in models[1:]):
            raise ValueError("replicas stack models of one structure; these differ")
        self.kernels = kernels
        self.sizes = [p.numel() for p in template.parameters()]
        self.flat = _stack_parameters(models)
        self.register_buffer("onehot", torch.eye(self.num_classes), persistent=False)

    @property
    def replicas(self) -> int:
        return self.flat.shape[0]

    def forward(self, x: torch.Tensor, labels: torch.Tensor, flat: torch.Tensor | None = None) -> torch.Tensor:
        flat = self.flat if flat is None else flat
        k = flat.shape[0]
        pieces = iter(flat.split(self.sizes, dim=1))
        h = torch.cat([x, self.onehot[labels].to(x.dtype)], dim=2) if self.form == "onehot_input" else x
        for _, fan_in, fan_out, has_bias, act, slope in self.plan:
            weight = next(pieces).view(k, fan_out, fan_in)
            h = _stacked_linear(h, weight, next(pieces) if has_bias else None, act, slope, self.kernels)
        if self.form == "onehot_input":
            return h
        head_weight, head_bias, embed = next(pieces), next(pieces), next(pieces)
        width = h.shape[2]
        # replica r's class c is row r C + c of every replica's embedding table stacked: one lookup for all
        rows = labels + torch.arange(k, device=labels.device).unsqueeze(1) * self.num_classes
        projected = (F.embedding(rows, embed.reshape(k * self.num_classes, width)) * h).sum(dim=2, keepdim=True)
        return _stacked_linear(h, head_weight.view(k, 1, width), head_bias, "none", 0.0, self.kernels) + projected

    @torch.no_grad()
    def load_into(self, model: nn.Module, k: int, flat: torch.Tensor | None = None) -> nn.Module:
        """Copy replica ``k``'s weights (from ``flat``, default mine) into ``model`` (shaped like the template)."""
        _copy_row(model, (self.flat if flat is None else flat)[k], self.sizes)
        return model
