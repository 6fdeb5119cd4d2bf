r"""Kernel Inception Distance (Binkowski, Sutherland, Arbel & Gretton, 2018).

KID is the squared maximum mean discrepancy between two feature sets under the cubic
polynomial kernel

.. math:: k(x, y) = \bigl(\gamma\, x^\top y + c\bigr)^3, \qquad \gamma = 1/d,\ c = 1,

estimated without bias (the diagonal terms of :math:`k(X, X)` and :math:`k(Y, Y)` are
left out):

.. math::
    \widehat{\mathrm{MMD}}^2_u = \frac{1}{m(m-1)} \sum_{i \ne j} k(x_i, x_j)
    + \frac{1}{n(n-1)} \sum_{i \ne j} k(y_i, y_j)
    - \frac{2}{mn} \sum_{i, j} k(x_i, y_j).

Unlike FID, its expectation does not depend on the sample size, so it is meaningful at a
few thousand samples, and it can be negative when the two sets come from the same
distribution. :func:`kid_from_features` returns the estimate on all samples with a
standard error from the two-sample delete-one jackknife (Arvesen, 1969), computed exactly
from the kernel matrices' row sums,

.. math::
    \widehat{\mathrm{se}}^2 = \frac{m-1}{m}\sum_{i=1}^m \bigl(\theta_{(i)} - \bar\theta_X\bigr)^2
    + \frac{n-1}{n}\sum_{j=1}^n \bigl(\theta_{(j)} - \bar\theta_Y\bigr)^2,

where :math:`\theta_{(i)}` is the estimate without :math:`x_i` and
:math:`\theta_{(j)}` the one without :math:`y_j`, and, for comparison with published
numbers, the customary mean and standard deviation over random subsets (100 subsets of
1,000 by default). The subsets' standard deviation is the spread of a 1,000-sample
estimate, not the uncertainty of their mean.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["KIDResult", "kid_from_features", "mmd2_unbiased", "polynomial_kernel"]

_BLOCK = 1024


class KIDResult(NamedTuple):
    """The outcome of :func:`kid_from_features`.

    Attributes:
        value: the unbiased MMD^2 on all samples.
        se: its jackknife standard error.
        subset_mean: mean of the estimates on random subsets (``None`` without subsets).
        subset_std: their standard deviation (``None`` without subsets).
        subset_size: the subsets' size (``0`` without subsets).
        n1: samples in the first set.
        n2: samples in the second set.
    """

    value: float
    se: float
    subset_mean: float | None
    subset_std: float | None
    subset_size: int
    n1: int
    n2: int


def polynomial_kernel(
    a: NDArray[np.float64], b: NDArray[np.float64], *, degree: int = 3, coef0: float = 1.0
) -> NDArray[np.float64]:
    r"""The kernel matrix :math:`K_{ij} = (a_i^\top b_j / d + c)^p`, shape ``(n_a, n_b)``.

    Args:
        a: ``(n_a, d)``.
        b: ``(n_b, d)``.
        degree: the power :math:`p`.
        coef0: the offset :math:`c`.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be (n, d) with the same d, got {a.shape} and {b.shape}")
    out: NDArray[np.float64] = (a @ b.T / a.shape[1] + coef0) ** degree
    return out


