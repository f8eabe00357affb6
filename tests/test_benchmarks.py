"""The benchmark scripts run on CPU (tiny sizes; GPU rows skipped with a reason) and count FLOPs right."""
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common  # noqa: E402
import host_cost  # noqa: E402
import kernels  # noqa: E402
import train_step  # noqa: E402

import fastgan  # noqa: E402
import fastgan.profiling  # noqa: E402


@pytest.fixture(autouse=True)
def _small_data_distance(monkeypatch):
    """quality_curve.py's distance to the training data on 500 samples here, not 5,000: the same code in a
    tenth of the time (its figures are not what these tests check, but for being there and per seed)."""
    import quality_curve
    monkeypatch.setattr(quality_curve, "DATA_MMD_SAMPLES", 500)


def test_step_flop_count_matches_what_pytorch_executes():
    torch.manual_seed(0)
    g, d = fastgan.MLPGenerator(), fastgan.MLPDiscriminator()
    trainer = fastgan.GANTrainer(g, d, fastgan.data.digits(), batch_size=64, device="cpu")
    with FlopCounterMode(display=False) as counter:
        trainer.step()
    assert train_step.step_flops(g, d, 64) == counter.get_total_flops()
    # the classic MLP GAN's step: ~1.24 M multiply-adds per sample, i.e. ~2.2-2.5 MFLOP
    assert 2.1e6 < train_step.step_flops(g, d, 1) < 2.6e6


def test_train_step_quick_runs_on_cpu_and_writes_results(tmp_path):
    assert train_step.main(["--quick", "--windows", "2", "--steps-per-window", "1", "--out", str(tmp_path)]) == 0
    (json_file,) = tmp_path.glob("cpu/*.json")
    (run,) = common.read_runs(tmp_path / "cpu")   # the run's record, and the latest file is that record
    assert json_file.name == "train_step-quick.json" and json.loads(json_file.read_text()) == run
    assert run["benchmark"] == "train_step-quick" and run["quick"] and run["versions"]["torch"] == torch.__version__
    payload = run["payload"]
    backends = payload["rows"][0]["backends"]
    assert backends["eager"]["ms_per_step"] > 0 and backends["eager"]["speedup_vs_eager"] == 1.0
    # every layer and loss ran in Triton (the interpreter, and the row says so)
    assert backends["triton"]["kernels_per_step"] == 33 and backends["triton"]["kernels_run"] == "triton-interpreter"
    assert backends["triton"]["label"] == "triton [Triton interpreter]"
    assert backends["triton+torch_fused_adam"]["ms_per_step"] > 0
    assert "needs a CUDA device" in backends["triton+graph"]["skipped"]
    assert backends["compile"]["ms_per_step"] > 0 and backends["compile"]["setup_s"] > 0
    assert "CUDA" in backends["eager+graph"]["skipped"]
    # GANTrainer's defaults: on a CPU the fast path keeps the plain eager step
    assert backends["defaults"]["ms_per_step"] > 0 and backends["defaults"]["kernels_run"] == "torch"
    assert json_file.with_suffix(".md").read_text() == run["table"] + "\n" and run["table"].count("|") > 20
    assert run["files"] == [f"runs/{run['run']}-steps_per_s.png", f"runs/{run['run']}-speedup.png"]
    for picture in ("steps_per_s", "speedup"):   # kept under the run's id, and the latest copy
        latest = (json_file.parent / f"train_step-quick-{picture}.png").read_bytes()
        kept = (json_file.parent / "runs" / f"{run['run']}-{picture}.png").read_bytes()
        assert latest.startswith(b"\x89PNG") and latest == kept


