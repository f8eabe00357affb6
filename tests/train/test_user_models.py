"""GANs as users write them: a discriminator ending in nn.Sigmoid (for nn.BCELoss) is trained on its logits, a
generator that cannot reach the data's range is warned about, on every backend."""
import copy
import logging

import pytest
import torch
from torch import nn

from fastgan import GANTrainer
from fastgan.nn.adapters import final_sigmoid

FEATURES, LATENT, BATCH = 6, 4, 32


def _data(n=200):
    return torch.rand(n, FEATURES, generator=torch.Generator().manual_seed(1)) * 2 - 1   # in [-1, 1]


def _models(g_out=nn.Tanh):
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(LATENT, 16), nn.ReLU(inplace=True), nn.Linear(16, FEATURES), g_out())
    d = nn.Sequential(nn.Linear(FEATURES, 16), nn.LeakyReLU(0.2, inplace=True), nn.Linear(16, 1), nn.Sigmoid())
    return g, d


def _plain_bceloss_step(g, d, data, seed, latent, lr, betas, noise_shape=()):
    """The first step as a plain PyTorch loop writes it (nn.BCELoss on D's probabilities, D's Adam update, then G's
    loss through the updated D), on the batch and noise the trainer's RNG draws: ``(loss_d, loss_g)``."""
    rng = torch.Generator().manual_seed(seed)
    real = data[torch.randint(0, len(data), (BATCH,), generator=rng)]
    z = torch.randn(BATCH, latent, generator=rng).view(BATCH, latent, *noise_shape)
    bce, opt_d = nn.BCELoss(), torch.optim.Adam(d.parameters(), lr=lr, betas=betas)
    fake = g(z)
    real_p, fake_p = d(real), d(fake.detach())
    loss_d = bce(real_p, torch.ones_like(real_p)) + bce(fake_p, torch.zeros_like(fake_p))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    fake_p = d(fake)
    return loss_d.item(), bce(fake_p, torch.ones_like(fake_p)).item()


@pytest.fixture
def said():
    notes = []
    handler = logging.Handler()
    handler.emit = lambda record: notes.append(record.getMessage())
    logger = logging.getLogger("fastgan")
    logger.addHandler(handler)
    yield notes
    logger.removeHandler(handler)


@pytest.mark.parametrize("kernels", ["torch", "triton", "triton-mlp"])
def test_a_sigmoid_discriminator_trains_like_a_plain_bceloss_loop(kernels, said):
    """The first step's losses equal a plain PyTorch loop with nn.BCELoss on D's probabilities, on the same batch
    and noise (the trainer's RNG draws the batch's rows, then G's noise); the user's D keeps its Sigmoid."""
    g, d = _models()
    ref_g, ref_d = copy.deepcopy(g), copy.deepcopy(d)
    data, seed, lr, betas = _data(), 3, 2e-4, (0.5, 0.999)
    trainer = GANTrainer(g, d, data, batch_size=BATCH, lr=lr, betas=betas, seed=seed, kernels=kernels,
                         real_label=1.0, device="cpu")
    loss_d, loss_g = (float(v) for v in trainer.step())

    expected_d, expected_g = _plain_bceloss_step(ref_g, ref_d, data, seed, LATENT, lr, betas)
    assert loss_d == pytest.approx(expected_d, abs=1e-6), kernels
    assert loss_g == pytest.approx(expected_g, abs=1e-6), kernels
    assert trainer.discriminator is d and type(d[-1]) is nn.Sigmoid   # the user's module, still a Sigmoid D
    probabilities = trainer.discriminator(data[:5])
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert any("ends in nn.Sigmoid" in note for note in said), said


def test_a_discriminator_saying_one_half_gives_ln2():
    """The new user's check: a Sigmoid D that says 0.5 for everything gives G the loss ln 2, not 0.474."""
    g, d = _models()
    nn.init.zeros_(d[2].weight), nn.init.zeros_(d[2].bias)
    trainer = GANTrainer(g, d, _data(), batch_size=BATCH, lr=1e-12, seed=0, real_label=1.0, device="cpu")
    loss_d, loss_g = trainer.step()
    assert float(loss_g) == pytest.approx(0.6931472, abs=1e-6)
    assert float(loss_d) == pytest.approx(2 * 0.6931472, abs=1e-6)


