"""spectral_normalize_: one power iteration per weight matrix, then each divided by its spectral norm.

Spectral normalisation (Miyato et al. 2018) bounds each layer's Lipschitz constant by 1 with
W / sigma(W), sigma estimated by power iteration on a persistent vector u. fastgan applies it in the
update: after each optimizer step of D the stored weights are divided by their estimated sigma (a
projection onto spectral norm 1), so D's forward and backward use W as it is, in any kernel, with no
extra launch there; the gradient is taken with respect to the normalised weight (Miyato's also flows
through sigma). For weights that sit in one buffer (``FlatAdam``'s, a
``FusedMLP``'s) and vectors in another, all layers take one Triton launch; otherwise the PyTorch
reference runs per layer. Both are capturable (no host reads).
"""
from __future__ import annotations

import torch

from . import spectral_kernels as kernels
from ._runtime import kernel_launches, use_triton

__all__ = ["spectral_normalize_", "spectral_normalize_reference_"]

EPS = 1e-12
_tables: dict[tuple, torch.Tensor] = {}


def spectral_normalize_reference_(weights: list[torch.Tensor], us: list[torch.Tensor], eps: float = EPS) -> None:
    """The same update with PyTorch ops, layer by layer."""
    for w, u in zip(weights, us):
        v = w.t() @ u
        v = v / (v.norm() + eps)
        s = w @ v
        sigma = s.norm().clamp_min(eps)
        u.copy_(s / sigma)
        w.div_(sigma)


def _one_buffer(tensors: list[torch.Tensor]) -> bool:
    storage = tensors[0].untyped_storage().data_ptr()
    return all(t.is_contiguous() and t.untyped_storage().data_ptr() == storage for t in tensors)


@torch.no_grad()
def spectral_normalize_(weights: list[torch.Tensor], us: list[torch.Tensor], eps: float = EPS) -> None:
    """In place, for each 2-D ``weights[i]`` (out, in) and its ``us[i]`` (out,): ``v = W^T u / |W^T u|``,
    ``s = W v``, ``sigma = |s|``, ``u = s / sigma``, ``W = W / sigma``. Returns nothing: reads no value."""
    if len(weights) != len(us) or not weights:
        raise ValueError(f"need one u per weight, got {len(weights)} weights and {len(us)} vectors")
    for i, (w, u) in enumerate(zip(weights, us)):
        if w.dim() != 2 or u.shape != (w.shape[0],):
            raise ValueError(f"weights[{i}] must be 2-D (out, in) and us[{i}] of shape (out,); got "
                             f"{tuple(w.shape)} and {tuple(u.shape)}")
        if w.dtype != torch.float32 or u.dtype != torch.float32 or w.device != u.device:
            raise TypeError(f"weights[{i}] and us[{i}] must be float32 on one device")
    if not (use_triton(weights[0]) and _one_buffer(weights) and _one_buffer(us)):
        spectral_normalize_reference_(weights, us, eps)
        return
    w_base, u_base = weights[0], us[0]
    key = tuple((w.data_ptr(), tuple(w.shape), u.data_ptr()) for w, u in zip(weights, us))
    if key not in _tables:
        rows, v_offset = [], 0
        for w, u in zip(weights, us):
            rows.append((w.shape[0], w.shape[1], w.storage_offset(), u.storage_offset(), v_offset))
            v_offset += w.shape[1]
        _tables[key] = torch.tensor(rows, dtype=torch.int64, device=w_base.device).reshape(-1)
    table = _tables[key]
    w_all = w_base.as_strided((w_base.untyped_storage().nbytes() // 4,), (1,), 0)
    u_all = u_base.as_strided((u_base.untyped_storage().nbytes() // 4,), (1,), 0)
    v = torch.empty(sum(w.shape[1] for w in weights), device=w_base.device, dtype=torch.float32)
    kernels._spectral_normalize_kernel[(len(weights),)](w_all, u_all, v, table, float(eps), BLOCK_N=32, BLOCK_K=128)
    kernel_launches["_spectral_normalize_kernel"] += 1
