import os

import pytest
import torch

from fastgan import CheckpointError, GANTrainer, MLPDiscriminator, MLPGenerator, NonFiniteLossError, data
from fastgan.checkpoint import MAGIC


def ring_trainer(seed=0, batch_size=64, lr=1e-3, **kwargs):
    torch.manual_seed(seed)
    g = MLPGenerator(latent_dim=8, hidden=(64, 64), out_dim=2, output_activation=None)
    d = MLPDiscriminator(in_dim=2, hidden=(64, 64))
    return GANTrainer(g, d, data.gaussian_ring(4096), batch_size=batch_size, lr=lr, seed=seed, device="cpu",
                      **kwargs)


def mean_distance_to_ring(trainer):
    samples = trainer.sample(1000)
    return torch.cdist(samples, data.ring_centers()).min(dim=1).values.mean().item()


@pytest.mark.slow
def test_short_ring_training_moves_samples_toward_the_modes():
    trainer = ring_trainer()
    before = mean_distance_to_ring(trainer)
    history = trainer.fit(600, log_every=100, progress=False)
    after = mean_distance_to_ring(trainer)
    assert len(history["step"]) == 600 and history["step"][-1] == 600
    assert all(map(torch.isfinite, torch.tensor(history["loss_d"] + history["loss_g"])))
    assert after < 0.5 * before, f"mean distance to the nearest mode went {before:.3f} -> {after:.3f}"


def test_step_never_reads_a_tensor_on_the_host(no_host_reads):
    # fastgan's own step code must not read tensor values (a device sync on CUDA). torch.optim.Adam
    # reads its step counter, but that lives on the CPU by design, so only calls made from fastgan count.
    trainer = ring_trainer()
    with no_host_reads():
        loss_d, loss_g = trainer.step()
        trainer.step()
    assert loss_d.dim() == 0 and not loss_d.requires_grad
    assert trainer.history["step"] == [] and len(trainer.losses.pending) == 2
    assert [row[0] for row in trainer.flush_losses()] == [1, 2]


def assert_same_state(a: GANTrainer, b: GANTrainer):
    for module_a, module_b in ((a.generator, b.generator), (a.discriminator, b.discriminator)):
        for (name, pa), (_, pb) in zip(module_a.state_dict().items(), module_b.state_dict().items()):
            assert torch.equal(pa, pb), f"{name} differs"
    assert a.step_count == b.step_count
    assert torch.equal(a.rng.get_state(), b.rng.get_state())


@pytest.mark.parametrize("regularisers", [{}, {"weight_decay_d": 0.1, "l1_g": 0.01}], ids=["plain", "regularised"])
def test_resume_equals_an_uninterrupted_run(tmp_path, regularisers):
    straight = ring_trainer(seed=3, **regularisers)
    straight.fit(12, log_every=5, progress=False)

    first = ring_trainer(seed=3, **regularisers)
    first.fit(6, log_every=5, progress=False, checkpoint=tmp_path / "ckpt.pt")
    resumed = ring_trainer(seed=99, **regularisers)  # other init and RNG: everything must come from the checkpoint
    resumed.load(tmp_path / "ckpt.pt")
    assert resumed.step_count == 6
    resumed.fit(6, log_every=5, progress=False)

    assert_same_state(straight, resumed)
    assert straight.history == resumed.history
    for opt_a, opt_b in ((straight.optimizer_g, resumed.optimizer_g), (straight.optimizer_d, resumed.optimizer_d)):
        for sa, sb in zip(opt_a.state.values(), opt_b.state.values()):
            assert all(torch.equal(sa[k], sb[k]) for k in ("exp_avg", "exp_avg_sq", "step"))


def test_sample_leaves_training_rng_alone():
    trainer = ring_trainer()
    state = trainer.rng.get_state()
    a, b = trainer.sample(16, seed=1), trainer.sample(16, seed=1)
    assert a.shape == (16, 2) and torch.equal(a, b)
    assert torch.equal(state, trainer.rng.get_state())


