"""FlatAdam (flat buffers + one Triton Adam kernel) against torch.optim.Adam, step by step.

torch.optim.Adam computes its bias corrections in Python float64 from a host step count; ours come
from the device counter in fp32 (so a CUDA graph can replay them): after a few steps parameters differ
by ~1e-6 relative, inside the fp32 tolerance of 1e-5.
"""
import copy

import pytest
import torch
from torch import nn

import fastgan.ops.adam as adam_module
from helpers import DEVICE, assert_close
from fastgan import ops
from fastgan.optim import FlatAdam, flatten_parameters


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(7, 33), nn.LeakyReLU(0.2), nn.Linear(33, 1)).to(DEVICE)


def _loss(model, step):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(16, 7, generator=g).to(DEVICE)
    return model(x).square().mean()


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("betas", [(0.5, 0.999), (0.9, 0.99)])
def test_matches_torch_adam_step_by_step(weight_decay, betas):
    ours, theirs = _model(), _model()
    flat = FlatAdam(ours, lr=1e-2, betas=betas, weight_decay=weight_decay)
    reference = torch.optim.Adam(theirs.parameters(), lr=1e-2, betas=betas, weight_decay=weight_decay)
    for step in range(6):
        flat.zero_grad()
        _loss(ours, step).backward()
        before = ops.kernel_launches["_adam_step_kernel"]
        flat.step()
        assert ops.kernel_launches["_adam_step_kernel"] == before + 1, "the Triton kernel did not run"
        reference.zero_grad()
        _loss(theirs, step).backward()
        reference.step()
        for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
            assert_close(a, b, 1e-5, f"step {step} {name}")
    assert flat.steps_taken == 6


def _train_both(ours, flat, theirs, reference, steps):
    for step in range(steps):
        for model, opt in ((ours, flat), (theirs, reference)):
            opt.zero_grad()
            _loss(model, step).backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert_close(a, b, 1e-5)


def test_many_programs_count_steps_exactly(monkeypatch):
    # Small blocks: the buffer spans several programs, each adding to the counter once per update.
    monkeypatch.setattr(adam_module, "_BLOCK", 64)
    ours, theirs = _model(1), _model(1)
    flat = FlatAdam(ours, lr=1e-2)
    assert adam_module.adam_programs(flat.data.numel()) > 1
    _train_both(ours, flat, theirs, torch.optim.Adam(theirs.parameters(), lr=1e-2), steps=4)
    assert flat.steps_taken == 4


def test_flat_buffers_are_views_and_grads_accumulate_there():
    model = _model(2)
    twin = copy.deepcopy(model)
    data, grad = flatten_parameters(model)
    assert data.numel() == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        data.mul_(2)
    assert torch.equal(model[0].weight, 2 * twin[0].weight), "parameters must be views into the buffer"
    with torch.no_grad():
        data.div_(2)
    _loss(model, 0).backward()
    _loss(twin, 0).backward()
    offset = 0
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(grad[offset:offset + p.numel()].view_as(p), q.grad)
        offset += p.numel()
    assert model.state_dict().keys() == twin.state_dict().keys()


def test_reference_path_and_state_round_trip(monkeypatch):
    ours, theirs = _model(3), _model(3)
    flat = FlatAdam(ours, lr=1e-2)
    monkeypatch.setattr(adam_module, "use_triton", lambda t: False)
    _train_both(ours, flat, theirs, torch.optim.Adam(theirs.parameters(), lr=1e-2), steps=3)
    other = FlatAdam(_model(3), lr=1e-2)
    other.load_state_dict(flat.state_dict())
    assert other.steps_taken == 3 and torch.equal(other.exp_avg, flat.exp_avg)


