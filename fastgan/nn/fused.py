"""FusedLinear, FusedMLP and fuse(): drop-in modules over ``fastgan.ops``."""
from __future__ import annotations

import warnings
from collections import OrderedDict

import torch
from torch import nn

from ..ops import activation_from_name, fused_linear, maxout
from ..ops.activations import activation_of
from ..ops.mlp import MLPSpec, back_to_back, fused_mlp
from ..ops.native import check_spec, cuda_mlp

__all__ = ["FusedLinear", "FusedMLP", "Maxout", "fuse", "whole_mlp_spec", "BACKENDS"]

BACKENDS = ("triton", "cuda")   # what computes a FusedMLP: the Triton kernels, or the native CUDA ones


class FusedLinear(nn.Linear):
    """``nn.Linear`` followed by an activation, computed by one fused kernel.

    A subclass of ``nn.Linear``: the same ``weight`` (out, in) and ``bias`` parameters, names, init and
    ``state_dict``, so checkpoints load both ways. ``activation`` is ``none``, ``relu``, ``leaky_relu``,
    ``sigmoid`` or ``tanh``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "none",
                 negative_slope: float = 0.01, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        activation_from_name(activation)
        if not 0.0 <= negative_slope < float("inf"):
            raise ValueError(f"negative_slope must be a finite number >= 0, got {negative_slope!r}")
        self.activation = activation
        self.negative_slope = float(negative_slope)

    @classmethod
    def from_linear(cls, linear: nn.Linear, activation: str = "none", negative_slope: float = 0.01) -> FusedLinear:
        """A FusedLinear that *shares* ``linear``'s parameters (no copy, no re-initialisation)."""
        fused = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    activation=activation, negative_slope=negative_slope, device="meta")
        fused.weight = linear.weight
        fused.bias = linear.bias
        fused.train(linear.training)
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_linear(x, self.weight, self.bias, self.activation, self.negative_slope)

    def extra_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.activation == "leaky_relu" else ""
        return f"{super().extra_repr()}, activation={self.activation}{slope}"


class Maxout(nn.Module):
    """``fastgan.ops.maxout``: ``(..., units * pieces) -> (..., units)``, the largest of each group of ``pieces``
    consecutive features. After a ``Linear(in, units * pieces)`` it makes a maxout layer (Goodfellow et al.
    2013; PacGAN's discriminator). One Triton kernel each way on CUDA; no parameters."""

    def __init__(self, pieces: int):
        super().__init__()
        if isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 1:
            raise ValueError(f"pieces must be a positive int, got {pieces!r}")
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maxout(x, self.pieces)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


def _is_plain_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and not isinstance(module, FusedLinear)


def whole_mlp_spec(seq: nn.Module) -> tuple[MLPSpec | None, str]:
    """``(spec, "")`` if ``seq`` is an ``nn.Sequential`` that ``FusedMLP`` can run whole, else ``(None, why)``.

    Whole means: ``Linear`` layers (all with bias, or all without) whose widths chain, each hidden one
    followed by the same activation (ReLU, LeakyReLU with slope >= 0, Sigmoid, Tanh; or none for all),
    the last one optionally followed by one; ``nn.Identity`` anywhere; fp32 parameters on one device.
    """
    if not isinstance(seq, nn.Sequential):
        return None, f"{type(seq).__name__} is not an nn.Sequential"
    layers: list[list] = []   # [linear, activation or None]
    for name, child in seq.named_children():
        if type(child) is nn.Identity:
            continue
        if isinstance(child, nn.Linear) and not isinstance(child, FusedLinear):
            layers.append([child, None])
            continue
        act = activation_of(child)
        if act is None or not layers or layers[-1][1] is not None:
            return None, f"its child {name!r} ({type(child).__name__}) is neither a Linear nor one activation after one"
        layers[-1][1] = act
    if not layers:
        return None, "it has no Linear layer"
    linears = [lin for lin, _ in layers]
    if any(isinstance(lin, nn.modules.lazy.LazyModuleMixin) or lin.in_features < 1 for lin in linears):
        return None, "it has a lazy (uninitialised) Linear layer"
    if len({lin.bias is not None for lin in linears}) > 1:
        return None, "some of its Linear layers have a bias and some do not"
    for a, b in zip(linears[:-1], linears[1:]):
        if a.out_features != b.in_features:
            return None, f"widths do not chain ({a.out_features} -> {b.in_features})"
    hidden = {act for _, act in layers[:-1]}
    if len(hidden) > 1:
        return None, f"its hidden layers use different activations {sorted(map(str, hidden))}"
    params = [p for lin in linears for p in lin.parameters()]
    if any(p.dtype != torch.float32 for p in params) or len({p.device for p in params}) > 1:
        return None, "its parameters are not all float32 on one device"
    hidden_act = next(iter(hidden)) if hidden else None
    out_act = layers[-1][1]
    slopes = {a[1] for a in (hidden_act, out_act) if a is not None and a[0] == "leaky_relu"}
    if len(slopes) > 1:
        return None, "its leaky-ReLU slopes differ"
    spec = MLPSpec((linears[0].in_features, *(lin.out_features for lin in linears)), linears[0].bias is not None,
                   hidden_act[0] if hidden_act else "none", out_act[0] if out_act else "none",
                   next(iter(slopes)) if slopes else 0.01)
    return spec, ""


