r"""The 2x antialiased bilinear downsample as an explicit separable linear operator.

``torch.nn.functional.interpolate(x, mode="bilinear", antialias=True,
align_corners=False)`` from ``n x n`` to ``n/2 x n/2`` is separable: it equals
:math:`X \mapsto D X D^\top`, i.e. :math:`\operatorname{vec}(Y) = (D \otimes D)
\operatorname{vec}(X)` for one 1-D matrix :math:`D \in \mathbb R^{n/2 \times n}` whose
interior rows are the tent weights :math:`(1, 3, 3, 1)/8` and whose border rows are
renormalised (:math:`(3, 3, 1)/7`). Its adjoint is :math:`Y \mapsto D^\top Y D`, and
:math:`M^\top M = (D^\top D) \otimes (D^\top D)`, which the eigendecomposition
:math:`D^\top D = U \operatorname{diag}(\lambda) U^\top` diagonalises.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DownsampleSpectrum",
    "downsample",
    "downsample_adjoint",
    "downsample_matrix",
    "downsample_spectrum",
]


def _check_size(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"the input size must be an int, got {type(n).__name__}")
    if n < 2 or n % 2 != 0:
        raise ValueError(f"the input size must be an even int >= 2 to be halved, got {n}")


def downsample(x: Tensor) -> Tensor:
    """Halve the spatial resolution with antialiased bilinear interpolation.

    Args:
        x: images of shape ``(b, c, n, n)`` with ``n`` even.

    Returns:
        ``F.interpolate(x, size=(n/2, n/2), mode="bilinear", antialias=True,
        align_corners=False)``, shape ``(b, c, n/2, n/2)``.

    Raises:
        ValueError: if ``x`` is not a batch of square images of even size.
    """
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected square images of shape (b, c, n, n), got {tuple(x.shape)}")
    n = int(x.shape[-1])
    _check_size(n)
    return F.interpolate(
        x, size=(n // 2, n // 2), mode="bilinear", antialias=True, align_corners=False
    )


@lru_cache(maxsize=32)
def _matrix64(n: int) -> Tensor:
    # Column j of D is the 1-D downsample of the unit vector e_j: a batch of n one-row
    # images (n, 1, 1, n) whose rows are the unit vectors, resized along the width only.
    # (Resizing width-1 columns along the height instead does not reproduce the 2-D
    # operator with torch's antialiased kernel, so the width is the axis to resize.)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, 1, n)
    cols = F.interpolate(
        eye, size=(1, n // 2), mode="bilinear", antialias=True, align_corners=False
    )
    return cols.reshape(n, n // 2).T.contiguous()


def downsample_matrix(
    n: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> Tensor:
    r"""The 1-D matrix :math:`D` of the 2x antialiased bilinear downsample.

    Built by resizing the columns of the identity with ``F.interpolate`` itself, so
    ``downsample(x) == D @ x @ D.T`` holds to rounding error. Cached per ``n`` (float64).

    Args:
        n: input size (even, ``>= 2``).
        dtype: dtype of the returned matrix.
        device: device of the returned matrix.

    Returns:
        Tensor of shape ``(n // 2, n)``; every row sums to 1.
    """
    _check_size(n)
    return _matrix64(n).to(device=device, dtype=dtype)


def downsample_adjoint(y: Tensor) -> Tensor:
    r"""The adjoint :math:`M^\top` of :func:`downsample`: :math:`Y \mapsto D^\top Y D`.

    Args:
        y: shape ``(b, c, m, m)``.

    Returns:
        Shape ``(b, c, 2m, 2m)``, with :math:`\langle Mx, y\rangle = \langle x, M^\top y\rangle`.

    Raises:
        ValueError: if ``y`` is not a batch of square images.
    """
    if y.ndim != 4 or y.shape[-1] != y.shape[-2]:
        raise ValueError(f"expected square images of shape (b, c, m, m), got {tuple(y.shape)}")
    d = downsample_matrix(2 * int(y.shape[-1]), dtype=y.dtype, device=y.device)
    return d.T @ y @ d


class DownsampleSpectrum(NamedTuple):
    r"""Eigendecomposition :math:`D^\top D = U \operatorname{diag}(\lambda) U^\top`.

    Attributes:
        eigenvectors: :math:`U`, orthogonal, shape ``(n, n)``.
        eigenvalues: :math:`\lambda \ge 0` (ascending; half of them are 0), shape ``(n,)``.
    """

    eigenvectors: Tensor
    eigenvalues: Tensor


@lru_cache(maxsize=32)
def _spectrum64(n: int) -> DownsampleSpectrum:
    d = _matrix64(n)
    lam, u = torch.linalg.eigh(d.T @ d)
    return DownsampleSpectrum(u, lam.clamp(min=0.0))


def downsample_spectrum(
    n: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> DownsampleSpectrum:
    r"""Eigendecomposition of :math:`D^\top D` for the ``n -> n/2`` downsample.

    Computed once per ``n`` in float64 and cached; round-off negatives in the null space
    are clamped to 0. :math:`\max\lambda^2` is :math:`\lambda_{\max}(M^\top M)`
    (0.2546 for ``n = 8``, 0.2508 for ``n = 64``).

    Args:
        n: input size (even, ``>= 2``).
        dtype: dtype of the returned tensors.
        device: device of the returned tensors.
    """
    _check_size(n)
    spec = _spectrum64(n)
    return DownsampleSpectrum(
        spec.eigenvectors.to(device=device, dtype=dtype),
        spec.eigenvalues.to(device=device, dtype=dtype),
    )