def test_bad_input():
    with pytest.raises(ValueError, match="float32"):
        FlatAdam(_model().double())
    with pytest.raises(ValueError, match="no parameters"):
        FlatAdam(nn.ReLU())
    with pytest.raises(ValueError, match="hyper-parameters"):
        FlatAdam(_model(), lr=-1.0).step()


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_gradients_replaced_outside_the_buffer_are_not_lost():
    # create_graph=True makes autograd accumulate out of place: the update must still see that gradient.
    ours, theirs = _model(4), _model(4)
    flat = FlatAdam(ours, lr=1e-2)
    reference = torch.optim.Adam(theirs.parameters(), lr=1e-2)
    for model, opt in ((ours, flat), (theirs, reference)):
        opt.zero_grad()
        _loss(model, 0).backward(create_graph=True)
        opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert_close(a, b, 1e-5)
    ours[0].weight.grad = None  # and a gradient set to None counts as zero, keeping the view
    flat.step()
    assert ours[0].weight.grad is not None and ours[0].weight.grad.data_ptr() == flat.grad.data_ptr()


@pytest.mark.parametrize("step", [1, 2, 10])
def test_bias_correction_accurate_with_gpu_math(step, gpu_math, seed):
    """At t = 1 and beta2 = 0.999, ``1 - exp(t log beta2)`` with a GPU's 2-ulp exp is off by ~1e-4 relative;
    the kernel's ``-expm1(t log beta)`` is not. One update at step ``step``, against float64 Adam."""
    g = torch.Generator().manual_seed(seed)
    n = 3000
    # param = 0 (and no weight decay): the new param is -update, with no rounding against a large param
    param, grad = torch.zeros(n), torch.randn(n, generator=g)
    exp_avg, exp_avg_sq = torch.randn(n, generator=g) * 0.1, torch.rand(n, generator=g) * 0.01
    param, grad, exp_avg, exp_avg_sq = (t.to(DEVICE) for t in (param, grad, exp_avg, exp_avg_sq))
    if step == 1:
        exp_avg.zero_(), exp_avg_sq.zero_()
    lr, beta1, beta2, eps = 2e-4, 0.5, 0.999, 1e-8
    counter = torch.tensor((step - 1) * adam_module.adam_programs(n), dtype=torch.int64, device=DEVICE)
    g64, m64, v64 = (t.double().cpu() for t in (grad, exp_avg, exp_avg_sq))
    m64 = beta1 * m64 + (1 - beta1) * g64
    v64 = beta2 * v64 + (1 - beta2) * g64 * g64
    update64 = lr / (1 - beta1 ** step) * m64 / (v64.sqrt() / (1 - beta2 ** step) ** 0.5 + eps)
    before = ops.kernel_launches["_adam_step_kernel"]
    ops.adam_step(param, grad, exp_avg, exp_avg_sq, counter, lr, beta1, beta2, eps)
    assert ops.kernel_launches["_adam_step_kernel"] == before + 1, "the Triton kernel did not run"
    assert_close(-param, update64, 2e-6, "update")


def test_reference_bias_correction_is_accurate_too(monkeypatch):
    """The PyTorch reference path forms 1 - beta^t as -expm1(t log beta) as well (torch.pow in fp32 then
    1 - it loses 1e-4 relative at t = 1, beta2 = 0.999, on any device)."""
    monkeypatch.setattr(adam_module, "use_triton", lambda t: False)
    param, grad = torch.zeros(5), torch.ones(5)
    exp_avg, exp_avg_sq, counter = torch.zeros(5), torch.zeros(5), torch.zeros((), dtype=torch.int64)
    ops.adam_step(param, grad, exp_avg, exp_avg_sq, counter, 1e-3, 0.9, 0.999, 1e-8)
    # step 1 of Adam on a constant gradient moves every parameter by lr * 1 / (1 + eps / |g|) exactly
    assert_close(-param, torch.full((5,), 1e-3 / (1 + 1e-8), dtype=torch.float64), 1e-6, "update")