def _as_features(name: str, features: ArrayLike) -> NDArray[np.float64]:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 3 or array.shape[1] < 1:
        raise ValueError(f"{name} must have shape (n >= 3, d >= 1), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _self_sums(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row sums of ``polynomial_kernel(a, a)`` without the diagonal, blockwise."""
    sums = np.empty(a.shape[0])
    for start in range(0, a.shape[0], _BLOCK):
        block = polynomial_kernel(a[start : start + _BLOCK], a)
        rows = np.arange(block.shape[0])
        block[rows, rows + start] = 0.0
        sums[start : start + _BLOCK] = block.sum(axis=1)
    return sums


def _cross_sums(
    a: NDArray[np.float64], b: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Row and column sums of ``polynomial_kernel(a, b)``, each block computed once."""
    rows, cols = np.empty(a.shape[0]), np.zeros(b.shape[0])
    for start in range(0, a.shape[0], _BLOCK):
        block = polynomial_kernel(a[start : start + _BLOCK], b)
        rows[start : start + _BLOCK] = block.sum(axis=1)
        cols += block.sum(axis=0)
    return rows, cols


def _mmd2(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    m, n = len(x), len(y)
    kxx = _self_sums(x).sum() / (m * (m - 1))
    kyy = _self_sums(y).sum() / (n * (n - 1))
    kxy = _cross_sums(x, y)[0].sum() / (m * n)
    return float(kxx + kyy - 2.0 * kxy)


def mmd2_unbiased(features1: ArrayLike, features2: ArrayLike) -> float:
    """The unbiased MMD^2 (module docstring) between ``(m, d)`` and ``(n, d)`` feature sets."""
    return _mmd2(_as_features("features1", features1), _as_features("features2", features2))


def kid_from_features(
    features1: ArrayLike,
    features2: ArrayLike,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    generator: np.random.Generator | None = None,
) -> KIDResult:
    """KID between two feature sets (e.g. Inception pool features of samples and data).

    Args:
        features1: ``(m, d)``, ``m >= 3``.
        features2: ``(n, d)``, ``n >= 3``.
        num_subsets: random subset pairs for ``subset_mean`` / ``subset_std`` (``0``:
            none).
        subset_size: items per subset, drawn without replacement from each set (capped at
            ``min(m, n)``).
        generator: numpy generator of the subsets (default: seed 0, so that the result
            is reproducible).

    Returns:
        A :class:`KIDResult`. KID is customarily printed times 1,000.

    Raises:
        ValueError: sets of other shapes, of different widths, or holding NaN/inf; a
            negative ``num_subsets`` or a ``subset_size < 3``.
    """
    x = _as_features("features1", features1)
    y = _as_features("features2", features2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature widths differ: {x.shape[1]} and {y.shape[1]}")
    if isinstance(num_subsets, bool) or not isinstance(num_subsets, int) or num_subsets < 0:
        raise ValueError(f"num_subsets must be an int >= 0, got {num_subsets!r}")
    if isinstance(subset_size, bool) or not isinstance(subset_size, int) or subset_size < 3:
        raise ValueError(f"subset_size must be an int >= 3, got {subset_size!r}")
    m, n = len(x), len(y)
    rx, ry = _self_sums(x), _self_sums(y)  # sum_{j != i} k(x_i, x_j)
    cx, cy = _cross_sums(x, y)  # sum_j k(x_i, y_j) and sum_i k(x_i, y_j)
    sxx, syy, sxy = rx.sum(), ry.sum(), cx.sum()
    a, b, c = sxx / (m * (m - 1)), syy / (n * (n - 1)), sxy / (m * n)
    value = a + b - 2.0 * c
    # Delete-one estimates: drop x_i (or y_j) from every sum it enters.
    theta_x = (sxx - 2 * rx) / ((m - 1) * (m - 2)) + b - 2 * (sxy - cx) / ((m - 1) * n)
    theta_y = a + (syy - 2 * ry) / ((n - 1) * (n - 2)) - 2 * (sxy - cy) / (m * (n - 1))
    var = (m - 1) / m * np.sum((theta_x - theta_x.mean()) ** 2)
    var += (n - 1) / n * np.sum((theta_y - theta_y.mean()) ** 2)
    size = min(subset_size, m, n)
    mean = std = None
    if num_subsets:
        rng = np.random.default_rng(0) if generator is None else generator
        values = [
            _mmd2(x[rng.choice(m, size, replace=False)], y[rng.choice(n, size, replace=False)])
            for _ in range(num_subsets)
        ]
        mean, std = float(np.mean(values)), float(np.std(values))
    return KIDResult(
        value=float(value),
        se=float(np.sqrt(var)),
        subset_mean=mean,
        subset_std=std,
        subset_size=size if num_subsets else 0,
        n1=m,
        n2=n,
    )
