r"""Image datasets: CelebA from its folder layout, Fashion-MNIST, and a synthetic stand-in.

:class:`FashionMNIST` (defined in :mod:`scalemix.datasets.fashion_mnist`) reads the real
Fashion-MNIST photographs from the IDX files of Debian's ``dataset-fashion-mnist``
package (or any folder holding them). :class:`CelebAFolder` reads the aligned-and-cropped
CelebA release (Liu et al., 2015) from a folder the user provides; nothing is
downloaded. :class:`SyntheticImages` draws smooth random scenes (a colour gradient and
soft ellipses) for smoke runs and tests. All return float32 tensors ``(c, s, s)`` in
``[-1, 1]``, the range the diffusion models of :mod:`scalemix` are trained on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._utils import check_choice

__all__ = [
    "CELEBA_LAYOUT",
    "CelebAFolder",
    "CelebASplit",
    "SyntheticImages",
]

CelebASplit = Literal["train", "valid", "test", "all"]

#: The folder layout :class:`CelebAFolder` expects (the official "Align&Cropped" release).
CELEBA_LAYOUT = (
    "root/img_align_celeba/000001.jpg ... 202599.jpg and root/list_eval_partition.txt "
    "(lines '000001.jpg 0', 0 = train, 1 = valid, 2 = test); the Kaggle copy "
    "(root/img_align_celeba/img_align_celeba/, root/list_eval_partition.csv) also works"
)

_SPLIT_CODES: dict[str, int] = {"train": 0, "valid": 1, "test": 2}
_PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")
_EDGE_WIDTH = 1.0 / 16


def _pil_image() -> Any:
    """Import ``PIL.Image`` lazily, naming the extra that provides it."""
    try:
        from PIL import Image
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "reading image files needs Pillow: pip install 'scalemix[examples]'"
        ) from err
    return Image


def _check_size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _image_dir(root: Path) -> Path:
    """``root/img_align_celeba`` (or the nested Kaggle copy), else a clear error."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"CelebA root {str(root)!r} is not a directory; expected {CELEBA_LAYOUT}"
        )
    images = root / "img_align_celeba"
    if not images.is_dir():
        raise FileNotFoundError(
            f"no folder 'img_align_celeba' in {str(root)!r}; expected {CELEBA_LAYOUT}"
        )
    nested = images / "img_align_celeba"
    return nested if nested.is_dir() else images


def _read_partition(path: Path) -> list[tuple[str, int]]:
    """Parse ``name code`` (or ``name,code``) lines; a first line without ``.jpg`` is a header."""
    entries: list[tuple[str, int]] = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        if number == 1 and not fields[0].lower().endswith(".jpg"):
            continue  # CSV header "image_id,partition"
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(
                f"{path}:{number}: expected '<image>.jpg <0|1|2>', got {line.strip()!r}"
            )
        entries.append((fields[0], int(fields[1])))
    if not entries:
        raise ValueError(f"the partition file {path} lists no images")
    return entries


