"""lr_schedule: step-down learning rates, a pure function of the step (so resume stays exact), in the single
trainer (torch.optim's Adam, FlatAdam), the replicas, CUDA graphs and the CLI."""
import json

import pytest
import torch

from helpers import ON_CUDA, assert_close
from fastgan import GANTrainer, MLPDiscriminator, MLPGenerator, TrainConfig
from fastgan.app.cli import main

SCHEDULE = ((5, 0.5), (8, 0.1))


def _trainer(**settings):
    torch.manual_seed(0)
    g = MLPGenerator(latent_dim=4, hidden=(16,), out_dim=3, output_activation=None)
    d = MLPDiscriminator(in_dim=3, hidden=(16,))
    data = torch.randn(200, 3, generator=torch.Generator().manual_seed(1))
    return GANTrainer(g, d, data, **{"batch_size": 16, "seed": 3, "device": "cpu", "precision": "fp32",
                                     "lr": 1e-3, "lr_d": 2e-3, **settings})


def _weights(trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for m in (trainer.generator, trainer.discriminator) for p in m.parameters()]


def _set_rates(trainer, factor: float) -> None:
    for optimizer, base in ((trainer.optimizer_g, 1e-3), (trainer.optimizer_d, 2e-3)):
        if hasattr(optimizer, "param_groups"):
            for group in optimizer.param_groups:
                group["lr"] = base * factor
        else:
            optimizer.lr = base * factor