def test_final_sigmoid_finds_only_the_output_sigmoid():
    x = torch.randn(3, FEATURES)
    _, d = _models()
    assert final_sigmoid(d, x) is d[3]

    class Viewed(nn.Module):   # the sigmoid's output through a view, as popular D's write `.view(-1, 1).squeeze(1)`
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(nn.Linear(FEATURES, 8), nn.Sigmoid(), nn.Linear(8, 1), nn.Sigmoid())

        def forward(self, x):
            return self.model(x).view(-1, 1).squeeze(1)

    viewed = Viewed()
    assert final_sigmoid(viewed, x) is viewed.model[3]
    inner = nn.Sequential(nn.Linear(FEATURES, 8), nn.Sigmoid(), nn.Linear(8, 1))   # a Sigmoid inside, logits out
    assert final_sigmoid(inner, x) is None
    assert final_sigmoid(nn.Sequential(nn.Linear(FEATURES, 1)), x) is None
    batchnorm = nn.Sequential(nn.Linear(FEATURES, 8), nn.BatchNorm1d(8), nn.Linear(8, 1), nn.Sigmoid())
    before = batchnorm[1].running_mean.clone()
    assert final_sigmoid(batchnorm, x) is batchnorm[3] and batchnorm.training
    assert torch.equal(batchnorm[1].running_mean, before)   # the probe changes no statistics


def test_sampling_guided_by_a_sigmoid_discriminator_reads_its_logits():
    g, d = _models()
    trainer = GANTrainer(g, d, _data(), batch_size=BATCH, seed=0, device="cpu")
    trainer.step()
    samples = trainer.sample(40, rejection=True)
    assert samples.shape == (40, FEATURES) and 0 < trainer.last_acceptance <= 1


def test_a_generator_that_cannot_reach_the_data_is_warned_about():
    g, d = _models(g_out=nn.Sigmoid)   # outputs in (0, 1), data in [-1, 1]
    with pytest.warns(UserWarning, match=r"ends in nn.Sigmoid, whose outputs lie in \(0, 1\), but the data spans"):
        GANTrainer(g, d, _data(), batch_size=BATCH, device="cpu")


def test_replicas_refuse_a_sigmoid_discriminator_with_the_reason():
    g, d = _models()
    with pytest.raises(ValueError, match="ends in nn.Sigmoid: drop it"):
        GANTrainer(g, d, _data(), batch_size=BATCH, replicas=2, device="cpu")


