"""FashionMNIST and read_idx on small IDX files written here (gzipped and plain)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import idx_bytes
from scalemix.datasets import FashionMNIST, read_idx
from scalemix.datasets.fashion_mnist import FASHION_MNIST_ROOT

Writer = Callable[..., np.ndarray]


@pytest.mark.parametrize(
    "dtype,code", [(np.uint8, 0x08), (np.int16, 0x0B), (np.float32, 0x0D), (np.float64, 0x0E)]
)
def test_read_idx_round_trip(tmp_path: Path, dtype: type, code: int) -> None:
    array = (
        (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
        if dtype != np.uint8
        else np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    )
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(array, code))
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    bad.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">i", 3) + b"abc")
    with pytest.raises(ValueError, match="unknown IDX element type 0x07"):
        read_idx(bad)
    bad.write_bytes(idx_bytes(np.zeros((3, 2), np.uint8), 0x08)[:-1])
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        read_idx(bad)


@pytest.mark.parametrize("gz", [True, False])
def test_pad_to_32_maps_pixels_exactly(
    tmp_path: Path, gz: bool, write_fashion_mnist: Writer
) -> None:
    images = write_fashion_mnist(tmp_path, "test", 5, gz=gz)
    data = FashionMNIST(tmp_path, split="test")
    assert len(data) == 5 and data.labels.dtype == torch.int64
    x = data[3]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, 2:30, 2:30], torch.from_numpy(images[3]).float() / 127.5 - 1)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (x[0][border] == -1).all()
    torch.testing.assert_close(data.tensors(0, 5)[3], x)
    torch.testing.assert_close(data[-1], data.tensors()[4])


def test_bilinear_resize_channels_and_indices(tmp_path: Path, write_fashion_mnist: Writer) -> None:
    images = write_fashion_mnist(tmp_path, "train", 6)
    data = FashionMNIST(tmp_path, image_size=16, resize="bilinear", channels=3, indices=[4, 1])
    assert len(data) == 2 and data[0].shape == (3, 16, 16)
    ref = F.interpolate(
        torch.from_numpy(images[[4]]).float()[:, None] / 127.5 - 1,
        size=(16, 16),
        mode="bilinear",
        antialias=True,
    )
    torch.testing.assert_close(data[0][0], ref[0, 0].clamp(-1, 1))
    assert torch.equal(data[0][0], data[0][2])


def test_missing_files_name_the_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        FashionMNIST(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        FashionMNIST(tmp_path)
    assert FASHION_MNIST_ROOT == "/usr/share/datasets/fashion-mnist"


def test_bad_options(tmp_path: Path, write_fashion_mnist: Writer) -> None:
    write_fashion_mnist(tmp_path, "train", 3, gz=False)
    with pytest.raises(ValueError, match="split"):
        FashionMNIST(tmp_path, split="valid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resize='pad' needs image_size >= 28"):
        FashionMNIST(tmp_path, image_size=16)
    with pytest.raises(ValueError, match="indices must lie in"):
        FashionMNIST(tmp_path, indices=[3])
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        FashionMNIST(tmp_path, image_size=0)


@pytest.mark.skipif(
    not Path(FASHION_MNIST_ROOT).is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_installed_package_has_the_standard_splits() -> None:
    test = FashionMNIST(split="test")
    assert len(test) == 10_000
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def test_labels_true_yields_image_label_pairs(tmp_path: Path, write_fashion_mnist: Writer) -> None:
    """``labels=True``: items ``(image, label)``, the label read from the label file as
    int64; the image equals the unlabelled data set's; a DataLoader batches the pairs."""
    write_fashion_mnist(tmp_path, "test", 7, gz=False)
    truth = read_idx(tmp_path / "t10k-labels-idx1-ubyte").astype(np.int64)
    plain = FashionMNIST(tmp_path, split="test")
    data = FashionMNIST(tmp_path, split="test", labels=True, indices=[5, 0, 2])
    assert len(data) == 3 and data.with_labels and not plain.with_labels
    for pos, i in enumerate([5, 0, 2]):
        image, label = data[pos]
        assert label.dtype == torch.int64 and label.shape == ()
        assert int(label) == truth[i]
        assert torch.equal(image, plain[i])
    loader = torch.utils.data.DataLoader(data, batch_size=3)
    images, labels = next(iter(loader))
    assert images.shape == (3, 1, 32, 32) and labels.dtype == torch.int64
    assert labels.tolist() == [truth[5], truth[0], truth[2]]
    assert "labels=True" in repr(data)
    with pytest.raises(ValueError, match="labels must be a bool"):
        FashionMNIST(tmp_path, split="test", labels=1)  # type: ignore[arg-type]


@pytest.mark.skipif(
    not Path(FASHION_MNIST_ROOT).is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_installed_package_labels_match_the_label_file() -> None:
    data = FashionMNIST(split="test", labels=True, indices=range(50))
    truth = read_idx(Path(FASHION_MNIST_ROOT) / "t10k-labels-idx1-ubyte.gz")[:50]
    assert [int(data[i][1]) for i in range(50)] == truth.astype(np.int64).tolist()
