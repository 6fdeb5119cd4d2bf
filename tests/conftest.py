"""Shared test configuration: hypothesis profiles and deterministic torch threads."""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=40,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=10)
# A long search, e.g. for the fuzz suite: pytest tests/test_fuzz.py --hypothesis-profile=deep
settings.register_profile(
    "deep",
    deadline=None,
    max_examples=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default")
)

# Tests use small tensors: one thread avoids oversubscription overhead and is deterministic.
torch.set_num_threads(1)


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """``array`` in the IDX format (big-endian header and elements) with type ``code``."""
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_fashion_mnist(
    folder: Path, split: str, n: int, *, gz: bool = True, seed: int = 0
) -> np.ndarray:
    """Write random 28 x 28 images and labels of ``split`` as Fashion-MNIST's IDX files."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    files = ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels))
    for name, array in files:
        data = idx_bytes(array, 0x08)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return images


@pytest.fixture
def write_fashion_mnist() -> Callable[..., np.ndarray]:
    """``write(folder, split, n, gz=True, seed=0)``: fake Fashion-MNIST files (returns images)."""
    return _write_fashion_mnist
