"""One training step of the classic MLP GAN per backend (the backends of benchmarks/train_step.py)."""
import sys
from pathlib import Path

import pytest
import torch

from conftest import DEVICE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train_step import BACKENDS  # noqa: E402

import fastgan  # noqa: E402
from fastgan.nn.presets import PRESETS  # noqa: E402

BATCH = 128 if DEVICE == "cuda" else 16
HIDDEN = (128, 128) if DEVICE == "cuda" else (32, 32)
# on a CPU: the backends that run there, and not torch.compile (a compile per benchmark session)
CHOSEN = [b for b in BACKENDS if DEVICE == "cuda" or (not b.needs_cuda and b.name != "compile")]


@pytest.mark.parametrize("backend", CHOSEN, ids=lambda b: b.name)
def test_train_step(timed, backend):
    real = fastgan.data.digits(device=DEVICE)
    torch.manual_seed(0)
    generator, discriminator = PRESETS["classic"].build(real.shape[1], hidden=HIDDEN)
    trainer = fastgan.GANTrainer(generator, discriminator, real, batch_size=BATCH, seed=0, device=DEVICE,
                                 **backend.options)
    trainer.step()  # compile / capture / autotune: not timed
    k = trainer.config.steps_per_replay if trainer.config.cuda_graph else 1

    def one_call():  # a graph replay runs k steps: extra_info["steps_per_call"] says so
        trainer.step()
        trainer.losses.pending.clear()
    timed(f"train step batch {BATCH} hidden {HIDDEN[0]}", one_call, rounds=30 if DEVICE == "cuda" else 3,
          steps_per_call=k)
