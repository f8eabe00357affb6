"""Building one GAN training step: ``d_steps`` D updates on real + fake, then one G update through D.

The step is a closure over the models, optimizers, device-resident data and the trainer's RNG. It never
reads a tensor value on the host (no ``.item()``), so it queues work without syncing and a CUDA graph
can later capture it whole. Options (all off by default, which gives the plain GAN step):
  loss            "non_saturating" (BCE on logits) or "hinge"
  d_steps         D updates per G update; the last one's fake batch is the one G is trained through
  pack            PacGAN: D sees ``pack`` samples concatenated into one row (its input is pack x wider)
  instance_noise  std of Gaussian noise added to everything D sees (real and fake)
  mmd_weight      a kernel two-sample term on G's loss: the weight times MMD²(G's samples, the step's real
                  rows), Gaussian kernels from the real rows' finest scale to their layout's
                  (``fastgan.train.mmd``), from step ``mmd_from`` on; the fine ones weighed up from step
                  ``mmd_fine_from`` (``mmd_fine``, ``mmd_fine_shape``)
  r1_gamma        R1 penalty (gamma/2) E||grad_x D(x_real)||^2, every ``r1_every`` steps (scaled by it,
                  "lazy" regularisation); a gradient of a gradient, so it runs through the reference path
  ema             an ``EMA`` of G's weights, updated after each G step
  update          "alternating" (D's update, then G's loss through the updated D) or "simultaneous" (both
                  losses from one pass of D over the batch, then both updates: PacGAN's code)
  augment         ``fastgan.augment.Augment``: random differentiable transforms of everything D sees,
                  real and fake, in D's and G's updates; its adaptive p follows D's real logits
  spectral        ``fastgan.spectral.SpectralNorm``: after each D update, D's weights divided by their
                  spectral norm (one power iteration per layer)
  labels          class-conditional GAN: real rows come with their labels, fake rows get labels drawn
                  from the data's label distribution; G(z, y) and D(x, y)
  parallel        ``fastgan.distributed.DataParallel``: every rank draws the whole batch (and its instance
                  noise) and keeps its slice of the rows; the gradients are averaged by the optimizers'
                  hooks, the losses over the ranks at the end of the step
  (weight decay and L1 live in the optimizers: ``GANTrainer``)

With ``compile`` set, three regions run through ``torch.compile``: G's forward, D's loss on real and fake
(its backward owns that forward), and G's loss through D (likewise). Compiling the whole step as one
function fails ("Trying to backward through the graph a second time": D's and G's backward passes
would share one compiled forward). Sampling, the optimisers, EMA and the R1 term stay eager; the Triton
ops enter the graphs as opaque custom ops, so there are no graph breaks. The augmentation stays eager.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .. import ops
from ..ops.sampler import DeviceSampler
from ..phases import phase
from .config import CUDAGRAPH_COMPILE_MODES
from .mmd import mmd2

from .parts import StepParts, compiled_regions, forward_autocast, packed

__all__ = ["make_step"]


def make_step(p: StepParts, sampler: DeviceSampler | None = None) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """A step function ``step(index) -> (loss_d, loss_g)`` (detached 0-d device tensors), eager or with
    its regions compiled (``p.config.compile``); a ``GraphedStep`` can capture either. ``sampler`` (Philox,
    ``sampler="philox"``) draws the real rows and G's noise in one launch instead of ``p.rng``.

    ``index`` is the 0-based number of the step, which decides the R1 steps without reading the device.
    """
    device = p.data.device
    n = p.data.shape[0]
    d_params = list(p.discriminator.parameters())
    conditional = p.labels is not None

    def discriminate(x, y):
        return p.discriminator(x, y) if conditional else p.discriminator(x)

    parallel = p.parallel

    def d_input(x: torch.Tensor, local: bool = False) -> torch.Tensor:
        """What D sees of ``x``. Data-parallel, ``local`` rows are this rank's slice: the instance noise is
        drawn for the whole batch, as one process would, and sliced."""
        if p.augment is not None:  # the same random transforms for real and fake, in D's and G's updates
            x = p.augment(x, sampler)   # (its uniforms from the Philox sampler where there is one)
        if p.config.instance_noise > 0:
            if sampler is not None:   # (Philox: one launch, as K replicas draw theirs; never data-parallel)
                noise = sampler.normal(x)
            elif local and parallel is not None:
                noise = parallel.rows(torch.randn((x.shape[0] * parallel.world, *x.shape[1:]), device=device,
                                                  generator=p.rng))
            else:
                noise = torch.randn(x.shape, device=device, generator=p.rng)
            x = x + p.config.instance_noise * noise
        return packed(x, p.config.pack)

    def local(t):   # this rank's rows of a whole-batch tensor (all of them in one process)
        return t if parallel is None or t is None else parallel.rows(t)

    d_loss, g_loss = p.d_loss, p.g_loss

    def d_loss_of_inputs(real, fake, y_real, y_fake):
        real_logits = discriminate(real, y_real)
        return d_loss(real_logits, discriminate(fake, y_fake)), real_logits.detach()

    def g_loss_of_input(fake_in, y_fake):
        fake_logits = discriminate(fake_in, y_fake)
        return g_loss(fake_logits)

    autocast = forward_autocast(p.config.precision, device)
    generator, d_loss_of_inputs, g_loss_of_input = compiled_regions(p.config, p.generator, d_loss_of_inputs,
                                                                    g_loss_of_input)

    def generate(z, y):
        return generator(z, y) if conditional else generator(z)

    cudagraph_trees = p.config.compile in CUDAGRAPH_COMPILE_MODES  # (a no-op on a CPU)

    g_params = list(p.generator.parameters())

    def draw():
        """One update's draws, in a fixed order: the real rows (as D sees them), G's noise, and with labels
        the real rows' classes and the fake rows' (from the data's label distribution); last, the real rows
        as drawn (for the MMD term)."""
        with phase("data"):
            samples = p.config.samples_per_step
            # (with philox: no labels and the whole batch here; it is refused for conditional GANs, data_parallel)
            if sampler is not None:
                x = torch.empty((samples, p.data.shape[1]), device=device)
                z = torch.empty((samples, p.latent_dim), device=device)
                sampler.draw(p.data, x, z)
                return d_input(x), z, None, None, x
            batch = torch.randint(0, n, (samples,), device=device, generator=p.rng)
            rows = p.data.index_select(0, batch)
            real = local(d_input(rows))
            z = local(torch.randn(samples, p.latent_dim, device=device, generator=p.rng))
            y_real = y_fake = None
            if conditional:
                y_real = local(p.labels.index_select(0, batch))
                other = torch.randint(0, n, (samples,), device=device, generator=p.rng)
                y_fake = local(p.labels.index_select(0, other))
        return real, z, y_real, y_fake, local(rows)

    def with_mmd(loss_g, fake, rows, index):
        """G's loss plus ``mmd_weight`` times MMD² between its samples and the step's real rows (as drawn), its
        kernels weighed as at step ``index`` (``mmd_at``: None, no term at that step)."""
        weighting = p.config.mmd_at(index)
        if weighting is None:
            return loss_g
        with phase("G.loss.mmd"):
            return loss_g + p.config.mmd_weight * mmd2(fake.flatten(1), rows.flatten(1), **weighting)

    def simultaneous_step(index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Both losses from one forward pass of D over real and fake, each network's gradient of its own
        loss, then both updates (PacGAN's code, through ALI's training algorithm)."""
        real, z, y_real, y_fake, rows = draw()
        with phase("G.forward"), autocast():
            fake = generate(z, y_fake)
        with phase("D.forward"), autocast():
            real_logits = discriminate(real, y_real)
            fake_logits = discriminate(d_input(fake, local=True), y_fake)
            loss_d = d_loss(real_logits, fake_logits)
            loss_g = with_mmd(g_loss(fake_logits), fake, rows, index)
        with phase("D.backward"):
            p.optimizer_d.zero_grad(set_to_none=True)
            loss_d.backward(inputs=d_params, retain_graph=True)
        with phase("G.backward"):
            p.optimizer_g.zero_grad(set_to_none=True)
            loss_g.backward(inputs=g_params)
        with phase("D.optim"):
            p.optimizer_d.step()
            if p.spectral is not None:
                p.spectral.step()
            if p.augment is not None:
                p.augment.observe(real_logits.detach())
        with phase("G.optim"):
            p.optimizer_g.step()
            if p.ema is not None:
                p.ema.update(p.generator)
        return loss_d, loss_g

    def step(index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if cudagraph_trees:  # a new step: the last one's graph outputs may be overwritten now, not before
            torch.compiler.cudagraph_mark_step_begin()
        if p.config.update == "simultaneous":
            loss_d, loss_g = simultaneous_step(index)   # (not with compile or data_parallel: TrainConfig says so)
            return loss_d.detach().float(), loss_g.detach().float()
        for d_step in range(p.config.d_steps):
            last = d_step == p.config.d_steps - 1
            real, z, y_real, y_fake, rows = draw()
            with phase("G.forward"), autocast():
                if last:
                    fake = generate(z, y_fake)  # kept with its graph: G trains through this batch next
                else:
                    with torch.no_grad():
                        fake = generate(z, y_fake)
                fake_for_d = d_input(fake.detach(), local=True)
            if p.config.r1_gamma > 0 and index % p.config.r1_every == 0:
                with phase("D.forward.r1"), autocast():
                    real.requires_grad_(True)
                    with ops.reference_path():  # double backward: the fused kernels have none
                        real_logits = discriminate(real, y_real)
                        (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
                    penalty = (0.5 * p.config.r1_gamma * p.config.r1_every) * grad.square().sum(dim=1).mean()
                with phase("D.forward.fake"), autocast():
                    loss_d = d_loss(real_logits, discriminate(fake_for_d, y_fake))
                total_d = loss_d + penalty
            elif p.config.compile:
                with phase("D.forward"), autocast():
                    loss_d, real_logits = d_loss_of_inputs(real, fake_for_d, y_real, y_fake)
                    total_d = loss_d
            else:  # d_loss_of_inputs, in two phases so a profile tells the real and fake passes apart
                with phase("D.forward.real"), autocast():
                    real_logits = discriminate(real, y_real)
                with phase("D.forward.fake"), autocast():
                    loss_d = total_d = d_loss(real_logits, discriminate(fake_for_d, y_fake))
            with phase("D.backward"):
                p.optimizer_d.zero_grad(set_to_none=True)
                total_d.backward()
            with phase("D.optim"):
                p.optimizer_d.step()
                if p.spectral is not None:   # one power iteration, weights divided by their spectral norm
                    p.spectral.step()
                if p.augment is not None:  # ADA: D's confidence on real data steers p (device ops)
                    p.augment.observe(real_logits)

        # G's update flows through D, but D's weights are not being trained here: freeze them so the
        # backward skips their weight gradients (same G gradient, less work).
        for q in d_params:
            q.requires_grad_(False)
        try:
            with phase("G.loss"), autocast():
                loss_g = with_mmd(g_loss_of_input(d_input(fake, local=True), y_fake), fake, rows, index)
            with phase("G.backward"):
                p.optimizer_g.zero_grad(set_to_none=True)
                loss_g.backward()
        finally:
            for q in d_params:
                q.requires_grad_(True)
        with phase("G.optim"):
            p.optimizer_g.step()
            if p.ema is not None:
                p.ema.update(p.generator)
        loss_d, loss_g = loss_d.detach().float(), loss_g.detach().float()
        if parallel is not None:
            loss_d, loss_g = parallel.mean_losses(loss_d, loss_g)
        if cudagraph_trees:  # graph-owned memory: the next step overwrites it, the trainer reads it later
            loss_d, loss_g = loss_d.clone(), loss_g.clone()
        return loss_d, loss_g

    return ops.with_precision(step, p.config.precision)
