"""Validation and conversion of point clouds shared by the sample-based KL estimators."""

from __future__ import annotations

import math
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

__all__ = [
    "FloatArray",
    "Points",
    "as_points",
    "as_points_pair",
    "as_points_tensor",
    "check_base",
    "check_same_dim",
    "subset",
]

Points: TypeAlias = npt.NDArray[Any] | Tensor
"""A point cloud: a numpy array or a torch tensor of shape ``(n, d)`` or ``(n,)``."""

FloatArray: TypeAlias = npt.NDArray[np.float64]


def _shape_checks(name: str, shape: tuple[int, ...]) -> None:
    if len(shape) not in (1, 2):
        raise ValueError(
            f"{name} must have shape (n, d) or (n,) (n points in dimension d); "
            f"got rank {len(shape)} with shape {shape}"
        )
    if shape[0] == 0:
        raise ValueError(f"{name} is empty: it needs at least one point, got shape {shape}")
    if len(shape) == 2 and shape[1] == 0:
        raise ValueError(f"{name} has zero columns: points need d >= 1, got shape {shape}")


def as_points(name: str, points: object) -> FloatArray:
    """Return ``points`` as a C-contiguous float64 numpy array of shape ``(n, d)``.

    A 1-D input of shape ``(n,)`` is read as ``n`` points in dimension ``d = 1``. Torch
    tensors are detached and copied to the CPU.

    Raises:
        TypeError: if ``points`` is neither a numpy array nor a torch tensor, or does not
            hold real numbers.
        ValueError: if it is not 1-D or 2-D, is empty, has zero columns, or holds a NaN
            or an infinity.
    """
    if isinstance(points, Tensor):
        return as_points_tensor(name, points, torch.device("cpu")).numpy()
    if not isinstance(points, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor of shape (n, d) or (n,), "
            f"got {type(points).__name__}"
        )
    if not (np.issubdtype(points.dtype, np.integer) or np.issubdtype(points.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {points.dtype}")
    _shape_checks(name, tuple(points.shape))
    arr = points.astype(np.float64, copy=False).reshape(points.shape[0], -1)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = int(np.count_nonzero(~finite))
        raise ValueError(f"{name} contains NaN or infinite values ({bad} of {arr.shape[0]} points)")
    return np.ascontiguousarray(arr)


def as_points_tensor(name: str, points: object, device: torch.device) -> Tensor:
    """Return ``points`` as a float64 tensor of shape ``(n, d)`` on ``device``.

    Same rules and errors as :func:`as_points`; the checks run on ``device``.
    """
    if isinstance(points, np.ndarray):
        if not (
            np.issubdtype(points.dtype, np.integer) or np.issubdtype(points.dtype, np.floating)
        ):
            raise TypeError(f"{name} must hold real numbers, got an array of dtype {points.dtype}")
        points = torch.from_numpy(np.ascontiguousarray(points))
    if not isinstance(points, Tensor):
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor of shape (n, d) or (n,), "
            f"got {type(points).__name__}"
        )
    if points.is_complex() or points.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got a tensor of dtype {points.dtype}")
    _shape_checks(name, tuple(points.shape))
    out = points.detach().to(device=device, dtype=torch.float64).reshape(points.shape[0], -1)
    finite = torch.isfinite(out).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{name} contains NaN or infinite values ({bad} of {out.shape[0]} points)")
    return out.contiguous()


def check_same_dim(x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> None:
    """Raise a ``ValueError`` unless two ``(n, d)`` / ``(m, d)`` shapes share ``d``."""
    if x_shape[1] != y_shape[1]:
        raise ValueError(
            f"x and y must be points of the same dimension; got x of shape {x_shape} "
            f"(d={x_shape[1]}) and y of shape {y_shape} (d={y_shape[1]})"
        )


def as_points_pair(x: object, y: object) -> tuple[FloatArray, FloatArray]:
    """Convert ``x`` and ``y`` with :func:`as_points` and check that their dimensions match.

    Raises:
        ValueError: if ``x`` has shape ``(n, d)`` and ``y`` shape ``(m, d')`` with ``d != d'``.
    """
    xa = as_points("x", x)
    ya = as_points("y", y)
    check_same_dim(xa.shape, ya.shape)
    return xa, ya


def check_base(base: float) -> float:
    """Return ``ln(base)`` after checking that ``base`` is a finite number > 0 other than 1.

    Raises:
        TypeError: if ``base`` is not a real number.
        ValueError: for a base <= 0, equal to 1, or not finite.
    """
    if isinstance(base, bool) or not isinstance(base, (int, float)):
        raise TypeError(f"base must be a number (2.0 for bits, math.e for nats), got {base!r}")
    if not math.isfinite(base) or base <= 0 or base == 1:
        raise ValueError(
            f"base must be finite, > 0 and != 1 (2.0 for bits, math.e for nats); got {base}"
        )
    return math.log(base)


def subset(points: Points, index: Tensor) -> Points:
    """Rows ``index`` (an int64 CPU tensor) of a numpy array or a torch tensor, in its own type."""
    if isinstance(points, Tensor):
        return points[index.to(points.device)]
    rows: Points = points[index.numpy()]
    return rows
