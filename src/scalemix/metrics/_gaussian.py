"""Closed-form KL divergence between Gaussians, and a Gaussian fit of two point clouds."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .._utils import check_choice
from ._inputs import Points, as_points_pair, check_base

__all__ = [
    "GaussianParameterization",
    "gaussian_kl",
    "gaussian_kl_diag",
    "gaussian_kl_from_samples",
]

GaussianParameterization = Literal["variance", "log_variance"]


def _check_float(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
    if not torch.is_floating_point(t):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def _promote(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Cast floating tensors to their common promoted dtype (float32 + float64 -> float64).

    Half precision (float16, bfloat16) is promoted to float32: it has no Cholesky
    factorisation and too little range for log-determinants.
    """
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    return tuple(t.to(dtype) for t in tensors)


def _check_symmetric(name: str, cov: Tensor) -> None:
    """Raise a ``ValueError`` unless ``cov`` equals its transpose to ``sqrt(eps)`` relative."""
    tol = math.sqrt(torch.finfo(cov.dtype).eps) * float(cov.abs().max())
    asymmetry = float((cov - cov.mT).abs().max())
    if asymmetry > tol:
        raise ValueError(
            f"{name} must be symmetric; max |{name} - {name}^T| = {asymmetry:.3g} exceeds "
            f"{tol:.3g} (sqrt(eps) times its largest entry)"
        )


def gaussian_kl(mean_p: Tensor, cov_p: Tensor, mean_q: Tensor, cov_q: Tensor) -> Tensor:
    r"""KL divergence between two Gaussians with full covariances, in nats.

    :math:`D(\mathcal N(\mu_p, \Sigma_p)\,\|\,\mathcal N(\mu_q, \Sigma_q))` equals

    .. math::
        \tfrac12\Big[\operatorname{tr}(\Sigma_q^{-1}\Sigma_p)
        + (\mu_q-\mu_p)^\top\Sigma_q^{-1}(\mu_q-\mu_p) - d
        + \ln\det\Sigma_q - \ln\det\Sigma_p\Big]

    (e.g. Bishop, *Pattern Recognition and Machine Learning*, 2006, exercise 2.13 / the
    standard result for multivariate normals). Computed through Cholesky factors: the
    log-determinants are ``2 * sum(log(diag(L)))`` and the inverse is applied by triangular
    solves. Batch dimensions broadcast; mixed float dtypes are promoted (float32 and float64
    give float64), and half-precision inputs are computed and returned in float32.

    Args:
        mean_p: ``(..., d)`` mean of P.
        cov_p: ``(..., d, d)`` symmetric positive-definite covariance of P.
        mean_q: ``(..., d)`` mean of Q.
        cov_q: ``(..., d, d)`` symmetric positive-definite covariance of Q.

    Returns:
        Tensor of shape ``(...)`` (the broadcast batch shape), in nats.

    Raises:
        TypeError: for non-tensor or non-floating inputs.
        ValueError: for NaN/inf, inconsistent dimensions, non-square or non-symmetric
            covariances, or a covariance that is not positive definite.
    """
    tensors = {"mean_p": mean_p, "cov_p": cov_p, "mean_q": mean_q, "cov_q": cov_q}
    for name, t in tensors.items():
        _check_float(name, t)
    for name in ("mean_p", "mean_q"):
        if tensors[name].ndim < 1:
            raise ValueError(f"{name} must have shape (..., d), got a 0-d tensor")
    mean_p, cov_p, mean_q, cov_q = _promote(mean_p, cov_p, mean_q, cov_q)
    tensors = {"mean_p": mean_p, "cov_p": cov_p, "mean_q": mean_q, "cov_q": cov_q}
    d = mean_p.shape[-1]
    for name in ("cov_p", "cov_q"):
        cov = tensors[name]
        if cov.ndim < 2 or cov.shape[-1] != d or cov.shape[-2] != d:
            raise ValueError(
                f"{name} must have shape (..., {d}, {d}) to match mean_p's d={d}; "
                f"got {tuple(cov.shape)}"
            )
    if mean_q.shape[-1] != d:
        raise ValueError(f"mean_q must have last dimension d={d}, got shape {tuple(mean_q.shape)}")
    for name in ("cov_p", "cov_q"):
        _check_symmetric(name, tensors[name])
    chol: list[Tensor] = []
    for name in ("cov_p", "cov_q"):
        factor, info = torch.linalg.cholesky_ex(tensors[name])
        if bool((info != 0).any()):
            raise ValueError(f"{name} is not symmetric positive definite (Cholesky failed)")
        chol.append(factor)
    l_p, l_q = chol
    try:
        batch = np.broadcast_shapes(
            tuple(mean_p.shape[:-1]),
            tuple(mean_q.shape[:-1]),
            tuple(cov_p.shape[:-2]),
            tuple(cov_q.shape[:-2]),
        )
    except ValueError as err:
        raise ValueError(
            "batch shapes do not broadcast: "
            f"mean_p={tuple(mean_p.shape)}, cov_p={tuple(cov_p.shape)}, "
            f"mean_q={tuple(mean_q.shape)}, cov_q={tuple(cov_q.shape)}"
        ) from err
    l_p = l_p.expand(*batch, d, d)
    l_q = l_q.expand(*batch, d, d)
    # tr(S_q^-1 S_p) = ||L_q^-1 L_p||_F^2 ; Mahalanobis term = ||L_q^-1 (mu_q - mu_p)||^2
    a: Tensor = torch.linalg.solve_triangular(l_q, l_p, upper=False)
    diff = (mean_q - mean_p).expand(*batch, d).unsqueeze(-1)
    b: Tensor = torch.linalg.solve_triangular(l_q, diff, upper=False)
    trace = a.square().sum(dim=(-2, -1))
    mahalanobis = b.square().sum(dim=(-2, -1))
    logdet_p = l_p.diagonal(dim1=-2, dim2=-1).log().sum(-1).mul(2)
    logdet_q = l_q.diagonal(dim1=-2, dim2=-1).log().sum(-1).mul(2)
    return (trace + mahalanobis - d + logdet_q - logdet_p).mul(0.5)