@pytest.mark.parametrize("path", ["triton", "reference"])
def test_decoupled_weight_decay_matches_adamw_and_l1_matches_its_subgradient(path, monkeypatch):
    """FlatAdam's regularisers, kernel and reference path: decoupled_weight_decay is torch.optim.AdamW's;
    l1 adds l1 * sign(w) to the gradient (checked against Adam on gradients given that term by hand)."""
    if path == "reference":
        monkeypatch.setattr(adam_module, "use_triton", lambda t: False)
    ours, decoupled = _model(5), _model(5)
    flat = FlatAdam(ours, lr=1e-2, betas=(0.5, 0.999), decoupled_weight_decay=0.1)
    _train_both(ours, flat, decoupled, torch.optim.AdamW(decoupled.parameters(), lr=1e-2, betas=(0.5, 0.999),
                                                         weight_decay=0.1), steps=4)
    ours, by_hand = _model(6), _model(6)
    flat = FlatAdam(ours, lr=1e-2, l1=0.05)
    reference = torch.optim.Adam(by_hand.parameters(), lr=1e-2)
    for step in range(4):
        for model, opt in ((ours, flat), (by_hand, reference)):
            opt.zero_grad()
            _loss(model, step).backward()
            if opt is reference:
                for p in model.parameters():
                    p.grad.add_(p.detach().sign(), alpha=0.05)
            opt.step()
    for a, b in zip(ours.parameters(), by_hand.parameters()):
        assert_close(a, b, 1e-5)
    assert flat.state_dict()["l1"] == 0.05


