"""The benchmark scripts run on CPU (tiny sizes; GPU rows skipped with a reason) and count FLOPs right."""
import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import kernels  # noqa: E402
import train_step  # noqa: E402

import fastgan  # noqa: E402


def test_step_flop_count_matches_what_pytorch_executes():
    torch.manual_seed(0)
    g, d = fastgan.MLPGenerator(), fastgan.MLPDiscriminator()
    trainer = fastgan.GANTrainer(g, d, fastgan.data.digits(), batch_size=64, device="cpu")
    with FlopCounterMode(display=False) as counter:
        trainer.step()
    assert train_step.step_flops(g, d, 64) == counter.get_total_flops()
    # PERF.md's order of magnitude: ~2.2-2.5 MFLOP per sample for the classic MLP GAN
    assert 2.1e6 < train_step.step_flops(g, d, 1) < 2.6e6


def test_train_step_quick_runs_on_cpu_and_writes_results(tmp_path):
    assert train_step.main(["--quick", "--windows", "2", "--steps-per-window", "1", "--out", str(tmp_path)]) == 0
    (json_file,) = tmp_path.glob("cpu/*-train_step.json")
    payload = json.loads(json_file.read_text())
    backends = payload["rows"][0]["backends"]
    assert backends["eager"]["ms_per_step"] > 0 and backends["eager"]["speedup_vs_eager"] == 1.0
    assert backends["triton"]["launches_per_step"] == 33  # every layer and loss ran in Triton
    assert "needs a CUDA device" in backends["triton+graph"]["skipped"]
    assert backends["compile"]["ms_per_step"] > 0 and backends["compile"]["setup_s"] > 0
    assert "not available yet" in backends["eager+graph"]["skipped"] or "CUDA" in backends["eager+graph"]["skipped"]
    assert json_file.with_suffix(".md").read_text().count("|") > 20
    for picture in ("steps_per_s", "speedup"):
        assert (json_file.parent / f"{json_file.stem}-{picture}.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour: a clean skip")
def test_kernel_benchmark_skips_cleanly_without_cuda(capsys):
    assert kernels.main(["--quick"]) == 0
    assert "skipped: no CUDA device" in capsys.readouterr().out