class FusedMLP(nn.Sequential):
    """An ``nn.Sequential`` MLP computed whole by ``fastgan.ops.fused_mlp``: one kernel forward, two backward.

    It keeps the original children (the same ``Linear`` and activation modules, so the same parameter
    names, ``state_dict`` keys and repr) and moves their parameters into one flat buffer, the layout the
    kernels read (moving the module to another device flattens them again there). Build it with
    ``FusedMLP(sequential)`` or ``fastgan.fuse(model, whole=True)``.
    """

    def __init__(self, sequential: nn.Sequential, backend: str = "triton"):
        spec, why = whole_mlp_spec(sequential)
        if spec is None:
            raise ValueError(f"this nn.Sequential cannot be fused whole: {why} (fastgan.fuse(model) fuses it "
                             "per layer)")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
        if backend == "cuda":
            check_spec(spec)
        super().__init__(OrderedDict(sequential.named_children()))  # the same children under the same names
        self.spec = spec
        self.backend = backend
        self._flatten()

    def _flatten(self) -> None:
        params = list(self.parameters())
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1) for p in params])
            offset = 0
            for p in params:
                p.data = flat[offset:offset + p.numel()].view_as(p)
                offset += p.numel()

    def keep_flat(self) -> None:
        """Put the parameters back to back in one buffer if they are not (after a move or a deep copy).

        Parameters already back to back (FlatAdam's buffer, say) stay where they are: an optimizer holding
        that buffer would otherwise update weights the module no longer reads."""
        params = list(self.parameters())
        if params and all(p.dtype == torch.float32 for p in params) and not back_to_back(params):
            self._flatten()

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.keep_flat()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = list(self.parameters())
        run = fused_mlp
        if self.backend == "cuda":
            run = cuda_mlp
        if x.dim() == 2:
            return run(x, params, self.spec)
        if x.dim() < 1:
            raise ValueError(f"FusedMLP needs an input of shape (..., {self.spec.dims[0]}), got a 0-d tensor")
        leading = x.shape[:-1]
        return run(x.reshape(-1, x.shape[-1]), params, self.spec).reshape(*leading, self.spec.dims[-1])

    def extra_repr(self) -> str:
        return f"whole: dims={self.spec.dims}" + (", backend=cuda (native kernels)" if self.backend == "cuda" else "")


def _fuse_whole(module: nn.Module, name: str, backend: str, keep: frozenset) -> nn.Module:
    if isinstance(module, (FusedMLP, FusedLinear)):
        return module
    if isinstance(module, nn.Sequential) and keep.intersection(module.children()):
        return fuse(module, keep=keep)   # a module kept as it is splits the MLP: per layer
    if isinstance(module, nn.Sequential):
        spec, why = whole_mlp_spec(module)
        if spec is not None and backend == "cuda":
            try:
                check_spec(spec)
            except ValueError as e:
                warnings.warn(f"fastgan.fuse(whole=True, backend='cuda'): {name}: {e}; it runs the Triton "
                              "whole-MLP kernels instead", stacklevel=3)
                return FusedMLP(module)
        if spec is not None:
            return FusedMLP(module, backend)
        warnings.warn(f"fastgan.fuse(whole=True): {name} cannot be fused whole ({why}); fusing it per layer",
                      stacklevel=3)
        return fuse(module)
    if _is_plain_linear(module):
        return FusedLinear.from_linear(module)
    for child_name, child in list(module.named_children()):
        setattr(module, child_name, _fuse_whole(child, f"{name}.{child_name}", backend, keep))
    return module


def fuse(module: nn.Module, whole: bool = False, backend: str = "triton", keep=()) -> nn.Module:
    """Replace, in place, every ``nn.Linear`` (and the activation module right after it in an
    ``nn.Sequential``: ``ReLU``, ``LeakyReLU``, ``Sigmoid``, ``Tanh``) by one ``FusedLinear``.

    The activation's slot becomes ``nn.Identity`` so ``Sequential`` indices, and thus ``state_dict``
    keys, do not change; parameters are shared, not copied. Nested children are fused too; anything
    not recognised is left as it is and still trains. Returns ``module`` (or a ``FusedLinear`` if
    ``module`` itself is a plain ``nn.Linear``).

    ``whole=True``: every ``nn.Sequential`` MLP (see ``whole_mlp_spec``) becomes one ``FusedMLP`` (one
    kernel per pass instead of one per layer), ``state_dict``-compatible with the original; one that cannot
    be fused whole is fused per layer, with a warning saying why. Returns the module to use (a new
    ``FusedMLP`` if ``module`` itself is such a Sequential; otherwise ``module``, changed in place).
    ``backend="cuda"`` (with ``whole=True``): the whole MLPs run fastgan's native CUDA kernels
    (``fastgan.ops.native``); one deeper or wider than they take runs the Triton kernels, with a warning.
    ``keep``: modules left exactly as they are, not fused into the layer before them (the trainer keeps a
    discriminator's final ``nn.Sigmoid``, which its losses skip); a Sequential holding one is fused per layer.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "cuda" and not whole:
        raise ValueError("backend='cuda' fuses whole MLPs: pass whole=True")
    keep = frozenset(keep)
    if whole:
        return _fuse_whole(module, type(module).__name__, backend, keep)
    if _is_plain_linear(module):
        return FusedLinear.from_linear(module)
    children = list(module.named_children())
    for i, (name, child) in enumerate(children):
        if not _is_plain_linear(child):
            if not isinstance(child, FusedLinear) and child not in keep:
                fuse(child, keep=keep)
            continue
        activation = None
        if isinstance(module, nn.Sequential) and i + 1 < len(children):
            activation = activation_of(children[i + 1][1]) if children[i + 1][1] not in keep else None
        if activation is None:
            setattr(module, name, FusedLinear.from_linear(child))
        else:
            setattr(module, name, FusedLinear.from_linear(child, *activation))
            setattr(module, children[i + 1][0], nn.Identity())
    return module