class CelebAFolder(Dataset[Tensor]):
    """CelebA images from the standard folder layout, centre-cropped and resized.

    Each item is the JPEG ``img_align_celeba/<name>``, converted to RGB, cropped to the
    centred ``crop_size x crop_size`` square and resized to ``image_size`` with Pillow's
    bicubic filter (antialiased: its support widens with the downscaling factor; it sees
    only the crop, so pixels outside it never leak in at the borders), then
    mapped from ``{0, ..., 255}`` to ``[-1, 1]`` by ``u / 127.5 - 1``. The default crop
    of 140 px on the 178 x 218 aligned images keeps the face and drops most of the
    background, the usual choice for 64 px CelebA generative models; ``crop_size=None``
    takes the largest centred square (178 px). The crop box is
    ``((w - c) // 2, (h - c) // 2)`` to ``+ c``.

    Splits follow ``list_eval_partition.txt`` (0 = train, 162,770 images; 1 = valid,
    19,867; 2 = test, 19,962). ``split="all"`` uses every listed image, or every
    ``*.jpg`` in the image folder when there is no partition file. The dataset is
    deterministic: no augmentation is applied (flip batches in the training loop).

    Args:
        root: folder laid out as :data:`CELEBA_LAYOUT`.
        split: ``"train"``, ``"valid"``, ``"test"`` or ``"all"``.
        image_size: side ``s`` of the returned images.
        crop_size: side of the centred square crop in source pixels; ``None`` for the
            largest one.

    Raises:
        FileNotFoundError: the folder, its image folder or (for a split other than
            ``"all"``) its partition file is missing, or the split's first image is.
        ValueError: an unknown split, a non-positive size, or a malformed partition file.
        ModuleNotFoundError: Pillow is not installed (``scalemix[examples]``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split: CelebASplit = "train",
        image_size: int = 64,
        crop_size: int | None = 140,
    ) -> None:
        check_choice("split", split, get_args(CelebASplit))
        self.image_size: int = _check_size("image_size", image_size)
        self.crop_size: int | None = (
            None if crop_size is None else _check_size("crop_size", crop_size)
        )
        self.split: CelebASplit = split
        _pil_image()
        self.root: Path = Path(root)
        self.image_dir: Path = _image_dir(self.root)
        partition = next(
            (self.root / n for n in _PARTITION_FILES if (self.root / n).is_file()), None
        )
        if partition is None:
            if split != "all":
                raise FileNotFoundError(
                    f"no partition file (list_eval_partition.txt) in {str(self.root)!r}, "
                    f"needed for split={split!r}; expected {CELEBA_LAYOUT}"
                )
            names = sorted(p.name for p in self.image_dir.glob("*.jpg"))
        else:
            entries = _read_partition(partition)
            code = _SPLIT_CODES.get(split)
            names = [name for name, c in entries if code is None or c == code]
        if not names:
            raise FileNotFoundError(
                f"split {split!r} has no images in {str(self.image_dir)!r}; "
                f"expected {CELEBA_LAYOUT}"
            )
        #: image paths of the split, in partition-file order
        self.files: tuple[Path, ...] = tuple(self.image_dir / n for n in names)
        if not self.files[0].is_file():
            raise FileNotFoundError(
                f"{str(self.files[0])!r} (listed in the partition file) does not exist; "
                f"expected {CELEBA_LAYOUT}"
            )

    def __len__(self) -> int:
        return len(self.files)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of the centred square crop of a ``width x height`` image.

        Raises:
            ValueError: ``crop_size`` exceeds the shorter side.
        """
        side = min(width, height) if self.crop_size is None else self.crop_size
        if side > min(width, height):
            raise ValueError(
                f"crop_size={side} exceeds the {width}x{height} image; use crop_size <= "
                f"{min(width, height)} or None"
            )
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side

    def __getitem__(self, index: int) -> Tensor:
        """Image ``index``: float32, shape ``(3, image_size, image_size)``, in ``[-1, 1]``.

        Raises:
            IndexError: ``index`` out of range.
            FileNotFoundError: the image file is missing.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        path = self.files[index]
        if not path.is_file():
            raise FileNotFoundError(
                f"CelebA image {str(path)!r} is missing; expected {CELEBA_LAYOUT}"
            )
        image_mod = _pil_image()
        with image_mod.open(path) as img:
            rgb = img.convert("RGB")
            box = self.crop_box(*rgb.size)
            size = (self.image_size, self.image_size)
            out = rgb.crop(box).resize(size, resample=image_mod.Resampling.BICUBIC)
        array = np.asarray(out, dtype=np.uint8)
        pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32)
        return pixels / 127.5 - 1.0

    def __repr__(self) -> str:
        return (
            f"CelebAFolder(root={str(self.root)!r}, split={self.split!r}, "
            f"image_size={self.image_size}, crop_size={self.crop_size}, n={len(self)})"
        )


class SyntheticImages(Dataset[Tensor]):
    r"""Deterministic smooth random images: a stand-in for a face dataset in smoke runs.

    Item ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so it does not
    depend on the order of access or on data-loader workers. On pixel-centre
    coordinates :math:`p \in [-1, 1]^2` the scene is a linear gradient between two
    random colours along a random direction, over which one to three ellipses are
    alpha-blended with soft edges,

    .. math:: m(p) = \operatorname{sigmoid}\bigl((1 - \lVert A (p - c) \rVert) / w\bigr),
        \qquad x \leftarrow (1 - a\,m)\,x + a\,m\,\kappa,

    with centre :math:`c`, a rotation-and-scale :math:`A` (radii 0.15 to 0.55), opacity
    :math:`a \in [0.6, 1]`, colour :math:`\kappa \in [-1, 1]^C` and edge width
    :math:`w = 1/16` of the radius. Every pixel is a convex combination of colours
    in ``[-1, 1]``, so values stay in that range. The random draws do not depend on
    ``image_size``: the same ``(seed, i)`` gives the same scene at every size.

    Args:
        n: number of images.
        image_size: side ``s``.
        seed: the dataset's seed.
        channels: channels ``C`` (3 for RGB).

    Raises:
        ValueError: non-positive ``n``, ``image_size`` or ``channels``, or a negative seed.
        TypeError: ``seed`` is not an int.
    """

    def __init__(self, n: int, image_size: int, *, seed: int, channels: int = 3) -> None:
        self.n: int = _check_size("n", n)
        self.image_size: int = _check_size("image_size", image_size)
        self.channels: int = _check_size("channels", channels)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.seed: int = int(seed)
        coords = (np.arange(self.image_size, dtype=np.float64) + 0.5) / self.image_size * 2 - 1
        self._v, self._u = np.meshgrid(coords, coords, indexing="ij")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Tensor:
        """Image ``index`` as a float32 tensor of shape ``(channels, s, s)`` in ``[-1, 1]``.

        Raises:
            IndexError: ``index`` out of range.
        """
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} images")
        rng = np.random.default_rng([self.seed, int(index) % self.n])
        u, v, c = self._u, self._v, self.channels
        c0, c1 = rng.uniform(-1, 1, size=(2, c, 1, 1))
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.clip((np.cos(angle) * u + np.sin(angle) * v + 1) / 2, 0, 1)
        image = c0 + (c1 - c0) * ramp
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(-0.6, 0.6, size=2)
            ra, rb = rng.uniform(0.15, 0.55, size=2)
            theta = rng.uniform(0, np.pi)
            colour = rng.uniform(-1, 1, size=(c, 1, 1))
            alpha = rng.uniform(0.6, 1.0)
            du, dv = u - cx, v - cy
            pu = (np.cos(theta) * du + np.sin(theta) * dv) / ra
            pv = (-np.sin(theta) * du + np.cos(theta) * dv) / rb
            mask = alpha / (1 + np.exp(-(1 - np.sqrt(pu**2 + pv**2)) / _EDGE_WIDTH))
            image = (1 - mask) * image + mask * colour
        return torch.from_numpy(np.clip(image, -1.0, 1.0).astype(np.float32))

    def __repr__(self) -> str:
        return (
            f"SyntheticImages(n={self.n}, image_size={self.image_size}, seed={self.seed}, "
            f"channels={self.channels})"
        )
