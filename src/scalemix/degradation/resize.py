r"""The antialiased bilinear resize as an explicit separable linear operator.

``torch.nn.functional.interpolate(x, size=(m, m), mode="bilinear", antialias=True,
align_corners=False)`` from ``n x n`` to ``m x m`` is separable for any pair of sizes:
it equals :math:`X \mapsto D X D^\top`, i.e. :math:`\operatorname{vec}(Y) = (D \otimes D)
\operatorname{vec}(X)` for one 1-D matrix :math:`D \in \mathbb R^{m \times n}`
(:func:`resize_matrix`). For the 2x downsample (``m = n/2``) the interior rows of
:math:`D` are the tent weights :math:`(1, 3, 3, 1)/8` and the border rows are
renormalised (:math:`(3, 3, 1)/7`); for other ratios (e.g. ``64 -> 40``) the tent is
stretched by ``n/m`` and every row still sums to 1. The adjoint is
:math:`Y \mapsto D^\top Y D`, and :math:`M^\top M = (D^\top D) \otimes (D^\top D)`,
which the eigendecomposition :math:`D^\top D = U \operatorname{diag}(\lambda) U^\top`
diagonalises (:func:`resize_spectrum`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor

from .._utils import assume_constant

__all__ = [
    "DownsampleSpectrum",
    "downsample",
    "downsample_adjoint",
    "downsample_matrix",
    "downsample_spectrum",
    "resize",
    "resize_adjoint",
    "resize_matrix",
    "resize_spectrum",
]


#: Where the matrices and spectra are returned, as ``Tensor.to`` takes it (``None``: the
#: CPU, where they are cached).
_Device: TypeAlias = torch.device | str | None


def _check_pair(n_in: int, n_out: int) -> None:
    for name, value in (("n_in", n_in), ("n_out", n_out)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be a positive int, got {value}")


def _check_square(name: str, x: Tensor) -> None:
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected {name} of square images (b, c, n, n), got {tuple(x.shape)}")


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


def resize(x: Tensor, size: int) -> Tensor:
    """Resize square images to ``size x size`` with antialiased bilinear interpolation.

    Args:
        x: images of shape ``(b, c, n, n)``.
        size: output side ``m >= 1`` (smaller or larger than ``n``).

    Returns:
        ``F.interpolate(x, size=(m, m), mode="bilinear", antialias=True,
        align_corners=False)``, shape ``(b, c, m, m)``; ``x`` itself when ``m = n``.

    Raises:
        ValueError: if ``x`` is not a batch of square images or ``size < 1``.
    """
    _check_square("x", x)
    _check_pair(int(x.shape[-1]), size)
    if size == x.shape[-1]:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@assume_constant
def _resize64(n: int, m: int) -> Tensor:
    """The cached float64 ``(m, n)`` resize matrix; a compiled graph embeds it as a
    constant instead of tracing its construction (or the cache)."""
    return _resize64_cached(n, m)


@lru_cache(maxsize=64)
def _resize64_cached(n: int, m: int) -> Tensor:
    # Column j of D is the 1-D resize of the unit vector e_j: a batch of n one-row
    # images (n, 1, 1, n) whose rows are the unit vectors, resized along the width only.
    # (Resizing width-1 columns along the height instead does not reproduce the 2-D
    # operator with torch's antialiased kernel, so the width is the axis to resize.)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, 1, n)
    cols = F.interpolate(eye, size=(1, m), mode="bilinear", antialias=True, align_corners=False)
    return cols.reshape(n, m).T.contiguous()


def resize_matrix(
    n_in: int, n_out: int, *, dtype: torch.dtype = torch.float64, device: _Device = None
) -> Tensor:
    r"""The 1-D matrix :math:`D` of the antialiased bilinear resize ``n_in -> n_out``.

    Built by resizing the rows of the identity with ``F.interpolate`` itself, so
    ``resize(x, n_out) == D @ x @ D.T`` holds to rounding error for every pair of sizes
    (e.g. ``64 -> 40``, ``7 -> 5``). Cached per pair (float64).

    Args:
        n_in: input size ``n >= 1``.
        n_out: output size ``m >= 1``.
        dtype: dtype of the returned matrix.
        device: device of the returned matrix.

    Returns:
        Tensor of shape ``(n_out, n_in)``; every row sums to 1.
    """
    _check_pair(n_in, n_out)
    return _resize64(n_in, n_out).to(device=device, dtype=dtype)


def resize_adjoint(y: Tensor, n_in: int) -> Tensor:
    r"""The adjoint of :func:`resize` from ``n_in``: :math:`Y \mapsto D^\top Y D`.

    Args:
        y: shape ``(b, c, m, m)``, the output side of the resize.
        n_in: the input side ``n`` of the resize.

    Returns:
        Shape ``(b, c, n, n)``, with :math:`\langle D X D^\top, Y\rangle =
        \langle X, D^\top Y D\rangle`.

    Raises:
        ValueError: if ``y`` is not a batch of square images.
    """
    _check_square("y", y)
    d = resize_matrix(n_in, int(y.shape[-1]), dtype=y.dtype, device=y.device)
    return d.T @ y @ d


def downsample_matrix(
    n: int, *, dtype: torch.dtype = torch.float64, device: _Device = None
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
    return resize_matrix(n, n // 2, dtype=dtype, device=device)


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


@assume_constant
def _resize_spectrum64(n: int, m: int) -> DownsampleSpectrum:
    """The cached float64 spectrum of the ``n -> m`` resize, a constant of compiled graphs."""
    return _resize_spectrum64_cached(n, m)


@lru_cache(maxsize=64)
def _resize_spectrum64_cached(n: int, m: int) -> DownsampleSpectrum:
    d = _resize64(n, m)
    lam, u = torch.linalg.eigh(d.T @ d)
    return DownsampleSpectrum(u, lam.clamp(min=0.0))


def resize_spectrum(
    n_in: int, n_out: int, *, dtype: torch.dtype = torch.float64, device: _Device = None
) -> DownsampleSpectrum:
    r"""Eigendecomposition of :math:`D^\top D` (``n_in x n_in``) for the resize ``n_in -> n_out``.

    Computed once per pair in float64 and cached; round-off negatives in the null space
    are clamped to 0 (for a downsample, ``n_in - n_out`` eigenvalues vanish).

    Args:
        n_in: input size.
        n_out: output size.
        dtype: dtype of the returned tensors.
        device: device of the returned tensors.
    """
    _check_pair(n_in, n_out)
    spec = _resize_spectrum64(n_in, n_out)
    return DownsampleSpectrum(
        spec.eigenvectors.to(device=device, dtype=dtype),
        spec.eigenvalues.to(device=device, dtype=dtype),
    )


def downsample_spectrum(
    n: int, *, dtype: torch.dtype = torch.float64, device: _Device = None
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
    return resize_spectrum(n, n // 2, dtype=dtype, device=device)
