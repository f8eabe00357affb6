"""Each fused op, forward and forward + backward, beside the PyTorch ops it replaces."""
import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICE
from fastgan import ops
from fastgan.optim import FlatAdam

# the classic GAN's layers at batch 128 (GPU) or a small batch (CPU: the interpreter is slow)
BATCH = 128 if DEVICE == "cuda" else 16
LAYERS = [(100, 128, "leaky_relu"), (128, 784, "sigmoid"), (784, 128, "leaky_relu")] if DEVICE == "cuda" \
    else [(32, 32, "leaky_relu"), (32, 64, "sigmoid")]
IMPLEMENTATIONS = {"fastgan": ops.fused_linear, "torch": ops.fused_linear_reference}


def _layer(k, n):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, k, generator=g).to(DEVICE).requires_grad_()
    w = (torch.randn(n, k, generator=g) / k ** 0.5).to(DEVICE).requires_grad_()
    b = torch.randn(n, generator=g).to(DEVICE).requires_grad_()
    return x, w, b, torch.randn(BATCH, n, generator=g).to(DEVICE)


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("layer", LAYERS, ids=lambda l: f"{l[0]}x{l[1]}-{l[2]}")
def test_fused_linear(timed, layer, implementation, mode):
    k, n, activation = layer
    x, w, b, dy = _layer(k, n)
    fn = IMPLEMENTATIONS[implementation]

    def forward():
        with torch.no_grad():
            fn(x, w, b, activation, 0.2)

    def forward_backward():
        x.grad = w.grad = b.grad = None
        fn(x, w, b, activation, 0.2).backward(dy)
    timed(f"fused_linear {mode} {k}->{n} {activation}", forward if mode == "fwd" else forward_backward)


@pytest.mark.parametrize("implementation", ["fastgan", "torch"])
def test_sigmoid_bce(timed, implementation):
    logits = torch.randn(BATCH, 1, device=DEVICE, requires_grad=True)
    target = torch.full((BATCH, 1), 0.9, device=DEVICE)

    def step():
        logits.grad = None
        loss = (ops.sigmoid_bce_with_logits(logits, 0.9) if implementation == "fastgan"
                else F.binary_cross_entropy_with_logits(logits, target))
        loss.backward()
    timed("sigmoid_bce fwd+bwd", step)


@pytest.mark.parametrize("implementation", ["fastgan", "torch"])
def test_linear_bce_head(timed, implementation):
    h = torch.randn(BATCH, 128, device=DEVICE, requires_grad=True)
    w = (torch.randn(1, 128, device=DEVICE) / 12).requires_grad_()
    b = torch.zeros(1, device=DEVICE, requires_grad=True)

    def step():
        h.grad = w.grad = b.grad = None
        loss = (ops.linear_bce_head(h, w, b, 0.9) if implementation == "fastgan" else
                F.binary_cross_entropy_with_logits(F.linear(h, w, b), torch.full((BATCH, 1), 0.9, device=DEVICE)))
        loss.backward()
    timed("linear_bce_head fwd+bwd", step)


@pytest.mark.parametrize("implementation", ["flat_adam", "torch_adam", "torch_fused_adam"])
def test_adam_step(timed, implementation):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.Linear(128, 128), torch.nn.Linear(128, 1))
    model = model.to(DEVICE)
    optimizer = FlatAdam(model, lr=2e-4, betas=(0.5, 0.999)) if implementation == "flat_adam" else \
        torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=implementation == "torch_fused_adam")
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    timed("adam step (D of the classic GAN)", optimizer.step)
