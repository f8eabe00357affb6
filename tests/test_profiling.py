import json

import pytest
import torch

from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, data
from fastgan.app.cli import main
from fastgan.profiling import format_table, nsight_commands, profile_trainer

PHASES = {"data", "G.forward", "D.forward.real", "D.forward.fake", "D.backward", "D.optim", "G.loss",
          "G.backward", "G.optim"}


def tiny(kernels):
    torch.manual_seed(0)
    return GANTrainer(MLPGenerator(latent_dim=4, hidden=(8,), out_dim=2, output_activation=None),
                      MLPDiscriminator(in_dim=2, hidden=(8,)), data.gaussian_ring(64), batch_size=16,
                      device="cpu", kernels=kernels)


@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_profile_writes_trace_table_and_counts(kernels, tmp_path):
    summary = profile_trainer(tiny(kernels), steps=2, warmup=1, out=tmp_path)
    trace = json.loads((tmp_path / "trace.json").read_text())
    names = {event.get("name") for event in trace["traceEvents"]}
    assert PHASES <= names, f"missing phase ranges: {PHASES - names}"
    assert summary["launches_per_step"] > 0 and summary["table"][0]["total_us"] > 0
    assert "| kernel | launches |" in (tmp_path / "kernels.md").read_text()
    assert json.loads((tmp_path / "profile.json").read_text())["steps"] == 2
    if kernels == "triton":  # 2 layers per model here: every layer and loss in Triton
        assert sum(summary["triton_launches_per_step"].values()) == 2 + 6 + 3 + 2 * 3 + 2 + 3
    assert "launches per step" in format_table(summary)


def test_profile_without_trace_and_bad_arguments(tmp_path):
    summary = profile_trainer(tiny("torch"), steps=1, warmup=0, out=tmp_path, trace=False)
    assert "table" not in summary and not (tmp_path / "trace.json").exists()
    with pytest.raises(ValueError, match="steps"):
        profile_trainer(tiny("torch"), steps=0)


def test_nsight_command_lines():
    commands = nsight_commands(["profile", "--steps", "5"])
    assert commands["nsys"].startswith("nsys profile --capture-range=cudaProfilerApi")
    assert "ncu --clock-control none" in commands["ncu"] and "regex:" in commands["ncu"]
    assert commands["nsys"].endswith("fastgan profile --steps 5 --no-trace")


def test_cli_profile(tmp_path, capsys):
    assert main(["profile", "--data", "ring", "--steps", "2", "--warmup", "1", "--batch-size", "16",
                 "--hidden", "8", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "launches per step" in printed and "nsys profile" in printed and "ncu --clock-control none" in printed
    assert (tmp_path / "trace.json").exists()
