"""torch.distributed with 2 CPU processes under gloo on the loopback interface: data-parallel equals one
process with the whole batch, a sharded sweep equals the one-process sweep, differing settings and a dead
rank are errors (not hangs), and the CLI under torchrun (sweep, data-parallel, resume on another world size)."""
import datetime
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastgan
from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, TrainConfig

from fastgan.train import distributed

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank, port, timeout=60):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=timeout))


def _leave():
    """A worker's clean end: every rank done, then out without Python's teardown of the gloo group, which
    once aborted a finished process in the full suite ("terminate called without an active exception");
    a worker that fails raises before this, and mp.spawn reports it."""
    dist.barrier()
    os._exit(0)


def _spawn(worker, *args, limit=120):
    """Run ``worker(rank, *args)`` in WORLD processes; a process's exception fails the test, and so does
    not finishing within ``limit`` seconds (the processes are then killed: a hang never stalls the suite)."""
    context = mp.spawn(worker, args=args, nprocs=WORLD, join=False)
    deadline = time.monotonic() + limit
    while not context.join(timeout=2):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{worker.__name__} did not finish within {limit} s")


def _models(pack=1, seed=3):
    torch.manual_seed(seed)
    return (MLPGenerator(latent_dim=4, hidden=(16, 16), out_dim=2, output_activation=None),
            MLPDiscriminator(in_dim=2 * pack, hidden=(16, 16)))


def _data():
    return torch.randn(400, 2, generator=torch.Generator().manual_seed(1))


OPTIONS = {"batch_size": 32, "precision": "fp32", "device": "cpu", "seed": 9, "lr": 1e-3}


def _data_parallel_worker(rank, port, options, steps, out):
    torch.set_num_threads(1)
    _join(rank, port)
    # each rank initialises its models from its own seed: the trainer gives every rank rank 0's weights
    trainer = GANTrainer(*_models(options.get("pack", 1), seed=3 + 100 * rank), _data(), data_parallel=True,
                         **{**OPTIONS, **options})
    for _ in range(steps):
        trainer.step()
    trainer.flush_losses()
    if rank == 0:
        torch.save({"g": trainer.generator.state_dict(), "d": trainer.discriminator.state_dict(),
                    "history": trainer.history}, out)
    _leave()


@pytest.mark.parametrize("options", [{}, {"pack": 2, "instance_noise": 0.1, "d_steps": 2}],
                         ids=["plain", "pack-noise-dsteps"])
def test_data_parallel_equals_one_process_with_the_whole_batch(options, tmp_path):
    steps = 15
    out = tmp_path / "dp.pt"
    _spawn(_data_parallel_worker, _free_port(), options, steps, str(out))
    one = GANTrainer(*_models(options.get("pack", 1)), _data(), **{**OPTIONS, **options})
    for _ in range(steps):
        one.step()
    one.flush_losses()
    got = torch.load(out)
    for name, module in (("g", one.generator), ("d", one.discriminator)):
        for key, value in module.state_dict().items():
            # fp32 rounding: each rank sums half the rows, then the halves are summed; measured ~1e-7
            torch.testing.assert_close(got[name][key], value, rtol=1e-4, atol=1e-5, msg=f"{name}.{key}")
    torch.testing.assert_close(torch.tensor(got["history"]["loss_d"]), torch.tensor(one.history["loss_d"]),
                               rtol=1e-4, atol=1e-5)


def _sweep_worker(rank, port, out):
    torch.set_num_threads(1)
    _join(rank, port)
    whole = TrainConfig(replicas=4, lr=[1e-3, 2e-3, 5e-4, 1e-4], **{k: v for k, v in OPTIONS.items() if k != "lr"})
    start, stop = distributed.shard(4, rank, WORLD)
    trainer = GANTrainer(*_models(), _data(), whole.shard(start, stop))
    for _ in range(10):
        trainer.step()
    parts = distributed.gather(trainer.generator.flat.detach())
    if rank == 0:
        torch.save(torch.cat(parts), out)
    _leave()


