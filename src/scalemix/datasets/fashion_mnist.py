r"""Fashion-MNIST from its standard IDX files: real photographs that install as a package.

Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017, arXiv:1708.07747; MIT licence) holds
70,000 grayscale 28 x 28 product photographs of Zalando articles in 10 classes
(:data:`FASHION_MNIST_CLASSES`): 60,000 for training and a fixed test split of 10,000.
Debian ships the four files in the package ``dataset-fashion-mnist``
(``apt-get install dataset-fashion-mnist``) under :data:`FASHION_MNIST_ROOT`; any folder
holding the same files, gzipped or not, works too. Nothing is downloaded.

Preprocessing (:class:`FashionMNIST`): the uint8 pixels ``u`` are mapped to
``x = u / 127.5 - 1`` in ``[-1, 1]``, then either *padded* with the background value
``-1`` (``u = 0``, the photographs' black border) to ``image_size`` (default: 28 -> 32,
2 pixels on every side, no resampling) or *resized* with antialiased bilinear
interpolation (``F.interpolate(..., antialias=True)``) when ``resize="bilinear"``.

The IDX format (LeCun et al.): a big-endian magic ``0x0000 TT NN`` with the element
type ``TT`` (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D``
float32, ``0x0E`` float64) and the number of dimensions ``NN``, then ``NN`` big-endian
int32 sizes, then the elements in C order (:func:`read_idx`).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset

from .._utils import check_choice

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_ROOT",
    "FashionMNIST",
    "FashionMNISTSplit",
    "read_idx",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the IDX files.
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"

FashionMNISTSplit = Literal["train", "test"]

#: Image and label file of each split (each may also carry a ``.gz`` suffix).
FASHION_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Class names, indexed by label.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_IDX_TYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_INSTALL_HINT = (
    "install Debian's package (apt-get install dataset-fashion-mnist, which puts the files "
    f"in {FASHION_MNIST_ROOT}) or pass root= a folder holding them"
)

ResizeMode = Literal["pad", "bilinear"]


def read_idx(path: str | os.PathLike[str]) -> NDArray[np.generic]:
    """Read an IDX file (gzipped when its name ends in ``.gz``) into a numpy array.

    Args:
        path: the file.

    Returns:
        The array, of the shape and element type the header gives (native byte order).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed header, an unknown element type, or a size that does not
            match the header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (the magic must start with two zero bytes)")
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_TYPES)
        raise ValueError(f"{path}: unknown IDX element type 0x{code:02X}; known: {known}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions)")
    shape = tuple(int(s) for s in np.frombuffer(data, ">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: the header gives shape {shape} ({expected} bytes) but the file holds "
            f"{len(data) - header} bytes after it"
        )
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _find(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {name}(.gz) not found in {str(root)!r}: " + _INSTALL_HINT
    )


class FashionMNIST(Dataset[Any]):
    """Fashion-MNIST images as float tensors of shape ``(channels, s, s)`` in ``[-1, 1]``.

    See the module docstring for the source, licence and preprocessing. The split
    ``"test"`` (the data set's fixed 10,000 test images) is the held-out set for
    evaluation; ``indices`` selects a fixed subset of a split (e.g. two disjoint halves
    of the test split for a real-vs-real floor). With ``labels=True`` every item is a
    pair ``(image, label)``, the label an int64 0-d tensor, for conditional training
    (a ``DataLoader`` batches it into ``(images, labels)``, what
    :func:`~scalemix.training.train_images` takes with ``labels=True``).

    Args:
        root: folder with the IDX files (default :data:`FASHION_MNIST_ROOT`).
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        image_size: side ``s`` of the returned images.
        resize: ``"pad"`` (background padding, ``s >= 28``) or ``"bilinear"``.
        channels: channels of the returned images (the gray value is repeated).
        indices: optional positions within the split to keep, in this order.
        labels: yield ``(image, label)`` pairs instead of images.

    Attributes:
        images: uint8 tensor ``(n, 28, 28)`` of the kept images.
        labels: int64 tensor ``(n,)`` of their classes (:data:`FASHION_MNIST_CLASSES`).
        with_labels: whether items are ``(image, label)`` pairs (the ``labels`` argument).

    Raises:
        FileNotFoundError: the files are missing (the message names the apt package).
        ValueError: an unknown split or resize mode, a size ``< 28`` with ``"pad"``, a
            non-positive size or channel count, out-of-range ``indices``, or image and
            label files that disagree.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        split: FashionMNISTSplit = "train",
        image_size: int = 32,
        resize: ResizeMode = "pad",
        channels: int = 1,
        indices: Sequence[int] | None = None,
        labels: bool = False,
    ) -> None:
        check_choice("split", split, get_args(FashionMNISTSplit))
        check_choice("resize", resize, get_args(ResizeMode))
        for name, value in (("image_size", image_size), ("channels", channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.root: Path = Path(FASHION_MNIST_ROOT if root is None else root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"Fashion-MNIST folder {str(self.root)!r} does not exist: " + _INSTALL_HINT
            )
        if not isinstance(labels, bool):
            raise ValueError(f"labels must be a bool, got {labels!r}")
        self.with_labels: bool = labels
        image_file, label_file = (_find(self.root, n) for n in FASHION_MNIST_FILES[split])
        images, classes = read_idx(image_file), read_idx(label_file)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"{image_file}: expected uint8 images (n, h, w), got {images.shape}")
        if classes.shape != images.shape[:1]:
            raise ValueError(
                f"{label_file} holds {classes.shape} labels for {images.shape[0]} images"
            )
        height, width = images.shape[1:]
        if resize == "pad" and image_size < max(height, width):
            raise ValueError(
                f"resize='pad' needs image_size >= {max(height, width)}, got {image_size}; "
                "use resize='bilinear' for smaller images"
            )
        if indices is not None:
            order = np.asarray(list(indices), dtype=np.int64)
            if order.ndim != 1 or (
                order.size and not (order.min() >= 0 and order.max() < len(images))
            ):
                raise ValueError(f"indices must lie in [0, {len(images)}) for split {split!r}")
            images, classes = images[order], classes[order]
        self.split: FashionMNISTSplit = split
        self.image_size: int = image_size
        self.resize: ResizeMode = resize
        self.channels: int = channels
        self.images: Tensor = torch.from_numpy(np.ascontiguousarray(images))
        self.labels: Tensor = torch.from_numpy(classes.astype(np.int64))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _prepare(self, pixels: Tensor) -> Tensor:
        """``(n, h, w)`` uint8 -> ``(n, channels, s, s)`` float32 in ``[-1, 1]``."""
        x = pixels.to(torch.float32).unsqueeze(1) / 127.5 - 1.0
        s = self.image_size
        if self.resize == "pad":
            dh, dw = s - x.shape[-2], s - x.shape[-1]
            x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=-1.0)
        elif x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
            x = x.clamp(-1.0, 1.0)
        return x.expand(-1, self.channels, -1, -1).contiguous()

    def __getitem__(self, index: int) -> Any:
        """Image ``index``: float32 ``(channels, image_size, image_size)`` in ``[-1, 1]``;
        with ``labels=True`` the pair ``(image, label)``, ``label`` an int64 0-d tensor.

        Raises:
            IndexError: ``index`` out of range.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image = self._prepare(self.images[index][None])[0]
        return (image, self.labels[index]) if self.with_labels else image

    def tensors(self, start: int = 0, stop: int | None = None) -> Tensor:
        """Images ``start:stop`` at once, ``(n, channels, s, s)`` (faster than indexing)."""
        return self._prepare(self.images[start:stop])

    def __repr__(self) -> str:
        return (
            f"FashionMNIST(root={str(self.root)!r}, split={self.split!r}, "
            f"image_size={self.image_size}, resize={self.resize!r}, n={len(self)}"
            + (", labels=True)" if self.with_labels else ")")
        )
