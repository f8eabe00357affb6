import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from fastgan.checkpoint import load_checkpoint, save_checkpoint
from fastgan.app.args import apply_recipe, build_parser
from fastgan.app.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_train_digits_end_to_end_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--steps", "30", "--log-every", "10", "--batch-size", "32", "--out", str(out),
                 "--no-progress"]) == 0
    for name in ("samples.png", "losses.png"):
        assert (out / name).read_bytes().startswith(PNG), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 30 and metrics["data"] == "digits"
    assert metrics["final_loss_d"] > 0 and metrics["final_loss_g"] > 0
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 30 and state["extra"]["model"]["latent_dim"] == 100
    # the digits recipe (chosen by measured FD): pack 2 and an EMA of G, with label smoothing
    assert (metrics["config"]["pack"], metrics["config"]["ema"], metrics["config"]["real_label"]) == (2, 0.999, 0.9)
    assert state["extra"]["model"]["pack"] == 2

    assert main(["train", "--steps", "50", "--log-every", "10", "--batch-size", "32", "--out", str(out),
                 "--resume", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "resumed" in printed and "settings differ" not in printed
    assert json.loads((out / "metrics.json").read_text())["steps"] == 50
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 50
    assert len(load_checkpoint(out / "checkpoint.pt")["history"]["step"]) == 50

    assert main(["train", "--data", "ring", "--steps", "5", "--out", str(out), "--resume", "--no-progress"]) == 2
    assert "was trained on --data digits" in capsys.readouterr().err


def test_each_data_set_trains_with_its_recipe_unless_told_otherwise(tmp_path):
    """The flags left unset take the data set's recipe (args.RECIPES: digits pack 2, EMA, R1; ring and grid the
    quality benchmarks' settings with the MMD term), a conditional run none and a given flag its value; a resumed
    run keeps its own settings, not today's defaults."""
    keys = ("pack", "ema", "r1_gamma", "mmd_weight", "mmd_from", "mmd_fine", "mmd_fine_from", "mmd_fine_shape", "lr",
            "lr_schedule", "real_label")
    plain = (1, None, 0.0, 0.0, 0, 0.0, 0, None, 2e-4, [], 0.9)
    runs = {"plain": (["--pack", "1", "--ema", "0", "--r1-gamma", "0"], plain),
            "conditional": (["--conditional"], plain),
            "digits": ([], (2, 0.999, 0.1, 0.0, 0, 0.0, 0, None, 2e-4, [], 0.9)),
            "ring": (["--data", "ring"], (2, 0.999, 0.0, 8.0, 0, 0.0, 0, None, 2e-4, [[50000, 0.6], [80000, 0.4]],
                                          1.0)),
            "grid": (["--data", "grid"], (2, 0.999, 0.0, 5.0, 0, 0.5, 50000, 0.75, 3e-4, [[50000, 0.7]], 1.0)),
            "given": (["--data", "grid", "--mmd-weight", "0.5", "--lr", "1e-4", "--lr-schedule", "none",
                       "--real-label", "0.8", "--ema", "0", "--pack", "1", "--mmd-from", "1", "--mmd-fine-from", "7",
                       "--mmd-fine-shape", "1"],
                      (1, None, 0.0, 0.5, 1, 0.5, 7, 1.0, 1e-4, [], 0.8)),
            # no term: no start or weighting for it either (the recipe's are dropped, not refused)
            "no term": (["--data", "grid", "--mmd-weight", "0"], (2, 0.999, 0.0, 0.0, 0, 0.0, 50000, None, 3e-4,
                                                                   [[50000, 0.7]], 1.0)),
            # no power: no shape for it
            "no power": (["--data", "grid", "--mmd-fine", "0"], (2, 0.999, 0.0, 5.0, 0, 0.0, 50000, None, 3e-4,
                                                                  [[50000, 0.7]], 1.0))}
    two_starts = {"grid", "given", "no term", "no power"}   # (the grid's recipe: two starts, the nearer kept)
    for name, (flags, expected) in runs.items():
        out = tmp_path / name
        assert main(["train", "--steps", "2", "--batch-size", "16", "--out", str(out), "--no-progress", *flags]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        config = metrics["config"]
        assert tuple(config[k] for k in keys) == expected, name
        assert config["batch_size"] == 16, name
        assert metrics.get("starts", {}).get("count", 1) == (2 if name in two_starts else 1), name
    for name in ("ring", "given"):   # the recipes' batch: 200 samples, D's 100 rows of pack 2
        args = build_parser().parse_args(["train", *runs[name][0]])
        apply_recipe(args)
        assert args.batch_size == 200 and args.steps == 75000, name
    # a resumed run keeps the settings it was trained with, its model included
    for name, (flags, expected) in runs.items():
        out = tmp_path / name
        data = flags[:2] if flags[:1] == ["--data"] else []   # (the data set, no other flag)
        args = ["train", "--steps", "4", "--out", str(out), "--no-progress", "--resume", *data]
        assert main(args) == 0, name
        metrics = json.loads((out / "metrics.json").read_text())
        config = metrics["config"]
        assert tuple(config[k] for k in keys) == expected and config["batch_size"] == 16, name
        assert metrics.get("starts", {}).get("count", 1) == (2 if name in two_starts else 1), name


def test_a_checkpoint_saved_before_a_recipe_setting_existed_resumes_without_it(tmp_path):
    """A grid checkpoint whose config has no mmd_fine (written before the option) trained without the weighting:
    resumed, it goes on without it rather than with today's recipe."""
    out = tmp_path / "grid"
    assert main(["train", "--data", "grid", "--steps", "2", "--batch-size", "16", "--out", str(out),
                 "--no-progress"]) == 0
    state = load_checkpoint(out / "checkpoint.pt")
    for name in ("mmd_from", "mmd_fine", "mmd_fine_from", "mmd_fine_shape"):
        del state["config"][name]
    save_checkpoint(state, out / "checkpoint.pt")
    assert main(["train", "--data", "grid", "--steps", "4", "--out", str(out), "--no-progress", "--resume"]) == 0
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert (config["mmd_from"], config["mmd_fine"], config["mmd_fine_shape"], config["mmd_weight"]) == \
        (0, 0.0, None, 5.0)


def test_train_ring_draws_a_scatter(tmp_path):
    out = tmp_path / "ring"
    assert main(["train", "--data", "ring", "--steps", "20", "--log-every", "10", "--out", str(out),
                 "--no-progress"]) == 0
    png = (out / "samples.png").read_bytes()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")   # (PNG's IHDR)
    assert png.startswith(PNG) and width > 1.8 * height   # two panels: G alone, and kept by its Jacobian


def test_mixture_metrics_report_the_recipes_jacobian_sampler_as_evaluate_does(tmp_path, capsys):
    """metrics.json of a grid run has G alone ("quality") and G's samples kept by its Jacobian at the grid
    recipe's factor 8 ("quality_jacobian"): what `fastgan evaluate --jacobian 8` reports of its checkpoint."""
    out, report = tmp_path / "grid", tmp_path / "evaluated.json"
    assert main(["train", "--data", "grid", "--steps", "20", "--batch-size", "16", "--out", str(out),
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    kept = dict(metrics["quality_jacobian"])
    assert kept.pop("factor") == 8.0 and 0 < kept["kept"] <= 1 and "spread" in metrics["quality"]
    assert main(["evaluate", str(out), "--jacobian", "8", "--out", str(report)]) == 0
    evaluated = json.loads(report.read_text())
    assert evaluated["sampling"]["acceptance"] == pytest.approx(kept.pop("kept"), abs=1e-4)
    assert kept == evaluated["metrics"] and kept != metrics["quality"]


def test_a_diverged_mixture_run_still_writes_its_outputs(tmp_path, capsys):
    """G's samples are NaN after a divergence: samples.png shows G alone (no Jacobian panel: it needs finite
    samples) and metrics.json says diverged, rather than the run ending in the sampler's error."""
    out = tmp_path / "ring"
    assert main(["train", "--data", "ring", "--lr", "1e6", "--steps", "20", "--out", str(out), "--no-progress"]) == 1
    assert "non-finite" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "quality_jacobian" not in metrics
    assert (out / "samples.png").read_bytes().startswith(PNG) and (out / "losses.png").is_file()


def test_clear_errors(tmp_path, capsys):
    assert main(["train", "--data", "mnist", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not found under" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.pt").write_bytes(b"garbage")
    assert main(["train", "--out", str(tmp_path / "bad"), "--resume"]) == 2
    assert "not a fastgan checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--steps", "0"])


def test_latent_dim_flag_and_the_real_label_default_is_explained(tmp_path, capsys):
    out = tmp_path / "ring"
    assert main(["train", "--data", "ring", "--steps", "4", "--latent-dim", "5", "--out", str(out),
                 "--no-progress"]) == 0
    assert "real_label 0.9" not in capsys.readouterr().out   # (the ring's recipe trains with 1.0)
    result = json.loads((out / "metrics.json").read_text())
    assert result["config"]["latent_dim"] == 5 and result["config"]["real_label"] == 1.0
    assert main(["evaluate", str(out), "--samples", "300"]) == 0      # the model is rebuilt with 5 inputs
    digits = ["train", "--steps", "2", "--batch-size", "16", "--no-progress"]
    assert main([*digits, "--out", str(tmp_path / "d")]) == 0
    printed = capsys.readouterr().out
    assert "real_label 0.9" in printed and "--real-label 1.0" in printed
    assert main([*digits, "--real-label", "1.0", "--out", str(tmp_path / "d1")]) == 0
    assert "real_label 0.9" not in capsys.readouterr().out


def test_minibatch_std_flag_is_kept_in_the_checkpoint_and_evaluated(tmp_path, capsys):
    out = tmp_path / "ring"
    assert main(["train", "--data", "ring", "--steps", "4", "--minibatch-std", "4", "--out", str(out),
                 "--no-progress"]) == 0
    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["extra"]["model"]["minibatch_std"] == 4
    assert "net.4.group" not in saved["discriminator"] and saved["discriminator"]["net.5.weight"].shape == (1, 129)   # (128 wide, + the std)
    assert main(["evaluate", str(out), "--samples", "300", "--metropolis", "5"]) == 0   # D rebuilt with it
    replicas = tmp_path / "replicas"   # a sweep: each replica's D (a StackedNet's rows) judges its samples
    assert main(["train", "--data", "ring", "--steps", "2", "--minibatch-std", "4", "--seeds", "2", "--out",
                 str(replicas), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(replicas), "--samples", "300", "--metropolis", "5"]) == 0
    assert len(json.loads(capsys.readouterr().out)["metrics"]["replicas"]) == 2
    for bad, message in ((["--minibatch-std", "1"], "group must be an integer >= 2"),
                         (["--data", "digits", "--conditional", "--minibatch-std", "4"], "--minibatch-std")):
        assert main(["train", "--steps", "2", "--out", str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_help_reads_well(capsys):
    assert main([]) == 0
    text = capsys.readouterr().out
    assert "fastgan train --out runs/digits" in text and "train" in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for option in ("--data", "--steps", "--out", "--resume", "--kernels", "examples:"):
        assert option in text


@pytest.mark.skipif(shutil.which("fastgan") is None, reason="the console script is not installed")
def test_console_script():
    result = subprocess.run(["fastgan", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage: fastgan" in result.stdout


def test_a_reader_that_goes_away_is_no_traceback(tmp_path):
    """`fastgan ... | head`: stdout's reader gone before the first line, the run ends without a traceback."""
    read, write = os.pipe()
    os.close(read)
    result = subprocess.run([sys.executable, "-m", "fastgan", "train", "--data", "ring", "--steps", "2", "--hidden", "8",
                             "--no-progress", "--device", "cpu", "--out", str(tmp_path)],
                            stdout=write, stderr=subprocess.PIPE, text=True, timeout=300)
    os.close(write)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "Broken pipe" not in result.stderr


def test_stabilisation_flags_and_evaluate(tmp_path, capsys):
    out = tmp_path / "ring"
    assert main(["train", "--data", "ring", "--steps", "20", "--log-every", "10", "--out", str(out), "--no-progress",
                 "--pack", "2", "--ema", "0.99", "--loss", "hinge", "--real-label", "1.0", "--d-steps", "2",
                 "--instance-noise", "0.01", "--r1-gamma", "0.1", "--r1-every", "4", "--lr-g", "1e-4",
                 "--lr-d", "3e-4"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["pack"] == 2 and metrics["config"]["loss"] == "hinge"
    assert set(metrics["quality"]) == {"modes", "high_quality", "kl", "kl_all", "spread", "spread_per_mode",
                                       "spread_excluded", "offset", "spread_to_centre", "swd", "swd_floor",
                                       "swd_ratio"}
    assert len(metrics["quality"]["spread_per_mode"]) == 8 and metrics["quality"]["swd_floor"] > 0
    capsys.readouterr()
    assert main(["evaluate", str(out / "checkpoint.pt"), "--samples", "500", "--out", str(tmp_path / "e.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"] == "ema" and report["samples"] == 500 and report["step"] == 20
    assert report["sampling"] == "plain" and json.loads((tmp_path / "e.json").read_text()) == report
    # rejection sampling with this packed D: reported as such, reproducible, and the same as the API's
    assert main(["evaluate", str(out), "--samples", "500", "--rejection", "0.5"]) == 0
    guided = json.loads(capsys.readouterr().out)
    assert guided["sampling"]["rejection_quantile"] == 0.5 and 0 < guided["sampling"]["acceptance"] <= 1
    assert main(["evaluate", str(out), "--samples", "500", "--rejection", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == guided["metrics"]
    from fastgan import metrics as quality
    from fastgan.nn.presets import build_models
    from fastgan.sampling import rejection_sample
    state = load_checkpoint(out / "checkpoint.pt")
    g, d = build_models(2, state["extra"]["model"])
    g.load_state_dict(state["ema"]), d.load_state_dict(state["discriminator"])
    kept, rate = rejection_sample(g.eval(), d.eval(), 500, state["extra"]["model"]["latent_dim"],
                                  report["seed"], "cpu", 0.5, pack=2)
    assert rate == guided["sampling"]["acceptance"]
    assert quality.evaluate_mixture(kept, "ring") == guided["metrics"]
    with pytest.raises(SystemExit):
        main(["evaluate", str(out), "--rejection", "1"])
    assert "quantile in [0, 1)" in capsys.readouterr().err
    # D calibrated against the EMA generator first: the API's calibrate_discriminator on the run's data
    assert main(["evaluate", str(out), "--calibrate", "40"]) == 2
    assert "add --rejection" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--samples", "500", "--rejection", "0.5", "--calibrate", "40"]) == 0
    calibrated = json.loads(capsys.readouterr().out)
    from fastgan import data
    from fastgan.sampling import calibrate_discriminator
    judge = calibrate_discriminator(g, d, data.load("ring"),
                                    state["extra"]["model"]["latent_dim"], 40, report["seed"], pack=2)
    kept, rate = rejection_sample(g, judge, 500, state["extra"]["model"]["latent_dim"], report["seed"], "cpu", 0.5,
                                  pack=2)
    assert calibrated["sampling"] == {"rejection_quantile": 0.5, "calibrate": 40, "calibrate_lr": 1e-4,
                                      "calibrate_batch": 500, "acceptance": rate}
    assert quality.evaluate_mixture(kept, "ring") == calibrated["metrics"]
    # Metropolis-Hastings over the calibrated D's scores instead: the API's metropolis_sample
    from fastgan.sampling import metropolis_sample
    assert main(["evaluate", str(out), "--samples", "500", "--metropolis", "30", "--calibrate", "40"]) == 0
    chained = json.loads(capsys.readouterr().out)
    kept, rate = metropolis_sample(g, judge, 500, state["extra"]["model"]["latent_dim"], report["seed"], "cpu", 30,
                                   pack=2)
    assert chained["sampling"] == {"metropolis_chain": 30, "sharpen": 1.0, "metropolis_step": 1.0, "calibrate": 40,
                                   "calibrate_lr": 1e-4, "calibrate_batch": 500, "acceptance": rate}
    assert quality.evaluate_mixture(kept, "ring") == chained["metrics"]
    assert main(["evaluate", str(out), "--samples", "500", "--metropolis", "30", "--sharpen", "2.5"]) == 0
    sharper = json.loads(capsys.readouterr().out)
    kept, rate = metropolis_sample(g, d, 500, state["extra"]["model"]["latent_dim"], report["seed"], "cpu", 30,
                                   pack=2, sharpen=2.5)
    assert sharper["sampling"]["sharpen"] == 2.5 and sharper["sampling"]["acceptance"] == rate
    assert quality.evaluate_mixture(kept, "ring") == sharper["metrics"]
    for bad in (["--sharpen", "2"], ["--metropolis", "30", "--sharpen", "0.5"]):
        assert main(["evaluate", str(out), *bad]) == 2
        assert "Metropolis-Hastings' beta" in capsys.readouterr().err
    # local proposals in G's latent space: the API's step_size
    assert main(["evaluate", str(out), "--samples", "500", "--metropolis", "30", "--sharpen", "2.5",
                 "--metropolis-step", "0.2"]) == 0
    local = json.loads(capsys.readouterr().out)
    kept, rate = metropolis_sample(g, d, 500, state["extra"]["model"]["latent_dim"], report["seed"], "cpu", 30,
                                   pack=2, sharpen=2.5, step_size=0.2)
    assert local["sampling"]["metropolis_step"] == 0.2 and local["sampling"]["acceptance"] == rate
    assert quality.evaluate_mixture(kept, "ring") == local["metrics"]
    for bad in (["--metropolis-step", "0.5"], ["--metropolis", "30", "--metropolis-step", "0"],
                ["--metropolis", "30", "--metropolis-step", "1.5"], ["--metropolis", "30", "--metropolis-step", "nan"]):
        assert main(["evaluate", str(out), *bad]) == 2
        err = capsys.readouterr().err
        assert "proposals' step" in err and len(err.strip().splitlines()) == 1, err
    assert main(["evaluate", str(out), "--rejection", "0.5", "--metropolis", "30"]) == 2
    assert "pass one" in capsys.readouterr().err
    # G's own Jacobian picks the samples instead of D: the API's jacobian_sample
    from fastgan.sampling import jacobian_sample
    assert main(["evaluate", str(out), "--samples", "500", "--jacobian"]) == 0
    picked = json.loads(capsys.readouterr().out)
    kept, rate = jacobian_sample(g, 500, state["extra"]["model"]["latent_dim"], report["seed"], "cpu")
    assert picked["sampling"] == {"jacobian_factor": 8.0, "acceptance": rate}
    assert quality.evaluate_mixture(kept, "ring") == picked["metrics"]
    assert main(["evaluate", str(out), "--samples", "500", "--jacobian", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["sampling"]["jacobian_factor"] == 3.0
    for bad in (["--jacobian", "--metropolis", "30"], ["--jacobian", "--rejection", "0.5"]):
        assert main(["evaluate", str(out), *bad]) == 2
        err = capsys.readouterr().err
        assert "without D" in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit):
        main(["evaluate", str(out), "--jacobian", "0.5"])
    assert "factor >= 1" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--calibrate", "40"]) == 2
    assert "--metropolis L" in capsys.readouterr().err
    # an MNIST run is refused up front, in one line (evaluate has no MNIST classifier, nor --data-root)
    save_checkpoint({**state, "extra": {"model": {**state["extra"]["model"], "data": "mnist"}}}, tmp_path / "m.pt")
    assert main(["evaluate", str(tmp_path / "m.pt"), "--rejection", "0.5", "--calibrate", "40"]) == 2
    assert "MNIST needs its own classifier" in capsys.readouterr().err
    # resume keeps the packed discriminator, and says which settings changed
    assert main(["train", "--data", "ring", "--steps", "30", "--log-every", "10", "--out", str(out), "--resume",
                 "--no-progress", "--pack", "2", "--ema", "0.99", "--loss", "hinge"]) == 0
    printed = capsys.readouterr().out
    assert "settings differ from the checkpoint's run" in printed and "d_steps 2 -> 1" in printed


def test_bad_option_values_are_clear(tmp_path, capsys):
    assert main(["train", "--data", "ring", "--steps", "5", "--out", str(tmp_path), "--ema", "2"]) == 2
    assert "ema decay" in capsys.readouterr().err
    assert main(["train", "--data", "ring", "--steps", "5", "--out", str(tmp_path), "--loss", "hinge",
                 "--real-label", "0.9"]) == 2
    assert "not to loss='hinge'" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing.pt")]) == 2


def test_device_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--device", "gpu", "--steps", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'gpu' is not a device" in err
    if not torch.cuda.is_available():
        assert main(["train", "--device", "cuda", "--steps", "2", "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no usable CUDA device" in err and "--device cpu" in err
    assert main(["evaluate", str(tmp_path), "--device", "tpu"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_evaluate_reproduces_metrics_json_and_takes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "ring"
    assert main(["train", "--data", "ring", "--steps", "10", "--log-every", "5", "--out", str(out),
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0  # the folder: its checkpoint.pt
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"] == metrics["quality"] and report["seed"] == metrics["quality_samples"]["seed"]
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty")]) == 2
    assert "no checkpoint.pt" in capsys.readouterr().err


def test_ctrl_c_keeps_the_work_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import signal
    from fastgan.train.loop import TrainingLoop
    real_step = TrainingLoop.eager_step

    def step_then_interrupt(self):
        result = real_step(self)
        if self.count == 7:
            signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(TrainingLoop, "eager_step", step_then_interrupt)
    out = tmp_path / "run"
    argv = ["train", "--data", "ring", "--steps", "50", "--log-every", "20", "--out", str(out), "--no-progress"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted at step 7 of 50" in err
    assert f"Resume with: fastgan {' '.join(argv)} --resume" in err
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 7
