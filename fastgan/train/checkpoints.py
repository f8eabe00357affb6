"""The trainers' checkpoint schemas: what ``GANTrainer`` and ``ReplicaTrainer`` save, and how a file is checked
against a trainer before anything is loaded into it. (The file format itself: ``fastgan.checkpoint``.)"""
from __future__ import annotations

import os

import torch

from ..checkpoint import CheckpointError, load_checkpoint
from ..checks import non_negative_int
from ..optim import FlatAdam, adam_state, check_adam_state, load_adam_state

__all__ = ["TRAINER_FORMAT", "REPLICA_FORMAT", "SHARDED_FORMAT", "trainer_state", "load_trainer",
           "replica_state", "load_replicas", "check_trainer_state"]

# a sweep's replicas sharded over torchrun's ranks: the CLI merges the ranks' files into one of this format
SHARDED_FORMAT = "fastgan.ShardedReplicas"


# -- the GANTrainer's checkpoint schema -----------------------------------------------------------------
# {"format": TRAINER_FORMAT, "version": 1, "step": int, "generator"/"discriminator"/"ema": state dicts,
#  "optimizer_g"/"optimizer_d": fastgan.optim.adam_state's one form (any Adam loads it; files written before it
#  hold torch.optim.Adam or FlatAdam state dicts, which load into the same kind), "rng": the trainer RNG's state,
#  "history": {"step", "loss_d", "loss_g": lists}, "config": TrainConfig.to_dict(), "extra": anything}

TRAINER_FORMAT = "fastgan.GANTrainer"
REPLICA_FORMAT = "fastgan.ReplicaTrainer"