def test_nan_loss_stops_fit_and_keeps_last_good_checkpoint(tmp_path):
    trainer = ring_trainer()
    ckpt = tmp_path / "ckpt.pt"
    trainer.fit(10, log_every=5, progress=False, checkpoint=ckpt)
    good = ckpt.read_bytes()
    with torch.no_grad():
        trainer.generator.net[0].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"non-finite at step 11.*last good checkpoint"):
        trainer.fit(10, log_every=5, progress=False, checkpoint=ckpt)
    assert ckpt.read_bytes() == good
    restored = ring_trainer()
    restored.load(ckpt)
    assert restored.step_count == 10


def test_checkpoint_is_written_atomically(tmp_path, monkeypatch):
    trainer = ring_trainer()
    ckpt = tmp_path / "ckpt.pt"
    trainer.save(ckpt)
    good = ckpt.read_bytes()
    trainer.step()

    def crash(*args, **kwargs):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        trainer.save(ckpt)
    assert ckpt.read_bytes() == good
    assert list(tmp_path.iterdir()) == [ckpt], "no temporary file may be left behind"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_truncated_tampered_or_foreign_checkpoints_are_rejected_cleanly(tmp_path):
    trainer = ring_trainer()
    trainer.fit(3, progress=False)
    ckpt = tmp_path / "ckpt.pt"
    trainer.save(ckpt)
    raw = ckpt.read_bytes()
    victim = ring_trainer(seed=5)
    before = {k: v.clone() for k, v in victim.generator.state_dict().items()}

    cases = {
        "truncated.pt": raw[: len(raw) // 2],
        "tampered.pt": raw[:-50] + bytes([raw[-50] ^ 0xFF]) + raw[-49:],
        "empty.pt": b"",
        "plain_torch.pt": raw[len(MAGIC) + 32:],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError):
            victim.load(tmp_path / name)

    # A file whose digest is right but whose pickle would run code: refused by weights_only loading.
    import hashlib
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    payload = pickle.dumps({"x": Evil()})
    (tmp_path / "evil.pt").write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        victim.load(tmp_path / "evil.pt")

    # A valid checkpoint of another architecture: rejected before anything is changed.
    torch.manual_seed(0)
    other = GANTrainer(MLPGenerator(latent_dim=8, hidden=(32,), out_dim=2, output_activation=None),
                       MLPDiscriminator(in_dim=2, hidden=(32,)), data.gaussian_ring(256), batch_size=8)
    other.save(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        victim.load(tmp_path / "other.pt")
    assert all(torch.equal(before[k], v) for k, v in victim.generator.state_dict().items())
    assert victim.step_count == 0
    with pytest.raises(FileNotFoundError):
        victim.load(tmp_path / "missing.pt")


def _models():
    return MLPGenerator(latent_dim=8, hidden=(16,), out_dim=2, output_activation=None), \
        MLPDiscriminator(in_dim=2, hidden=(16,))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"data": torch.zeros(100, 3)}, ValueError, "3 features per sample but the discriminator takes 2"),
    ({"latent_dim": 100}, ValueError, "latent_dim=100 does not match the generator, which takes 8"),
    ({"data": torch.tensor([[0.0, 1.0], [float("nan"), 0.0]])}, ValueError, "NaN or inf"),
    ({"batch_size": 0}, ValueError, "batch_size must be a positive integer"),
    ({"kernels": "cudnn"}, ValueError, "kernels must be one of"),
    ({"lr": -1.0}, ValueError, "lr must be"),
    ({"betas": (0.5, 1.5)}, ValueError, "betas"),
    ({"real_label": 0.0}, ValueError, "real_label"),
    ({"compile": "fastest"}, ValueError, "compile must be"),
    ({"cuda_graph": True}, ValueError, "cuda_graph=True needs a CUDA device"),
    ({"cuda_graph": True, "r1_gamma": 1.0, "steps_per_replay": 8}, ValueError, "a multiple of 16, got 8"),
    ({"cuda_graph": True, "compile": "reduce-overhead"}, ValueError, "CUDA graphs of its own"),
    ({"cuda_graph": True, "compile": "max-autotune"}, ValueError, "CUDA graphs of its own"),
    ({"fused_optimizer": "apex"}, ValueError, "fused_optimizer must be"),
    ({"adam_state": "fp16"}, ValueError, "adam_state must be one of 'fp32', 'bf16'"),
    ({"adam_state": "bf16", "fused_optimizer": "torch"}, ValueError, "adam_state='bf16' is FlatAdam's"),
    ({"adam_state": "bf16", "data_parallel": True}, ValueError, "data_parallel does not combine with adam_state"),
    ({"steps_per_replay": 0}, ValueError, "steps_per_replay"),
])
def test_bad_set_up_is_rejected_before_training(kwargs, error, message):
    g, d = _models()
    args = {"data": data.gaussian_ring(100), "batch_size": 16, **kwargs}
    with pytest.raises(error, match=message):
        GANTrainer(g, d, args.pop("data"), **args)