def test_sharded_sweep_equals_the_one_process_sweep(tmp_path):
    out = tmp_path / "sweep.pt"
    _spawn(_sweep_worker, _free_port(), str(out))
    one = GANTrainer(*_models(), _data(), replicas=4, **{**OPTIONS, "lr": [1e-3, 2e-3, 5e-4, 1e-4]})
    for _ in range(10):
        one.step()
    torch.testing.assert_close(torch.load(out), one.generator.flat.detach(), rtol=0, atol=1e-6)


def test_shards_cover_the_replicas_and_refuse_what_does_not_fit(monkeypatch):
    assert [distributed.shard(8, r, 4) for r in range(4)] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    with pytest.raises(distributed.DistributedError, match="do not divide evenly over 2 processes"):
        distributed.shard(3, 0, 2)
    with pytest.raises(distributed.DistributedError, match="cannot be split over 4 processes"):
        distributed.shard(3, 0, 4)
    monkeypatch.setenv("FASTGAN_UNEVEN_SHARDS", "1")
    assert [distributed.shard(5, r, 2) for r in range(2)] == [(0, 3), (3, 5)]
    config = TrainConfig(replicas=4, seed=10, lr=[1.0, 2.0, 3.0, 4.0], real_label=0.9)
    part = config.shard(2, 4)
    assert (part.replicas, part.seed, part.lr, part.real_label) == (2, 12, (3.0, 4.0), 0.9)
    assert part.for_replica(1) == config.for_replica(3)


def _mismatch_worker(rank, port, out):
    _join(rank, port)
    with pytest.raises(distributed.DistributedError, match="different settings.*lr: rank 0 0.001, rank 1 0.002"):
        GANTrainer(*_models(), _data(), data_parallel=True, **{**OPTIONS, "lr": 1e-3 * (rank + 1)})
    # a setting one rank would refuse alone (31 rows do not split in 2) still meets the comparison first
    with pytest.raises(distributed.DistributedError, match="batch_size: rank 0 32, rank 1 31"):
        GANTrainer(*_models(), _data(), data_parallel=True, **{**OPTIONS, "batch_size": 32 - rank})
    if rank == 0:
        open(out, "w").write("raised")
    _leave()


def test_ranks_with_different_settings_all_fail_clearly(tmp_path):
    out = tmp_path / "ok"
    _spawn(_mismatch_worker, _free_port(), str(out))
    assert out.read_text() == "raised"


def _dead_rank_worker(rank, port, out):
    _join(rank, port, timeout=10)
    trainer = GANTrainer(*_models(), _data(), data_parallel=True, **OPTIONS)
    for _ in range(2):
        trainer.step()
    if rank == 1:
        os._exit(0)   # dies mid-training, without a word
    start = time.perf_counter()
    try:
        for _ in range(1000):   # the next gradient all-reduce has no partner
            trainer.step()
        outcome = "no error"
    except (RuntimeError, distributed.DistributedError) as e:   # gloo: connection closed, or the timeout
        outcome = f"error after {time.perf_counter() - start:.1f} s: {type(e).__name__}"
    open(out, "w").write(outcome)
    os._exit(0)   # (the broken group is not torn down: see _leave)


def test_a_dead_rank_is_an_error_for_the_others_not_a_hang(tmp_path):
    out = tmp_path / "outcome"
    _spawn(_dead_rank_worker, _free_port(), str(out))
    outcome = out.read_text()
    assert outcome.startswith("error after"), outcome
    assert float(outcome.split()[2]) < 60


def test_data_parallel_without_a_process_group_is_a_clear_error():
    with pytest.raises(ValueError, match="needs torch.distributed's process group"):
        GANTrainer(*_models(), _data(), data_parallel=True, **OPTIONS)
    with pytest.raises(ValueError, match="data_parallel does not combine with replicas"):
        TrainConfig(data_parallel=True, replicas=2)


