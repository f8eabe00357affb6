"""Fused Triton ops, each with a PyTorch reference path and an autograd contract.

- ``fused_linear(x, weight, bias=None, activation="none", negative_slope=0.01)``: ``act(x @ W.T + b)``.
- ``sigmoid_bce_with_logits(logits, target, reduction="mean")``: the stable sigmoid cross-entropy.
- ``linear_bce_head(h, weight, bias, target)``: D's last ``Linear(H, 1)`` and that loss in one kernel.
- ``fused_mlp(x, params, spec)``: a whole MLP (``MLPSpec``: widths, bias, activations) in one kernel forward
  and two backward; ``ops.mlp`` also has the launchers the fused training step calls.
- ``maxout(x, pieces)``: the largest of each group of ``pieces`` consecutive features, one kernel each way.
- ``adam_step(param, grad, exp_avg, exp_avg_sq, counter, ...)``: Adam on a flat buffer, one kernel, with
  a device-side step count (``fastgan.optim.FlatAdam`` builds on it).

Where they run: CUDA tensors run the Triton kernels; CPU tensors run them through Triton's interpreter
when ``TRITON_INTERPRET=1`` is set before import (how CI tests them), and otherwise take the PyTorch
reference path, which has the same semantics.

Precision: fp32 matmuls use tf32 tensor cores by default; ``set_matmul_precision("ieee")`` (or the
``matmul_precision("ieee")`` context manager) makes them exact fp32.
"""
from ._runtime import (AUTOTUNE, HAS_TRITON, INTERPRET, get_matmul_precision, kernel_launches, matmul_precision,
                       precision_scope, reference_only, reference_path, set_matmul_precision, use_triton,
                       with_precision)
from .activations import ACTIVATIONS, activation_from_name
from .adam import adam_step
from .bce import replica_sigmoid_bce_reference, sigmoid_bce_reference, sigmoid_bce_with_logits
from .head import linear_bce_head, linear_bce_head_reference
from .linear import fused_linear, fused_linear_reference
from .maxout import maxout, maxout_reference
# submodules: the whole-MLP launchers, the native CUDA binding, the batch sampler, spectral normalisation
from . import mlp, native, sampler, spectral
from .mlp import MLPSpec, fused_mlp, fused_mlp_reference

__all__ = ["mlp", "native", "sampler", "spectral",
           "adam_step", "fused_linear", "fused_linear_reference", "fused_mlp", "fused_mlp_reference",
           "MLPSpec", "maxout", "maxout_reference",
           "sigmoid_bce_with_logits", "sigmoid_bce_reference", "replica_sigmoid_bce_reference", "linear_bce_head",
           "linear_bce_head_reference", "ACTIVATIONS",
           "activation_from_name", "set_matmul_precision", "get_matmul_precision", "matmul_precision",
           "precision_scope", "with_precision", "kernel_launches", "use_triton", "reference_path", "reference_only",
           "HAS_TRITON", "INTERPRET", "AUTOTUNE"]
