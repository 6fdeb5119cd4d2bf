r"""``check_linear_degradation``: the contract of a linear degradation.

The protocol is :class:`~scalemix.degradation.LinearDegradation`.

All checks run in float64 on ``(b, channels, *spatial_shape)`` states:

* **schedule**: ``alphas_cumprod`` has shape ``(T,)``, lies in ``[0, 1]`` and decreases;
* **shapes** at every step: ``apply`` maps ``spatial_shape(t-1)`` to ``spatial_shape(t)``
  and ``apply_adjoint`` back;
* **adjoint identity** at every step: :math:`\langle D_t x, y\rangle = \langle x,
  D_t^\top y\rangle`;
* **linearity**: :math:`D_t(a x + b y) = a D_t x + b D_t y`;
* **posterior** on reverse-step pairs ``(t, s)`` (:func:`~scalemix.testing.step_pairs`),
  against dense Gaussian conditioning of the joint of :math:`(x_s, x_t)` given
  :math:`x_0`, built from the matrix :math:`M = D_{s+1:t}`: with
  :math:`c = \sqrt{\bar\alpha_t/\bar\alpha_s}`,
  :math:`C_{ss} = \sigma_s^2 I`, :math:`C_{ts} = c\,\sigma_s^2 M`,
  :math:`C_{tt} = \sigma_t^2 I`, the per-step forward noise covariance
  :math:`\sigma_t^2 I - c^2\sigma_s^2 M M^\top` must be PSD, the posterior mean equals
  :math:`\mu_s + C_{st}C_{tt}^{-1}(x_t - c M \mu_s)`, and (if the degradation offers
  ``covariance_root``) the dense matrix :math:`R` of ``covariance_root`` satisfies
  :math:`R R^\top = C_{ss} - C_{st}C_{tt}^{-1}C_{ts}`;
* **DDPM reduction**: on pairs where :math:`M = I`, ``reverse_step`` equals the DDPM
  posterior (Ho et al., 2020, eq. 6-7) in mean and noise scale.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st
from torch import Tensor

from ..degradation.posterior import ReverseMethod, posterior_mean, reverse_step
from ..degradation.protocol import LinearDegradation, SupportsCovarianceRoot, apply_range
from ._runner import check_budget, require, run_property
from .strategies import step_pairs

__all__ = ["check_linear_degradation"]

_NAME = "check_linear_degradation"
F64 = torch.float64


def _dense(op_out: Tensor, n: int) -> Tensor:
    """Matrix ``(out_dim, n)`` from the images ``op_out`` ``(n, ...)`` of the unit basis."""
    return op_out.reshape(n, -1).T


def check_linear_degradation(
    degradation: LinearDegradation,
    *,
    channels: int = 1,
    max_examples: int = 20,
    seed: int = 0,
    tol: float = 1e-9,
    max_dense_size: int = 256,
) -> None:
    r"""Check a linear degradation against its definition (module docstring).

    Args:
        degradation: the degradation; its states must be small enough for dense
            matrices (``channels * prod(spatial_shape(t)) <= max_dense_size``), e.g. an
            8x8 instance.
        channels: channels ``c`` of the test states.
        max_examples: hypothesis examples per drawn property.
        seed: seed of the draws.
        tol: tolerance, relative to the size of the compared quantities (float64).
        max_dense_size: largest state dimension for the dense posterior checks.

    Raises:
        AssertionError: a property fails; the message names it, the shrunk input and the
            size of the violation.
        TypeError: ``degradation`` does not implement the protocol.
        ValueError: bad arguments, or states too large for the dense checks.
    """
    check_budget(max_examples, seed)
    if not isinstance(degradation, LinearDegradation):
        raise TypeError(
            f"degradation must implement LinearDegradation, got {type(degradation).__name__}"
        )
    T = degradation.num_train_timesteps
    dims = [channels * math.prod(degradation.spatial_shape(t)) for t in (-1, T - 1)]
    if max(dims) > max_dense_size:
        raise ValueError(
            f"states of {max(dims)} entries exceed max_dense_size={max_dense_size}; check a "
            "small instance of the degradation (e.g. 8x8 images) or raise max_dense_size"
        )
    gen = torch.Generator().manual_seed(seed)
    _check_schedule(degradation)
    _check_every_step(degradation, channels, tol, gen)

    def linearity(case: tuple[int, float, float, int]) -> None:
        t, a, b, data_seed = case
        g = torch.Generator().manual_seed(data_seed)
        shape = (2, channels, *degradation.spatial_shape(t - 1))
        x, y = (
            torch.randn(shape, generator=g, dtype=F64),
            torch.randn(shape, generator=g, dtype=F64),
        )
        dx, dy = degradation.apply(x, t), degradation.apply(y, t)
        lhs = degradation.apply(a * x + b * y, t)
        scale = abs(a) * float(dx.abs().max()) + abs(b) * float(dy.abs().max()) + 1e-300
        gap = float((lhs - a * dx - b * dy).abs().max()) / scale
        detail = f"input: t={t}, a={a}, b={b}, data seed {data_seed}"
        require(_NAME, "linearity of apply (relative)", gap, tol, detail)

    coef = st.floats(-10, 10, allow_nan=False).filter(lambda v: abs(v) > 1e-3)
    cases = st.tuples(st.integers(0, T - 1), coef, coef, st.integers(0, 2**31 - 1))
    run_property(linearity, cases, max_examples=max_examples, seed=seed)

    def posterior(case: tuple[tuple[int, int], int]) -> None:
        (t, s), data_seed = case
        _check_pair(degradation, t, s, channels, tol, data_seed)

    pairs = st.tuples(step_pairs(degradation), st.integers(0, 2**31 - 1))
    run_property(posterior, pairs, max_examples=max_examples, seed=seed)


def _check_schedule(degradation: LinearDegradation) -> None:
    abar = degradation.alphas_cumprod
    T = degradation.num_train_timesteps
    if tuple(abar.shape) != (T,):
        raise AssertionError(
            f"{_NAME}: alphas_cumprod shape violated: expected ({T},), got {tuple(abar.shape)}"
        )
    a = abar.double()
    bad = float(torch.relu(a - 1).max() + torch.relu(-a).max())
    require(_NAME, "alphas_cumprod in [0, 1]", bad, 0.0, "input: the whole schedule")
    if T > 1:
        rise = float(torch.relu(a[1:] - a[:-1]).max())
        where = int(torch.argmax(a[1:] - a[:-1])) + 1
        require(_NAME, "decreasing alphas_cumprod", rise, 0.0, f"input: t={where}")


def _check_every_step(
    degradation: LinearDegradation, channels: int, tol: float, gen: torch.Generator
) -> None:
    for t in range(degradation.num_train_timesteps):
        in_shape = (2, channels, *degradation.spatial_shape(t - 1))
        out_shape = (2, channels, *degradation.spatial_shape(t))
        x = torch.randn(in_shape, generator=gen, dtype=F64)
        y = torch.randn(out_shape, generator=gen, dtype=F64)
        dx = degradation.apply(x, t)
        dty = degradation.apply_adjoint(y, t)
        for name, got, want in (("apply", dx, out_shape), ("apply_adjoint", dty, in_shape)):
            if tuple(got.shape) != want:
                raise AssertionError(
                    f"{_NAME}: shape of {name} violated at t={t}: expected {want}, "
                    f"got {tuple(got.shape)}"
                )
        lhs = float((dx * y).sum())
        rhs = float((x * dty).sum())
        scale = float(dx.norm() * y.norm() + x.norm() * dty.norm()) + 1e-300
        detail = f"input: t={t}, <Dx, y> = {lhs:.6g}, <x, D^T y> = {rhs:.6g}"
        require(
            _NAME,
            "adjoint identity <Dx, y> = <x, D^T y> (relative)",
            abs(lhs - rhs) / scale,
            tol,
            detail,
        )


def _check_pair(
    degradation: LinearDegradation, t: int, s: int, channels: int, tol: float, data_seed: int
) -> None:
    detail = f"input: t={t}, s={s}, data seed {data_seed}"
    s_shape, t_shape = degradation.spatial_shape(s), degradation.spatial_shape(t)
    n = channels * math.prod(s_shape)
    basis = torch.eye(n, dtype=F64).reshape(n, channels, *s_shape)
    m = _dense(apply_range(degradation, basis, s, t), n)  # (n_t, n_s)
    abar = degradation.alphas_cumprod.double()
    abar_t = float(abar[t])
    abar_s = float(abar[s]) if s >= 0 else 1.0
    var_s, var_t = 1.0 - abar_s, 1.0 - abar_t
    c = math.sqrt(abar_t / abar_s)
    eye_t = torch.eye(m.shape[0], dtype=F64)
    noise_cov = var_t * eye_t - c**2 * var_s * m @ m.T
    neg = float(torch.relu(-torch.linalg.eigvalsh(noise_cov)).max())
    require(
        _NAME, "PSD forward noise covariance sigma_t^2 I - c^2 sigma_s^2 M M^T", neg, tol, detail
    )
    c_ss = var_s * torch.eye(n, dtype=F64)
    c_ts = c * var_s * m
    c_tt = var_t * eye_t
    gain = torch.linalg.solve(c_tt, c_ts).T  # C_st C_tt^{-1}
    cond_cov = c_ss - gain @ c_ts
    g = torch.Generator().manual_seed(data_seed)
    x0_hat = torch.rand((1, channels, *s_shape), generator=g, dtype=F64) * 2 - 1
    x_t = torch.randn((1, channels, *t_shape), generator=g, dtype=F64)
    mu_s = math.sqrt(abar_s) * x0_hat.reshape(-1)
    mean_ref = mu_s + gain @ (x_t.reshape(-1) - c * m @ mu_s)
    mean = posterior_mean(degradation, x0_hat, t, x_t, prev_t=s).reshape(-1)
    scale = float(mean_ref.abs().max()) + 1.0
    gap = float((mean - mean_ref).abs().max()) / scale
    require(_NAME, "posterior mean = dense Gaussian conditioning (relative)", gap, tol, detail)
    if isinstance(degradation, SupportsCovarianceRoot):
        root = _dense(degradation.covariance_root(basis, t, s), n)  # columns: R e_i
        if tuple(root.shape) != (n, n):
            raise AssertionError(f"{_NAME}: covariance_root shape violated; {detail}")
        gap = float((root @ root.T - cond_cov).abs().max()) / max(var_s, 1e-300)
        require(
            _NAME,
            "covariance_root R R^T = dense conditional covariance (relative)",
            gap,
            tol,
            detail,
        )
    if (
        s >= 0
        and tuple(m.shape) == (n, n)
        and bool(torch.allclose(m, torch.eye(n, dtype=F64), atol=tol))
    ):
        _check_ddpm_reduction(degradation, t, s, x0_hat, x_t, abar_t, abar_s, tol, detail)


def _check_ddpm_reduction(
    degradation: LinearDegradation,
    t: int,
    s: int,
    x0: Tensor,
    x_t: Tensor,
    abar_t: float,
    abar_s: float,
    tol: float,
    detail: str,
) -> None:
    alpha_ts = abar_t / abar_s
    mean = (math.sqrt(abar_s) * (1 - alpha_ts) * x0 + math.sqrt(alpha_ts) * (1 - abar_s) * x_t) / (
        1 - abar_t
    )
    var = (1 - abar_s) / (1 - abar_t) * (1 - alpha_ts)
    xi = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t), dtype=F64)
    method: ReverseMethod = (
        "exact" if isinstance(degradation, SupportsCovarianceRoot) else "lanczos"
    )
    out = reverse_step(degradation, x0, t, x_t, prev_t=s, noise=xi, method=method)
    want = mean + math.sqrt(var) * xi
    gap = float((out.prev_sample - want).abs().max()) / (float(want.abs().max()) + 1.0)
    require(
        _NAME, f"reverse_step ({method}) = DDPM posterior where M = I (relative)", gap, tol, detail
    )