def test_factor_per_step_and_bad_schedules_are_refused():
    config = TrainConfig(lr_schedule=[[5, 0.5], (8, 0.1)])
    assert config.lr_schedule == SCHEDULE
    assert [config.lr_factor(s) for s in (0, 4, 5, 7, 8, 10**9)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    assert config.schedule_changes_within(4, 2) and not config.schedule_changes_within(5, 3) and config.schedule_changes_within(5, 4)
    assert not config.schedule_changes_within(0, 5) and TrainConfig().lr_factor(10**6) == 1.0
    values = config.to_dict()
    assert values["lr_schedule"] == [[5, 0.5], [8, 0.1]] and json.loads(json.dumps(values)) == values
    assert TrainConfig.from_dict(values) == config
    for bad, message in [(((5, 0.5), (5, 0.1)), "increasing"), (((0, 0.5),), "positive and increasing"),
                         (((5, 0.0),), "positive factor"), (((5, float("nan")),), "positive factor"),
                         (((5.0, 0.5),), "positive integer step"), ((5, 0.5), "pair"), ("5:0.5", "sequence"),
                         (((True, 0.5),), "pair")]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(lr_schedule=bad)


@pytest.mark.parametrize("settings", [{}, {"fused_optimizer": "flat"}, {"kernels": "triton-mlp"}],
                         ids=["torch-adam", "flat-adam", "fused-step"])
def test_schedule_equals_setting_the_rates_by_hand(settings):
    """The schedule's run equals a constant-rate run whose rates are changed by hand at the milestones
    (bit for bit), and differs from the run without it; triton-mlp's fused step reads FlatAdam's rate too."""
    scheduled = _trainer(lr_schedule=SCHEDULE, **settings)
    assert scheduled.step_path == ("fused" if settings.get("kernels") else "generic")
    scheduled.fit(10, log_every=3, progress=False)
    by_hand = _trainer(**settings)
    for steps, factor in ((5, 0.5), (3, 0.1), (2, None)):
        by_hand.fit(steps, progress=False)
        if factor is not None:
            _set_rates(by_hand, factor)
    constant = _trainer(**settings)
    constant.fit(10, progress=False)
    for a, b in zip(_weights(scheduled), _weights(by_hand)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert scheduled.history == by_hand.history
    assert any(not torch.equal(a, b) for a, b in zip(_weights(scheduled), _weights(constant)))


@pytest.mark.parametrize("stop", [3, 5, 6, 9])
def test_resume_across_milestones_is_exact(tmp_path, stop):
    """Saved before, at or after a milestone, the resumed run equals the uninterrupted one; the
    checkpoint's rates (the optimizer states carry them) never override the schedule's."""
    straight = _trainer(lr_schedule=SCHEDULE)
    straight.fit(12, progress=False)
    first = _trainer(lr_schedule=SCHEDULE)
    first.fit(stop, progress=False)
    path = first.save(tmp_path / "c.pt")
    resumed = _trainer(lr_schedule=SCHEDULE)
    resumed.load(path)
    resumed.fit(12 - stop, progress=False)
    for a, b in zip(_weights(straight), _weights(resumed)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.history == straight.history
    assert resumed.optimizer_g.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.1)


def test_a_loaded_checkpoints_rates_yield_to_the_schedule_and_stay_without_one(tmp_path):
    """A checkpoint written at a constant rate, loaded into a scheduled trainer already past its milestones:
    the next step runs at the schedule's rate. Without a schedule the saved rates stay (a rate set by hand, or
    by a torch.optim.lr_scheduler, survives a resume, as before schedules existed)."""
    constant = _trainer()
    constant.fit(9, progress=False)
    path = constant.save(tmp_path / "constant.pt")
    scheduled = _trainer(lr_schedule=SCHEDULE)
    scheduled.fit(9, progress=False)
    scheduled.load(path)
    scheduled.fit(1, progress=False)
    assert [scheduled.optimizer_g.param_groups[0]["lr"], scheduled.optimizer_d.param_groups[0]["lr"]] == \
        pytest.approx([1e-4, 2e-4])
    _set_rates(constant, 0.25)
    path = constant.save(tmp_path / "by-hand.pt")
    plain = _trainer()
    plain.load(path)
    plain.fit(1, progress=False)
    assert plain.optimizer_g.param_groups[0]["lr"] == pytest.approx(2.5e-4)


@pytest.mark.parametrize("lr", [1e-3, [1e-3, 5e-4]], ids=["uniform-fused-adam", "per-replica-lr"])
def test_replicas_follow_the_schedule_as_their_single_runs(lr):
    from fastgan.nn.stacked import replica_models
    torch.manual_seed(0)
    g = MLPGenerator(latent_dim=4, hidden=(16,), out_dim=3, output_activation=None)
    d = MLPDiscriminator(in_dim=3, hidden=(16,))
    data = torch.randn(200, 3, generator=torch.Generator().manual_seed(1))
    options = {"batch_size": 16, "seed": 3, "device": "cpu", "precision": "fp32", "lr_schedule": SCHEDULE}
    trainer = GANTrainer(g, d, data, replicas=2, lr=lr, **options)
    trainer.fit(10, progress=False)
    for k in range(2):
        single = GANTrainer(*replica_models(g, d, 3, k), data, trainer.config.for_replica(k))
        single.fit(10, progress=False)
        rg, rd = trainer.replica(k)
        for ours, theirs, what in ((rg, single.generator, "G"), (rd, single.discriminator, "D")):
            for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
                assert_close(a, b, 1e-5, f"replica {k} {what}.{name}")
    assert trainer.optimizer_g.lr.flatten().tolist() == pytest.approx(
        [v * 0.1 for v in (lr if isinstance(lr, list) else [lr, lr])])


def test_cli_flag(tmp_path, capsys):
    out = tmp_path / "ring"
    assert main(["train", "--data", "ring", "--steps", "6", "--log-every", "3", "--out", str(out), "--no-progress",
                 "--lr-schedule", "2:0.5", "4:0.25"]) == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["lr_schedule"] == [[2, 0.5], [4, 0.25]]
    with pytest.raises(SystemExit):
        main(["train", "--data", "ring", "--steps", "6", "--out", str(out), "--lr-schedule", "4-0.5"])
    assert "STEP:FACTOR" in capsys.readouterr().err
    assert main(["train", "--data", "ring", "--steps", "6", "--out", str(out), "--lr-schedule", "4:0.5",
                 "2:0.1"]) == 2
    err = capsys.readouterr().err
    assert "increasing" in err and "Traceback" not in err
    # a resumed run keeps its schedule unless --lr-schedule is given (none: a constant rate, and a note says so)
    assert main(["train", "--data", "ring", "--steps", "8", "--log-every", "4", "--out", str(out), "--resume",
                 "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["lr_schedule"] == [[2, 0.5], [4, 0.25]]
    assert "settings differ" not in capsys.readouterr().out
    assert main(["train", "--data", "ring", "--steps", "10", "--log-every", "5", "--out", str(out), "--resume",
                 "--no-progress", "--lr-schedule", "none"]) == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["lr_schedule"] == []
    assert "lr_schedule [[2, 0.5], [4, 0.25]] -> []" in capsys.readouterr().out


def _rates(optimizer):
    if hasattr(optimizer, "param_groups"):
        return [group["lr"] for group in optimizer.param_groups]
    if hasattr(optimizer, "hyper"):   # ReplicaAdam(flat=True): its kernel's table
        return optimizer.hyper.clone()
    if hasattr(optimizer, "uniform"):   # ReplicaAdam
        return (optimizer.uniform, optimizer.lr.clone())
    return optimizer.lr


def _restore_rates(optimizer, rates) -> None:
    if hasattr(optimizer, "param_groups"):
        for group, lr in zip(optimizer.param_groups, rates):
            group["lr"] = lr
    elif hasattr(optimizer, "hyper"):
        optimizer.hyper.copy_(rates)
    elif hasattr(optimizer, "uniform"):
        optimizer.uniform = rates[0]
        optimizer.lr.copy_(rates[1])
    else:
        optimizer.lr = rates


class BakedGraph:
    """``GraphedStep``'s contract on a CPU: warm-up steps run as they are; ``capture`` records the learning
    rates of that moment and every replay runs its steps with them and with the captured steps' numbers (what
    the step decided on the host from them, as the MMD term's power), as a CUDA graph bakes them in."""

    def __init__(self, trainer, steps_per_replay, warmup):
        self.trainer, self.steps_per_replay, self.warmup = trainer, steps_per_replay, warmup
        self.rates, self.first, self.captures = None, None, 0

    captured = property(lambda self: self.rates is not None)

    def reset(self):
        self.rates = None

    def warm_up(self, first):
        return [self.trainer.loop.step_fn(first + i) for i in range(self.warmup)]

    def capture(self, first):
        self.rates = [_rates(o) for o in (self.trainer.optimizer_g, self.trainer.optimizer_d)]
        self.first = first
        self.captures += 1

    def replay(self):
        optimizers = (self.trainer.optimizer_g, self.trainer.optimizer_d)
        now = [_rates(o) for o in optimizers]
        for optimizer, rates in zip(optimizers, self.rates):
            _restore_rates(optimizer, rates)
        losses = torch.stack([torch.stack(self.trainer.loop.step_fn(self.first + j))
                              for j in range(self.steps_per_replay)])
        for optimizer, rates in zip(optimizers, now):
            _restore_rates(optimizer, rates)
        return losses


@pytest.mark.parametrize("replicas", [None, 2])
@pytest.mark.parametrize("schedule, captured", [
    ({"lr_schedule": ((6, 0.5), (11, 0.1))}, 2),   # captured at steps 0 and 11
    ({"mmd_weight": 2.0, "mmd_fine": 0.5, "mmd_fine_from": 7}, 2),   # at 2 (after 2 warm-up steps) and 9
    ({"mmd_weight": 2.0, "mmd_from": 7}, 2),   # the same: the term's start
])
def test_graph_replays_never_span_a_change_of_rate_or_mmd_term(replicas, schedule, captured):
    """With rates and the MMD term (its start, its power) baked into a captured graph (emulated on the CPU), a
    milestone or the term's or power's start inside a replay's span (2 warm-up steps and 4 steps per replay) runs
    eagerly and the graph is recorded anew, so the graphed run equals the eager one, and fit stops at its step
    count."""
    settings = {**schedule, "replicas": replicas}
    graphed = _trainer(**settings)
    graphed.loop.graphed = BakedGraph(graphed, steps_per_replay=4, warmup=2)
    graphed.fit(20, log_every=5, progress=False)
    eager = _trainer(**settings)
    eager.fit(20, log_every=5, progress=False)
    assert graphed.step_count == 20 and graphed.loop.graphed.captures == captured
    for a, b in zip(_weights(graphed), _weights(eager)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert graphed.history == eager.history


@pytest.mark.gpu
@pytest.mark.skipif(not ON_CUDA, reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("replicas", [None, 3])
def test_cuda_graph_replays_follow_the_schedule(replicas):
    """Milestones inside a replay's span: those steps run eagerly and the graph is recorded anew, so the
    graphed run equals the eager one."""
    schedule = ((6, 0.5), (11, 0.1))
    settings = {"device": "cuda", "lr_schedule": schedule, "replicas": replicas}
    graphed = _trainer(cuda_graph=True, steps_per_replay=4, graph_warmup=2, **settings)
    graphed.fit(20, log_every=5, progress=False)
    eager = _trainer(**settings)
    for optimizer in (eager.optimizer_g, eager.optimizer_d):   # capturable as the graphed run's (test_graph._train)
        for group in getattr(optimizer, "param_groups", []):
            group["capturable"] = True
    eager.fit(20, log_every=5, progress=False)
    assert graphed.step_count == eager.step_count == 20
    for a, b in zip(_weights(graphed), _weights(eager)):
        assert_close(a, b, 1e-5, "weights")