def check_trainer_state(state: dict, modules: dict, optimizers: dict, rng_state: torch.Tensor) -> None:
    """Raise ``ValueError`` (or KeyError/TypeError) if ``state`` does not fit a trainer made of ``modules``
    (name -> nn.Module: generator, discriminator, ema when kept), ``optimizers`` (name -> optimizer) and an
    RNG whose state looks like ``rng_state``. Nothing is changed: loading happens after this passes."""
    if state.get("format") != TRAINER_FORMAT:
        raise ValueError(f"format is {state.get('format')!r}, expected {TRAINER_FORMAT!r}")
    if "ema" in modules and state.get("ema") is None:
        raise ValueError("this trainer keeps an EMA generator but the checkpoint has none")
    for name, module in modules.items():
        ours, theirs = module.state_dict(), state[name]
        if set(ours) != set(theirs):
            raise ValueError(f"{name} parameters differ: missing {sorted(set(ours) - set(theirs))}, "
                             f"unexpected {sorted(set(theirs) - set(ours))}")
        for key, value in ours.items():
            if not isinstance(theirs[key], torch.Tensor) or theirs[key].shape != value.shape:
                raise ValueError(f"{name}.{key} has shape {getattr(theirs[key], 'shape', None)}, "
                                 f"expected {tuple(value.shape)}")
    for name, opt in optimizers.items():
        if "adam" in state[name]:   # the one form (fastgan.optim.adam_state): any Adam loads it
            check_adam_state(opt, state[name])
            continue
        # a checkpoint written before the one form: the optimizer's own state dict
        if isinstance(opt, FlatAdam):
            for key in ("exp_avg", "exp_avg_sq"):
                if not isinstance(state[name].get(key), torch.Tensor) or state[name][key].shape != opt.data.shape:
                    raise ValueError(f"{name} is not a FlatAdam state of {opt.data.numel()} parameters "
                                     "(was the checkpoint written with fused_optimizer=False?)")
            continue
        if "param_groups" not in state[name]:
            raise ValueError(f"{name} is not a torch.optim.Adam state (written with fused_optimizer=True?)")
        groups = state[name]["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in opt.param_groups]:
            raise ValueError(f"{name} has a different number of parameters")
        params = [p for g in opt.param_groups for p in g["params"]]
        ids = [i for g in groups for i in g["params"]]
        for index, p in zip(ids, params):
            for key, value in state[name]["state"].get(index, {}).items():
                if key in ("exp_avg", "exp_avg_sq") and value.shape != p.shape:
                    raise ValueError(f"{name} state {key} has shape {tuple(value.shape)}, expected {tuple(p.shape)}")
    rng = state["rng"]
    if not isinstance(rng, torch.Tensor) or rng.shape != rng_state.shape:
        raise ValueError("the RNG state has the wrong size")
    non_negative_int("step", state["step"])
    for k in ("step", "loss_d", "loss_g"):
        if not isinstance(state["history"][k], list):
            raise ValueError(f"history[{k!r}] must be a list")


def trainer_state(t) -> dict:
    """Everything a ``GANTrainer`` needs to resume exactly."""
    t.flush_losses()
    return {
        "format": TRAINER_FORMAT, "version": 1, "step": t.step_count,
        "generator": t.generator.state_dict(), "discriminator": t.discriminator.state_dict(),
        "optimizer_g": adam_state(t.optimizer_g), "optimizer_d": adam_state(t.optimizer_d),
        "rng": t.rng.get_state(), "history": t.history,
        "ema": t.ema.module.state_dict() if t.ema is not None else None,
        "augment": t.augment.state_dict() if t.augment is not None else None,
        "sampler": t.sampler.state_dict() if t.sampler is not None else None,
        "spectral_norm": t.spectral.state_dict() if t.spectral is not None else None,
        "config": t.config.to_dict(),
    }


def load_trainer(t, path: str | os.PathLike) -> dict:
    """Resume ``GANTrainer`` ``t`` from ``path``: everything is validated before anything is changed."""
    state = load_checkpoint(path, map_location=t.device)
    modules = {"generator": t.generator, "discriminator": t.discriminator}
    if t.ema is not None:
        modules["ema"] = t.ema.module
    try:
        check_trainer_state(state, modules, {"optimizer_g": t.optimizer_g, "optimizer_d": t.optimizer_d},
                            t.rng.get_state())
        if t.augment is not None and not isinstance(state.get("augment"), dict):
            raise ValueError("this trainer augments D's inputs but the checkpoint has no augmentation state")
        _check_spectral(t.spectral, state.get("spectral_norm"))
        _check_sampler(t.sampler, state.get("sampler"))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path} does not fit this trainer: {e}") from e
    for name, module in modules.items():
        module.load_state_dict(state[name])
    for name in ("optimizer_g", "optimizer_d"):
        optimizer = getattr(t, name)
        (load_adam_state if "adam" in state[name] else type(optimizer).load_state_dict)(optimizer, state[name])
    if t.augment is not None:
        t.augment.load_state_dict(state["augment"])
    if t.sampler is not None:
        t.sampler.load_state_dict(state["sampler"])
    if t.spectral is not None:
        t.spectral.load_state_dict(state["spectral_norm"])
    t.rng.set_state(state["rng"].cpu())
    # the optimizers' states carried the saved rates: with a schedule, the next step sets this run's (without
    # one, the saved rates stay, as they always have: a rate changed by hand survives a resume)
    t.loop.restart(int(state["step"]), state["history"], None if t.config.lr_schedule else 1.0)
    return state


def _check_sampler(sampler, state) -> None:
    """ValueError unless a trainer drawing with ``sampler`` (None: PyTorch's generator) can resume ``state``."""
    if sampler is not None:
        if not isinstance(state, dict):
            raise ValueError("this trainer draws batches with the Philox sampler but the checkpoint has no "
                             "sampler state (it was written by another sampler: pass sampler='torch')")
        sampler.check_state(state)


def _check_spectral(spectral, state) -> None:
    """ValueError unless a trainer normalising D with ``spectral`` (None: not at all) can resume ``state``."""
    if spectral is not None:
        if not isinstance(state, dict):
            raise ValueError("this trainer normalises D spectrally but the checkpoint has no spectral-norm state")
        if not isinstance(state.get("u"), torch.Tensor) or state["u"].shape != spectral.u.shape:
            raise ValueError("the checkpoint's spectral-norm state does not fit this discriminator")


