"""kernels="triton-mlp": whole-MLP modules, the fused training step, its launch count, equivalence, resume."""
import copy
import warnings

import pytest
import torch

from helpers import assert_close
from fastgan import CheckpointError, GANTrainer, MLPDiscriminator, MLPGenerator, fuse, ops
from fastgan.nn import FusedMLP
from fastgan.profiling import count_launches, stubbed_launches

STEPS = 20


def _models(seed=0, pack=1, latent=16, width=32, features=20, output_activation="sigmoid"):
    torch.manual_seed(seed)
    return (MLPGenerator(latent_dim=latent, hidden=(width, width), out_dim=features,
                         output_activation=output_activation),
            MLPDiscriminator(in_dim=features * pack, hidden=(width, width)))


def _trainer(kernels, models=None, real=None, **options):
    g, d = models if models is not None else _models(pack=options.get("pack", 1))
    real = torch.rand(256, 20, generator=torch.Generator().manual_seed(5)) if real is None else real
    options = {"batch_size": 32, "lr": 1e-3, "seed": 7, "device": "cpu", "precision": "fp32", **options}
    return GANTrainer(copy.deepcopy(g), copy.deepcopy(d), real, kernels=kernels, **options)


def _assert_same_training(a, b, tolerance=1e-5):
    assert a.history["step"] == b.history["step"]
    for key in ("loss_d", "loss_g"):
        assert_close(torch.tensor(b.history[key]), torch.tensor(a.history[key]), tolerance, key)
    for module in ("generator", "discriminator"):
        pairs = zip(getattr(a, module).state_dict().items(), getattr(b, module).state_dict().items())
        for (name, x), (name_b, y) in pairs:
            assert name == name_b
            assert_close(y, x, tolerance, f"{module}.{name}")


@pytest.mark.parametrize("options", [{}, {"pack": 2, "d_steps": 2, "real_label": 0.9, "ema": 0.9,
                                          "output_activation": None}, {"split_gradients": True},
                                     {"adam_state": "bf16"}],
                         ids=["plain", "pack-dsteps-ema", "split-gradients", "bf16-moments"])
def test_fused_step_trains_like_the_per_layer_and_torch_paths(options, slicing, monkeypatch):
    """20 steps at fp32, same initial weights, same batches (sampler="torch"): losses and weights to 1e-5;
    "sliced": G's 20 outputs and D's 20 (40 packed) inputs cut into slices, as GAN widths are;
    "split-gradients": the weight gradients reduced in batch splits (8 rows each, as 2048 are past 4096 rows)
    and Adam, a launch of its own then, adding them; "bf16-moments": FlatAdam's moments in bf16 (folded into the
    weight-gradient kernel in the fused step), to 1e-3: a gradient an fp32 rounding apart may round its
    moment to the other bf16 neighbour."""
    options = dict(options)
    tolerance = 1e-3 if options.get("adam_state") == "bf16" else 1e-5
    if options.pop("split_gradients", False):
        monkeypatch.setattr(ops.mlp, "_SPLIT_ROWS", 8)
    models = _models(pack=options.get("pack", 1), output_activation=options.pop("output_activation", "sigmoid"))
    runs = {}
    for kernels in ("torch", "triton", "triton-mlp"):
        trainer = _trainer(kernels, models, sampler="torch" if kernels == "triton-mlp" else "auto",
                           fused_optimizer="flat", **options)
        trainer.fit(STEPS, log_every=5, progress=False)
        runs[kernels] = trainer
    assert runs["triton-mlp"].step_path == "fused"
    assert isinstance(runs["triton-mlp"].generator.net, FusedMLP)
    _assert_same_training(runs["torch"], runs["triton-mlp"], tolerance)
    _assert_same_training(runs["triton"], runs["triton-mlp"], tolerance)
    if options.get("adam_state"):
        assert runs["triton-mlp"].optimizer_d.exp_avg_sq.dtype == torch.bfloat16
    if options.get("ema"):
        assert_close(runs["triton-mlp"].sample(64), runs["torch"].sample(64), 1e-5, "EMA samples")
    moved = (runs["triton-mlp"].generator.net[0].weight - models[0].net[0].weight).norm()
    assert moved > 1e-2 * models[0].net[0].weight.norm()


