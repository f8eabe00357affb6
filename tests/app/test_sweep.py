"""``fastgan train``'s sweeps: the grid (a product of the flags' values, --seeds runs each), trained as
replicas, and its report (sweep.md, a plot per swept setting, the per-setting table on stdout)."""
import argparse
import json
import math

import pytest

from fastgan.app.cli import main
from fastgan import TrainConfig
from fastgan.checkpoint import load_checkpoint
from fastgan.app.sweep import summary_table, sweep_from_config, sweep_of

PNG = b"\x89PNG\r\n\x1a\n"


def _args(seeds=1, **flags):
    return argparse.Namespace(seeds=seeds, lr=flags.pop("lr", 2e-4), **flags)


def test_the_grid_is_the_product_of_the_swept_flags_seeds_fastest():
    grid = sweep_of(_args(seeds=2, lr=[1e-4, 2e-4, 4e-4], real_label=[0.9, 1.0], instance_noise=[0.0]))
    assert grid.swept == {"lr": (1e-4, 2e-4, 4e-4), "real_label": (0.9, 1.0)} and grid.replicas == 12
    assert grid.values("lr") == (1e-4,) * 4 + (2e-4,) * 4 + (4e-4,) * 4
    assert grid.values("real_label") == (0.9, 0.9, 1.0, 1.0) * 3
    assert sweep_of(_args(seeds=3)).replicas == 3 and sweep_of(_args(seeds=3)).swept == {}
    assert sweep_of(_args(lr=[2e-4], real_label=[0.9])) is None   # one GAN
    with pytest.raises(ValueError, match="--real-label has a value twice"):
        sweep_of(_args(real_label=[0.9, 0.9]))


def test_r1_weights_on_the_command_line_are_a_sweep(tmp_path):
    out = tmp_path / "r1"
    assert main(["train", "--data", "ring", "--r1-gamma", "0", "10", "--r1-every", "2", "--hidden", "8",
                 "--steps", "4", "--no-progress", "--out", str(out)]) == 0
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["replicas"] == 2 and config["r1_gamma"] == [0.0, 10.0] and config["r1_every"] == 2
    assert "| r1_gamma |" in (out / "sweep.md").read_text()


def test_mmd_weights_on_the_command_line_are_a_sweep(tmp_path):
    out = tmp_path / "mmd"
    assert main(["train", "--data", "ring", "--mmd-weight", "0", "3", "--hidden", "8", "--steps", "4",
                 "--no-progress", "--out", str(out)]) == 0
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["replicas"] == 2 and config["mmd_weight"] == [0.0, 3.0]
    assert "| mmd_weight |" in (out / "sweep.md").read_text()


def test_augmentation_probabilities_and_targets_on_the_command_line_are_a_sweep(tmp_path):
    out = tmp_path / "augment"
    assert main(["train", "--augment", "translation", "--augment-p", "0.2", "0.5", "--augment-target", "0.6",
                 "--seeds", "2", "--hidden", "8", "--steps", "2", "--log-every", "2", "--no-progress",
                 "--out", str(out)]) == 0
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["replicas"] == 4 and config["augment_p"] == [0.2, 0.2, 0.5, 0.5] and config["augment_target"] == 0.6
    saved = load_checkpoint(out / "checkpoint.pt")["config"]   # what fastgan evaluate reads back
    assert sweep_from_config(TrainConfig.from_dict(saved)).swept == {"augment_p": (0.2, 0.5)}
    assert "| augment_p |" in (out / "sweep.md").read_text()


def test_a_checkpoints_config_gives_back_its_grid():
    """What ``fastgan evaluate`` reads: the grid from the replica run's per-replica settings; replicas that form
    no grid (a setting's seeds not side by side) are a setting each."""
    grid = sweep_of(_args(seeds=2, lr=[1e-4, 2e-4, 4e-4], real_label=[0.9, 1.0]))
    config = TrainConfig(replicas=12, lr=grid.values("lr"), real_label=grid.values("real_label"))
    assert sweep_from_config(config) == grid
    assert sweep_from_config(TrainConfig(replicas=3)) == sweep_of(_args(seeds=3))
    scattered = sweep_from_config(TrainConfig(replicas=3, lr=[1e-4, 2e-4, 1e-4]))
    assert scattered.seeds == 1 and scattered.values("lr") == (1e-4, 2e-4, 1e-4)