def gaussian_kl_diag(
    mean_p: Tensor,
    var_p: Tensor,
    mean_q: Tensor,
    var_q: Tensor,
    *,
    parameterization: GaussianParameterization = "variance",
) -> Tensor:
    r"""KL divergence between Gaussians with diagonal covariances, in nats.

    .. math::
        \tfrac12\sum_{j=1}^d\Big[\frac{\sigma_{p,j}^2}{\sigma_{q,j}^2}
        + \frac{(\mu_{q,j}-\mu_{p,j})^2}{\sigma_{q,j}^2} - 1
        + \ln\sigma_{q,j}^2 - \ln\sigma_{p,j}^2\Big]

    (the full-covariance formula of :func:`gaussian_kl` with diagonal matrices; with
    ``parameterization="log_variance"`` the ``var_*`` arguments are :math:`\ln\sigma^2`, as
    in VAE encoders, and the log terms are used directly).

    Args:
        mean_p: ``(..., d)`` mean of P.
        var_p: ``(..., d)`` variances (or log-variances) of P.
        mean_q: ``(..., d)`` mean of Q.
        var_q: ``(..., d)`` variances (or log-variances) of Q.
        parameterization: ``"variance"`` or ``"log_variance"``.

    Returns:
        Tensor of the broadcast batch shape ``(...)``, in nats.

    Raises:
        TypeError: for non-tensor or non-floating inputs.
        ValueError: for NaN/inf, non-positive variances, shapes that do not broadcast,
            0-d inputs, or an unknown ``parameterization``.
    """
    check_choice("parameterization", parameterization, ("variance", "log_variance"))
    tensors = {"mean_p": mean_p, "var_p": var_p, "mean_q": mean_q, "var_q": var_q}
    for name, t in tensors.items():
        _check_float(name, t)
        if t.ndim < 1:
            raise ValueError(f"{name} must have shape (..., d), got a 0-d tensor")
    try:
        np.broadcast_shapes(*(tuple(t.shape) for t in tensors.values()))
    except ValueError as err:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in tensors.items())
        raise ValueError(f"shapes do not broadcast: {shapes}") from err
    mean_p, var_p, mean_q, var_q = _promote(mean_p, var_p, mean_q, var_q)
    tensors = {"mean_p": mean_p, "var_p": var_p, "mean_q": mean_q, "var_q": var_q}
    if parameterization == "variance":
        for name in ("var_p", "var_q"):
            if bool((tensors[name] <= 0).any()):
                raise ValueError(
                    f"{name} must be > 0 everywhere (or pass log-variances with "
                    "parameterization='log_variance')"
                )
        log_p, log_q = var_p.log(), var_q.log()
    else:
        log_p, log_q = var_p, var_q
    ratio = torch.exp(log_p - log_q)
    # divide by sigma_q before squaring: (mu_q - mu_p)^2 alone overflows for means of
    # ~1e155 and more even when the term itself is representable
    mahalanobis = ((mean_q - mean_p) * torch.exp(-0.5 * log_q)).square()
    return (ratio + mahalanobis - 1 + log_q - log_p).sum(dim=-1).mul(0.5)


