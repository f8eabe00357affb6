"""Micro-benchmarks (pytest-benchmark): each fused op and one training step per backend, against the
PyTorch code they replace, comparable across commits.

    python -m pytest benchmarks/micro --benchmark-only --benchmark-autosave          # save a run
    python -m pytest benchmarks/micro --benchmark-only --benchmark-compare \\
        --benchmark-compare-fail=median:10%                                            # fail on +10%

Outside the default test run (``testpaths`` is ``tests``). On a GPU every round runs ``INNER`` calls and
then synchronises, so a round's time is the kernels' time, not the launch queue's; warm-up rounds
(``--benchmark-warmup``, autotuning and compilation included) are not timed. On a CPU the fused ops run
Triton's *interpreter* (TRITON_INTERPRET=1, set here like the tests do) or, without it, their PyTorch
reference path: each benchmark's group and ``extra_info["path"]`` say which, because an interpreter time
is not a kernel time.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "0" if __import__("torch").cuda.is_available() else "1")
os.environ.setdefault("FASTGAN_AUTOTUNE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from fastgan import ops  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# what the fused ops really run here
PATH = "gpu" if DEVICE == "cuda" else ("interpreter" if ops.INTERPRET else "reference")
# calls per timed round: enough on a GPU that one synchronisation per round costs little
INNER = 20 if DEVICE == "cuda" else 1


def pytest_report_header(config):
    return f"fastgan micro-benchmarks: device {DEVICE}, fused ops run: {PATH} (times label it)"


@pytest.fixture
def timed(benchmark):
    """``timed(group, fn, rounds=None, **extra_info)``: benchmark ``fn`` (``INNER`` calls + a device sync per
    round) in ``group``, with ``extra_info`` saved beside the timings."""
    def run(group: str, fn, rounds: int | None = None, **extra_info):
        benchmark.group = f"{group} [fastgan's ops: {PATH}]"
        benchmark.extra_info.update(extra_info, path=PATH, device=DEVICE, inner_calls=INNER,
                                    card=torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu")

        def many():
            for _ in range(INNER):
                fn()
            if DEVICE == "cuda":
                torch.cuda.synchronize()

        many()  # first call: autotuning / compilation, never timed
        return benchmark.pedantic(many, rounds=rounds or (50 if DEVICE == "cuda" else 5), warmup_rounds=2)
    return run
