"""CelebAFolder on a small fake CelebA tree, and the SyntheticImages stand-in."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from scalemix.datasets.images import CelebAFolder, SyntheticImages

PIL = pytest.importorskip("PIL.Image")

WIDTH, HEIGHT = 178, 218  # the aligned CelebA images
CODES = (0, 0, 0, 1, 2, 2)
OUTSIDE = (250, 250, 250)
RIGHT = (20, 40, 200)


def _left(i: int) -> tuple[int, int, int]:
    return (200 - 30 * i, 30 + 20 * i, 60)


def _write_image(path: Path, i: int) -> None:
    """Outside the centred 140 px square: OUTSIDE; inside, left half _left(i), right RIGHT."""
    pixels = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    pixels[:] = OUTSIDE
    left, top = (WIDTH - 140) // 2, (HEIGHT - 140) // 2
    pixels[top : top + 140, left : left + 70] = _left(i)
    pixels[top : top + 140, left + 70 : left + 140] = RIGHT
    PIL.fromarray(pixels).save(path, quality=98, subsampling=0)


def _make_tree(root: Path, *, kaggle: bool = False) -> Path:
    images = root / "img_align_celeba"
    if kaggle:
        images = images / "img_align_celeba"
    images.mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(CODES))]
    for i, name in enumerate(names):
        _write_image(images / name, i)
    if kaggle:
        rows = ["image_id,partition", *(f"{n},{c}" for n, c in zip(names, CODES, strict=True))]
        (root / "list_eval_partition.csv").write_text("\n".join(rows) + "\n")
    else:
        rows = [f"{n} {c}" for n, c in zip(names, CODES, strict=True)]
        (root / "list_eval_partition.txt").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def celeba(tmp_path: Path) -> Path:
    return _make_tree(tmp_path / "celeba")


def _colour(rgb: tuple[int, int, int]) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 127.5 - 1


def test_split_sizes_follow_the_partition_file(celeba: Path) -> None:
    sizes = {s: len(CelebAFolder(celeba, split=s)) for s in ("train", "valid", "test", "all")}
    assert sizes == {"train": 3, "valid": 1, "test": 2, "all": 6}
    test = CelebAFolder(celeba, split="test")
    assert [p.name for p in test.files] == ["000005.jpg", "000006.jpg"]


@pytest.mark.parametrize("size", [16, 32])
def test_items_are_the_resized_centre_crop_in_minus_one_one(celeba: Path, size: int) -> None:
    ds = CelebAFolder(celeba, split="all", image_size=size)
    half, seam, tol = size // 2, 2, 3 / 127.5  # JPEG error is 1-2 levels in 255
    for i in range(len(ds)):
        x = ds[i]
        assert x.shape == (3, size, size) and x.dtype == torch.float32
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        # the crop removes OUTSIDE entirely, borders included: the left half is
        # _left(i), the right half RIGHT (away from the seam between them)
        left = x[:, :, : half - seam]
        right = x[:, :, half + seam :]
        assert torch.allclose(left, _colour(_left(i)).expand_as(left), atol=tol)
        assert torch.allclose(right, _colour(RIGHT).expand_as(right), atol=tol)


def test_crop_box_values(celeba: Path) -> None:
    assert CelebAFolder(celeba).crop_box(WIDTH, HEIGHT) == (19, 39, 159, 179)
    full = CelebAFolder(celeba, crop_size=None)
    assert full.crop_box(WIDTH, HEIGHT) == (0, 20, 178, 198)
    # the largest square keeps OUTSIDE on both sides of the face square
    x = full[0]
    assert torch.allclose(x[:, :, 0], _colour(OUTSIDE).squeeze(-1).expand(3, 64), atol=0.04)


def test_items_are_deterministic_and_batch(celeba: Path) -> None:
    a, b = CelebAFolder(celeba, image_size=16), CelebAFolder(celeba, image_size=16)
    for i in range(len(a)):
        assert torch.equal(a[i], b[i])
        assert torch.equal(a[i], a[i])
    batch = next(iter(DataLoader(a, batch_size=2)))
    assert batch.shape == (2, 3, 16, 16)
    assert torch.equal(batch[1], a[1])


def test_kaggle_layout_matches_the_official_one(tmp_path: Path, celeba: Path) -> None:
    kaggle = _make_tree(tmp_path / "kaggle", kaggle=True)
    for split in ("train", "valid", "test"):
        a = CelebAFolder(celeba, split=split, image_size=16)
        b = CelebAFolder(kaggle, split=split, image_size=16)
        assert len(a) == len(b)
        assert all(torch.equal(a[i], b[i]) for i in range(len(a)))


def test_all_without_partition_file_lists_the_folder(celeba: Path) -> None:
    (celeba / "list_eval_partition.txt").unlink()
    ds = CelebAFolder(celeba, split="all")
    assert [p.name for p in ds.files] == [f"{i + 1:06d}.jpg" for i in range(len(CODES))]
    with pytest.raises(FileNotFoundError, match=r"list_eval_partition\.txt"):
        CelebAFolder(celeba, split="train")


def test_wrong_paths_name_the_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="img_align_celeba"):
        CelebAFolder(tmp_path / "missing")
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(FileNotFoundError, match="img_align_celeba"):
        CelebAFolder(tmp_path / "empty")


def test_missing_images_are_reported(celeba: Path) -> None:
    (celeba / "img_align_celeba" / "000006.jpg").unlink()
    ds = CelebAFolder(celeba, split="test")
    with pytest.raises(FileNotFoundError, match=r"000006\.jpg"):
        ds[1]
    (celeba / "img_align_celeba" / "000005.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"000005\.jpg"):
        CelebAFolder(celeba, split="test")


@pytest.mark.parametrize(
    "line", ["000001.jpg x", "000001.jpg 3", "000001.jpg", "000001.jpg 0 extra"]
)
def test_malformed_partition_file(celeba: Path, line: str) -> None:
    (celeba / "list_eval_partition.txt").write_text(f"{line}\n")
    with pytest.raises(ValueError, match=r"list_eval_partition\.txt:1"):
        CelebAFolder(celeba)


def test_bad_arguments(celeba: Path) -> None:
    with pytest.raises(ValueError, match="accepted values are: 'train', 'valid', 'test', 'all'"):
        CelebAFolder(celeba, split="validation")  # type: ignore[arg-type]
    for kwargs in ({"image_size": 0}, {"image_size": 2.5}, {"crop_size": -1}):
        with pytest.raises(ValueError, match="must be a positive int"):
            CelebAFolder(celeba, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="crop_size=200 exceeds"):
        CelebAFolder(celeba, crop_size=200)[0]
    ds = CelebAFolder(celeba, split="valid")
    with pytest.raises(IndexError):
        ds[1]


def test_missing_pillow_names_the_extra(celeba: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ModuleNotFoundError, match=r"scalemix\[examples\]"):
        CelebAFolder(celeba)


# ---------------------------------------------------------------------------- synthetic
@settings(max_examples=10)
@given(seed=st.integers(0, 2**31), index=st.integers(0, 7), size=st.sampled_from([8, 16]))
def test_synthetic_is_deterministic_and_in_range(seed: int, index: int, size: int) -> None:
    a = SyntheticImages(8, size, seed=seed)
    x = a[index]
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert torch.equal(x, SyntheticImages(8, size, seed=seed)[index])
    assert torch.equal(x, a[index - 8])  # negative indices as for sequences


def test_synthetic_items_do_not_depend_on_access_order() -> None:
    a, b = SyntheticImages(6, 16, seed=5), SyntheticImages(6, 16, seed=5)
    forward = [a[i] for i in range(6)]
    backward = [b[i] for i in reversed(range(6))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(forward, backward, strict=True))
    other = SyntheticImages(6, 16, seed=6)
    assert not any(torch.equal(a[i], other[i]) for i in range(6))
    assert not torch.equal(a[0], a[1])


def test_synthetic_is_one_smooth_scene_at_every_size() -> None:
    big, small = SyntheticImages(20, 64, seed=2), SyntheticImages(20, 32, seed=2)
    for i in range(20):
        x = big[i]
        # 2x2 average of the 64 px image samples the same scene as the 32 px image
        assert float((F.avg_pool2d(x[None], 2)[0] - small[i]).abs().mean()) < 0.01
        # neighbouring pixels differ far less than for U(-1, 1) noise (2/3 on average)
        assert float((x[..., 1:] - x[..., :-1]).abs().mean()) < 0.1


def test_synthetic_bad_arguments() -> None:
    for kwargs in ({"n": 0}, {"image_size": 0}, {"channels": 0}):
        args = {"n": 4, "image_size": 8, "channels": 3, **kwargs}
        with pytest.raises(ValueError, match="must be a positive int"):
            SyntheticImages(args["n"], args["image_size"], seed=0, channels=args["channels"])
    with pytest.raises(ValueError, match="non-negative"):
        SyntheticImages(4, 8, seed=-1)
    for seed in ("0", 1.5, True):
        with pytest.raises(TypeError, match="seed must be an int"):
            SyntheticImages(4, 8, seed=seed)  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        SyntheticImages(4, 8, seed=0)[4]
