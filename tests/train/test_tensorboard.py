"""TensorBoard logging (fit(log_dir=...), fastgan train --tensorboard): the logged losses are history's, a grid of
samples for image data, the quality metrics of a CLI run; a clear error where the extra is not installed."""
import sys

import pytest
import torch
from torch import nn

from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, data
from fastgan.app.cli import main
from fastgan.train.tensorboard import Board

accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _read(log_dir):
    events = accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_fit_logs_history_and_a_sample_grid(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(64, 1, 8, 8)
    g, d = MLPGenerator(latent_dim=4, hidden=(16,), out_dim=64), MLPDiscriminator(in_dim=64, hidden=(16,))
    trainer = GANTrainer(g, d, images, batch_size=16, device="cpu")
    history = trainer.fit(6, log_every=2, progress=False, log_dir=tmp_path)
    events = _read(tmp_path)
    assert [e.step for e in events.Scalars("loss/D")] == history["step"] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in events.Scalars("loss/G")] == pytest.approx(history["loss_g"], rel=1e-6)
    (grid,) = events.Images("samples")
    assert grid.step == 6 and (grid.width, grid.height) == (8 * 9 + 1, 8 * 9 + 1)   # 64 samples of 8x8, bordered


def test_replicas_log_each_and_their_mean(tmp_path):
    torch.manual_seed(0)
    g, d = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2)), nn.Sequential(nn.Linear(2, 8), nn.ReLU(),
                                                                                     nn.Linear(8, 1))
    trainer = GANTrainer(g, d, data.gaussian_ring(256), replicas=2, batch_size=16, device="cpu")
    history = trainer.fit(2, log_every=2, progress=False, log_dir=tmp_path)
    events = _read(tmp_path)
    last = history["loss_d"][-1]
    assert events.Scalars("loss/D/replica_1")[-1].value == pytest.approx(last[1], rel=1e-6)
    assert events.Scalars("loss/D")[-1].value == pytest.approx(sum(last) / 2, rel=1e-6)
    assert "samples" not in events.Tags()["images"]   # 2-d samples are no picture


def test_the_cli_logs_the_quality_metrics(tmp_path):
    board = tmp_path / "tb"
    assert main(["train", "--data", "ring", "--steps", "20", "--log-every", "10", "--hidden", "16", "16",
                 "--out", str(tmp_path / "run"), "--no-progress", "--tensorboard", str(board)]) == 0
    tags = _read(board).Tags()["scalars"]
    assert {"loss/D", "loss/G", "quality/modes", "quality/high_quality"} <= set(tags), tags


def test_without_the_extra_the_error_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r'pip install "fastgan\[tensorboard\]"'):
        Board(tmp_path)