def _dcgan_28(nz=16, channels=1, pack=1):
    """A DCGAN for 28x28 images as popular GAN collections write it: noise (N, nz, 1, 1) into transposed
    convolutions with BatchNorm (its own eps and momentum) and in-place ReLUs; D with Dropout, BatchNorm, a
    Flatten, and a Sigmoid at the end."""
    torch.manual_seed(0)
    g = nn.Sequential(nn.ConvTranspose2d(nz, 32, 7, 1, 0, bias=False), nn.BatchNorm2d(32), nn.ReLU(True),
                      nn.ConvTranspose2d(32, 16, 4, 2, 1, bias=False), nn.BatchNorm2d(16, eps=1e-3, momentum=0.2),
                      nn.ReLU(True), nn.ConvTranspose2d(16, channels, 4, 2, 1), nn.Tanh())
    d = nn.Sequential(nn.Conv2d(pack * channels, 16, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(0.3),
                      nn.Conv2d(16, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.LeakyReLU(0.2, inplace=True),
                      nn.Flatten(), nn.Linear(32 * 7 * 7, 1), nn.Sigmoid())
    return g, d


class _Generator64(nn.Module):
    """DCGAN's 64x64 generator, written as a class whose forward calls its main Sequential."""

    def __init__(self, nz=8, width=4):
        super().__init__()
        layers, channels = [nn.ConvTranspose2d(nz, 8 * width, 4, 1, 0, bias=False)], 8 * width
        for _ in range(3):
            layers += [nn.BatchNorm2d(channels), nn.ReLU(True), nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1,
                                                                                     bias=False)]
            channels //= 2
        self.main = nn.Sequential(*layers, nn.BatchNorm2d(channels), nn.ReLU(True),
                                  nn.ConvTranspose2d(channels, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z):
        return self.main(z)


class _Discriminator64(nn.Module):
    """DCGAN's 64x64 discriminator, its output squeezed to (N,) as popular code does."""

    def __init__(self, width=4):
        super().__init__()
        layers, channels = [nn.Conv2d(3, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)], width
        for _ in range(3):
            layers += [nn.Conv2d(channels, 2 * channels, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * channels),
                       nn.LeakyReLU(0.2, inplace=True)]
            channels *= 2
        self.main = nn.Sequential(*layers, nn.Conv2d(channels, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


@pytest.mark.parametrize("kernels", ["torch", "triton", "triton-mlp"])
@pytest.mark.parametrize("model", ["dcgan28", "dcgan28-pack2", "dcgan64"])
def test_conv_gans_train_on_every_backend(kernels, model):
    pack = 2 if model.endswith("pack2") else 1
    if model == "dcgan64":
        g, d = _Generator64(), _Discriminator64()
        images = torch.rand(24, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    else:
        g, d = _dcgan_28(pack=pack)
        images = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 2 - 1
    before = {name: p.detach().clone() for name, p in [*g.named_parameters(), *d.named_parameters()]}
    trainer = GANTrainer(g, d, images, batch_size=8, pack=pack, lr=1e-3, seed=0, kernels=kernels, device="cpu")
    for _ in range(3):
        loss_d, loss_g = trainer.step()
        assert torch.isfinite(loss_d) and torch.isfinite(loss_g)
    after = dict([*trainer.generator.named_parameters(), *trainer.discriminator.named_parameters()])
    assert all(not torch.equal(before[name], after[name]) for name in before), "every parameter trained"
    samples = trainer.sample(5)
    assert samples.shape == (5, *images.shape[1:]) and samples.abs().max() <= 1
    assert trainer.discriminator is d and type(list(d.modules())[-1]) is nn.Sigmoid


@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_a_dcgan_step_equals_a_plain_pytorch_loop(kernels):
    """The DCGAN's first step (BatchNorm in train mode, Dropout, the Sigmoid folded) equals a plain PyTorch loop
    with nn.BCELoss on the same images, noise and dropout masks."""
    g, d = _dcgan_28()
    ref_g, ref_d = copy.deepcopy(g), copy.deepcopy(d)
    images = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 2 - 1
    trainer = GANTrainer(g, d, images, batch_size=BATCH, lr=2e-4, betas=(0.5, 0.999), seed=7, kernels=kernels,
                         real_label=1.0, device="cpu")
    torch.manual_seed(11)   # the dropout masks
    loss_d, loss_g = (float(v) for v in trainer.step())

    torch.manual_seed(11)
    expected_d, expected_g = _plain_bceloss_step(ref_g, ref_d, images, 7, 16, 2e-4, (0.5, 0.999), noise_shape=(1, 1))
    assert loss_d == pytest.approx(expected_d, abs=1e-6)
    assert loss_g == pytest.approx(expected_g, abs=1e-6)


def test_image_data_with_mlp_models_stays_rows_and_fused():
    """Images given to MLP models reach D as rows (as they always have), and triton-mlp's fused step still runs."""
    from fastgan import MLPDiscriminator, MLPGenerator
    images = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for kernels, path in (("torch", "generic"), ("triton-mlp", "fused")):
        torch.manual_seed(0)
        trainer = GANTrainer(MLPGenerator(latent_dim=4, hidden=(16,), out_dim=64),
                             MLPDiscriminator(in_dim=64, hidden=(16,)), images, batch_size=16, kernels=kernels,
                             device="cpu")
        loss_d, loss_g = trainer.step()
        assert trainer.step_path == path and torch.isfinite(loss_d) and torch.isfinite(loss_g)
