"""The replica step: the single-GAN step (``fastgan.train.step``) for K stacked replicas at once."""
from __future__ import annotations

import torch

from ..phases import phase
from .config import CUDAGRAPH_COMPILE_MODES
from ..ops import reference_path, replica_sigmoid_bce_reference, with_precision
from .losses import gan_losses
from .mmd import mmd2
from .parts import compiled_regions, forward_autocast, packed

__all__ = ["make_replica_step"]


def make_replica_step(t):
    """``step(index) -> (loss_d, loss_g)``, each ``(K,)``: the single-GAN step (``fastgan.step``) for K
    replicas at once, each drawing from its own generator in the order the single step draws. A conditional
    GAN's models take each replica's classes, ``(K, B)``: its real rows' and those it asks G for."""
    config, device = t.config, t.device
    n, features = t.data.shape
    pack, K = config.pack, t.replicas
    per = [config.for_replica(k) for k in range(K)]
    col = lambda vals: torch.tensor(vals, dtype=torch.float32, device=device).reshape(K, 1, 1)  # noqa: E731
    real_label = col([c.real_label for c in per])
    sigmas = [c.instance_noise for c in per]
    noise_scale = col(sigmas)
    # each replica's R1 weight as its single step scales it (gamma/2, times the steps between penalties)
    r1_scale = torch.tensor([0.5 * c.r1_gamma * config.r1_every for c in per], device=device)

    def instance_noise(shape) -> list[torch.Tensor | None]:   # each replica's draw; none where its sigma is 0
        return [torch.randn(shape, device=device, generator=g) if s > 0 else None for g, s in zip(t.generators, sigmas)]

    def add_noise(x: torch.Tensor, draws: list) -> torch.Tensor:   # x: (K, B, features)
        if not any(sigmas):
            return x
        return x + noise_scale * torch.stack([z if z is not None else x.new_zeros(x.shape[1:]) for z in draws])

    def noisy(x: torch.Tensor) -> torch.Tensor:
        if t.sampler is not None and any(sigmas):   # every replica's noise in one launch (Philox)
            return x + noise_scale * t.sampler.normal(x)
        return add_noise(x, instance_noise(x.shape[1:]))

    def d_input(x):   # as the single step: each replica's augmentation, then its instance noise, then packing
        return packed(noisy(t.augment(x, t.sampler) if t.augment is not None else x), pack, leading=1)

    d_loss, g_loss = gan_losses(config.loss, real_label, replica_sigmoid_bce_reference, lambda x: x.mean(dim=(1, 2)),
                                fake_label=torch.zeros_like(real_label), generator_label=torch.ones_like(real_label))

    conditional = t.labels is not None

    def discriminate(x, y):
        return t.discriminator(x, y) if conditional else t.discriminator(x)

    def d_loss_of_inputs(real, fake, y_real, y_fake):   # two passes, as the single step: its gradient sums
        real_logits = discriminate(real, y_real)
        return d_loss(real_logits, discriminate(fake, y_fake)), real_logits.detach()

    def g_loss_of_input(fake_in, y_fake):
        return g_loss(discriminate(fake_in, y_fake))

    compiled_generator, d_loss_of_inputs, g_loss_of_input = compiled_regions(config, t.generator, d_loss_of_inputs,
                                                                             g_loss_of_input)

    def generator(z, y):
        return compiled_generator(z, y) if conditional else compiled_generator(z)

    cudagraph_trees = config.compile in CUDAGRAPH_COMPILE_MODES
    autocast = forward_autocast(config.precision, device)

    def draw():
        """The single step's draws in its order: batch, its augmentation, its noise, z, and for a conditional
        GAN the classes G is asked for (the classes of other rows); ``(real, z, y_real, y_fake, rows)``, the last
        the real rows as drawn (for the MMD term)."""
        samples = config.samples_per_step
        with phase("data"):
            if t.sampler is not None:   # one launch for every replica (and one for their instance noise)
                x = torch.empty((K, samples, features), device=device)
                z = torch.empty((K, samples, t.latent_dim), device=device)
                t.sampler.draw(t.data, x, z)
                return d_input(x), z, None, None, x
            rows, uniforms, noise, zs, y_real, y_fake = [], [], [], [], [], []
            for k, (g, s) in enumerate(zip(t.generators, sigmas)):
                index = torch.randint(0, n, (samples,), device=device, generator=g)
                rows.append(t.data.index_select(0, index))
                if t.augment is not None:   # (its draws next, as in its single run)
                    uniforms.append(t.augment.uniforms(k, samples, device))
                noise.append(torch.randn((samples, features), device=device, generator=g) if s > 0 else None)
                zs.append(torch.randn(samples, t.latent_dim, device=device, generator=g))
                if conditional:
                    y_real.append(t.labels.index_select(0, index))
                    other = torch.randint(0, n, (samples,), device=device, generator=g)
                    y_fake.append(t.labels.index_select(0, other))
            classes = (torch.stack(y_real), torch.stack(y_fake)) if conditional else (None, None)
            drawn = real = torch.stack(rows)
            if t.augment is not None:
                real = t.augment(real, u=torch.stack(uniforms))
            return packed(add_noise(real, noise), pack, leading=1), torch.stack(zs), *classes, drawn

    d_params, g_params = [t.discriminator.flat], [t.generator.flat]
    mmd_weight = torch.tensor([c.mmd_weight for c in per], device=device)

    def with_mmd(loss_g, fake, rows, index):   # (K,): each replica's G loss plus its weight times its MMD²
        weighting = config.mmd_at(index)
        if weighting is None:
            return loss_g
        with phase("G.loss.mmd"):
            return loss_g + mmd_weight * mmd2(fake.flatten(2), rows.flatten(2), **weighting)

    def simultaneous_step(index):
        """The single simultaneous step: both losses from one pass of D over real and fake, each network's
        gradient of its own loss, then both updates (PacGAN's code)."""
        real, z, y_real, y_fake, rows = draw()
        with phase("G.forward"), autocast():
            fake = generator(z, y_fake)
        with phase("D.forward"), autocast():
            real_logits = discriminate(real, y_real)
            fake_logits = discriminate(d_input(fake), y_fake)
            loss_d = d_loss(real_logits, fake_logits)
            loss_g = with_mmd(g_loss(fake_logits), fake, rows, index)
        with phase("D.backward"):
            t.optimizer_d.zero_grad()
            loss_d.sum().backward(inputs=d_params, retain_graph=True)
        with phase("G.backward"):
            t.optimizer_g.zero_grad()
            loss_g.sum().backward(inputs=g_params)
        with phase("D.optim"):
            t.optimizer_d.step()
            if t.spectral is not None:   # one power iteration, weights divided by their spectral norm
                t.spectral.step()
            if t.augment is not None:   # ADA: each replica's D on real data steers its p
                t.augment.observe(real_logits.detach())
        return loss_d, loss_g

    def d_loss_with_r1(real, fake_for_d, y_real, y_fake):
        """D's loss on real data made differentiable, the R1 penalty of each replica (``(K,)``), D's real logits."""
        with phase("D.forward.r1"), autocast():
            real.requires_grad_(True)
            with reference_path():   # double backward: the fused kernels have none
                real_logits = discriminate(real, y_real)
                (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            penalty = r1_scale * grad.square().sum(dim=2).mean(dim=1)
        with phase("D.forward.fake"), autocast():
            loss_d = d_loss(real_logits, discriminate(fake_for_d, y_fake))
        return loss_d, penalty, real_logits.detach()

    def alternating_step(index):
        """``d_steps`` updates of D, each on a fresh draw, then G's loss and gradient through the last draw's
        fake batch (D frozen); with R1 every ``r1_every`` steps, the penalty joins D's loss."""
        for d_step in range(config.d_steps):
            last = d_step == config.d_steps - 1
            real, z, y_real, y_fake, rows = draw()
            with phase("G.forward"), autocast():
                if last:
                    fake = generator(z, y_fake)
                else:
                    with torch.no_grad():
                        fake = generator(z, y_fake)
                fake_for_d = d_input(fake.detach())
            if config.has_r1 and index % config.r1_every == 0:
                loss_d, penalty, real_logits = d_loss_with_r1(real, fake_for_d, y_real, y_fake)
                total_d = loss_d + penalty
            else:
                with phase("D.forward"), autocast():
                    loss_d, real_logits = d_loss_of_inputs(real, fake_for_d, y_real, y_fake)
                    total_d = loss_d
            with phase("D.backward"):
                t.optimizer_d.zero_grad()
                total_d.sum().backward()
            with phase("D.optim"):
                t.optimizer_d.step()
            if t.spectral is not None:   # one power iteration, weights divided by their spectral norm
                t.spectral.step()
            if t.augment is not None:   # ADA: each replica's D on real data steers its p
                t.augment.observe(real_logits)
        t.discriminator.requires_grad_(False)
        try:
            with phase("G.loss"), autocast():
                loss_g = with_mmd(g_loss_of_input(d_input(fake), y_fake), fake, rows, index)
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
        loss_d, loss_g = simultaneous_step(index) if config.update == "simultaneous" else alternating_step(index)
        with phase("G.optim"):
            t.optimizer_g.step()
            if t.ema is not None:
                t.ema.update(t.generator)
        loss_d, loss_g = loss_d.detach().float(), loss_g.detach().float()
        if cudagraph_trees:
            loss_d, loss_g = loss_d.clone(), loss_g.clone()
        return loss_d, loss_g

    return with_precision(step, config.precision)