def test_the_generic_step_draws_what_the_fused_step_draws():
    """sampler="philox" outside the fused step (PyTorch's layers, the generic step) draws the fused step's
    batches: 20 steps agree as with PyTorch's generator above."""
    models = _models()
    runs = [_trainer(kernels, models, sampler="philox", fused_optimizer="flat") for kernels in ("torch", "triton-mlp")]
    assert [t.step_path for t in runs] == ["generic", "fused"]
    for trainer in runs:
        trainer.fit(STEPS, log_every=5, progress=False)
    assert torch.equal(runs[0].sampler.counter, runs[1].sampler.counter)
    _assert_same_training(*runs)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_classic_gan_step_is_7_kernels(precision):
    """The classic GAN (G 100-128-128-784, D 784-128-128-1): Triton launches plus every PyTorch op that would
    launch a kernel on a GPU (views, metadata and allocation excluded), per training step; Adam folded into
    the weight-gradient launches. The first step runs its kernels (9 s interpreted); the counted ones do not
    (``stubbed_launches``: what a step launches does not depend on the values)."""
    torch.manual_seed(0)
    trainer = GANTrainer(MLPGenerator(), MLPDiscriminator(), torch.rand(100, 784), batch_size=16, device="cpu",
                         kernels="triton-mlp", precision=precision)
    assert trainer.step_path == "fused"
    trainer.step()
    with stubbed_launches():
        _, count = count_launches(trainer.step)
    assert count.total == 7, count
    assert count.torch_ops == {}, count
    assert count.triton == {"_sample_kernel": 1, "_mlp_rows_kernel": 4, "_mlp_weight_grad_kernel": 2}, count
    # the per-layer path, counted the same way, for scale
    torch.manual_seed(0)
    per_layer = GANTrainer(MLPGenerator(), MLPDiscriminator(), torch.rand(100, 784), batch_size=16, device="cpu",
                           kernels="triton", precision=precision)
    with stubbed_launches():
        _, count_per_layer = count_launches(per_layer.step)
    assert count_per_layer.total > 5 * count.total


def test_philox_sampler_resumes_exactly(tmp_path):
    straight = _trainer("triton-mlp")
    assert straight.sampler is not None
    straight.fit(4, log_every=2, progress=False, checkpoint=tmp_path / "a.pt", checkpoint_every=2)
    straight.fit(3, log_every=3, progress=False)
    resumed = _trainer("triton-mlp", models=_models(seed=3), seed=99)
    resumed.load(tmp_path / "a.pt")
    assert resumed.step_count == 4
    resumed.fit(3, log_every=3, progress=False)
    assert straight.history == resumed.history
    for a, b in zip(straight.generator.state_dict().values(), resumed.generator.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(straight.sampler.counter, resumed.sampler.counter)
    written_by_torch_sampler = tmp_path / "torch-sampler.pt"
    _trainer("triton-mlp", sampler="torch").save(written_by_torch_sampler)
    with pytest.raises(CheckpointError, match="sampler state"):
        _trainer("triton-mlp").load(written_by_torch_sampler)


def test_philox_draws_never_repeat_when_the_batch_size_changes():
    """A call's number is counter // P with P programs per call; a new batch size changes P, and the counter
    moves to the next call boundary so no call number (and no draw) comes back."""
    trainer = _trainer("triton-mlp", batch_size=64)
    seen = []
    for batch in (64, 64, 80, 48, 64):
        trainer.batch_size = batch
        trainer.step()
        seen.append(trainer.loop.step_fn.buffers[batch].x_d[:batch].clone())
        assert int(trainer.sampler.counter) % trainer.sampler.programs == 0
    for i in range(1, len(seen)):
        rows = min(seen[i].shape[0], seen[i - 1].shape[0])
        same = (seen[i][:rows] == seen[i - 1][:rows]).all(dim=1).float().mean().item()
        assert same < 0.2, f"step {i}: {same:.0%} of rows repeat the previous step's"


def test_compile_compiles_all_three_regions(monkeypatch):
    compiled = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: (compiled.append(getattr(fn, "__name__", type(fn).__name__)),
                                                            real_compile(fn, **kw))[1])
    _trainer("torch", compile=True)
    assert compiled == ["MLPGenerator", "d_loss_of_inputs", "g_loss_of_input"], compiled


