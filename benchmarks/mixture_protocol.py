"""The mixture benchmarks' protocol: each variant's trainer options, the protocol's settings (ours and PacGAN's),
the models and trainer a run builds from them, and their description in words (the results tables' preamble).
``quality.py`` and ``quality_curve.py`` train with it; ``fastgan evaluate`` rebuilds a run's models from
``checkpoint_model``."""
from __future__ import annotations

import torch

import fastgan
from fastgan import data
from fastgan.nn.models import pacgan_models
from fastgan.nn.presets import PRESETS, ModelPreset, model_description

# GANTrainer options of each variant (D's input widens with pack).
VARIANTS = {
    "vanilla": {},
    "pack2": {"pack": 2},
    "pack3": {"pack": 3},
    "pack4": {"pack": 4},
    "label_smoothing": {"real_label": 0.9},
    "hinge": {"loss": "hinge"},
    "ttur": {"lr_g": 1e-4, "lr_d": 4e-4},  # Heusel et al. 2017's two time-scales: D faster
    "d_steps2": {"d_steps": 2},
    "ema": {"ema": 0.999},
    "instance_noise": {"instance_noise": 0.02},
    "r1": {"r1_gamma": 0.1, "r1_every": 16},
    "ema_pack2": {"ema": 0.999, "pack": 2},
    "ema_pack4": {"ema": 0.999, "pack": 4},   # PacGAN4, the grid's best row, with the EMA
    "ema_ttur": {"ema": 0.999, "lr_g": 1e-4, "lr_d": 4e-4},
    # images only (the digits): differentiable augmentation, fixed (DiffAugment's) and adaptive (ADA's)
    "diffaugment": {"augment": "translation,cutout"},
    "ada": {"augment": "translation,cutout,brightness,contrast", "augment_p": 0.0, "augment_target": 0.6},
    # the digits default of `fastgan train` (with --digits-preset digits: G/D 256 wide): chosen by measured FD
    "recipe": {"real_label": 0.9, "pack": 2, "ema": 0.999},
    "smoothing_pack2": {"real_label": 0.9, "pack": 2},   # the recipe without its EMA
}
IMAGE_ONLY = {"diffaugment", "ada", "recipe", "smoothing_pack2"}


def describe(protocol: dict) -> str:
    """The models and optimiser of a protocol, in words (the results table's preamble)."""
    ema = protocol.get("ema")
    return _describe_models(protocol) + ("" if ema is None else
                                         f" The variant's EMA replaced: {f'decay {ema:g}' if ema else 'none'}.")


def _describe_models(protocol: dict) -> str:
    if protocol["preset"] == "pacgan":
        return ("PacGAN's protocol (`--preset pacgan`, its code's settings): G 2-d noise -> 4 x 400 (bias-free "
                "Linear, BatchNorm, ReLU) -> 2, D (2*pack) -> 3 x 200 maxout (5 pieces) -> 1, weights N(0, 0.02); "
                f"Adam {protocol['lr']:g}{describe_schedule(protocol)} {tuple(protocol['betas'])}, batch "
                f"{protocol['batch']} ({protocol['pack_convention']} convention), {protocol['update']} updates, "
                "non-saturating loss. PacGAN trained 400,000 iterations.")
    preset = _preset(protocol)
    latent, width = preset.latent_dim, " -> ".join(map(str, preset.hidden))
    minibatch = (f", the minibatch standard deviation over groups of {protocol['minibatch_std']} before D's last "
                 "layer") if protocol.get("minibatch_std") else ""
    adam = f"FlatAdam ({protocol['adam_state']} moments)" if protocol.get("adam_state") else "Adam"
    weight = protocol.get("mmd_weight")   # (a list: one a seed)
    weight = (f"{weight:g}" if isinstance(weight, (int, float)) else
              f"w (a seed each: {', '.join(f'{w:g}' for w in weight)})" if weight else None)
    shape = protocol.get("mmd_fine_shape")
    shape = f", shared in (widest / h)^{shape:g}'s shape" if shape is not None else ""
    fine = (f" (its kernel at bandwidth h weighed (widest / h)^{protocol['mmd_fine']:g} from step "
            f"{protocol.get('mmd_fine_from', 0):,}{shape})") if protocol.get("mmd_fine") else ""
    start = f" from step {protocol['mmd_from']:,}" if protocol.get("mmd_from") else ""
    mmd = f", G's loss plus {weight} x MMD² to the step's real rows{start}{fine}" if weight else ""
    return (f"ours ({protocol['preset']}): G latent {latent} -> {width} -> 2 (leaky-ReLU 0.2, linear output), "
            f"D (2*pack) -> {width} -> 1 (leaky-ReLU 0.2{minibatch}), "
            f"{adam} {protocol['lr']:g}{describe_schedule(protocol)} {tuple(protocol['betas'])}, "
            f"batch {protocol['batch'] or '128 (126 for pack 3)'} ({protocol['pack_convention']} convention), "
            f"{protocol.get('update', 'alternating')} updates, non-saturating loss unless stated{mmd}. PacGAN used a "
            "4x400 BN-ReLU G and a maxout D (3x200, 5 pieces): `--preset pacgan` is that.")


