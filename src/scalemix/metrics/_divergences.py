"""Symmetrised divergences built on the KL estimators: Jeffreys and Jensen-Shannon."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from .._utils import check_choice
from ._gaussian import gaussian_kl_from_samples
from ._histogram import histogram_kl, histogram_probabilities
from ._inputs import FloatArray, Points, as_points, as_points_pair, check_base, subset
from ._knn import knn_kl

__all__ = ["JSMethod", "SymmetricMethod", "jensen_shannon", "symmetric_kl"]

SymmetricMethod = Literal["knn", "histogram", "gaussian"]
JSMethod = Literal["knn", "histogram"]


def symmetric_kl(
    x: Points,
    y: Points,
    *,
    method: SymmetricMethod = "knn",
    base: float = 2.0,
    **options: Any,
) -> float:
    r"""Jeffreys divergence :math:`J(P, Q) = D(P\,\|\,Q) + D(Q\,\|\,P)` (a sum, not a mean).

    Both terms use the same estimator with the same options: the second swaps the roles
    of ``x`` and ``y`` (so for ``"knn"`` it also swaps ``n`` and ``m``; ``k`` must fit both).

    Args:
        x: ``(n, d)`` or ``(n,)`` points of P (numpy or torch).
        y: ``(m, d)`` or ``(m,)`` points of Q.
        method: ``"knn"`` (:func:`knn_kl`), ``"histogram"`` (:func:`histogram_kl`) or
            ``"gaussian"`` (:func:`gaussian_kl_from_samples`).
        base: logarithm base of the result: 2.0 for bits, ``math.e`` for nats.
        **options: keyword arguments forwarded to the estimator (e.g. ``k``,
            ``estimator="adaptive"`` for :func:`knn_kl`, ``bins`` for :func:`histogram_kl`).

    Returns:
        The estimate as a Python float.

    Raises:
        ValueError: for an unknown ``method`` or any error of the estimator itself.
    """
    check_choice("method", method, ("knn", "histogram", "gaussian"))
    check_base(base)
    if method == "knn":
        return knn_kl(x, y, base=base, **options) + knn_kl(y, x, base=base, **options)
    if method == "histogram":
        return histogram_kl(x, y, base=base, **options) + histogram_kl(y, x, base=base, **options)
    if method == "gaussian":
        forward = gaussian_kl_from_samples(x, y, base=base, **options)
        return forward + gaussian_kl_from_samples(y, x, base=base, **options)
    raise ValueError(f"unknown method {method!r}; accepted: 'knn', 'histogram', 'gaussian'")


def _plugin_kl(p: FloatArray, q: FloatArray) -> float:
    """``sum_j p_j ln(p_j / q_j)`` over the cells with ``p_j > 0`` (``q_j > 0`` there)."""
    support = p > 0
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def _knn_jensen_shannon(
    x: Points, y: Points, base: float, generator: torch.Generator | None, options: dict[str, Any]
) -> float:
    xa, ya = as_points_pair(x, y)  # same dimension d, else a clear error
    n, m = xa.shape[0], ya.shape[0]
    if min(n, m) < 4:
        raise ValueError(
            f"the k-NN Jensen-Shannon estimate needs >= 4 points in each of x and y, "
            f"got {n} and {m}"
        )
    perm_x = torch.randperm(n, generator=generator)
    perm_y = torch.randperm(m, generator=generator)
    half_x, half_y = n // 2, m // 2
    size = min(n - half_x, m - half_y)
    x_eval, y_eval = subset(x, perm_x[:half_x]), subset(y, perm_y[:half_y])
    mix_x, mix_y = (
        subset(x, perm_x[half_x : half_x + size]),
        subset(y, perm_y[half_y : half_y + size]),
    )
    mixture = np.concatenate([as_points("x", mix_x), as_points("y", mix_y)])
    options.setdefault("generator", generator)
    to_mix_p = knn_kl(x_eval, mixture, base=base, **options)
    to_mix_q = knn_kl(y_eval, mixture, base=base, **options)
    return 0.5 * (to_mix_p + to_mix_q)


def jensen_shannon(
    x: Points,
    y: Points,
    *,
    method: JSMethod = "knn",
    base: float = 2.0,
    generator: torch.Generator | None = None,
    **options: Any,
) -> float:
    r"""Jensen-Shannon divergence between the distributions of two point clouds.

    :math:`\mathrm{JS}(P, Q) = \tfrac12 D(P\,\|\,M) + \tfrac12 D(Q\,\|\,M)` with
    :math:`M = \tfrac12(P + Q)` (Lin, "Divergence measures based on the Shannon entropy",
    IEEE Trans. Inf. Theory 37(1), 1991). It lies in :math:`[0, \log_b 2]` (one bit at most).

    * ``"histogram"``: exact for the two smoothed histograms of
      :func:`histogram_probabilities` (options ``bins``, ``range``, ``pseudocount``), with
      :math:`m_j = (p_j + q_j)/2`. Deterministic; ``generator`` is unused.
    * ``"knn"``: a sample of :math:`M` is needed that is independent of the points
      evaluated (a point would otherwise be its own neighbour). Each set is split at
      random (``generator``) into two halves; the mixture sample takes ``s`` points from
      the second half of ``x`` and ``s`` from the second half of ``y`` (``s`` the smaller
      half size, so the weights are exactly 1/2), and the first halves are evaluated
      against it with :func:`knn_kl` (options ``k``, ``metric``, ``estimator``, ...). It
      uses half the data per term, and is not clipped to ``[0, log_b 2]``.

    Gaussian fits are not supported: the mixture of two Gaussians is not Gaussian.

    Args:
        x: ``(n, d)`` or ``(n,)`` points of P (numpy or torch).
        y: ``(m, d)`` or ``(m,)`` points of Q.
        method: ``"knn"`` or ``"histogram"``.
        base: logarithm base of the result: 2.0 for bits, ``math.e`` for nats.
        generator: draws the random split of the ``"knn"`` estimator (``None``: torch's
            default generator, not reproducible).
        **options: keyword arguments forwarded to the underlying estimator.

    Returns:
        The estimate as a Python float.

    Raises:
        ValueError: for an unknown ``method``, fewer than 4 points per set (``"knn"``),
            or any error of the underlying estimator.
    """
    check_choice("method", method, ("knn", "histogram"))
    log_base = check_base(base)
    if method == "knn":
        return _knn_jensen_shannon(x, y, base, generator, dict(options))
    if method == "histogram":
        p, q = histogram_probabilities(x, y, **options)
        mid = 0.5 * (p + q)
        return 0.5 * (_plugin_kl(p, mid) + _plugin_kl(q, mid)) / log_base
    raise ValueError(f"unknown method {method!r}; accepted values are: 'knn', 'histogram'")
