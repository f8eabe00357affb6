"""``fastgan train --starts N``: N GANs at once, the one nearest its training data kept, its outputs as one GAN's;
``fastgan evaluate`` reads the kept one back; refused with a sweep and on a resume that changes it."""
import json

import pytest

from fastgan import GANTrainer, TrainConfig, data, metrics
from fastgan.app import starts
from fastgan.app.cli import main
from fastgan.checkpoint import load_checkpoint
from fastgan.nn.presets import build_models

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--data", "grid", "--hidden", "8", "--no-progress", "--device", "cpu"]


def _train(out, *flags) -> dict:
    assert main(["train", *TINY, "--out", str(out), *flags]) == 0
    return json.loads((out / "metrics.json").read_text())


def _trainer(path, real) -> GANTrainer:
    """The single run saved at ``path``, rebuilt through the Python API."""
    state = load_checkpoint(path)
    g, d = build_models(real.shape[1], state["extra"]["model"])
    trainer = GANTrainer(g, d, real, TrainConfig.from_dict(state["config"]))
    trainer.load(path)
    return trainer


def test_two_starts_keep_the_one_nearest_its_data_and_report_it_as_that_single_run(tmp_path, capsys):
    run = _train(tmp_path / "starts", "--starts", "2", "--seed", "4", "--steps", "3")
    assert "kept seed" in capsys.readouterr().out
    chosen = run["starts"]
    assert chosen["count"] == 2 and chosen["seeds"] == [4, 5] and chosen["samples"] == 400   # (conftest's 400)
    assert run["config"]["replicas"] == 2
    # each start's distance is its single run's (seed 4 + k) samples' distance to the grid's training data
    real = data.load("grid")
    singles = []
    for k in range(2):
        single_out = tmp_path / f"seed{4 + k}"
        singles.append(_train(single_out, "--seed", str(4 + k), "--steps", "3", "--starts", "1"))
        samples = _trainer(single_out / "checkpoint.pt", real).sample(400, seed=starts.SCORE_SEED)
        ratio = metrics.kernel_distance(samples, real, draws=starts.DRAWS)["mmd_ratio"]
        assert chosen["data_mmd_ratio"][k] == pytest.approx(ratio, rel=1e-4), k
    kept = chosen["kept"]
    assert chosen["data_mmd_ratio"][kept] == min(chosen["data_mmd_ratio"])
    # metrics.json's figures are the kept start's, as its single run reports them
    for key in ("modes", "high_quality", "kl", "spread", "swd_ratio"):
        assert run["quality"][key] == pytest.approx(singles[kept]["quality"][key], rel=1e-4, abs=1e-9), key
        assert run["quality_jacobian"][key] == pytest.approx(singles[kept]["quality_jacobian"][key],
                                                             rel=1e-4, abs=1e-9), key
    assert (tmp_path / "starts" / "samples.png").read_bytes().startswith(PNG)
    # fastgan evaluate: the kept start, the same figures as metrics.json
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "starts"), "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["start"] == {"seed": 4 + kept, "of_starts": 2}
    assert report["metrics"] == run["quality"]


def test_starts_resume_exactly_and_keep_their_count(tmp_path, capsys):
    straight = _train(tmp_path / "straight", "--starts", "2", "--steps", "4")
    _train(tmp_path / "broken", "--starts", "2", "--steps", "2")
    resumed = _train(tmp_path / "broken", "--resume", "--steps", "4")   # (no --starts: the run's own 2)
    assert resumed["steps"] == 4 and resumed["starts"] == straight["starts"]
    assert resumed["quality"] == straight["quality"]
    capsys.readouterr()
    assert main(["train", *TINY, "--out", str(tmp_path / "broken"), "--resume", "--starts", "3", "--steps", "6"]) == 2
    err = capsys.readouterr().err
    assert "trained with --starts 2" in err and "Traceback" not in err
    assert json.loads((tmp_path / "broken" / "metrics.json").read_text())["steps"] == 4   # (nothing trained)


def test_the_grids_recipe_trains_two_starts_but_not_in_a_sweep_and_one_when_told(tmp_path):
    assert _train(tmp_path / "recipe", "--steps", "2")["starts"]["count"] == 2
    one = _train(tmp_path / "one", "--steps", "2", "--starts", "1")
    assert "starts" not in one and one["config"]["replicas"] is None
    sweep = _train(tmp_path / "sweep", "--steps", "2", "--seeds", "3")
    assert "starts" not in sweep and sweep["config"]["replicas"] == 3 and (tmp_path / "sweep" / "sweep.md").exists()


def test_starts_with_a_sweep_is_one_line_before_training(tmp_path, capsys):
    assert main(["train", *TINY, "--out", str(tmp_path), "--starts", "2", "--seeds", "2", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "--starts 2 keeps one GAN of 2; a sweep" in err and "Traceback" not in err
    assert not (tmp_path / "checkpoint.pt").exists()


def test_the_kept_start_is_the_nearest_its_data_and_never_one_whose_samples_are_not_finite():
    centers = data.grid_centers()

    class Trainer:   # three starts: NaN samples, the grid with a line of 5 modes lost, the grid itself
        replicas, num_classes = 3, None
        config = type("Config", (), {"seed": 7})
        data = data.gaussian_grid(8000, seed=3)

        def sample(self, n, seed, labels, replica):
            if replica == 1:
                return data.mixture(n, centers[5:], 0.05, seed=seed)
            drawn = data.gaussian_grid(n, seed=seed)
            return drawn * float("nan") if replica == 0 else drawn

    scores = starts.score_starts(Trainer())
    assert scores["kept"] == 2 and scores["seeds"] == [7, 8, 9] and scores["samples"] == 400
    assert scores["data_mmd_ratio"][0] is None and scores["data_mmd_ratio"][1] > 3 * scores["data_mmd_ratio"][2]
