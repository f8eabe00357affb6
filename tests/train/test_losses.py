"""Losses against values computed by hand: BCE(x, t) = -t log s(x) - (1 - t) log(1 - s(x)), s = sigmoid."""
import math

import pytest
import torch

from fastgan import ops
from fastgan.train.losses import discriminator_loss, generator_loss


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


REAL, FAKE = [2.0, -1.0], [0.5, -3.0]


def hand_d_loss(real_label):
    real = sum(-real_label * math.log(sigmoid(v)) - (1 - real_label) * math.log(1 - sigmoid(v)) for v in REAL) / 2
    fake = sum(-math.log(1 - sigmoid(v)) for v in FAKE) / 2
    return real + fake


@pytest.mark.parametrize("bce", [None, ops.sigmoid_bce_with_logits], ids=["torch", "fused"])
@pytest.mark.parametrize("real_label", [1.0, 0.9])
def test_discriminator_loss_by_hand(bce, real_label):
    kwargs = {"bce": bce} if bce else {}
    value = discriminator_loss(torch.tensor([REAL]).T, torch.tensor([FAKE]).T, real_label, **kwargs)
    assert value.item() == pytest.approx(hand_d_loss(real_label), rel=1e-6)


@pytest.mark.parametrize("bce", [None, ops.sigmoid_bce_with_logits], ids=["torch", "fused"])
def test_non_saturating_generator_loss_by_hand(bce):
    kwargs = {"bce": bce} if bce else {}
    value = generator_loss(torch.tensor([FAKE]).T, **kwargs)
    expected = sum(-math.log(sigmoid(v)) for v in FAKE) / 2
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # Non-saturating: a confident D (very negative logits) still gives G a strong gradient (-1 per sample).
    logits = torch.full((4, 1), -20.0, requires_grad=True)
    generator_loss(logits, **kwargs).backward()
    assert torch.allclose(logits.grad, torch.full((4, 1), -0.25), atol=1e-6)


@pytest.mark.parametrize("label", [0.0, 1.5, "1"])
def test_bad_real_label(label):
    with pytest.raises(ValueError, match="real_label"):
        discriminator_loss(torch.zeros(2, 1), torch.zeros(2, 1), label)
