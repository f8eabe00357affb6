"""TrainConfig: one declaration of the settings, validated once, serialised, and the CLI's flags."""
import dataclasses
import json

import pytest
import torch

from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, TrainConfig, data
from fastgan.app.args import CLI_DEFAULTS, NOT_TRAIN_FLAGS, build_parser


def _models():
    torch.manual_seed(0)
    return (MLPGenerator(latent_dim=8, hidden=(16,), out_dim=2, output_activation=None),
            MLPDiscriminator(in_dim=2, hidden=(16,)))


def test_round_trip_through_plain_values():
    config = TrainConfig(batch_size=64, lr=1e-3, betas=(0.9, 0.99), lr_g=5e-4, pack=2, ema=0.99, compile=True,
                         fused_optimizer=True, precision="fp32", device="cpu")
    values = config.to_dict()
    assert json.loads(json.dumps(values)) == values  # plain JSON values
    assert values["fused_optimizer"] == "flat" and values["betas"] == [0.9, 0.99]
    assert TrainConfig.from_dict(values) == config
    assert config.generator_lr == 5e-4 and config.discriminator_lr == 1e-3
    assert config["pack"] == 2  # dict-style reads keep working
    with pytest.raises(ValueError, match="unknown TrainConfig settings: colour"):
        TrainConfig.from_dict({**values, "colour": "red"})


@pytest.mark.parametrize("changes, message", [
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"lr": float("nan")}, "lr must be"),
    ({"kernels": "cudnn"}, "kernels must be one of"),
    ({"betas": (0.5,)}, "betas"),
    ({"pack": 3}, "must be a multiple of pack=3"),
    ({"ema": 1.5}, "ema decay"),
    ({"device": "gpu"}, "'gpu' is not a device"),
    ({"cuda_graph": True, "compile": "max-autotune"}, "CUDA graphs of its own"),
])
def test_bad_settings_are_refused_when_made_and_when_replaced(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)
    with pytest.raises(ValueError, match=message):
        TrainConfig().replace(**changes)


def test_trainer_takes_a_config_or_keywords_alike(tmp_path):
    config = TrainConfig(batch_size=32, lr=1e-3, seed=5, device="cpu")
    by_config = GANTrainer(*_models(), data.gaussian_ring(512), config)
    by_keywords = GANTrainer(*_models(), data.gaussian_ring(512), batch_size=32, lr=1e-3, seed=5, device="cpu")
    overridden = GANTrainer(*_models(), data.gaussian_ring(512), config.replace(seed=0), seed=5)
    for trainer in (by_config, by_keywords, overridden):
        trainer.fit(4, log_every=4, progress=False)
    assert by_config.config == by_keywords.config == overridden.config
    assert by_config.history == by_keywords.history == overridden.history
    by_config.save(tmp_path / "c.pt")
    from fastgan.checkpoint import load_checkpoint
    saved = TrainConfig.from_dict(load_checkpoint(tmp_path / "c.pt")["config"])
    assert saved == by_config.config == config.replace(cuda_graph=False, steps_per_replay=1, fused_optimizer=False)
    assert config.changes_from(saved.to_dict()) == {}   # what the run decided for itself is no change of settings
    with pytest.raises(TypeError, match="config must be a fastgan.TrainConfig"):
        GANTrainer(*_models(), data.gaussian_ring(512), {"batch_size": 32})


def test_batch_size_changes_go_through_the_config():
    g, _ = _models()
    trainer = GANTrainer(g, MLPDiscriminator(in_dim=4, hidden=(16,)), data.gaussian_ring(512), batch_size=32, pack=2,
                         device="cpu")
    trainer.batch_size = 64
    assert trainer.config.batch_size == 64 and trainer._parts.config.batch_size == 64
    with pytest.raises(ValueError, match="multiple of pack=2"):
        trainer.batch_size = 33
    assert trainer.batch_size == 64


def test_every_setting_is_a_train_flag_or_says_why_not():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {action.dest for action in train._actions}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    missing = fields - flags - set(NOT_TRAIN_FLAGS)
    assert not missing, f"TrainConfig settings with no `fastgan train` flag and no reason: {sorted(missing)}"
    assert set(NOT_TRAIN_FLAGS) <= fields, "NOT_TRAIN_FLAGS names settings TrainConfig does not have"
    # and a flag's default is the setting's default, but where the CLI says why not
    defaults = TrainConfig()
    for action in train._actions:
        if action.dest in fields and action.dest not in CLI_DEFAULTS:
            assert action.default == getattr(defaults, action.dest), \
                f"--{action.dest.replace('_', '-')} defaults to {action.default!r}, TrainConfig to " \
                f"{getattr(defaults, action.dest)!r}"


def test_auto_kernels_follow_the_first_gpu_measurement():
    """kernels="auto" (H200 measurement, fastgan.train.backends.resolve_backend): triton only where the step runs in a
    CUDA graph at a batch up to AUTO_TRITON_MAX_BATCH (and Triton is installed); torch without a graph, at
    larger batches and on a CPU; never triton-mlp (it changes the optimizer); other choices kept as given."""
    from fastgan.train.backends import AUTO_TRITON_MAX_BATCH, resolve_backend
    from fastgan.ops import HAS_TRITON
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")

    def pick(device, **settings):
        return resolve_backend(TrainConfig(kernels="auto", **settings), device).name

    graphed = "triton" if HAS_TRITON else "torch"
    assert pick(cuda, cuda_graph=True, batch_size=128) == graphed
    assert pick(cuda, cuda_graph=True, batch_size=AUTO_TRITON_MAX_BATCH) == graphed
    assert pick(cuda, cuda_graph=True, batch_size=AUTO_TRITON_MAX_BATCH + 1) == "torch"
    assert pick(cuda, cuda_graph=True, batch_size=4096) == "torch"
    assert pick(cuda, cuda_graph=True, batch_size=128, replicas=4) == graphed
    assert pick(cuda, cuda_graph=False, batch_size=128) == "torch"
    assert pick(cpu, batch_size=128) == "torch"
    for kernels in ("torch", "triton", "triton-mlp"):
        assert resolve_backend(TrainConfig(kernels=kernels), cpu).name == kernels
    with pytest.raises(ValueError, match="kernels='cuda' runs fastgan's native CUDA kernels: it needs a CUDA device"):
        resolve_backend(TrainConfig(kernels="cuda"), cpu)


def test_changes_from_a_checkpoints_config():
    """What a resumed run reports (fastgan train) or refuses (quality_curve.py --resume): the settings that differ
    from the checkpoint's; one newer than the checkpoint counts as its default, one it no longer has is ignored."""
    saved = TrainConfig(lr=1e-4, betas=(0.5, 0.9)).to_dict()
    del saved["lr_schedule"]          # a checkpoint from before the setting existed
    saved["retired_setting"] = 3      # a setting since removed
    assert TrainConfig(lr=1e-4, betas=(0.5, 0.9)).changes_from(saved) == {}
    assert TrainConfig(lr=2e-4, betas=(0.5, 0.9), lr_schedule=((10, 0.5),)).changes_from(saved) == {
        "lr": (1e-4, 2e-4), "lr_schedule": ([], [[10, 0.5]])}