def replica_state(t) -> dict:
    """Everything a ``ReplicaTrainer`` needs to resume exactly."""
    t.flush_losses()
    return {
        "format": REPLICA_FORMAT, "version": 1, "step": t.step_count, "replicas": t.replicas,
        "generator": t.generator.flat.detach().clone(),
        "discriminator": t.discriminator.flat.detach().clone(),
        "optimizer_g": t.optimizer_g.state_dict(), "optimizer_d": t.optimizer_d.state_dict(),
        "rng": [g.get_state() for g in t.generators], "history": t.history,
        "sampler": t.sampler.state_dict() if t.sampler is not None else None,
        "spectral_norm": t.spectral.state_dict() if t.spectral is not None else None,
        "ema": t.ema_flat.clone() if t.ema_flat is not None else None,
        "augment": t.augment.state_dict() if t.augment is not None else None,
        "buffers": {name: {key: b.clone() for key, b in getattr(t, name).named_buffers()}
                    for name in ("generator", "discriminator")},
        "config": t.config.to_dict(),
    }


def load_replicas(t, path: str | os.PathLike) -> dict:
    """Resume ``ReplicaTrainer`` ``t`` from ``path``: everything is validated before anything is changed."""
    state = load_checkpoint(path, map_location=t.device)
    try:
        if state.get("format") != REPLICA_FORMAT:
            raise ValueError(f"format is {state.get('format')!r}, expected {REPLICA_FORMAT!r} (a checkpoint of "
                             "a single-GAN trainer: load it with replicas unset)")
        if state["replicas"] != t.replicas:
            raise ValueError(f"it holds {state['replicas']} replicas, this trainer {t.replicas}")
        for name in ("generator", "discriminator"):
            ours = getattr(t, name).flat
            if not isinstance(state[name], torch.Tensor) or state[name].shape != ours.shape:
                raise ValueError(f"{name} weights have shape {tuple(getattr(state[name], 'shape', ()))}, "
                                 f"expected {tuple(ours.shape)}")
        buffers = state.get("buffers", {"generator": {}, "discriminator": {}})
        for name in ("generator", "discriminator"):
            ours, theirs = dict(getattr(t, name).named_buffers()), buffers[name]
            if set(ours) != set(theirs) or any(
                    not isinstance(theirs[key], torch.Tensor) or theirs[key].shape != b.shape
                    for key, b in ours.items()):
                raise ValueError(f"its {name}'s BatchNorm statistics do not fit this trainer's" +
                                 (" (it has none)" if not theirs else ""))
        t.optimizer_g.check_state(state["optimizer_g"])
        t.optimizer_d.check_state(state["optimizer_d"])
        if (t.ema_flat is None) != (state.get("ema") is None):
            raise ValueError("one of this trainer and the checkpoint keeps an EMA generator, the other not")
        rng = state["rng"]
        if not isinstance(rng, list) or len(rng) != t.replicas:
            raise ValueError("the RNG states do not match the replicas")
        if any(not isinstance(s, torch.Tensor) or s.numel() != g.get_state().numel()
               for g, s in zip(t.generators, rng)):
            raise ValueError(f"its RNG states are not those of {t.device.type} generators (a checkpoint "
                             "saved on another kind of device)")
        non_negative_int("step", state["step"])
        _check_sampler(t.sampler, state.get("sampler"))
        _check_spectral(t.spectral, state.get("spectral_norm"))
        if t.augment is not None:
            t.augment.check_state(state.get("augment"))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path} does not fit this trainer: {e}") from e
    if t.sampler is not None:
        t.sampler.load_state_dict(state["sampler"])
    if t.spectral is not None:
        t.spectral.load_state_dict(state["spectral_norm"])
    if t.augment is not None:
        t.augment.load_state_dict(state["augment"])
    with torch.no_grad():
        t.generator.flat.copy_(state["generator"])
        t.discriminator.flat.copy_(state["discriminator"])
        if t.ema_flat is not None:
            t.ema_flat.copy_(state["ema"])
        for name in ("generator", "discriminator"):
            for key, b in getattr(t, name).named_buffers():
                b.copy_(buffers[name][key])
    t.optimizer_g.load_state_dict(state["optimizer_g"])
    t.optimizer_d.load_state_dict(state["optimizer_d"])
    for g, s in zip(t.generators, rng):
        g.set_state(s.cpu())
    t.loop.restart(int(state["step"]), state["history"], None)   # the next step sets lr_schedule's rates
    return state