def test_the_table_averages_each_settings_seeds_and_says_when_a_value_was_not_finite():
    grid = sweep_of(_args(seeds=2, lr=[1e-4, 2e-4]))
    table = summary_table(grid, [{"kl": 1.0}, {"kl": 3.0}, {"kl": 2.0}, {"kl": math.inf}])
    assert "| 0.0001 | 2 ± 1 |" in table      # mean 2, standard error 1
    assert "| 0.0002 | 2 ± 0 (1 of 2) |" in table


def test_a_sweep_on_the_command_line_trains_the_product_as_replicas_and_reports_it(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["train", "--data", "ring", "--lr", "1e-3", "2e-3", "--real-label", "0.9", "1.0", "--seeds", "2",
                 "--hidden", "8", "--steps", "3", "--seed", "4", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    config = metrics["config"]
    assert config["replicas"] == 8 and config["seed"] == 4
    assert config["lr"] == [1e-3] * 4 + [2e-3] * 4 and config["real_label"] == [0.9, 0.9, 1.0, 1.0] * 2
    per_replica = metrics["quality"]["replicas"]
    assert len(per_replica) == 8
    report = (out / "sweep.md").read_text()
    assert "`fastgan train --data ring --lr 1e-3 2e-3 --real-label 0.9 1.0 --seeds 2" in report
    # replica 5: seed 4 + 5, lr 2e-3, real_label 0.9 (the second seed of the third setting), its own figures
    q = per_replica[5]
    assert (f"| 5 | 9 | 0.002 | 0.9 | {q['modes']} | {q['high_quality']:.4g} | {q['kl']:.4g} | {q['spread']:.4g} | "
            f"{q['swd_ratio']:.4g} |") in report
    # each setting's modes: the mean over its two seeds
    for start, (lr, label) in zip(range(0, 8, 2), [("0.001", "0.9"), ("0.001", "1"), ("0.002", "0.9"),
                                                   ("0.002", "1")]):
        modes = (per_replica[start]["modes"] + per_replica[start + 1]["modes"]) / 2
        assert f"| {lr} | {label} | {modes:.4g} ± " in report
        assert f"| {lr} | {label} | {modes:.4g} ± " in printed
    for name in ("sweep_lr.png", "sweep_real_label.png", "samples.png"):
        assert (out / name).read_bytes().startswith(PNG), name
    assert "sweep.md, sweep_lr.png, sweep_real_label.png" in printed
    # fastgan evaluate reads the grid back: the JSON per setting, the table on stderr
    assert main(["evaluate", str(out)]) == 0
    evaluated = capsys.readouterr()
    report = json.loads(evaluated.out)
    replicas = report["metrics"]["replicas"]
    assert [entry["setting"] for entry in report["per_setting"]] == [
        {"lr": lr, "real_label": label} for lr in (1e-3, 2e-3) for label in (0.9, 1.0)]
    for start, entry in zip(range(0, 8, 2), report["per_setting"]):
        assert entry["metrics"]["modes"] == {"mean": (replicas[start]["modes"] + replicas[start + 1]["modes"]) / 2,
                                             "stderr": pytest.approx(abs(replicas[start]["modes"] -
                                                                         replicas[start + 1]["modes"]) / 2), "n": 2}
    assert "per setting, mean ± s.e. over its 2 seed(s)" in evaluated.err and "| lr | real_label | modes |" in \
        evaluated.err


def test_a_diverged_replica_is_named_and_left_out_of_its_settings_mean(tmp_path):
    from fastgan.app.sweep import write_sweep
    grid = sweep_of(_args(seeds=2, lr=[1e-4, 2e-4]))
    nan = float("nan")
    figures = [{"fd": 4.0}, {"fd": 6.0}, {"fd": nan}, {"fd": 5.0}]
    paths = write_sweep(tmp_path, grid, 10, figures, "digits: 20 steps", diverged={2: 1500})
    assert [p.name for p in paths] == ["sweep.md", "sweep_lr.png"]
    report = (tmp_path / "sweep.md").read_text()
    assert "| 0.0001 | 5 ± 1 |" in report and "| 0.0002 | 5 ± 0 (1 of 2) |" in report
    assert "| 2 | 12 | 0.0002 | nan | 1500 |" in report and "| 3 | 13 | 0.0002 | 5 |  |" in report


def test_a_bad_grid_is_one_line_before_training(tmp_path, capsys):
    assert main(["train", "--data", "ring", "--lr", "1e-3", "1e-3", "--steps", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--lr has a value twice" in err and "Traceback" not in err
    assert not (tmp_path / "checkpoint.pt").exists()