def test_options_outside_the_fused_step_run_the_modules_and_say_why():
    trainer = _trainer("triton-mlp", loss="hinge", instance_noise=0.1)
    assert trainer.step_path.startswith("generic (") and "hinge" in trainer.step_path
    assert "instance_noise" in trainer.step_path
    before = ops.kernel_launches["_mlp_rows_kernel"]
    trainer.fit(2, log_every=2, progress=False)
    assert ops.kernel_launches["_mlp_rows_kernel"] > before   # the whole-MLP op ran inside the generic step
    # the Philox sampler draws wherever Triton runs: in the generic step too
    assert _trainer("triton-mlp", loss="hinge", sampler="philox").sampler is not None
    assert _trainer("triton", sampler="philox").step_path == "generic"
    with ops.reference_path(), pytest.raises(ValueError, match="sampler='philox' draws with a Triton kernel"):
        _trainer("torch", sampler="philox")
    with pytest.raises(ValueError, match="sampler='philox' does not combine with data_parallel"):
        _trainer("torch", sampler="philox", data_parallel=True)
    with pytest.raises(ValueError, match="sampler must be"):
        _trainer("triton-mlp", sampler="numpy")


@pytest.mark.slow
def test_compile_runs_the_whole_mlp_ops_with_no_graph_breaks():
    from torch._dynamo.utils import counters
    counters.clear()
    eager = _trainer("torch", fused_optimizer="flat")
    compiled = _trainer("triton-mlp", compile=True)
    assert compiled.step_path.startswith("generic") and "compile" in compiled.step_path
    for t in (eager, compiled):
        t.fit(5, log_every=5, progress=False)
    assert dict(counters["graph_break"]) == {}, f"graph breaks: {dict(counters['graph_break'])}"
    _assert_same_training(eager, compiled)


def test_fuse_whole_keeps_state_dict_and_falls_back_with_a_warning():
    g, _ = _models()
    reference = copy.deepcopy(g)
    fused = fuse(g, whole=True)
    assert fused is g and isinstance(g.net, FusedMLP) and g.net.spec.dims == (16, 32, 32, 20)
    assert list(g.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(g.state_dict())
    g.load_state_dict(reference.state_dict())
    z = torch.randn(9, 16)
    with ops.matmul_precision("ieee"):
        assert_close(g(z), reference(z), 1e-5, "FusedMLP vs the plain Sequential")
    # parameters sit back to back: the op reads them in place
    params = list(g.net.parameters())
    assert ops.mlp.flat_parameters(params).data_ptr() == params[0].data_ptr()
    g.net.to(torch.float32)   # a move re-flattens
    assert ops.mlp.flat_parameters(list(g.net.parameters())).data_ptr() == next(g.net.parameters()).data_ptr()
    # ... but never away from an optimizer's buffer that already holds them back to back
    from fastgan.optim import FlatAdam
    optimizer = FlatAdam(g.net)
    g.net.to("cpu")
    assert next(g.net.parameters()).data_ptr() == optimizer.data.data_ptr()
    # an EMA copy gets its own buffer, read in place
    from fastgan.optim import EMA
    ema = EMA(g, 0.9)
    copied = list(ema.module.net.parameters())
    assert ops.mlp.flat_parameters(copied).data_ptr() == copied[0].data_ptr() != params[0].data_ptr()

    mixed = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    with pytest.warns(UserWarning, match="cannot be fused whole.*LayerNorm"):
        out = fuse(mixed, whole=True)
    assert isinstance(out[0], __import__("fastgan").FusedLinear)
    whole = fuse(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)), whole=True)
    assert isinstance(whole, FusedMLP) and whole.spec.hidden_activation == "tanh"
    with pytest.raises(ValueError, match="widths do not chain"):
        FusedMLP(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(5, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a whole-fusable model fuses silently
        fuse(MLPDiscriminator(in_dim=5, hidden=(7,)), whole=True)


def test_fused_step_never_reads_the_device_and_keeps_its_buffers(no_host_reads):
    """What a CUDA graph needs, checked on the CPU: no host reads of tensors inside the step, the same
    buffers every step, and the sampler's counter advancing on the device."""
    trainer = _trainer("triton-mlp")
    trainer.step()
    counter_before = trainer.sampler.counter.clone()
    buffers = trainer.loop.step_fn.buffers[trainer.batch_size]
    pointers = {name: t.data_ptr() for name, t in vars(buffers).items() if isinstance(t, torch.Tensor)}
    with no_host_reads():
        trainer.step()
    assert trainer.loop.step_fn.buffers[trainer.batch_size] is buffers
    assert {name: t.data_ptr() for name, t in vars(buffers).items() if isinstance(t, torch.Tensor)} == pointers
    assert int(trainer.sampler.counter) > int(counter_before)
