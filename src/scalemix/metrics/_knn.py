"""k-nearest-neighbour estimators of the KL divergence between two point clouds."""

from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
import torch
from scipy.special import digamma
from torch import Tensor

from .._utils import check_choice
from ._inputs import Points, as_points_pair, as_points_tensor, check_base, check_same_dim
from ._knn_backends import Neighbours, kdtree_neighbours, torch_neighbours

__all__ = ["KnnBackend", "KnnDuplicates", "KnnEstimator", "KnnMetric", "knn_kl"]

KnnEstimator = Literal["npeet", "wkv", "adaptive"]
KnnMetric = Literal["chebyshev", "euclidean"]
KnnDuplicates = Literal["error", "jitter"]
KnnBackend = Literal["kdtree", "torch"]

_ESTIMATORS: tuple[KnnEstimator, ...] = ("npeet", "wkv", "adaptive")
_METRICS: dict[KnnMetric, float] = {"chebyshev": math.inf, "euclidean": 2.0}
_DUPLICATES: tuple[KnnDuplicates, ...] = ("error", "jitter")
_BACKENDS: tuple[KnnBackend, ...] = ("kdtree", "torch")

#: Standard deviation of the jitter relative to the per-coordinate spread of the data.
JITTER_SCALE = 1e-6


def _check_k(k: int, n: int, m: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be a positive integer, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= n:
        raise ValueError(
            f"k={k} needs k < n: each point of x needs k other points of x, but x has n={n} points"
        )
    if k > m:
        raise ValueError(f"k={k} needs k <= m: y has only m={m} points")


def _rescale(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Divide both sets by the power of two nearest their largest magnitude.

    The estimators only use ratios of distances, so they are invariant to a common
    scale; a power of two is exact in floating point. It keeps the distances of data
    of magnitude 1e200 (whose squares overflow) or 1e-200 (whose squares underflow)
    representable.
    """
    peak = max(float(x.abs().max()), float(y.abs().max()))
    if peak == 0.0 or 2.0**-64 <= peak <= 2.0**64:
        return x, y
    scale = 2.0 ** -math.frexp(peak)[1]
    return x * scale, y * scale


def _jitter_scale(x: Tensor, y: Tensor) -> Tensor:
    pooled = torch.cat([x, y])
    spread = pooled.std(dim=0, correction=0)
    fallback = pooled.abs().amax(dim=0).clamp_min(1.0)
    return JITTER_SCALE * torch.where(spread > 0, spread, fallback)


def _jitter(x: Tensor, y: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Add ``N(0, s_j^2)`` noise to every coordinate, ``s_j = 1e-6 * std_j`` of ``x`` and ``y``."""
    scale = _jitter_scale(x, y)
    draw_device = generator.device if generator is not None else x.device
    noise = torch.randn(
        (x.shape[0] + y.shape[0], x.shape[1]),
        generator=generator,
        dtype=torch.float64,
        device=draw_device,
    ).to(x.device)
    return x + noise[: x.shape[0]] * scale, y + noise[x.shape[0] :] * scale


def _estimate(nb: Neighbours, d: int, n: int, m: int, estimator: KnnEstimator) -> float:
    """The KL estimate in nats from neighbour distances (see :func:`knn_kl` for the formulas)."""
    if estimator == "npeet":
        const = math.log(m) - math.log(n - 1)
        return float(const + d * (np.log(nb.nu).mean() - np.log(nb.rho).mean()))
    if estimator == "wkv":
        return float(d * np.mean(np.log(nb.nu / nb.rho)) + math.log(m / (n - 1)))
    if estimator == "adaptive":
        if nb.x_count is None or nb.y_count is None:
            raise ValueError("the adaptive estimator needs neighbour counts")
        if nb.rho_adaptive is None or nb.nu_adaptive is None:
            raise ValueError("the adaptive estimator needs adaptive radii")
        log_ratio = np.mean(np.log(nb.nu_adaptive / nb.rho_adaptive))
        correction = np.mean(digamma(nb.x_count) - digamma(nb.y_count))
        return float(d * log_ratio + correction + math.log(m / (n - 1)))
    raise ValueError(f"unknown estimator {estimator!r}; accepted values are: {_ESTIMATORS}")


def knn_kl(
    x: Points,
    y: Points,
    *,
    k: int = 5,
    metric: KnnMetric = "chebyshev",
    base: float = 2.0,
    estimator: KnnEstimator = "npeet",
    duplicates: KnnDuplicates = "error",
    generator: torch.Generator | None = None,
    workers: int = -1,
    backend: KnnBackend = "kdtree",
    chunk_size: int | None = None,
) -> float:
    r"""Estimate :math:`D(P\,\|\,Q)` from ``x ~ P``, ``y ~ Q`` by k-nearest-neighbour distances.

    Notation (Wang, Kulkarni & Verdú, "Divergence estimation for multidimensional densities
    via k-nearest-neighbor distances", IEEE Trans. Inf. Theory 55(5), 2009): ``n`` points
    ``x_i`` of dimension ``d``, ``m`` points ``y_j``; :math:`\rho_k(i)` is the distance from
    ``x_i`` to its k-th nearest *other* point of ``x`` and :math:`\nu_k(i)` its distance to
    the k-th nearest point of ``y``, in the chosen norm.

    * ``"npeet"`` (default): NPEET's ``kldiv``, the definition behind the published 2-D
      study (k = 5, max-norm, bits),
      :math:`\big[d\,(\overline{\log\nu_k} - \overline{\log\rho_k}) + \log\frac{m}{n-1}\big]
      / \ln b`, bars being means over ``i``.
    * ``"wkv"``: eq. (5) of Wang et al. (2009),
      :math:`\frac{d}{n}\sum_i \log\frac{\nu_k(i)}{\rho_k(i)} + \log\frac{m}{n-1}`. It is the
      same quantity as ``"npeet"`` (NPEET implements eq. (5)); it differs only by float
      rounding. The paper uses the Euclidean norm; any norm gives a consistent estimator,
      since the unit-ball volume cancels.
    * ``"adaptive"``: the bias-reduced "adaptive choice of k" of Wang et al. (2009): their
      generalisation of eq. (5) to point-dependent neighbour counts, with digamma terms,
      and the counts read off one common radius per point. With
      :math:`\epsilon_i = \max(\rho_k(i), \nu_k(i))`, :math:`l_i` the number of other
      ``x`` points and :math:`k_i` the number of ``y`` points within :math:`\epsilon_i`
      (both >= k), it returns
      :math:`\frac{d}{n}\sum_i \log\frac{\nu_{k_i}(i)}{\rho_{l_i}(i)}
      + \frac{1}{n}\sum_i \big[\psi(l_i) - \psi(k_i)\big] + \log\frac{m}{n-1}`, where
      :math:`\psi` is the digamma function and :math:`\rho_{l_i}(i), \nu_{k_i}(i) \le
      \epsilon_i` (one of the two equals it). With :math:`l_i = k_i = k` it reduces to eq. (5).

    Duplicates: a zero :math:`\rho_k` or :math:`\nu_k` (``k + 1`` coinciding points of ``x``,
    or ``k`` points of ``y`` on a point of ``x``) makes the log undefined. With
    ``duplicates="error"`` this raises; with ``"jitter"`` it emits a ``RuntimeWarning`` and
    recomputes after adding ``N(0, s_j^2)`` noise to every coordinate ``j`` of both sets,
    with ``s_j`` = 1e-6 times the standard deviation of the pooled coordinate. Jitter biases
    the estimate at the duplicated points; clean data is never jittered.

    Args:
        x: points of P, shape ``(n, d)`` or ``(n,)`` (read as ``d = 1``), numpy or torch.
        y: points of Q, shape ``(m, d)`` or ``(m,)``.
        k: neighbour order, ``1 <= k < n`` and ``k <= m``.
        metric: ``"chebyshev"`` (max-norm, as NPEET) or ``"euclidean"``.
        base: logarithm base of the result: 2.0 for bits, ``math.e`` for nats.
        estimator: ``"npeet"``, ``"wkv"`` or ``"adaptive"`` (formulas above).
        duplicates: ``"error"`` or ``"jitter"`` (policy above).
        generator: draws the jitter; pass one for a reproducible jittered estimate (``None``
            uses torch's default generator).
        workers: k-d tree query threads, ``-1`` for all cores (``"kdtree"`` backend).
        backend: ``"kdtree"`` (:class:`scipy.spatial.cKDTree` on the CPU, the default) or
            ``"torch"`` (exact chunked :func:`torch.cdist` + :func:`torch.topk` in float64 on
            the device of ``x``, or of ``y``, if a tensor; ``O(n (n + m))`` work, for GPUs).
        chunk_size: rows of ``x`` per block for the ``"torch"`` backend (``None``: automatic).

    Returns:
        The estimate as a Python float (it can be negative: the estimator is unbiased only
        asymptotically).

    Raises:
        TypeError: if ``x``/``y`` are not numpy arrays or tensors of real numbers, or ``k``
            is not an integer.
        ValueError: for mismatched dimensions, a rank other than 1 or 2, empty sets,
            NaN/inf values, ``k >= n`` or ``k > m``, an unknown option, a bad ``base`` or
            ``chunk_size``, or zero neighbour distances under ``duplicates="error"``.
    """
    check_choice("estimator", estimator, _ESTIMATORS)
    check_choice("metric", metric, tuple(_METRICS))
    check_choice("duplicates", duplicates, _DUPLICATES)
    check_choice("backend", backend, _BACKENDS)
    log_base = check_base(base)
    if chunk_size is not None and (isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    p = _METRICS[metric]
    adaptive = estimator == "adaptive"

    if backend == "torch":
        device = next((t.device for t in (x, y) if isinstance(t, Tensor)), torch.device("cpu"))
        xt = as_points_tensor("x", x, device)
        yt = as_points_tensor("y", y, device)
        check_same_dim(tuple(xt.shape), tuple(yt.shape))
    else:
        xa, ya = as_points_pair(x, y)
        xt, yt = torch.from_numpy(xa), torch.from_numpy(ya)
    n, d = xt.shape
    m = yt.shape[0]
    _check_k(k, n, m)
    xt, yt = _rescale(xt, yt)

    def neighbours(xv: Tensor, yv: Tensor) -> Neighbours:
        if backend == "torch":
            return torch_neighbours(xv, yv, int(k), p, adaptive, chunk_size)
        return kdtree_neighbours(xv.numpy(), yv.numpy(), int(k), p, adaptive, workers)

    nb = neighbours(xt, yt)
    zero_rho = int(np.count_nonzero(nb.rho == 0))
    zero_nu = int(np.count_nonzero(nb.nu == 0))
    if zero_rho or zero_nu:
        count = int(np.count_nonzero((nb.rho == 0) | (nb.nu == 0)))
        detail = (
            f"{count} of the n={n} points of x have a zero k-th neighbour distance (k={k}): "
            f"rho_k = 0 for {zero_rho} (at least k+1={k + 1} points of x coincide) and "
            f"nu_k = 0 for {zero_nu} (at least k={k} points of y coincide with a point of x)"
        )
        if duplicates == "error":
            raise ValueError(
                f"{detail}; the estimator takes log of these distances. Remove the duplicate "
                "points, or pass duplicates='jitter' (with a torch.Generator) to add tiny noise."
            )
        warnings.warn(
            f"{detail}; added Gaussian jitter of relative scale {JITTER_SCALE:g} to x and y. "
            "The estimate is biased at the duplicated points.",
            RuntimeWarning,
            stacklevel=2,
        )
        nb = neighbours(*_jitter(xt, yt, generator))
        if np.any(nb.rho == 0) or np.any(nb.nu == 0):
            raise ValueError(f"{detail}; jitter did not separate them (values too large?)")
    return _estimate(nb, int(d), n, m, estimator) / log_base