@pytest.mark.parametrize("n", [2500, 2048])
@pytest.mark.parametrize("moments", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_replica_adam_kernel_is_each_replicas_flatadam_arithmetic(moments, n):
    """K rows, each its own lr, betas (beta1 = 0 included) and decoupled decay, with L1: bit for bit what
    ``adam_step`` does to each row alone (the same fp32 operations, bf16 moments rounded with the same bits; the
    gradient also as 2 partial sums), the counter advancing by the whole grid; the PyTorch reference to fp32
    rounding (bf16 moments: to a bf16 step, where an fp32 rounding apart crosses a rounding threshold).
    n = 2500: three programs per row, the last one a partial block; 2048: two whole blocks, rows 16-byte aligned."""
    K = 3
    g = torch.Generator().manual_seed(0)
    lrs, betas = [1e-3, 2e-4, 5e-3], [(0.5, 0.999), (0.0, 0.9), (0.8, 0.99)]
    hyper = adam_module.replica_adam_hyper(lrs, betas, 0.1).to(DEVICE)
    param = torch.randn(K, n, generator=g).to(DEVICE)
    state = [param.clone(), torch.zeros(K, n, device=DEVICE, dtype=moments),
             torch.zeros(K, n, device=DEVICE, dtype=moments)]
    counter = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    reference = [t.clone() for t in state] + [counter.clone()]
    rows = [[param[k].clone(), torch.zeros(n, device=DEVICE, dtype=moments),
             torch.zeros(n, device=DEVICE, dtype=moments), torch.zeros((), dtype=torch.int64, device=DEVICE)]
            for k in range(K)]
    for step in range(3):
        parts = 1 + step % 2
        grad = torch.randn(K, parts, n, generator=g).to(DEVICE)
        grad = grad[:, 0] if parts == 1 else grad
        adam_module.replica_adam_step(state[0], grad, state[1], state[2], counter, hyper, 1e-8, l1=0.01,
                                      partials=parts)
        adam_module.replica_adam_step_reference(reference[0], grad if parts == 1 else grad.sum(1), reference[1],
                                                reference[2], reference[3], hyper, 1e-8, 0.01)
        for k, (p, m, v, c) in enumerate(rows):
            ops.adam_step(p, grad[k].reshape(-1).clone(), m, v, c, lrs[k], *betas[k], 1e-8, 0.0, 0.1, 0.01,
                          partials=parts)
    for k, row in enumerate(rows):
        for ours, alone in zip(state, row):
            assert torch.equal(ours[k], alone), k
    # (bf16 moments: a moment rounded the other way moves its parameter by ~lr / 256 on the next update)
    for ours, theirs, loose in zip(state, reference, (1e-4, 2 ** -7, 2 ** -7)):
        assert_close(ours.float(), theirs.float(), 1e-6 if moments == torch.float32 else loose,
                     "replica Adam against its reference")
    assert int(counter) == int(reference[3]) == 3 * K * adam_module.adam_programs(n)
    with pytest.raises(ValueError, match="hyper must be"):
        adam_module.replica_adam_step(state[0], grad, state[1], state[2], counter, hyper[:2], 1e-8)
    with pytest.raises(ValueError, match=f"grad must be a contiguous \\(3, 2, {n}\\)"):
        adam_module.replica_adam_step(state[0], grad, state[1], state[2], counter, hyper, 1e-8, partials=2)


# -- bf16 moments, stochastically rounded -------------------------------------------------------------------

def _bf16_neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bf16 values either side of fp32 ``x`` (toward zero, away from zero; equal where ``x`` is one)."""
    kept = x.view(torch.int32) & ~0xFFFF
    exact = kept == x.view(torch.int32)
    return kept.view(torch.float32), torch.where(exact, kept, kept + 0x10000).view(torch.float32)


def test_stochastic_rounding_lands_on_a_neighbour_and_is_unbiased(seed):
    """Every rounding of ``x`` is one of its two neighbouring bf16 values, up with probability equal to its
    distance from the one toward zero in units of the gap (2,000 keys: each element's count of rounding-ups
    within 6 binomial standard deviations); bf16 values, zeros and infinities stay; NaN stays NaN."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(600, generator=g) * 10.0 ** torch.randint(-30, 31, (600,), generator=g)
    x = torch.cat([x, torch.tensor([0.0, -0.0, 1.0, -1.5, 3.0e38, 1e-40, float("inf"), -float("inf"), float("nan")])])
    index = torch.arange(x.numel())
    keys = 2000
    draws = torch.stack([adam_module.stochastic_round_bf16(x, index, key).float() for key in range(keys)])
    finite = x.isfinite()
    down, up = _bf16_neighbours(x)
    assert ((draws == down) | (draws == up))[:, finite].all()
    gap = (up.double() - down.double())[finite]
    p = torch.where(gap > 0, (x.double()[finite] - down.double()[finite]) / gap.clamp(min=1e-300), 0.0)
    ups = (draws[:, finite] == up[finite]).sum(0).double() * (gap > 0)
    assert ((ups - keys * p).abs() <= 6 * (keys * p * (1 - p)).sqrt() + 2).all()
    assert (draws[:, ~finite & ~x.isnan()] == x[~finite & ~x.isnan()]).all() and draws[:, -1].isnan().all()
    assert (draws[:, -9:-5] == x[-9:-5]).all(), "exact bf16 values and zeros must not move"


def test_bf16_second_moment_tracks_fp32_where_round_to_nearest_stalls():
    """v = 0.999 v + 0.001 g^2 from 0 with g = 1, 3,000 updates (exactly 1 - 0.999^3000 = 0.9503): stored in bf16
    with stochastic rounding its mean over 4,096 elements is within 0.5% of that; rounded to nearest it stops
    near 0.25-0.5, where 0.001 (1 - v) is below half a bf16 step. (The PyTorch reference's rounding, which the
    kernels match bit for bit: tests below.)"""
    n, steps = 4096, 3000
    param = torch.zeros(n)
    exp_avg, exp_avg_sq = torch.zeros(n, dtype=torch.bfloat16), torch.zeros(n, dtype=torch.bfloat16)
    counter = torch.zeros((), dtype=torch.int64)
    nearest = torch.zeros(n, dtype=torch.bfloat16)
    for _ in range(steps):
        adam_module.adam_step_reference(param, torch.ones(n), exp_avg, exp_avg_sq, counter, 1e-6, 0.9, 0.999,
                                        1e-8, 0.0)
        nearest = (0.999 * nearest.float() + 0.001).to(torch.bfloat16)
    exact = 1 - 0.999 ** steps
    assert abs(exp_avg_sq.double().mean().item() / exact - 1) < 5e-3
    assert abs(exp_avg.double().mean().item() - 1) < 5e-3
    assert nearest.float().max().item() < 0.6


@pytest.mark.parametrize("n", [2500, 2048, 300])
@pytest.mark.parametrize("partials", [1, 2])
def test_bf16_moments_kernel_rounds_as_its_reference(partials, n, seed):
    """``adam_step`` with bf16 moments (2500: two whole blocks and a partial one; 2048: whole blocks only; 300: a
    partial block only; L2, decoupled decay and L1), four updates, each from the state the last left. The
    moments: the fp32 moments the same kernel computes with that state widened (``wide``), rounded by
    ``stochastic_round_bf16`` bit for bit (so each a bf16 neighbour of them), and the PyTorch reference's to a bf16
    step (its fp32 arithmetic may round an ulp apart: then the rounding may fall the other way). The parameters:
    ``wide``'s exactly (the moments are computed in fp32)."""
    g = torch.Generator().manual_seed(seed)
    param = torch.randn(n, generator=g).to(DEVICE)
    state = [param, torch.zeros(n, dtype=torch.bfloat16, device=DEVICE),
             torch.zeros(n, dtype=torch.bfloat16, device=DEVICE), torch.zeros((), dtype=torch.int64, device=DEVICE)]
    settings = (1e-3, 0.5, 0.999, 1e-8, 0.01, 0.1, 0.001)
    for step in range(4):
        grad = (torch.randn(partials, n, generator=g) * 10.0 ** torch.randn(partials, n, generator=g)).to(DEVICE)
        reference = [t.clone() for t in state]
        wide = [state[0].clone(), state[1].float(), state[2].float(), state[3].clone()]
        ops.adam_step(*wide[:1], grad.reshape(-1), *wide[1:], *settings, partials=partials)
        ops.adam_step(*state[:1], grad.reshape(-1), *state[1:], *settings, partials=partials)
        adam_module.adam_step_reference(*reference[:1], grad.sum(0), *reference[1:], *settings)
        assert torch.equal(state[0], wide[0]), "the update reads the moments widened, computes in fp32"
        index = torch.arange(n, device=DEVICE)
        for moment, (stored, fp32, theirs) in enumerate(zip(state[1:3], wide[1:3], reference[1:3])):
            down, up = _bf16_neighbours(fp32)
            assert not stored.isnan().any() and ((stored.float() == down) | (stored.float() == up)).all()
            assert torch.equal(stored, adam_module.stochastic_round_bf16(fp32, index, 2 * (step + 1) + moment))
            assert_close(stored.float(), theirs.float(), 2 ** -7, f"step {step} moment {moment} against the reference")
        assert_close(state[0], reference[0], 1e-6, f"step {step} parameters against the reference")
        assert int(state[3]) == int(wide[3]) == (step + 1) * adam_module.adam_programs(n)


def test_bf16_moments_options_and_refusals():
    flat = FlatAdam(_model(), lr=1e-2, state_dtype="bf16")
    assert flat.exp_avg.dtype == flat.exp_avg_sq.dtype == torch.bfloat16 and flat.data.dtype == torch.float32
    with pytest.raises(ValueError, match="state_dtype must be"):
        FlatAdam(_model(), state_dtype=torch.float16)
    n = 64
    p, grad, counter = torch.zeros(n), torch.zeros(n), torch.zeros((), dtype=torch.int64)
    with pytest.raises(ValueError, match="exp_avg must be float32 or bfloat16"):
        ops.adam_step(p, grad, torch.zeros(n, dtype=torch.float16), torch.zeros(n, dtype=torch.float16), counter,
                      1e-3, 0.9, 0.999, 1e-8)
    with pytest.raises(ValueError, match="exp_avg_sq must be a contiguous 1-D float32 or bfloat16 \\(exp_avg's"):
        ops.adam_step(p, grad, torch.zeros(n, dtype=torch.bfloat16), torch.zeros(n), counter, 1e-3, 0.9, 0.999, 1e-8)
    with pytest.raises(ValueError, match="flat=True"):
        from fastgan.optim import ReplicaAdam
        ReplicaAdam(nn.Module(), [1e-3], [(0.5, 0.999)], state_dtype="bf16")