def test_generator_output_must_match_data():
    g = MLPGenerator(latent_dim=8, hidden=(16,), out_dim=3)
    with pytest.raises(ValueError, match="generator makes 3 features"):
        GANTrainer(g, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(1)), data.gaussian_ring(100),
                    batch_size=8)


def test_fit_arguments():
    trainer = ring_trainer()
    with pytest.raises(ValueError, match="steps"):
        trainer.fit(0)
    with pytest.raises(ValueError, match="log_every"):
        trainer.fit(3, log_every=0)


@pytest.mark.parametrize("regularisers", [{}, {"weight_decay_d": 0.1, "l1_g": 0.01}, {"adam_state": "bf16"}],
                         ids=["plain", "regularised", "bf16-moments"])
def test_resume_with_the_fused_optimizer(tmp_path, regularisers):
    straight = ring_trainer(seed=4, fused_optimizer=True, **regularisers)
    straight.fit(8, log_every=4, progress=False)
    first = ring_trainer(seed=4, fused_optimizer=True, **regularisers)
    first.fit(4, log_every=4, progress=False, checkpoint=tmp_path / "c.pt")
    resumed = ring_trainer(seed=11, fused_optimizer=True, **regularisers)
    resumed.load(tmp_path / "c.pt")
    resumed.fit(4, log_every=4, progress=False)
    assert_same_state(straight, resumed)
    assert torch.equal(straight.optimizer_d.exp_avg_sq, resumed.optimizer_d.exp_avg_sq)
    assert resumed.optimizer_d.exp_avg_sq.dtype == (torch.bfloat16 if regularisers.get("adam_state") else torch.float32)
    # torch.optim's Adam resumes it too (bf16 moments widened): the state is saved in one form
    other = ring_trainer(**{k: v for k, v in regularisers.items() if k != "adam_state"})
    other.load(tmp_path / "c.pt")
    assert other.step_count == 4 and int(other.optimizer_d.state_dict()["state"][0]["step"]) == 4


def test_batch_size_can_change_between_steps():
    trainer = ring_trainer(batch_size=64, pack=1)
    trainer.step()
    trainer.batch_size = 32
    assert trainer._parts.config.batch_size == 32
    trainer.step()
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        trainer.batch_size = 0
    assert trainer.batch_size == 32
    trainer.batch_size = 5000  # larger than the 4,096 samples: batches are drawn with replacement
    loss_d, loss_g = trainer.step()
    assert torch.isfinite(loss_d) and torch.isfinite(loss_g)


class UserGenerator(torch.nn.Module):
    """A user's model with modules fuse() does not know (LayerNorm, GELU, a residual)."""

    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.GELU(), torch.nn.LayerNorm(16))
        self.block = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.LeakyReLU(0.2))
        self.out = torch.nn.Linear(16, 2)

    def forward(self, z):
        h = self.inp(z)
        return self.out(h + self.block(h))