def _power_of_two(x: Tensor, y: Tensor) -> float | None:
    """The power of two that brings the largest magnitude of ``x`` and ``y`` to [0.5, 1),
    or ``None`` when that magnitude already lies in ``[2^-16, 2^16]`` (or is 0)."""
    peak = max(float(x.abs().max()), float(y.abs().max()))
    if peak == 0.0 or 2.0**-16 <= peak <= 2.0**16:
        return None
    return 2.0 ** -math.frexp(peak)[1]


def _normalise(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Map both point sets by one affine map ``z -> s (z - c)`` to a spread of order one.

    ``s`` is a power of two (exact in floating point), applied to bring the data to
    magnitude one and, when the spread around the common centre ``c`` (the mean of the
    rescaled ``x``) is still far from one, once more after subtracting ``c``. The
    Gaussian fits transform as ``mu -> s (mu - c)``, ``Sigma -> s^2 Sigma``, which leaves
    the KL between them unchanged; without it the covariance of data of magnitude 1e155
    overflows and that of data of magnitude 1e-155 loses its precision to subnormal
    numbers. Data of moderate size and spread is returned unchanged.
    """
    scale = _power_of_two(x, y)
    if scale is not None:
        x, y = x * scale, y * scale
    c = x.mean(dim=0)
    scale = _power_of_two(x - c, y - c)
    if scale is not None:
        x, y = (x - c) * scale, (y - c) * scale
    return x, y


def gaussian_kl_from_samples(x: Points, y: Points, *, base: float = 2.0) -> float:
    r"""Fit a Gaussian to each point cloud and return the closed-form KL between the fits.

    The means are the sample means and the covariances the unbiased sample covariances
    (divisor ``n - 1``) of ``x ~ P`` and ``y ~ Q``; the result is :func:`gaussian_kl` of the
    two fits, in float64, divided by :math:`\ln b`. Exact for Gaussian data in the limit of
    many samples; for other data it compares only first and second moments.

    Args:
        x: ``(n, d)`` or ``(n,)`` points of P (numpy or torch), ``n > d``.
        y: ``(m, d)`` or ``(m,)`` points of Q, ``m > d``.
        base: logarithm base of the result: 2.0 for bits (the default, like the other
            sample-based estimators), ``math.e`` for nats.

    Returns:
        The KL divergence between the fitted Gaussians as a Python float.

    Raises:
        ValueError: for inputs rejected by :func:`knn_kl`'s checks, fewer than ``d + 1``
            points in a set, or a singular sample covariance.
    """
    log_base = check_base(base)
    xa, ya = as_points_pair(x, y)
    d = xa.shape[1]
    for name, arr in (("x", xa), ("y", ya)):
        if arr.shape[0] <= d:
            raise ValueError(
                f"{name} has {arr.shape[0]} points; a full covariance in d={d} needs at "
                f"least d + 1 = {d + 1}"
            )
    xt, yt = _normalise(torch.from_numpy(xa), torch.from_numpy(ya))
    (mu_p, cov_p), (mu_q, cov_q) = ((t.mean(dim=0), torch.cov(t.T).reshape(d, d)) for t in (xt, yt))
    try:
        value = gaussian_kl(mu_p, cov_p, mu_q, cov_q)
    except ValueError as err:
        raise ValueError(f"a sample covariance is singular (degenerate data?): {err}") from err
    return float(value) / log_base