def test_a_failing_backend_is_a_row_not_the_end(tmp_path, monkeypatch):
    broken = train_step.Backend("broken", {"kernels": "torch", "lr": -1.0})
    monkeypatch.setattr(train_step, "BACKENDS", [train_step.BACKENDS[0], broken])
    assert train_step.main(["--quick", "--windows", "1", "--steps-per-window", "1", "--batches", "16", "4096",
                            "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "cpu" / "train_step-quick.json").read_text())["payload"]
    assert [r["batch"] for r in payload["rows"]] == [16, 4096]  # batch 4096 > the 1,797 digits: it ran
    for row in payload["rows"]:
        assert "lr must be" in row["backends"]["broken"]["failed"] and row["backends"]["eager"]["ms_per_step"] > 0


def pictures(**texts):
    """A script's ``draw`` stand-in: a small file per kind of picture, named as the scripts name theirs."""
    def draw(folder, stem):
        paths = {kind: folder / f"{stem}-{kind}.png" for kind in texts}
        for kind, path in paths.items():
            path.write_text(texts[kind])
        return list(paths.values())
    return draw


def test_results_are_never_overwritten(tmp_path):
    """Each run is one record of runs.jsonl, appended; a run replaces only its own record as it goes; the latest
    files are the last run's; a quick run is a benchmark of its own; each run's pictures stay under its id."""
    folder = tmp_path / "cpu"
    first = common.write_results("thing", {"a": 1}, "first", tmp_path, draw=pictures(plot="one"))
    line = (folder / "runs.jsonl").read_text()
    common.new_run()  # a later run of the same day
    second = common.write_results("thing", {"a": 2}, "second", tmp_path)
    again = common.write_results("thing", {"a": 3}, "second, updated", tmp_path,   # its own record, rewritten
                                 draw=pictures(plot="two"))
    quick = common.write_results("thing", {"a": 4}, "quick", tmp_path, quick=True)
    assert first[:2] == second[:2] == again[:2] == (folder / "thing.json", folder / "thing.md")
    assert quick[:2] == (folder / "thing-quick.json", folder / "thing-quick.md")
    runs = common.read_runs(folder)
    assert [(r["benchmark"], r["payload"], r["table"], r["quick"]) for r in runs] == [
        ("thing", {"a": 1}, "first", False), ("thing", {"a": 3}, "second, updated", False),
        ("thing-quick", {"a": 4}, "quick", True)]
    assert runs[0]["run"].endswith("-thing") and runs[1]["run"] == runs[0]["run"] + "-2"
    assert runs[2]["run"].endswith("-thing-quick") and runs[2]["run"][:10] == runs[0]["run"][:10]
    assert (folder / "runs.jsonl").read_text().startswith(line)   # the first run's line, byte for byte
    assert runs[0]["versions"]["torch"] == torch.__version__ and runs[0]["card"] == common.card_name()
    # the latest files: the last full run (not the quick one), its table and its picture
    assert json.loads((folder / "thing.json").read_text()) == runs[1]
    assert (folder / "thing.md").read_text() == "second, updated\n"
    assert json.loads((folder / "thing-quick.json").read_text()) == runs[2]
    assert again[2:] == (folder / "thing-plot.png",) and (folder / "thing-plot.png").read_text() == "two"
    assert [r["files"] for r in runs] == [[f"runs/{runs[0]['run']}-plot.png"], [f"runs/{runs[1]['run']}-plot.png"], []]
    assert [(folder / r["files"][0]).read_text() for r in runs[:2]] == ["one", "two"]
    # runs.md: every run's table under its id
    tables = (folder / "runs.md").read_text()
    assert all(f"\n## {r['run']}\n" in tables and r["table"] in tables for r in runs)


def test_a_latest_picture_the_new_run_lacks_goes(tmp_path):
    """The latest files are one run's: a picture of the run before that the new one did not draw is removed
    from them (it stays under runs/)."""
    common.new_run()
    common.write_results("thing", {"a": 1}, "first", tmp_path, draw=pictures(ring="1", grid="1"))
    common.new_run()
    common.write_results("thing", {"a": 2}, "second", tmp_path, draw=pictures(ring="2"))
    folder = tmp_path / "cpu"
    assert sorted(p.name for p in folder.glob("*.png")) == ["thing-ring.png"]
    assert len(list((folder / "runs").glob("*-grid.png"))) == 1 and len(list((folder / "runs").glob("*.png"))) == 3


def test_merge_adds_another_folders_runs_once(tmp_path):
    """A device_check archive's results join the committed ones: its records appended, an id taken by another run
    renamed with its files, a run already there left alone; the latest files and runs.md redrawn."""
    ours, device = tmp_path / "ours", tmp_path / "device"
    common.new_run()
    common.write_results("thing", {"a": 1}, "ours", ours)
    common.new_run()
    common.write_results("thing", {"a": 2}, "device", device, draw=pictures(plot="device"))   # (the same id)
    committed = (ours / "cpu" / "runs.jsonl").read_text()
    assert common.merge_results(device, ours) == 1
    assert common.merge_results(device, ours) == 0   # already there
    mine, theirs = common.read_runs(ours / "cpu")
    assert (ours / "cpu" / "runs.jsonl").read_text().startswith(committed)
    assert theirs["run"] == mine["run"] + "-2" and theirs["payload"] == {"a": 2}
    assert theirs["files"] == [f"runs/{theirs['run']}-plot.png"]
    assert (ours / "cpu" / theirs["files"][0]).read_text() == "device"
    assert json.loads((ours / "cpu" / "thing.json").read_text()) == theirs
    assert (ours / "cpu" / "thing-plot.png").read_text() == "device"
    assert f"## {theirs['run']}" in (ours / "cpu" / "runs.md").read_text()


@pytest.mark.parametrize("card", ["cpu", "nvidia-h200"])
def test_committed_results_are_whole(card):
    """benchmarks/results/<card>/: runs.jsonl (every run, ids unique, files present), runs.md drawn from it, and
    for each benchmark script the latest files, which are its last run's; the performance model's fit to a
    run (tools/perf_model.py --refit), naming a run that is there; nothing else."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / card
    runs = common.read_runs(folder)
    assert len({r["run"] for r in runs}) == len(runs) > 0
    keys = ["run", "benchmark", "date", "card", "quick", "versions", "files", "table", "payload"]
    for r in runs:
        assert [k for k in r if k != "note"] == keys and r["run"].startswith(r["date"][:10]), r["run"]
        assert all((folder / f).is_file() for f in r["files"]), r["run"]
        assert r.get("note") is None or (folder.parents[2] / r["note"]).is_file(), r["run"]
    tables = (folder / "runs.md").read_text()
    assert tables == common.runs_table(folder) and all(f"\n## {r['run']}\n" in tables for r in runs)
    expected = {"runs.jsonl", "runs.md", "runs"}
    for benchmark in dict.fromkeys(r["benchmark"] for r in runs):
        if benchmark.split("-")[0] not in ("train_step", "kernels", "replicas", "quality", "quality_curve",
                                           "host_cost"):
            continue   # (fastgan train/evaluate reports and one-off probes: records only)
        last = [r for r in runs if r["benchmark"] == benchmark][-1]
        assert json.loads((folder / f"{benchmark}.json").read_text()) == last
        assert (folder / f"{benchmark}.md").read_text() == last["table"] + "\n"
        expected |= {f"{benchmark}.json", f"{benchmark}.md"}
        for f in last["files"]:
            latest = folder / f"{benchmark}{Path(f).name[len(last['run']):]}"
            assert latest.read_bytes() == (folder / f).read_bytes()
            expected.add(latest.name)
    fit = folder / "perf_model_fit.json"
    if fit.exists():
        assert json.loads(fit.read_text())["run"] in {r["run"] for r in runs}
        expected.add(fit.name)
    assert {p.name for p in folder.iterdir()} == expected


def test_time_limit_starts_no_row_it_cannot_finish(tmp_path):
    assert train_step.main(["--quick", "--windows", "1", "--steps-per-window", "1", "--batches", "16", "32",
                            "--backends", "eager", "--time-limit", "0", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "cpu" / "train_step-quick.json").read_text())["payload"]
    assert payload["rows"] == [] and payload["not_run"] == ["width 32 batch 16", "width 32 batch 32"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour: a clean skip")
def test_host_cost_times_every_call_with_its_launches_stubbed_and_puts_the_kernels_back(tmp_path):
    from fastgan.ops import linear_kernels
    kernel = linear_kernels._linear_act_fwd_kernel
    with fastgan.profiling.stubbed_launches() as stubbed:
        assert stubbed >= 10 and linear_kernels._linear_act_fwd_kernel is not kernel
    assert linear_kernels._linear_act_fwd_kernel is kernel
    assert host_cost.main(["--calls", "2", "--windows", "2", "--launched", "--out", str(tmp_path)]) == 0
    assert linear_kernels._linear_act_fwd_kernel is kernel
    record = json.loads((tmp_path / "cpu" / "host_cost.json").read_text())
    results = record["payload"]["results"]
    names = set(host_cost.contenders(torch.device("cpu")))
    assert set(results) == names | {f"{name} (launched)" for name in names}   # (launched: the interpreter's)
    for name, row in results.items():
        assert 0 < row["min_us"] <= row["median_us"] <= row["max_us"] < 1e6, (name, row)


def test_kernel_benchmark_skips_cleanly_without_cuda(capsys):
    assert kernels.main(["--quick"]) == 0
    assert "skipped: no CUDA device" in capsys.readouterr().out


def test_kernel_benchmark_saves_after_every_row_and_keeps_to_its_time_limit(tmp_path, monkeypatch):
    """The GPU flow of kernels.py with the GPU parts stubbed: a result file exists after each row, and
    --time-limit stops before a row that would not fit (rows are what a real run would measure)."""
    saved_rows = []

    def fake_rows(*args, **kwargs):
        for i in range(3):
            files = list(tmp_path.glob("*/kernels-quick.json"))
            saved_rows.append(len(json.loads(files[0].read_text())["payload"]["rows"]) if files else None)
            yield {"op": "fused_linear", "mode": "fwd", "batch": 128, "in": 100, "out": 128,
                   "activation": "leaky_relu", "dtype": "float32", "precision": "tf32", "flops": 2 * 128 * 100 * 128,
                   "bytes": 1000, "timings": {"torch": {"median_ms": 0.02}, "fastgan": {"median_ms": 0.01}}}

    monkeypatch.setattr(kernels.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(kernels, "measure_ceilings", lambda: {"copy_GBps": 3000.0, "bf16_matmul_TFLOPs": 700.0,
                                                              "tf32_matmul_TFLOPs": 400.0, "fp32_matmul_TFLOPs": 50.0})
    monkeypatch.setattr(kernels, "linear_rows", fake_rows)
    monkeypatch.setattr(kernels, "loss_rows", fake_rows)
    monkeypatch.setattr(kernels, "mlp_rows", fake_rows)
    monkeypatch.setattr(kernels, "_set_recompile_limit", lambda n: None)
    monkeypatch.setattr(kernels, "environment", lambda: {"card": "Test Card", "date": "2026-11-27T00:00:00",
                                                         "torch": "x", "triton": "y"})
    monkeypatch.setattr(common, "card_name", lambda: "Test Card")
    assert kernels.main(["--quick", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "test-card"
    payload = json.loads((folder / "kernels-quick.json").read_text())["payload"]
    assert len(payload["rows"]) == 15 and saved_rows[:4] == [0, 1, 2, 3]   # 5 groups of 3 rows
    assert "% matmul ceiling" in (folder / "kernels-quick.md").read_text()
    (whole,) = common.read_runs(folder)   # one record, replaced after every row
    assert whole["payload"] == payload and whole["card"] == "Test Card"
    assert kernels.main(["--quick", "--time-limit", "0", "--out", str(tmp_path)]) == 0
    first, stopped = common.read_runs(folder)   # a second run: a record of its own, the first one kept
    assert first == whole and stopped["run"] == whole["run"] + "-2"
    assert stopped["payload"]["rows"] == [] and stopped["payload"]["not_run"]
    assert json.loads((folder / "kernels-quick.json").read_text()) == stopped   # the latest run


def test_micro_benchmarks_run(tmp_path):
    """The pytest-benchmark suite (outside the default run) still runs: each benchmark once, untimed."""
    import os
    import subprocess
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/micro", "-n", "0", "-q", "-p",
                             "no:cacheprovider", "--benchmark-disable"], cwd=root, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TRITON_INTERPRET="1"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]


def test_each_backends_memory_is_measured_alone(monkeypatch):
    """Peak memory is read around the backend's own steps, above what was allocated before them, so each
    backend reports its own working memory, not the run's global peak."""
    allocated = {"now": 500 * 2**20, "peak": 9000 * 2**20}  # 9000 MiB: an earlier backend's peak

    class FakeTrainer:
        device = torch.device("cuda")
        step_count = 0

        def step(self):
            self.step_count += 1
            allocated["peak"] = max(allocated["peak"], allocated["now"] + 3 * 2**20)  # 3 MiB per step

        def flush_losses(self):
            return []

    monkeypatch.setattr(train_step, "_sync", lambda device: None)
    monkeypatch.setattr(train_step.torch.cuda, "memory_allocated", lambda device=None: allocated["now"])
    monkeypatch.setattr(train_step.torch.cuda, "max_memory_allocated", lambda device=None: allocated["peak"])
    monkeypatch.setattr(train_step.torch.cuda, "reset_peak_memory_stats",
                        lambda device=None: allocated.update(peak=allocated["now"]))
    assert train_step._peak_step_memory_mib(FakeTrainer(), 4) == 3.0


def test_device_check_script_parses_and_its_summary_reads_every_part(tmp_path, capsys):
    """device_check.sh only runs on a leased GPU: here its shell syntax is checked, and its summary is
    made from a folder laid out as the script leaves it (a real CPU train_step run, stand-ins elsewhere)."""
    import subprocess
    import device_summary
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run(["bash", "-n", str(root / "benchmarks" / "device_check.sh")]).returncode == 0
    import replicas   # every backend the script asks replicas.py for is one it has
    script = (root / "benchmarks" / "device_check.sh").read_text().replace("\\\n", " ")
    named = {name for names in re.findall(r"replicas\.py[^\n]*?--backends (.*?)(?= --|\n)", script)
             for name in names.split()}
    assert named and named <= set(replicas.BACKENDS), named - set(replicas.BACKENDS)
    (tmp_path / "environment.txt").write_text("nvidia-smi output\ntorch 2.11.0 (CUDA 13.0) | triton 3.6.0 | H100\n")
    (tmp_path / "gpu_tests.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="0">'
        '<testcase classname="tests.test_graph" name="test_a"/><testcase classname="tests.test_graph" name="test_b">'
        '<failure message="boom">trace</failure></testcase><testcase classname="t" name="c"/></testsuite></testsuites>')
    assert train_step.main(["--quick", "--windows", "1", "--steps-per-window", "1", "--backends", "eager", "triton",
                            "--out", str(tmp_path / "results")]) == 0
    common.write_results("kernels", {   # stand-ins for the GPU runs, recorded as the scripts record them
        "ceilings": {"tf32_matmul_TFLOPs": 400.0, "bf16_matmul_TFLOPs": 700.0, "fp32_matmul_TFLOPs": 50.0},
        "rows": [{"op": "fused_linear", "mode": "fwd+bwd", "dtype": "float32", "precision": "tf32", "batch": 16384,
                  "in": 784, "out": 128, "flops": 6 * 16384 * 784 * 128,
                  "timings": {"fastgan": {"median_ms": 0.05}, "torch": {"median_ms": 0.1}}}], "not_run": []},
        "table", tmp_path / "results", quick=True)
    common.write_results("replicas", {"batch": 100, "sweep": [
        {"k": 16, "backends": {"torch": {"gan_steps_per_s": 1234.0}, "triton": {"failed": "x"},
                               "torch+graph": {"skipped": "needs a CUDA device"}}}]}, "table", tmp_path / "results",
        quick=True)
    common.write_results("replicas-classic", {"batch": 128, "sweep": [
        {"k": 128, "backends": {"triton+graph": {"gan_steps_per_s": 300000.0}}}]}, "table", tmp_path / "results")
    (tmp_path / "results" / "micro.json").write_text(json.dumps({"benchmarks": [
        {"name": "test_train_step[eager]", "group": "train step batch 128", "extra_info": {"inner_calls": 20},
         "stats": {"median": 0.02}}]}))
    (tmp_path / "results" / "profile-triton-b4096").mkdir()
    (tmp_path / "results" / "profile-triton-b4096" / "profile.json").write_text(json.dumps({
        "device": "cuda:0", "kernels": "triton", "table": [
            {"name": "_linear_act_bwd_weight_kernel", "per_step": 6.0, "us_per_step": 120.0},
            {"name": "_adam_step_kernel", "per_step": 2.0, "us_per_step": 8.0}]}))
    assert host_cost.main(["--calls", "2", "--windows", "1", "--out", str(tmp_path / "results")]) == 0
    (tmp_path / "steps.tsv").write_text("gpu_tests\t1\t80\t95\ntrain_step\t0\t100\t140\n")
    assert device_summary.main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    for expected in ("torch 2.11.0 (CUDA 13.0)", "tests: 2 passed, 1 failed", "FAILED tests.test_graph::test_b: boom",
                     "width 32 batch 16", "eager", "triton [Triton interpreter]",
                     "784->128 batch 16384: 197.3 TFLOP/s = 49% of tf32_matmul_TFLOPs, 2.00x torch",
                     "33 kernels / - launches", "K=  16  torch 1,234  triton -",
                     "(classic MLP GANs, batch 128 per GAN)", "K= 128  triton+graph 300,000",
                     "test_train_step[eager]                                       1000.0 us per training step",
                     "gpu_tests    exit   1",
                     "profile profile-triton-b4096 (cuda:0, kernels=triton): 128.0 us of kernel time per step",
                     "_linear_act_bwd_weight_kernel                                   6.0 x     120.0 us/step",
                     "host_cost (µs per call on the host", "1.00x PyTorch's"):
        assert expected in text, f"{expected!r} missing from:\n{text}"


def test_device_summary_reads_a_micro_json_cut_short(tmp_path):
    """pytest-benchmark killed at its time limit leaves an empty JSON: the first GPU run's summary crashed on
    it and lost every other part; it is now a line saying there are no results."""
    import device_summary
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "micro.json").write_text("")
    assert device_summary.micro(tmp_path) == ["micro: no results (pytest-benchmark writes its JSON only when "
                                              "the run ends)"]


def test_device_summary_reads_quality_curves(tmp_path):
    """device_check.sh --quality: the summary lists each curve's checkpoints (here committed CPU curves, read from
    the runs.jsonl of a results folder holding only them)."""
    import device_summary
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    committed = {r["run"]: r for r in common.read_runs(results / "cpu")}
    (tmp_path / "results" / "cpu").mkdir(parents=True)

    def only(*runs):
        (tmp_path / "results" / "cpu" / "runs.jsonl").write_text("".join(json.dumps(committed[r]) + "\n" for r in runs))

    only("2026-11-27-quality-curve-ring-ema")
    lines = device_summary.quality_curves(tmp_path)
    assert lines[0] == "quality ring ema (5 seeds, mean, lr 0.0001):"
    assert lines[-1] == "   200000 steps   1094 s: modes  8.00  HQ  92.5%  KL 0.002"
    # a curve with rejection sampling and time to quality (the 10-seed ring of 2026-11-28)
    only("2026-11-27-quality-curve-ring-ema", "2026-11-28-quality-curve-ring-ema")
    lines = device_summary.quality_curves(tmp_path)
    assert "quality ring ema (10 seeds, mean, lr 0.0002):" in lines
    assert any(line.startswith("   400000 steps") and "| rejection 0.5: HQ  99.4%" in line for line in lines), lines
    assert lines[-1] == "  every mode with >= 90% HQ: 10/10 seeds, median step 115000"
    # and its rerun with a calibrated D as well (the same plain and rejection figures, then the calibrated ones)
    only("2026-11-28-quality-curve-ring-ema-2")
    lines = device_summary.quality_curves(tmp_path)
    assert lines[-2] == ("   400000 steps   2716 s: modes  7.90  HQ  93.4%  KL 0.074  | rejection 0.5: HQ  99.4%  "
                         "KL 0.111  | calibrated (D +2000 steps) 0.5: HQ  99.2%  KL 0.087"), lines


def test_replicas_benchmark_quick_runs_on_cpu_and_writes_results(tmp_path):
    import replicas
    assert replicas.main(["--quick", "--k", "3", "--width", "16", "--windows", "2", "--out", str(tmp_path)]) == 0
    assert replicas.main(["--quick", "--model", "classic", "--no-sequential", "--replicas", "2", "--width", "8",
                          "--windows", "1", "--out", str(tmp_path)]) == 0
    classic = json.loads((tmp_path / "cpu" / "replicas-classic-quick.json").read_text())["payload"]
    assert classic["model"] == "classic" and classic["sweep"][0]["backends"]["torch"]["gan_steps_per_s"] > 0
    json_file = tmp_path / "cpu" / "replicas-quick.json"
    run = json.loads(json_file.read_text())
    payload = run["payload"]
    seq = payload["sequential"]
    assert seq["k"] == 3 and seq["replicas_ms_per_step"] > 0
    assert seq["speedup"] == pytest.approx(seq["sequential_ms_per_step"] / seq["replicas_ms_per_step"])
    assert [row["k"] for row in payload["sweep"]] == [1, 4]
    torch_row = payload["sweep"][1]["backends"]["torch"]
    assert torch_row["gan_steps_per_s"] == pytest.approx(4 / (torch_row["median_ms"] / 1e3))
    picture = (tmp_path / "cpu" / "replicas-quick-gan_steps_per_s.png").read_bytes()
    assert picture.startswith(b"\x89PNG") and run["files"] == [f"runs/{run['run']}-gan_steps_per_s.png"]
    assert (tmp_path / "cpu" / run["files"][0]).read_bytes() == picture


def test_train_step_replicas_flag_runs_the_sweep(tmp_path):
    assert train_step.main(["--replicas", "2", "--quick", "--windows", "1", "--steps-per-window", "1",
                            "--out", str(tmp_path)]) == 0
    json_file = tmp_path / "cpu" / "replicas-quick.json"
    payload = json.loads(json_file.read_text())["payload"]
    assert "sequential" not in payload and [row["k"] for row in payload["sweep"]] == [2]


def test_quality_protocol_flags_and_replicas(tmp_path):
    """Every protocol setting reaches the trainers, and --replicas trains the seeds at once with the same
    per-seed metrics as one by one (same seeds, data of seed 0: compared at seed 0, where both agree)."""
    import mixture_protocol
    import quality
    args = ["--no-digits", "--seeds", "2", "--steps", "30", "--batch", "40", "--lr", "1e-3", "--betas", "0.5",
            "0.9", "--latent-dim", "4", "--pack-convention", "rows", "--variants", "pack2", "--lr-schedule", "20:0.5",
            "--out", str(tmp_path)]
    assert quality.main(args + ["--replicas"]) == 0
    (json_file,) = tmp_path.glob("cpu/*.json")
    assert json_file.name == "quality.json"
    payload = json.loads(json_file.read_text())["payload"]
    assert payload["protocol"] == {"lr": 1e-3, "betas": [0.5, 0.9], "batch": 40, "latent_dim": 4,
                                   "preset": "mixture-benchmark", "pack_convention": "rows", "update": "alternating",
                                   "lr_schedule": [[20, 0.5]], "replicas": True}
    assert "Adam 0.001 (x0.5 from step 20)" in payload["architecture"]
    runs = payload["mixtures"]["ring/pack2"]["runs"]
    assert len(runs) == 2 and {"modes", "high_quality", "kl", "kl_all"} <= set(runs[0])
    trainer = mixture_protocol.mixture_trainer("ring", "pack2", 0, torch.device("cpu"), protocol={
        "lr": 1e-3, "betas": (0.5, 0.9), "batch": 40, "latent_dim": 4, "preset": "mixture-benchmark",
        "pack_convention": "rows", "lr_schedule": [(20, 0.5)]})
    assert (trainer.config.batch_size, trainer.config.samples_per_step, trainer.latent_dim) == (40, 80, 4)
    assert trainer.config.lr_schedule == ((20, 0.5),)
    trainer.fit(30, progress=False)
    from fastgan import metrics as m
    alone = m.evaluate_mixture(trainer.sample(2500, seed=10_000), "ring")
    assert alone["modes"] == runs[0]["modes"] and alone["kl"] == pytest.approx(runs[0]["kl"], abs=1e-6)


def test_quality_render_draws_an_older_run_without_the_newer_columns(tmp_path, capsys):
    """--render of a committed CPU quality run with mixtures (measured before spread and SWD were summarised):
    their columns drawn, with "-"."""
    import quality
    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "cpu"
    record = [r for r in common.read_runs(folder, "quality") if r["payload"]["mixtures"]][-1]
    (tmp_path / "record.json").write_text(json.dumps(record))
    assert quality.main(["--render", str(tmp_path / "record.json")]) == 0
    table = capsys.readouterr().out
    assert "| spread (data: 1) | offset (std) | SWD / floor (data: 1) |" in table and "| - | - | - |" in table


@pytest.fixture
def reference_ops():
    """fastgan's ops on their PyTorch reference path, for a benchmark's plumbing whose models the interpreter
    takes seconds a step over (PacGAN's maxout D: 3.7 s; the kernels are tested in tests/ops)."""
    with fastgan.ops.reference_path():
        yield


def test_quality_pacgan_preset_is_pacgans_protocol(tmp_path, reference_ops):
    """--preset pacgan trains PacGAN's models with its code's settings (a flag still overrides one)."""
    import mixture_protocol
    import quality
    from fastgan.nn.models import BatchNormGenerator, MaxoutDiscriminator
    args = ["--no-digits", "--seeds", "1", "--steps", "20", "--preset", "pacgan", "--variants", "pack2",
            "--out", str(tmp_path)]
    assert quality.main(args) == 0
    assert quality.main(args + ["--replicas", "--no-time-to-quality"]) == 0   # PacGAN's models stack
    (json_file,) = tmp_path.glob("cpu/*.json")
    first, second = common.read_runs(tmp_path / "cpu")   # two runs, the latest file the second
    assert json_file.name == "quality.json" and json.loads(json_file.read_text()) == second
    payload = first["payload"]
    assert payload["protocol"] == {"lr": 1e-4, "betas": [0.8, 0.999], "batch": 100, "latent_dim": 2,
                                   "preset": "pacgan", "pack_convention": "rows", "update": "simultaneous",
                                   "lr_schedule": [], "replicas": False}
    assert "maxout" in payload["architecture"] and "ring/pack2" in payload["mixtures"]
    assert "eager pack2" in payload["time_to_quality"]
    trainer = mixture_protocol.mixture_trainer("grid", "pack2", 0, torch.device("cpu"), protocol={
        **mixture_protocol.PACGAN_PROTOCOL, "lr": 3e-4})
    assert isinstance(trainer.generator, BatchNormGenerator) and isinstance(trainer.discriminator, MaxoutDiscriminator)
    c = trainer.config
    assert (c.lr, c.betas, c.batch_size, c.samples_per_step, c.update) == (3e-4, (0.8, 0.999), 100, 200, "simultaneous")
    with pytest.raises(SystemExit):
        quality.main(args + ["--latent-dim", "3"])
    assert second["payload"]["protocol"] == {**payload["protocol"], "replicas": True}


def test_quality_curve_first_seed_gives_the_larger_runs_later_seeds(tmp_path):
    """--first-seed 1 --seeds 2 trains seeds 1 and 2: per seed the rows (plain, rejection, time to quality) of
    replicas 1 and 2 of the 3-seed run from seed 0."""
    import quality_curve
    common = ["--data", "ring", "--variant", "pack2", "--checkpoints", "20", "40", "--rejection", "0.5",
              "--check-every", "20"]
    assert quality_curve.main(common + ["--seeds", "3", "--out", str(tmp_path / "a")]) == 0
    assert quality_curve.main(common + ["--seeds", "2", "--first-seed", "1", "--out", str(tmp_path / "b")]) == 0
    (a,), (b,) = (list((tmp_path / d).glob("cpu/*.json")) for d in "ab")
    whole, later = json.loads(a.read_text())["payload"], json.loads(b.read_text())["payload"]
    assert later["first_seed"] == 1 and later["seeds"] == 2

    distances = ("spread", "spread_per_mode", "offset", "spread_to_centre", "swd", "swd_ratio", "data_mmd_ratio")

    def counts(runs):   # the counted metrics, exactly; the distances (spread, SWD) to float32 rounding: a batch
        # of 3 replicas and one of 2 round their matmuls differently
        return [{k: v for k, v in r.items() if k not in distances} for r in runs]

    for row_a, row_b in zip(whole["curve"], later["curve"]):
        for runs_a, runs_b in ((row_a["runs"][1:], row_b["runs"]),
                               (row_a["rejection"]["runs"][1:], row_b["rejection"]["runs"])):
            assert counts(runs_a) == counts(runs_b)
            for key in ("spread", "offset", "spread_to_centre", "swd", "swd_ratio") + (
                    ("data_mmd_ratio",) if runs_a is row_a["runs"][1:] else ()):
                assert [r[key] for r in runs_a] == pytest.approx([r[key] for r in runs_b], rel=1e-4)
    assert [f and f["steps"] for f in whole["first_reached"][1:]] == [f and f["steps"] for f in later["first_reached"]]
    assert "2 seeds (1 to 2" in b.with_suffix(".md").read_text()
    with pytest.raises(SystemExit):
        quality_curve.main(common + ["--first-seed", "-1"])


def test_starts_keeps_each_groups_seed_nearest_its_data(tmp_path, capsys):
    """starts.py groups the runs' seeds in order and keeps, in each group, the smallest data_mmd_ratio at --at;
    the kept seeds' figures are reported from that checkpoint on, beside every seed's."""
    import quality_curve
    import starts
    assert quality_curve.main(["--data", "ring", "--variant", "pack2", "--checkpoints", "10", "20", "--seeds", "3",
                               "--jacobian", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("cpu/*.json")
    run = json.loads(path.read_text())["payload"]
    ratios = [r["data_mmd_ratio"] for r in run["curve"][1]["runs"]]
    assert all(math.isfinite(r) and r > 0 for r in ratios)
    kept, groups = starts.kept_seeds([run], 3, 20)
    assert kept == [min(range(3), key=ratios.__getitem__)] and [s for s, _ in groups[0]] == [0, 1, 2]
    assert starts.main([str(path), "--starts", "3", "--at", "20"]) == 0
    out = capsys.readouterr().out
    assert "| 20 | kept, 1 | G alone |" in out and "| 20 | all, 3 | jacobian |" in out and "| 10 |" not in out

    def payload(first, ratios_at):   # a made-up run: only what starts.py reads
        runs = [{"modes": 25, "high_quality": 0.9, "kl": 0.01 * k, "spread": 0.8, "swd_ratio": 1.0,
                 "data_mmd_ratio": r} for k, r in enumerate(ratios_at)]
        return {"first_seed": first, "seeds": len(runs), "curve": [{"steps": 5, "runs": runs}]}

    kept, groups = starts.kept_seeds([payload(100, [3.0, 1.0, 2.0]), payload(103, [0.5, 9.0, 8.0])], 2, 5)
    assert kept == [1, 3, 5] and groups[1] == [(102, 2.0), (103, 0.5)]   # a group may span two runs
    for runs, words in (([payload(0, [1.0, 2.0, 3.0])], "groups of 2"), ([payload(0, [1.0, 2.0])], "at step 6")):
        with pytest.raises(ValueError, match=words):
            starts.kept_seeds(runs, 2, 6 if "6" in words else 5)
    with pytest.raises(SystemExit):
        starts.main([str(tmp_path / "missing"), "--at", "20"])


def test_quality_curve_takes_the_latent_size_and_replaces_the_variants_ema(tmp_path, capsys):
    """(and --hidden: the models' widths; --adam-state: FlatAdam with bf16 moments; --mmd-weight: the MMD term on
    G's loss; each in the checkpoint and the table's words)"""
    import quality_curve
    from fastgan.checkpoint import load_checkpoint
    assert quality_curve.main(["--data", "ring", "--variant", "ema_pack2", "--checkpoints", "10", "--seeds", "2",
                               "--latent-dim", "3", "--hidden", "24", "16", "--ema", "0.9", "--adam-state", "bf16",
                               "--mmd-weight", "3", "--save-checkpoint", str(tmp_path / "t.pt"),
                               "--out", str(tmp_path)]) == 0
    (record,) = tmp_path.glob("cpu/*.json")
    payload = json.loads(record.read_text())["payload"]
    assert payload["protocol"]["latent_dim"] == 3 and payload["protocol"]["ema"] == 0.9
    assert payload["protocol"]["hidden"] == [24, 16]
    assert payload["protocol"]["adam_state"] == "bf16" and payload["protocol"]["mmd_weight"] == 3.0
    state = load_checkpoint(tmp_path / "t.pt")
    assert state["config"]["ema"] == 0.9 and state["config"]["latent_dim"] == 3
    assert state["config"]["adam_state"] == "bf16" and state["config"]["fused_optimizer"] == "flat"
    assert state["config"]["mmd_weight"] == 3.0
    assert state["extra"]["model"]["hidden"] == [24, 16]
    assert state["generator"].shape == (2, (3 + 1) * 24 + (24 + 1) * 16 + (16 + 1) * 2)   # (two replicas' flat G)
    text = record.with_suffix(".md").read_text()
    assert "EMA replaced: decay 0.9" in text and "FlatAdam (bf16 moments)" in text
    assert "G latent 3 -> 24 -> 16 -> 2" in text and "D (2*pack) -> 24 -> 16 -> 1" in text
    assert "G's loss plus 3 x MMD² to the step's real rows" in text
    for refused, why in ((["--preset", "pacgan", "--latent-dim", "3"], "its G takes 2-d noise"),
                         (["--preset", "pacgan", "--hidden", "8"], "its models are PacGAN's (no --hidden)"),
                         (["--hidden", "8", "0"], "argument --hidden: must be > 0, got 0")):
        with pytest.raises(SystemExit):
            quality_curve.main(refused + ["--checkpoints", "10"])
        assert why in capsys.readouterr().err


def test_quality_curve_takes_a_mmd_weight_a_seed(tmp_path, capsys):
    """``--mmd-weight`` with one weight a seed: a sweep, each replica its own weight (in the checkpoint's config and the
    table's words); a count that is neither one nor the seeds' is refused in one line."""
    import quality_curve
    from fastgan.checkpoint import load_checkpoint
    assert quality_curve.main(["--data", "ring", "--variant", "pack2", "--checkpoints", "10", "--seeds", "3",
                               "--mmd-weight", "0", "1.5", "3", "--save-checkpoint", str(tmp_path / "t.pt"),
                               "--out", str(tmp_path)]) == 0
    (record,) = tmp_path.glob("cpu/*.json")
    assert json.loads(record.read_text())["payload"]["protocol"]["mmd_weight"] == [0.0, 1.5, 3.0]
    assert list(load_checkpoint(tmp_path / "t.pt")["config"]["mmd_weight"]) == [0.0, 1.5, 3.0]
    text = record.with_suffix(".md").read_text()
    assert "G's loss plus w (a seed each: 0, 1.5, 3) x MMD² to the step's real rows" in text
    with pytest.raises(SystemExit):
        quality_curve.main(["--data", "ring", "--checkpoints", "10", "--seeds", "3", "--mmd-weight", "1", "2"])
    assert "one weight, or one for each of the 3 seeds; got 2" in capsys.readouterr().err


def test_quality_curve_starts_the_term_and_weighs_its_kernels_from_steps_and_resumes_with_them(tmp_path, capsys):
    """``--mmd-from S0 --mmd-fine P --mmd-fine-from S``: in the trainer's config, the protocol and the table's
    words; a resumed run keeps them (its rows equal an unbroken run's); without the term each is refused in one
    line."""
    import quality_curve
    from fastgan.checkpoint import load_checkpoint
    common = ["--data", "ring", "--variant", "pack2", "--seeds", "2", "--mmd-weight", "2", "--mmd-from", "5",
              "--mmd-fine", "0.5", "--mmd-fine-from", "10", "--mmd-fine-shape", "0.75"]
    assert quality_curve.main(common + ["--checkpoints", "10", "--save-checkpoint", str(tmp_path / "t.pt"),
                                        "--out", str(tmp_path / "stopped")]) == 0
    assert quality_curve.main(common + ["--checkpoints", "10", "20", "--out", str(tmp_path / "whole")]) == 0
    (stopped,) = (tmp_path / "stopped").glob("cpu/*.json")
    protocol = json.loads(stopped.read_text())["payload"]["protocol"]
    assert (protocol["mmd_from"], protocol["mmd_fine"], protocol["mmd_fine_shape"]) == (5, 0.5, 0.75)
    config = load_checkpoint(tmp_path / "t.pt")["config"]
    assert (config["mmd_from"], config["mmd_fine"], config["mmd_fine_from"], config["mmd_fine_shape"]) == \
        (5, 0.5, 10, 0.75)
    assert ("real rows from step 5 (its kernel at bandwidth h weighed (widest / h)^0.5 from step 10, shared in "
            "(widest / h)^0.75's shape)") in stopped.with_suffix(".md").read_text()
    assert quality_curve.main(["--resume", str(stopped), "--checkpoints", "20", "--out", str(tmp_path / "resumed")]) == 0
    (whole,), (resumed,) = ((tmp_path / d).glob("cpu/*.json") for d in ("whole", "resumed"))
    rows = [json.loads(f.read_text())["payload"]["curve"][-1]["runs"] for f in (whole, resumed)]
    assert rows[0] == rows[1]
    with pytest.raises(SystemExit):
        quality_curve.main(["--data", "ring", "--checkpoints", "10", "--mmd-fine", "0.5"])
    assert "--mmd-fine weighs the MMD term's kernels: give --mmd-weight too" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quality_curve.main(["--data", "ring", "--checkpoints", "10", "--mmd-from", "5"])
    assert "--mmd-from starts the MMD term: give --mmd-weight too" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quality_curve.main(["--data", "ring", "--checkpoints", "10", "--mmd-weight", "1", "--mmd-fine-shape", "1"])
    assert "--mmd-fine-shape shares the weights --mmd-fine gives the kernels: give --mmd-fine too" in \
        capsys.readouterr().err


def test_quality_curve_runs_the_r1_variant_as_replicas(tmp_path):
    import quality_curve
    from fastgan.checkpoint import load_checkpoint
    assert quality_curve.main(["--data", "ring", "--variant", "r1", "--checkpoints", "10", "--seeds", "2",
                               "--save-checkpoint", str(tmp_path / "t.pt"), "--out", str(tmp_path)]) == 0
    (record,) = tmp_path.glob("cpu/*.json")
    payload = json.loads(record.read_text())["payload"]
    assert payload["options"] == {"r1_gamma": 0.1, "r1_every": 16}
    state = load_checkpoint(tmp_path / "t.pt")
    assert state["config"]["r1_gamma"] == 0.1 and state["config"]["replicas"] == 2


def test_quality_curve_trains_pacgans_models_as_replicas_and_resumes(tmp_path, reference_ops):
    """--preset pacgan: PacGAN's BatchNorm G and maxout D, its betas and simultaneous updates, its seeds as one
    replica trainer; a stopped run resumes with the preset from its JSON (a contradicting one is an error)."""
    import mixture_protocol
    import quality_curve
    from fastgan.nn.stacked import StackedNet
    base = ["--preset", "pacgan", "--data", "ring", "--variant", "pack2", "--seeds", "2", "--out", str(tmp_path)]
    assert quality_curve.main(base + ["--checkpoints", "10", "--save-checkpoint", str(tmp_path / "t.pt")]) == 0
    (first,) = tmp_path.glob("cpu/*.json")
    assert first.name == "quality_curve-ring.json"
    stopped = json.loads(first.read_text())
    assert stopped["run"].endswith("-quality_curve-ring-pacgan-pack2")
    payload = stopped["payload"]
    assert payload["protocol"]["preset"] == "pacgan" and payload["protocol"]["update"] == "simultaneous"
    assert payload["protocol"]["betas"] == [0.8, 0.999] and "maxout" in payload["architecture"]
    with pytest.raises(SystemExit):
        quality_curve.main(["--resume", str(first), "--checkpoints", "20", "--preset", "mixture-benchmark"])
    with pytest.raises(SystemExit):   # d_steps 2 with simultaneous updates: refused before any training
        quality_curve.main(["--preset", "pacgan", "--variant", "d_steps2", "--checkpoints", "10"])
    assert quality_curve.main(["--resume", str(first), "--checkpoints", "20", "--out", str(tmp_path)]) == 0
    kept, second = common.read_runs(tmp_path / "cpu")
    assert kept == stopped and second["run"] == stopped["run"] + "-2"
    resumed = second["payload"]
    assert [r["steps"] for r in resumed["curve"]] == [10, 20] and resumed["curve"][0] == payload["curve"][0]
    trainer = mixture_protocol.mixture_trainer("ring", "pack2", 0, torch.device("cpu"), protocol=payload["protocol"],
                                      replicas=2)
    assert isinstance(trainer.generator, StackedNet) and trainer.config.update == "simultaneous"
    trainer.load(tmp_path / "t.pt")
    assert trainer.step_count == 20


def test_quality_curve_time_to_quality_counts_steps_and_training_seconds(tmp_path, monkeypatch):
    """--check-every: the first check at which a seed qualifies gives its step, and its training seconds (no
    evaluation or checking time, so never more than the checkpoint's)."""
    import quality_curve
    calls = []

    def reached(result, kind):   # seed 1 (the second check of each round) qualifies from the second round on
        calls.append(result)
        return len(calls) >= 4 and len(calls) % 2 == 0

    monkeypatch.setattr(quality_curve, "_reached", reached)
    assert quality_curve.main(["--data", "ring", "--variant", "vanilla", "--seeds", "2", "--checkpoints", "15",
                               "--check-every", "5", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "cpu" / "quality_curve-ring.json").read_text())["payload"]
    first = payload["first_reached"]
    assert first[0] is None and first[1]["steps"] == 10
    assert 0 < first[1]["seconds"] <= payload["curve"][0]["seconds"]
    text = (tmp_path / "cpu" / "quality_curve-ring.md").read_text()
    assert "| 1 | 10 |" in text and "| 0 | not within 15 | - |" in text


def test_quality_curve_resume_gives_the_unbroken_runs_rows(tmp_path, capsys, monkeypatch):
    """--resume: a run stopped after its first checkpoint, resumed from its record and saved trainer, gives the
    rows and time-to-quality marks of the run that never stopped (plain, rejection and calibrated), as a new
    run; settings come from the record, and what contradicts the run is a one-line error."""
    import shutil
    import quality_curve
    # the time-to-quality mark (20 steps reach no real one): seed 0 from step 5 (before the stop), seed 1 from 15
    monkeypatch.setattr(quality_curve, "_reached", lambda result, kind: result["steps"] >= (5, 15)[result["seed"]])
    common = ["--data", "ring", "--variant", "ema", "--seeds", "2", "--check-every", "5", "--rejection", "0.5",
              "--calibrate", "5", "--calibrate-batch", "50", "--lr-schedule", "15:0.5", "--metropolis", "4",
              "--sharpen", "1.5", "--metropolis-step", "0.5", "--jacobian", "3"]
    assert quality_curve.main(common + ["--checkpoints", "10", "20", "--save-checkpoint",
                                        str(tmp_path / "whole.pt"), "--out", str(tmp_path / "whole")]) == 0
    assert quality_curve.main(common + ["--checkpoints", "10", "--save-checkpoint", str(tmp_path / "ck.pt"),
                                        "--out", str(tmp_path / "part")]) == 0
    (line,) = (tmp_path / "part" / "cpu" / "runs.jsonl").read_text().splitlines()
    stopped = json.loads(line)
    before = stopped["payload"]
    assert before["checkpoint"] == str(tmp_path / "ck.pt") and before["device"] == "cpu"
    shutil.copy(tmp_path / "ck.pt", tmp_path / "ck10.pt")
    (tmp_path / "stopped.json").write_text(line)   # the stopped run's record, as a results file
    assert quality_curve.main(["--resume", stopped["run"], "--checkpoints", "10", "20",   # (its id in runs.jsonl)
                               "--out", str(tmp_path / "part")]) == 0
    kept, resumed = (tmp_path / "part" / "cpu" / "runs.jsonl").read_text().splitlines()
    assert kept == line   # the stopped run's record stays as it was, byte for byte
    whole = tmp_path / "whole" / "cpu" / "quality_curve-ring.json"
    resumed = json.loads(resumed)
    assert json.loads((tmp_path / "part" / "cpu" / "quality_curve-ring.json").read_text()) == resumed   # the latest
    a, b = json.loads(whole.read_text())["payload"], resumed["payload"]

    def without_seconds(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert [row["steps"] for row in b["curve"]] == [10, 20]
    assert all(set(row) >= {"rejection", "calibrated", "metropolis", "jacobian"} for row in b["curve"])
    assert b["curve"][0]["jacobian"]["factor"] == b["jacobian"] == 3.0
    assert "kept by its own Jacobian** (norm at most 3 times" in (whole.parent / "quality_curve-ring.md").read_text()
    assert (b["curve"][0]["metropolis"]["chain"], b["curve"][0]["metropolis"]["sharpen"]) == (4, 1.5)
    assert b["curve"][0]["metropolis"]["step"] == 0.5 and b["metropolis_step"] == 0.5
    assert b["curve"][0]["metropolis"]["calibrate"] == 5
    assert without_seconds(b["curve"]) == without_seconds(a["curve"])
    assert b["curve"][0] == before["curve"][0]
    assert b["curve"][1]["seconds"] >= b["curve"][0]["seconds"]   # training time goes on from the last row's
    assert [f["steps"] for f in b["first_reached"]] == [f["steps"] for f in a["first_reached"]] == [5, 15]
    assert b["first_reached"][0] == before["first_reached"][0]
    assert b["curve"][0]["seconds"] <= b["first_reached"][1]["seconds"] <= b["curve"][1]["seconds"]
    assert b["protocol"] == a["protocol"] and b["resumed_from"][0]["steps"] == 10
    assert b["resumed_from"][0]["results"] == stopped["run"]
    assert f"Resumed at step 10 from `{stopped['run']}`" in resumed["table"]
    assert resumed["table"] + "\n" == (tmp_path / "part" / "cpu" / "quality_curve-ring.md").read_text()
    # the trainer it went on saving (where the stopped run saved) is the unbroken run's, bit for bit
    from fastgan.checkpoint import load_checkpoint
    ours, theirs = load_checkpoint(tmp_path / "ck.pt"), load_checkpoint(tmp_path / "whole.pt")
    assert ours["step"] == theirs["step"] == 20
    for key in ("generator", "discriminator", "ema"):
        assert torch.equal(ours[key], theirs[key]), key
    for key in ("optimizer_g", "optimizer_d"):
        assert all(torch.equal(ours[key][k], theirs[key][k]) for k in ("exp_avg", "exp_avg_sq", "step")), key
    assert all(torch.equal(a, b) for a, b in zip(ours["rng"], theirs["rng"]))

    def refused(*args):   # (the stopped run's trainer file now holds the resumed run's: its copy at step 10)
        trainer = [] if "--save-checkpoint" in args else ["--save-checkpoint", str(tmp_path / "ck10.pt")]
        with pytest.raises(SystemExit) as exit_info:
            quality_curve.main(["--resume", str(tmp_path / "stopped.json"), *args, *trainer,
                                "--out", str(tmp_path / "refused")])
        assert exit_info.value.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert "--lr 0.0002 differs from the resumed run's 0.0001" in refused("--checkpoints", "20", "--lr", "2e-4")
    assert "--variant 'vanilla' differs" in refused("--checkpoints", "20", "--variant", "vanilla")
    assert "--metropolis-step 0.2 differs from the resumed run's 0.5" in refused(
        "--checkpoints", "20", "--metropolis-step", "0.2")
    assert "--checkpoints [7] lie before the resumed run's last row" in refused("--checkpoints", "7", "20")
    assert "at 10 steps already" in refused("--checkpoints", "10")
    assert "does not exist" in refused("--checkpoints", "20", "--save-checkpoint", str(tmp_path / "none.pt"))
    # a trainer saved by another run (here: at another step) is refused before any training
    assert quality_curve.main(common + ["--checkpoints", "5", "--save-checkpoint", str(tmp_path / "other.pt"),
                                        "--out", str(tmp_path / "other")]) == 0
    assert "holds a trainer at step 5, but the run has no row there" in refused(
        "--checkpoints", "20", "--save-checkpoint", str(tmp_path / "other.pt"))
    assert quality_curve.main(common + ["--lr", "2e-4", "--checkpoints", "10", "--save-checkpoint",
                                        str(tmp_path / "other-lr.pt"), "--out", str(tmp_path / "other")]) == 0
    assert "other settings than this run's: lr 0.0002 (this run: 0.0001)" in refused(
        "--checkpoints", "20", "--save-checkpoint", str(tmp_path / "other-lr.pt"))
    assert "the resumed run trained on cpu" in refused("--checkpoints", "20", "--device", "cuda")
    assert "neither a file nor a run of" in refused("--resume", "2026-01-01-no-such-run", "--checkpoints", "20")
    assert not (tmp_path / "refused").exists()
    # a kill after a row was written but before the trainer was saved: the trainer's row is where it goes on
    capsys.readouterr()
    assert quality_curve.main(["--resume", str(whole), "--checkpoints", "20", "--save-checkpoint",
                               str(tmp_path / "ck10.pt"), "--out", str(tmp_path / "again")]) == 0
    assert "the rows after it are measured again" in capsys.readouterr().out
    (again,) = (tmp_path / "again").glob("cpu/*.json")
    c = json.loads(again.read_text())["payload"]
    assert without_seconds(c["curve"]) == without_seconds(a["curve"]) and c["resumed_from"][0]["steps"] == 10
    assert [f["steps"] for f in c["first_reached"]] == [5, 15]


def test_quality_curve_evaluates_the_seeds_along_training(tmp_path):
    """quality_curve.py: each checkpoint's per-seed metrics equal the single run's at that step count."""
    import mixture_protocol
    import quality_curve
    assert quality_curve.main(["--data", "ring", "--variant", "ema", "--seeds", "2", "--checkpoints", "10", "20",
                               "--rejection", "0.5", "--check-every", "5", "--lr-schedule", "15:0.5",
                               "--out", str(tmp_path)]) == 0
    (json_file,) = tmp_path.glob("cpu/*.json")
    assert json_file.name == "quality_curve-ring.json"
    payload = json.loads(json_file.read_text())["payload"]
    assert [row["steps"] for row in payload["curve"]] == [10, 20]
    assert payload["protocol"]["lr_schedule"] == [[15, 0.5]]   # (the first checkpoint is before its milestone)
    assert "Adam 0.0001 (x0.5 from step 15)" in json_file.with_suffix(".md").read_text()
    for key in ("spread", "offset", "spread_to_centre", "swd", "swd_floor", "swd_ratio"):
        assert key in payload["curve"][0]["summary"] and key in payload["curve"][0]["runs"][0]
    assert "| spread (data: 1) | offset (std) | SWD / floor (data: 1) |" in json_file.with_suffix(".md").read_text()
    assert len(payload["first_reached"]) == 2 and payload["check_every"] == 5
    protocol = {**mixture_protocol.PROTOCOL, "lr": 1e-4, "batch": 100, "pack_convention": "rows"}
    trainer = mixture_protocol.mixture_trainer("ring", "ema", 0, torch.device("cpu"), protocol=protocol)
    trainer.fit(10, progress=False)
    from fastgan import metrics as m
    alone = m.evaluate_mixture(trainer.sample(2500, seed=10_000), "ring")
    first = payload["curve"][0]["runs"][0]
    assert alone["modes"] == first["modes"] and alone["high_quality"] == pytest.approx(first["high_quality"], abs=1e-6)
    # rejection sampling, apart: what the single run's sample(rejection=0.5) gives (a kink flip at most)
    kept = payload["curve"][0]["rejection"]["runs"][0]
    alone = m.evaluate_mixture(trainer.sample(2500, seed=10_000, rejection=0.5), "ring")
    assert payload["curve"][0]["rejection"]["quantile"] == 0.5 and 0 < kept["acceptance"] <= 1
    assert alone["high_quality"] == pytest.approx(kept["high_quality"], abs=2 / 2500)
    assert "with discriminator rejection sampling" in json_file.with_suffix(".md").read_text()
    # D calibrated against each generator first, apart again; the trainer saved for `fastgan evaluate`
    assert quality_curve.main(["--data", "ring", "--variant", "ema", "--seeds", "2", "--checkpoints", "10",
                               "--rejection", "0.5", "--calibrate", "20", "--calibrate-lr", "5e-4",
                               "--calibrate-batch", "100", "--metropolis", "10", "--save-checkpoint",
                               str(tmp_path / "ck.pt"), "--out", str(tmp_path / "cal")]) == 0
    (json_file,) = (tmp_path / "cal").glob("cpu/*.json")
    row = json.loads(json_file.read_text())["payload"]["curve"][0]
    kept = m.evaluate_mixture(trainer.sample(2500, seed=10_000, rejection=0.5, calibrate=20, calibrate_lr=5e-4,
                                             calibrate_batch=100), "ring")
    assert row["calibrated"]["calibrate"] == 20 and row["rejection"]["calibrate"] == 0
    assert (row["calibrated"]["calibrate_lr"], row["calibrated"]["calibrate_batch"]) == (5e-4, 100)
    assert kept["high_quality"] == pytest.approx(row["calibrated"]["runs"][0]["high_quality"], abs=2 / 2500)
    assert "each D first trained 20 more steps" in json_file.with_suffix(".md").read_text()
    assert "Adam 0.0005, 100 rows of each kind" in json_file.with_suffix(".md").read_text()
    # Metropolis-Hastings over each calibrated D's scores, apart too
    chained = m.evaluate_mixture(trainer.sample(2500, seed=10_000, metropolis=10, calibrate=20, calibrate_lr=5e-4,
                                                calibrate_batch=100), "ring")
    assert (row["metropolis"]["chain"], row["metropolis"]["calibrate"]) == (10, 20)
    assert chained["high_quality"] == pytest.approx(row["metropolis"]["runs"][0]["high_quality"], abs=2 / 2500)
    assert "with Metropolis-Hastings over D's scores** (chains of 10" in json_file.with_suffix(".md").read_text()
    from fastgan.app.cli import main as cli
    assert cli(["evaluate", str(tmp_path / "ck.pt"), "--seed", "10000", "--samples", "2500",
                "--out", str(tmp_path / "e.json")]) == 0
    curve_metrics = {k: v for k, v in row["runs"][0].items() if k != "data_mmd_ratio"}   # (the curve's own figure)
    assert json.loads((tmp_path / "e.json").read_text())["metrics"]["replicas"][0] == curve_metrics
    # and with calibration, as device_check --quality scores the last trainer saved: replica 0 as the curve's
    (tmp_path / "dc" / "results").mkdir(parents=True)
    report_file = tmp_path / "dc" / "results" / "quality-ring-calibrated.json"
    assert cli(["evaluate", str(tmp_path / "ck.pt"), "--seed", "10000", "--samples", "2500", "--rejection", "0.5",
                "--calibrate", "20", "--calibrate-lr", "5e-4", "--calibrate-batch", "100",
                "--out", str(report_file)]) == 0
    report = json.loads(report_file.read_text())
    calibrated = {k: v for k, v in row["calibrated"]["runs"][0].items() if k != "acceptance"}
    assert report["metrics"]["replicas"][0] == calibrated
    assert report["sampling"]["acceptance"][0] == row["calibrated"]["runs"][0]["acceptance"]
    import device_summary
    (line,) = [x for x in device_summary.quality_curves(tmp_path / "dc") if "calibrated" in x]
    assert line.startswith("quality ring, step 10, rejection 0.5 with D calibrated 20 steps (mean of 2 replicas"), line
    assert "calibration Adam 0.0005 batch 100)" in line, line
    # and with Metropolis-Hastings in G's latent space over each trained D, device_check --quality's last step
    latent_file = tmp_path / "dc" / "results" / "quality-ring-latent-mh.json"
    assert cli(["evaluate", str(tmp_path / "ck.pt"), "--seed", "10000", "--samples", "2500", "--metropolis", "10",
                "--sharpen", "6", "--metropolis-step", "0.02", "--out", str(latent_file)]) == 0
    local = m.evaluate_mixture(trainer.sample(2500, seed=10_000, metropolis=10, sharpen=6.0, metropolis_step=0.02),
                               "ring")
    replica0 = json.loads(latent_file.read_text())["metrics"]["replicas"][0]
    assert replica0["high_quality"] == pytest.approx(local["high_quality"], abs=4 / 2500), (replica0, local)
    (line,) = [x for x in device_summary.quality_curves(tmp_path / "dc") if "trained D" in x]
    assert line.startswith("quality ring, step 10, Metropolis-Hastings chains of 10 beta 6 step 0.02 with the "
                           "trained D (mean of 2 replicas"), line
    (tmp_path / "mh" / "results").mkdir(parents=True)
    (tmp_path / "cal" / "cpu").rename(tmp_path / "mh" / "results" / "cpu")
    assert any("| metropolis (D +20 steps) 10: HQ" in x for x in device_summary.quality_curves(tmp_path / "mh"))
    with pytest.raises(SystemExit):
        quality_curve.main(["--checkpoints", "10", "--calibrate", "5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        quality_curve.main(["--checkpoints", "10", "--metropolis", "-1", "--out", str(tmp_path)])
    for bad in (["--sharpen", "2"], ["--metropolis", "5", "--sharpen", "0.5"], ["--metropolis-step", "0.5"],
                ["--metropolis", "5", "--metropolis-step", "0"], ["--metropolis", "5", "--metropolis-step", "2"],
                ["--jacobian", "0.5"], ["--jacobian", "inf"]):
        with pytest.raises(SystemExit):
            quality_curve.main(["--checkpoints", "10", *bad, "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        quality_curve.main(["--checkpoints", "20", "10", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        quality_curve.main(["--checkpoints", "10", "--rejection", "1.0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        quality_curve.main(["--checkpoints", "10", "--lr-schedule", "8:0.5", "4:0.1", "--out", str(tmp_path)])


def test_quality_curve_marks_a_resumed_runs_rows_scored_with_the_older_spread(tmp_path):
    """Rows measured while the spread was the RMS distance to the centre (no offset beside it) keep their figure,
    marked with a dagger and its footnote; the resumed rows are unmarked."""
    import quality_curve
    args = ["--data", "ring", "--variant", "ema", "--seeds", "2", "--save-checkpoint", str(tmp_path / "ck.pt"),
            "--out", str(tmp_path / "out")]
    assert quality_curve.main(args + ["--checkpoints", "10"]) == 0
    (line,) = (tmp_path / "out" / "cpu" / "runs.jsonl").read_text().splitlines()
    record = json.loads(line)
    for key in ("offset", "spread_to_centre"):   # as a row of 2026-12-05 was written
        del record["payload"]["curve"][0]["summary"][key]
    (tmp_path / "older.json").write_text(json.dumps(record))
    assert quality_curve.main(["--resume", str(tmp_path / "older.json"), "--checkpoints", "10", "20",
                               "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "cpu" / "quality_curve-ring.md").read_text()
    rows = [r for r in text.splitlines() if r.startswith("| 10 |") or r.startswith("| 20 |")]
    assert len(rows) == 2 and " †" in rows[0] and "†" not in rows[1], rows
    assert "† spread as measured from 2026-12-05 until 2026-12-06" in text
