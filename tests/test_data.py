import gzip

import numpy as np
import pytest
import torch

from fastgan import data


def test_digits_embedded_default():
    x = data.digits()
    assert x.shape == (1797, 784) and x.dtype == torch.float32
    assert x.min().item() >= 0.0 and x.max().item() <= 1.0 and x.max().item() > 0.9
    assert data.digits(size=8).shape == (1797, 64)


def test_ring_has_eight_distinct_modes_on_the_circle():
    centers = data.ring_centers(8, 1.0)
    assert centers.shape == (8, 2)
    assert torch.cdist(centers, centers).add(torch.eye(8)).min().item() > 0.7, "modes must be distinct"
    assert torch.allclose(centers.norm(dim=1), torch.ones(8))
    x = data.gaussian_ring(8000, std=0.01)
    nearest = torch.cdist(x, centers).argmin(dim=1)
    counts = torch.bincount(nearest, minlength=8)
    assert (counts > 800).all(), f"every mode must be sampled about equally: {counts.tolist()}"
    assert torch.cdist(x, centers).min(dim=1).values.max().item() < 0.06  # within 6 std


def test_grid_has_25_modes_at_even_coordinates():
    centers = data.grid_centers()
    assert centers.shape == (25, 2)
    assert sorted(set(centers[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    x = data.gaussian_grid(10_000, std=0.05)
    assert torch.bincount(torch.cdist(x, centers).argmin(dim=1), minlength=25).min().item() > 250


def test_mixtures_are_seeded():
    assert torch.equal(data.gaussian_ring(100, seed=3), data.gaussian_ring(100, seed=3))
    assert not torch.equal(data.gaussian_ring(100, seed=3), data.gaussian_ring(100, seed=4))


def test_from_tensor_flattens_and_rejects_bad_data():
    assert data.from_tensor(np.zeros((4, 2, 3))).shape == (4, 6)
    with pytest.raises(ValueError, match="NaN or inf.*sample 2"):
        data.from_tensor(torch.tensor([[0.0], [1.0], [float("nan")]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        data.from_tensor(torch.tensor([[0.0], [float("inf")]]))
    with pytest.raises(ValueError, match="shape"):
        data.from_tensor(torch.zeros(5))
    with pytest.raises(ValueError, match="empty"):
        data.from_tensor(torch.zeros(0, 3))
    with pytest.raises(TypeError, match="real numbers"):
        data.from_tensor(torch.zeros(2, 2, dtype=torch.complex64))


def _idx_bytes(images: np.ndarray) -> bytes:
    n, rows, cols = images.shape
    header = b"".join(v.to_bytes(4, "big") for v in (0x00000803, n, rows, cols))
    return header + images.astype(np.uint8).tobytes()


@pytest.mark.parametrize("layout", ["plain", "gzip", "torchvision"])
def test_mnist_reads_idx_files(tmp_path, layout):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28))
    raw = _idx_bytes(images)
    if layout == "plain":
        (tmp_path / "train-images-idx3-ubyte").write_bytes(raw)
    elif layout == "gzip":
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    else:
        (tmp_path / "MNIST" / "raw").mkdir(parents=True)
        (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(raw)
    x = data.mnist(tmp_path)
    assert x.shape == (3, 784)
    assert torch.allclose(x, torch.from_numpy(images.reshape(3, 784) / 255.0).float())


def test_mnist_missing_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*not found under"):
        data.mnist(tmp_path)


def test_mnist_truncated_or_corrupt(tmp_path):
    raw = _idx_bytes(np.zeros((3, 28, 28)))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(ValueError, match="truncated"):
        data.mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + raw[4:]))
    with pytest.raises(ValueError, match="not an IDX image file"):
        data.mnist(tmp_path)


def test_load_by_name():
    assert data.load("ring").shape == (100_000, 2)
    with pytest.raises(ValueError, match="needs --data-root"):
        data.load("mnist")
    with pytest.raises(ValueError, match="unknown data set"):
        data.load("cifar")