@pytest.mark.slow
@pytest.mark.parametrize("compile", [False, True])
def test_users_models_train_with_fused_kernels_and_compile(compile):
    torch.manual_seed(0)
    d = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1))
    trainer = GANTrainer(UserGenerator(), d, data.gaussian_ring(256), batch_size=32, device="cpu",
                         kernels="triton", compile=compile, latent_dim=4)
    assert isinstance(trainer.generator.block[0], __import__("fastgan").FusedLinear)
    assert isinstance(trainer.generator.inp[2], torch.nn.LayerNorm)  # left as it is
    trainer.fit(3, log_every=3, progress=False)
    assert all(map(torch.isfinite, torch.tensor(trainer.history["loss_d"] + trainer.history["loss_g"])))


def test_batch_larger_than_the_data_set_samples_with_replacement():
    g, d = _models()
    trainer = GANTrainer(g, d, data.gaussian_ring(100), batch_size=256, device="cpu")
    trainer.fit(3, log_every=3, progress=False)
    assert len(trainer.history["step"]) == 3


def test_torch_fused_adam_trains_like_for_each_adam():
    """fused_optimizer="torch": PyTorch's fused Adam, the baseline FlatAdam is measured against."""
    plain, fused = ring_trainer(seed=2), ring_trainer(seed=2, fused_optimizer="torch")
    assert fused.optimizer_d.defaults["fused"] and fused.config["fused_optimizer"] == "torch"
    for t in (plain, fused):
        t.fit(5, log_every=5, progress=False)
    for a, b in zip(plain.generator.parameters(), fused.generator.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_cudagraph_compile_modes_mark_each_step(monkeypatch):
    """compile="reduce-overhead" (cudagraph trees on a GPU): every step starts with
    cudagraph_mark_step_begin, and the losses it returns are copies the next step cannot overwrite."""
    marks = []
    real_mark = torch.compiler.cudagraph_mark_step_begin
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: (marks.append(1), real_mark())[1])
    trainer = ring_trainer(compile="reduce-overhead")
    results = [trainer.step() for _ in range(3)]
    assert len(marks) == 3
    storages = {t.untyped_storage().data_ptr() for pair in results for t in pair}
    assert len(storages) == 6, "losses of different steps share memory"
    assert len(trainer.flush_losses()) == 3


def test_ctrl_c_finishes_the_step_saves_and_says_where(tmp_path):
    import signal
    before = signal.getsignal(signal.SIGINT)   # Python's default, or SIG_IGN when started in the background
    trainer = ring_trainer()
    real_step = trainer.loop.step_fn

    def step_then_interrupt(index):
        result = real_step(index)
        if index == 4:  # as if the user pressed Ctrl-C during step 5
            signal.raise_signal(signal.SIGINT)
        return result

    trainer.loop.step_fn = step_then_interrupt
    from fastgan import TrainingInterrupted
    with pytest.raises(TrainingInterrupted) as caught:
        trainer.fit(100, log_every=50, progress=False, checkpoint=tmp_path / "c.pt")
    assert caught.value.step == 5 and caught.value.checkpoint == tmp_path / "c.pt"
    resumed = ring_trainer()
    resumed.load(tmp_path / "c.pt")
    assert resumed.step_count == 5 and resumed.history["step"] == [1, 2, 3, 4, 5]
    assert signal.getsignal(signal.SIGINT) is before  # the handler was put back


def test_progress_bar_counts_the_trainers_steps(tmp_path, capsys):
    trainer = ring_trainer()
    trainer.fit(3, log_every=3, progress=False)
    trainer.fit(2, log_every=2, progress=True)
    assert "5/5" in capsys.readouterr().err


def test_kernels_run_says_what_really_runs(monkeypatch):
    assert ring_trainer().kernels_run == "torch"
    assert ring_trainer(kernels="triton").kernels_run == "triton-interpreter"  # CI: TRITON_INTERPRET=1
    from fastgan import ops
    monkeypatch.setattr(ops, "use_triton", lambda tensor: False)  # a CPU without the interpreter
    assert ring_trainer(kernels="triton").kernels_run == "reference"