# The protocol's settings (flags of main); PROTOCOL["batch"] None: 128, or 126 where pack 3 needs a multiple.
PROTOCOL = {"lr": 2e-4, "betas": (0.5, 0.999), "batch": None, "latent_dim": None, "preset": "mixture-benchmark",
            "pack_convention": "samples", "update": "alternating", "lr_schedule": ()}
# PacGAN's own (its code's synthetic_data_experiments configs: 400 epochs of 100,000 points at batch 100)
PACGAN_PROTOCOL = {"lr": 1e-4, "betas": (0.8, 0.999), "batch": 100, "latent_dim": 2, "preset": "pacgan",
                   "pack_convention": "rows", "update": "simultaneous", "lr_schedule": ()}
MODEL_PRESETS = sorted(PRESETS) + ["pacgan"]


def trainer_settings(variant: str, protocol: dict) -> tuple[dict, int]:
    options = dict(VARIANTS[variant])
    pack = options.get("pack", 1)
    batch = protocol["batch"] or (128 if 128 % pack == 0 else 126)
    settings = {"batch_size": batch, "lr": protocol["lr"], "betas": tuple(protocol["betas"]),
                "pack_convention": protocol["pack_convention"], "update": protocol.get("update", "alternating"),
                **options}
    if protocol["latent_dim"] is not None:
        settings["latent_dim"] = protocol["latent_dim"]
    if protocol.get("lr_schedule"):
        settings["lr_schedule"] = tuple(map(tuple, protocol["lr_schedule"]))
    if protocol.get("ema") is not None:   # the variant's EMA overridden (0: none)
        settings["ema"] = protocol["ema"] or None
    if protocol.get("adam_state"):   # FlatAdam, its moments in fp32 or bf16 (unset: the trainer's own Adam)
        settings.update(fused_optimizer="flat", adam_state=protocol["adam_state"])
    if protocol.get("mmd_weight"):   # the kernel two-sample term on G's loss (fastgan.train.mmd)
        weight = protocol["mmd_weight"]   # (a list: one a seed, a sweep)
        settings["mmd_weight"] = weight if isinstance(weight, (int, float)) else tuple(weight)
    if protocol.get("mmd_from"):   # the term from a step on
        settings["mmd_from"] = protocol["mmd_from"]
    if protocol.get("mmd_fine"):   # its kernels weighed from a step on
        settings.update(mmd_fine=protocol["mmd_fine"], mmd_fine_from=protocol.get("mmd_fine_from", 0),
                        mmd_fine_shape=protocol.get("mmd_fine_shape"))
    return settings, pack


def describe_schedule(protocol: dict) -> str:
    """The protocol's learning-rate schedule in words ("" when the rate is constant)."""
    schedule = protocol.get("lr_schedule") or ()
    return "" if not schedule else (" (" + ", ".join(f"x{factor:g} from step {step:,}" for step, factor in schedule)
                                    + ")")


def _preset(protocol: dict):
    """The protocol's model preset (not PacGAN's), with its latent size and hidden widths if the protocol sets them."""
    preset = PRESETS[protocol["preset"]]
    return ModelPreset(protocol["latent_dim"] or preset.latent_dim, tuple(protocol.get("hidden") or preset.hidden),
                       preset.output_activation,
                       minibatch_std=protocol.get("minibatch_std", 0))


def _models(protocol: dict, pack: int):
    if protocol["preset"] == "pacgan":
        return pacgan_models(2, pack=pack)
    return _preset(protocol).build(2, pack=pack)


def checkpoint_model(kind: str, variant: str, protocol: dict) -> dict | None:
    """The model description ``fastgan train`` keeps in a checkpoint (``fastgan evaluate`` rebuilds G and D
    from it); None for PacGAN's models, which the CLI does not build."""
    if protocol["preset"] == "pacgan":
        return None
    return model_description(kind, _preset(protocol), trainer_settings(variant, protocol)[1])


def mixture_trainer(kind: str, variant: str, seed: int, device, kernels="torch", protocol=None, replicas=None,
                    data_seed: int | None = None, **options):
    """``options``: further GANTrainer settings that change how a step runs, not what it computes
    (``cuda_graph``, ``steps_per_replay``). The 100,000 training points are drawn with ``data_seed`` (default
    ``seed``)."""
    protocol = protocol or PROTOCOL
    settings, pack = trainer_settings(variant, protocol)
    real = (data.gaussian_ring if kind == "ring" else data.gaussian_grid)(
        100_000, seed=seed if data_seed is None else data_seed, device=device)
    torch.manual_seed(seed)
    g, d = _models(protocol, pack)
    if replicas is not None:
        settings["replicas"] = replicas
    return fastgan.GANTrainer(g, d, real, seed=seed, device=device, kernels=kernels, **settings, **options)
