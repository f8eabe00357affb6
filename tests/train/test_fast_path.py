"""Fast by default: the settings a run leaves unset are decided once for its device (fastgan.train.backends
.fast_path), said in one line, each falling back with its reason; a CPU keeps the plain eager step."""
import logging

import pytest
import torch

from fastgan import GANTrainer, TrainConfig, data
from fastgan.app.args import build_parser
from fastgan.ops import HAS_TRITON
from fastgan.train.backends import AUTO_TRITON_MAX_BATCH, FAST_STEPS_PER_REPLAY, fast_path

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")
FUSED = "triton" if HAS_TRITON else "torch"   # (the decision is made on the CPU: no GPU is needed to test it)


def _decided(device=CUDA, **settings):
    config, line = fast_path(TrainConfig(**settings), device)
    return (config.cuda_graph, config.steps_per_replay, config.fused_optimizer), line


def test_cuda_gets_the_fastest_measured_step():
    assert _decided() == ((True, FAST_STEPS_PER_REPLAY, "flat"),
                          f"fast path: {FUSED} + CUDA graph (k={FAST_STEPS_PER_REPLAY}) + FlatAdam")
    # beyond the measured crossover: PyTorch's kernels and Adam, in the graph
    large = _decided(batch_size=AUTO_TRITON_MAX_BATCH * 8)
    assert large == ((True, FAST_STEPS_PER_REPLAY, False), f"fast path: torch + CUDA graph (k={FAST_STEPS_PER_REPLAY})")


def test_r1_gets_a_graph_of_whole_r1_periods():
    """The R1 steps sit where the capture put them: a replay holds a multiple of r1_every steps."""
    assert _decided(r1_gamma=0.1) == ((True, 16, "flat"), f"fast path: {FUSED} + CUDA graph (k=16) + FlatAdam")
    assert _decided(r1_gamma=0.1, r1_every=4)[0] == (True, 8, "flat")
    assert _decided(r1_gamma=0.1, r1_every=12)[0] == (True, 24, "flat")
    assert _decided(r1_gamma=[0.0, 1.0], replicas=2, r1_every=16)[0][:2] == (True, 16)
    assert _decided(r1_gamma=0.1, cuda_graph=True, steps_per_replay=32)[0] == (True, 32, "flat")
    with pytest.raises(ValueError, match="steps_per_replay must be a multiple of 16, got 8"):
        TrainConfig(r1_gamma=0.1, cuda_graph=True, steps_per_replay=8)


@pytest.mark.parametrize("settings, decided, reason", [
    (dict(r1_gamma=1.0, r1_every=100), (False, 1, "flat"), "no CUDA graph: r1_every=100 would need 200 steps a replay"),
    (dict(compile="reduce-overhead"), (False, 1, "flat"),
     "no CUDA graph: compile='reduce-overhead' makes CUDA graphs of its own"),
    (dict(data_parallel=True), (False, 1, False), "no CUDA graph: data_parallel's collectives; no FlatAdam: "
                                                   "data_parallel"),
])
def test_each_fallback_says_why(settings, decided, reason):
    got, line = _decided(**settings)
    assert got == decided and line.startswith("fast path: ") and line.endswith(f"({reason})"), line


def test_what_the_user_set_is_kept():
    assert _decided(cuda_graph=False) == ((False, 1, "flat"), "fast path: torch + FlatAdam")
    assert _decided(fused_optimizer="torch", steps_per_replay=2)[0] == (True, 2, "torch")
    assert _decided(kernels="torch")[1] == f"fast path: torch + CUDA graph (k={FAST_STEPS_PER_REPLAY}) + FlatAdam"
    full = dict(kernels="torch", cuda_graph=True, steps_per_replay=4, fused_optimizer=False)
    assert _decided(**full) == ((True, 4, False), None)   # nothing left to decide: nothing said


def test_no_fast_and_cpus_run_the_plain_eager_step():
    assert _decided(fast=False) == ((False, 1, False), None)
    assert _decided(CPU) == ((False, 1, False), None)
    trainer = GANTrainer(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1), data.gaussian_ring(64), batch_size=8,
                         device="cpu")
    assert (trainer.kernels, trainer.config.cuda_graph, trainer.config.fused_optimizer) == ("torch", False, False)
    assert isinstance(trainer.optimizer_g, torch.optim.Adam)


def test_the_cli_leaves_them_unset_unless_asked():
    args = build_parser().parse_args(["train"])
    assert (args.fast, args.kernels, args.cuda_graph, args.steps_per_replay, args.fused_optimizer) == \
        (True, "auto", None, None, None)
    args = build_parser().parse_args(["train", "--no-fast", "--no-cuda-graph"])
    assert (args.fast, args.cuda_graph) == (False, False)


class _Uncapturable:
    """A graph whose capture fails, as a module the graph cannot hold makes it (emulated on the CPU)."""
    steps_per_replay, warmup, captured = 8, 2, False

    def __init__(self, step):
        self.step = step

    def warm_up(self, first):
        return [self.step(first + i) for i in range(self.warmup)]

    def capture(self, first):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")


@pytest.mark.parametrize("chosen_by_fast_path", [True, False])
def test_a_step_that_cannot_be_captured_runs_eagerly_when_the_graph_was_not_asked_for(chosen_by_fast_path):
    trainer = GANTrainer(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1), data.gaussian_ring(64), batch_size=8,
                         device="cpu")
    loop = trainer.loop
    loop.graphed, loop.graph_optional = _Uncapturable(loop.step_fn), chosen_by_fast_path
    notes = []
    handler = logging.Handler()
    handler.emit = lambda record: notes.append(record.getMessage())
    logging.getLogger("fastgan").addHandler(handler)
    try:
        if not chosen_by_fast_path:   # asked for by name: its failure is the user's to see
            with pytest.raises(RuntimeError, match="operation not permitted"):
                trainer.step()
            return
        trainer.fit(20, log_every=5, progress=False)
    finally:
        logging.getLogger("fastgan").removeHandler(handler)
    assert trainer.step_count == 20 and loop.graphed is None
    assert notes == ["no CUDA graph: the step cannot be captured (operation not permitted when stream is capturing); "
                     "it runs eagerly from here"]
