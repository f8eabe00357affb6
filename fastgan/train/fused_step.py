"""The fused training step of ``kernels="triton-mlp"``: a whole GAN step in 7 kernel launches.

The per-layer Triton step launches a kernel per layer and pass (33 for the classic GAN, plus PyTorch's own
for sampling, zeroing, losses and the optimizers). Here G and D are ``FusedMLP``s and the step calls the
whole-MLP kernels directly on buffers it owns, with no autograd:

  D update (``d_steps`` times)
    1  ``sample_batch``        real rows gathered into D's input, G's noise drawn (Philox, on the device)
    2  G forward               writes the fake rows straight into D's input, behind the real ones
    3  D forward + loss + backward, real and fake as one pass of 2B rows: sigmoid-BCE and its gradient in
       the epilogue (real rows -> ``real_label``, fake -> 0, each half a mean), then the gradient chain
    4  D's dW, db (every layer, one launch; also sums the loss), and Adam on each tile of D's parameters as
       its gradient is formed (FlatAdam's arithmetic and step count: ``ops.adam.AdamFold``)
  G update, through the updated D, on the last D update's fake batch
    5  D forward + loss (target 1) + backward to D's first layer (no weight gradient for D)
    6  G's gradient chain from there: dy = g_D0 W_D0 formed slice by slice inside it (with pack > 1, step 5
       writes D's input gradient instead)
    7  G's dW, db (and the loss), with Adam on G's parameters

Gradients are written, not accumulated (nothing is zeroed). With more than 4096 rows, the weight
gradients are reduced in batch splits and Adam, a launch of its own then, adds the partial sums
(deterministic). An EMA of G adds its
own launches. ``sampler="torch"`` draws batch and noise with PyTorch's generator instead (3 launches for
step 1), the same draws as the other paths: what the equivalence tests use.

With ``replicas=K`` (``GANTrainer(..., replicas=K, kernels="triton-mlp")``) the same launches run K GANs each:
every buffer gets a leading K, the kernels a replica grid axis, Adam ``ReplicaAdam``'s update (folded in as
FlatAdam's is), the draws the K-replica Philox sampler's; replica k is its single fused run to fp32 rounding (the slices of the wide end are
planned for the K replicas' share of the SMs, so sums may split differently).

What it does not do (the trainer then runs the same FusedMLP modules through the generic step, and says
so in ``GANTrainer.step_path``): loss="hinge", instance noise, R1, augmentation, torch.compile, a D whose
last layer is not ``Linear(h, 1)`` without activation, ``fused_optimizer="torch"``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..ops import mlp as M
from ..ops import precision_scope
from ..ops.sampler import DeviceSampler
from ..phases import phase
from .parts import StepParts

__all__ = ["make_fused_step"]


class _Buffers:
    """Everything one batch size needs, allocated once (a captured graph keeps reading the same ones); with
    ``replicas`` K, each with a leading K."""

    def __init__(self, batch: int, features: int, latent: int, pack: int, g_spec: M.MLPSpec, d_spec: M.MLPSpec,
                 device: torch.device, replicas: int | None):
        f32 = dict(device=device, dtype=torch.float32)
        lead = () if replicas is None else (replicas,)
        self.batch = batch
        rows_d = 2 * batch // pack
        self.x_d = torch.empty((*lead, 2 * batch, features), **f32)            # real rows, then fake rows
        self.z = torch.empty((*lead, batch, latent), **f32)
        self.acts_g = torch.empty((*lead, batch, g_spec.hidden_columns), **f32)
        self.g_g = torch.empty((*lead, batch, g_spec.gradient_columns), **f32)
        self.acts_d = torch.empty((*lead, rows_d, d_spec.hidden_columns), **f32)
        self.y_d = torch.empty((*lead, rows_d, 1), **f32)
        self.g_d = torch.empty((*lead, rows_d, d_spec.gradient_columns), **f32)
        # D's input gradient reaches G as dy = g_D0 @ W_D0 inside G's backward (dy_linear); packed rows
        # mix samples, so with pack > 1 D's pass writes it here instead
        self.dfake = torch.empty((*lead, batch, features), **f32) if pack > 1 else None
        # the slices' partial sums (see ops.mlp)
        self.scratch_g = M.Scratch(g_spec, (batch,), device, replicas or 1)
        self.scratch_d = M.Scratch(d_spec, (rows_d, rows_d // 2), device, replicas or 1)
        self.loss_d = torch.empty((*lead, M.loss_buffer_size(rows_d)), **f32)
        self.loss_g = torch.empty((*lead, M.loss_buffer_size(rows_d // 2)), **f32)
        self.splits_d = M.weight_grad_splits(rows_d)
        self.splits_g = M.weight_grad_splits(batch)
        # split reductions need room for their partial sums; one split of one GAN writes the optimizer's gradient
        self.partial_d = torch.empty((*lead, self.splits_d * d_spec.numel), **f32) \
            if self.splits_d > 1 or replicas else None
        self.partial_g = torch.empty((*lead, self.splits_g * g_spec.numel), **f32) \
            if self.splits_g > 1 or replicas else None
        # Adam folded into the weight-gradient launch where one split forms the whole gradient: D's and G's
        # arrival counts (ops.adam.AdamFold)
        self.arrivals = torch.zeros(2, device=device, dtype=torch.int32)


def make_fused_step(p: StepParts, g_spec: M.MLPSpec, d_spec: M.MLPSpec, sampler: DeviceSampler | None,
                    replicas: int | None = None) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``step(index) -> (loss_d, loss_g)`` for the fused path (see the module docstring): ``g_spec`` and
    ``d_spec`` are the whole MLPs G's and D's forward are (``fastgan.train.backends`` checked that they can
    run it), their parameters the optimizers' flat ``data``; ``sampler`` None draws with PyTorch's generator
    ``p.rng``. ``replicas`` K: the models are ``StackedMLP``s, the optimizers ``ReplicaAdam(flat=True)``, the
    draws a K-replica Philox sampler's, and every launch runs all K (losses ``(K,)``; replica k's real
    label its ``config.for_replica(k)``'s)."""
    opt_g, opt_d = p.optimizer_g, p.optimizer_d
    data = p.data
    n, features = data.shape
    device = data.device
    buffers: dict[int, _Buffers] = {}
    lead = () if replicas is None else (replicas,)
    if replicas:   # the replicas' real labels: one value, or a (K,) tensor the loss epilogue reads per replica
        labels = p.config.per_replica("real_label")
        replica_label = labels[0] if len(set(labels)) == 1 else torch.tensor(labels, device=device)

    def step(index: int) -> tuple[torch.Tensor, torch.Tensor]:
        config = p.config
        batch, pack = config.samples_per_step, config.pack
        bf16 = config.precision == "bf16"
        real_label = replica_label if replicas else config.real_label
        b = buffers.get(batch)
        if b is None:
            buffers.clear()
            b = buffers[batch] = _Buffers(batch, features, p.latent_dim, pack, g_spec, d_spec, device, replicas)
        rows_fake = batch // pack
        x_d = b.x_d.view(*lead, 2 * rows_fake, pack * features)       # D's rows: pack samples each
        fake = b.x_d[..., batch:, :]
        x_fake = x_d[..., rows_fake:, :]
        weight = 1.0 / rows_fake                                 # each half of the loss is a mean
        loss_d = torch.empty(lead, device=device, dtype=torch.float32)   # fresh each step: the log keeps them
        loss_g = torch.empty(lead, device=device, dtype=torch.float32)
        grad_d = b.partial_d if b.partial_d is not None else opt_d.grad
        grad_g = b.partial_g if b.partial_g is not None else opt_g.grad
        for _ in range(config.d_steps):
            with phase("data"):
                if sampler is not None:
                    sampler.draw(data, b.x_d[..., :batch, :], b.z)
                else:
                    rows = torch.randint(0, n, (batch,), device=device, generator=p.rng)
                    torch.index_select(data, 0, rows, out=b.x_d[:batch])
                    b.z.normal_(generator=p.rng)
            with phase("G.forward"):
                M.mlp_forward(b.z, opt_g.data, g_spec, acts=b.acts_g, y=fake, bf16=bf16, scratch=b.scratch_g)
            with phase("D.forward+backward"):
                M.mlp_backward(x_d, opt_d.data, d_spec, acts=b.acts_d, y=b.y_d, g=b.g_d, forward=True,
                               loss=(rows_fake, real_label, 0.0, weight, weight), loss_partials=b.loss_d,
                               bf16=bf16, scratch=b.scratch_d)
                M.mlp_weight_grad(x_d, d_spec, acts=b.acts_d, g=b.g_d, grad=grad_d.view(*lead, b.splits_d, -1),
                                  loss_partials=b.loss_d, loss_out=loss_d, bf16=bf16,
                                  adam=opt_d.fold(b.arrivals[:1]) if b.splits_d == 1 else None)
            with phase("D.optim"):
                if b.splits_d > 1:   # Adam adds the splits' partial sums
                    opt_d.step_with(grad_d, b.splits_d)
                if p.spectral is not None:   # one more launch: all of D's layers normalised
                    p.spectral.step()
        with phase("G.loss+backward"):
            dx = None if pack == 1 else b.dfake.view(*lead, rows_fake, pack * features)
            head = slice(None, rows_fake)
            M.mlp_backward(x_fake, opt_d.data, d_spec, acts=b.acts_d[..., head, :], y=b.y_d[..., head, :],
                           g=b.g_d[..., head, :], dx=dx, forward=True, loss=(rows_fake, 1.0, 1.0, weight, weight),
                           loss_partials=b.loss_g, bf16=bf16, scratch=b.scratch_d)
            d_in, d_out = d_spec.dims[:2]
            d_layer0 = (b.g_d[..., head, :d_out], opt_d.data[..., :d_out * d_in].view(*lead, d_out, d_in)) \
                if pack == 1 else None
            M.mlp_backward(b.z, opt_g.data, g_spec, acts=b.acts_g, y=fake, g=b.g_g, dy=b.dfake, dy_linear=d_layer0,
                           bf16=bf16, scratch=b.scratch_g)
            M.mlp_weight_grad(b.z, g_spec, acts=b.acts_g, g=b.g_g, grad=grad_g.view(*lead, b.splits_g, -1),
                              loss_partials=b.loss_g, loss_out=loss_g, bf16=bf16,
                              adam=opt_g.fold(b.arrivals[1:]) if b.splits_g == 1 else None)
        with phase("G.optim"):
            if b.splits_g > 1:
                opt_g.step_with(grad_g, b.splits_g)
            if p.ema is not None:
                p.ema.update(p.generator)
        return loss_d, loss_g

    def step_with_precision(index: int) -> tuple[torch.Tensor, torch.Tensor]:
        with precision_scope(p.config.precision):
            return step(index)

    step_with_precision.buffers = buffers   # the step's own buffers, by batch size (for inspection and tests)
    return step_with_precision