def _torchrun(args, cwd, extra_env=None):
    env = {**os.environ, "FASTGAN_DIST_TIMEOUT": "60", "OMP_NUM_THREADS": "1", **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}",
                           "--master_port", str(_free_port()), "-m", "fastgan", "train", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=200)


def test_cli_sweep_under_torchrun_writes_every_replica_and_resumes_only_on_its_world_size(tmp_path):
    common = ["--data", "ring", "--lr", "1e-3", "2e-3", "5e-4", "1e-4", "--hidden", "16", "16",
              "--batch-size", "32", "--no-progress", "--out", str(tmp_path / "run")]
    done = _torchrun([*common, "--steps", "30"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["quality"]["replicas"]) == 4 and metrics["config"]["replicas"] == 4
    assert {"modes", "high_quality", "kl"} <= set(metrics["quality"]["mean"]) <= set(metrics["quality"]["stderr"])
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint*.pt")) == [
        "checkpoint.pt", "checkpoint.rank0-of-2.pt", "checkpoint.rank1-of-2.pt"]
    # evaluate reads the shards, plain and with rejection sampling (every replica's own D, from its shard)
    from fastgan.app.cli import main
    assert main(["evaluate", str(tmp_path / "run"), "--samples", "100", "--out", str(tmp_path / "plain.json")]) == 0
    assert len(json.loads((tmp_path / "plain.json").read_text())["metrics"]["replicas"]) == 4
    assert main(["evaluate", str(tmp_path / "run"), "--samples", "100", "--rejection", "0.5",
                 "--out", str(tmp_path / "guided.json")]) == 0
    guided = json.loads((tmp_path / "guided.json").read_text())
    assert len(guided["metrics"]["replicas"]) == 4 and len(guided["sampling"]["acceptance"]) == 4
    # one process with the whole sweep reaches the same per-replica losses (fp32 rounding: thread counts differ)
    alone = subprocess.run([sys.executable, "-m", "fastgan", "train", *common[:-1], str(tmp_path / "alone"),
                            "--steps", "30"], cwd=tmp_path, capture_output=True, text=True, timeout=200)
    assert alone.returncode == 0, alone.stderr
    theirs = json.loads((tmp_path / "alone" / "metrics.json").read_text())
    torch.testing.assert_close(torch.tensor(metrics["final_loss_d_per_replica"]),
                               torch.tensor(theirs["final_loss_d_per_replica"]), rtol=1e-4, atol=1e-5)
    wrong = subprocess.run([sys.executable, "-m", "fastgan", "train", *common, "--steps", "40", "--resume"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=200)
    assert wrong.returncode == 2
    assert "trained by 2 processes; this run has 1" in wrong.stderr and "Traceback" not in wrong.stderr
    resumed = _torchrun([*common, "--steps", "40", "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 40


def test_cli_data_parallel_and_an_uneven_sweep_under_torchrun(tmp_path):
    recipe = _torchrun(["--data", "ring", "--steps", "2", "--out", str(tmp_path / "mmd")], tmp_path)
    assert recipe.returncode != 0   # the ring's recipe has the MMD term, which is not split over processes
    assert "give --mmd-weight 0" in recipe.stderr
    done = _torchrun(["--data", "ring", "--hidden", "16", "16", "--batch-size", "32", "--steps", "20",
                      "--mmd-weight", "0", "--no-progress", "--out", str(tmp_path / "dp")], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 processes (data-parallel)" in done.stdout and "Traceback" not in done.stderr
    assert json.loads((tmp_path / "dp" / "metrics.json").read_text())["steps"] == 20
    uneven = _torchrun(["--data", "ring", "--seeds", "3", "--steps", "5", "--out", str(tmp_path / "u")], tmp_path)
    assert uneven.returncode != 0
    # one line from fastgan; torchrun then prints its own report (with a traceback of its launcher)
    assert "do not divide evenly over 2 processes" in uneven.stderr
    package = os.path.dirname(fastgan.__file__)   # no traceback through fastgan's own modules (wherever the clone is)
    assert f'File "{package}{os.sep}' not in uneven.stderr, uneven.stderr
