r"""A DDIM-family reverse step for linear degradations (deterministic at ``eta = 0``).

For a step :math:`t \to s` write :math:`c = \sqrt{\bar\alpha_t / \bar\alpha_s}`,
:math:`\rho = \sigma_s^2 / \sigma_t^2`, :math:`\kappa = \rho c^2`, :math:`M = D_{s+1:t}`
and :math:`\hat y \approx D_{0:s} x_0` (the model's prediction at the resolution of
``s``). In the eigenbasis of the Gram operator,
:math:`M^\top M = V \operatorname{diag}(\lambda) V^\top`, the exact posterior
:math:`q(x_s \mid x_t, \hat y)` of :mod:`scalemix.degradation.posterior` is separable:
with :math:`r = x_t - \sqrt{\bar\alpha_t} M \hat y` (:math:`= \sigma_t \hat\epsilon`,
the implied noise at the resolution of ``t``) and :math:`G = V^\top M^\top r`,
component :math:`i` of :math:`V^\top x_s` is

.. math::
    \sqrt{\bar\alpha_s}\,\hat y_i + \rho c\, G_i + \sqrt{v_i}\,z_i,
    \qquad v_i = \sigma_s^2 (1 - \kappa \lambda_i).

Under the forward process :math:`G_i \sim \mathcal N(0, \sigma_t^2 \lambda_i)` are
independent, so :math:`e_i = G_i / (\sigma_t \sqrt{\lambda_i})` is the component's
implied standard noise, and every update

.. math::
    (V^\top x_s)_i = \sqrt{\bar\alpha_s}\,\hat y_i + \sqrt{\sigma_s^2 - v_i}\; e_i
        + \sqrt{v_i}\; z_i, \qquad 0 \le v_i \le \sigma_s^2,

keeps the marginal :math:`x_s \sim \mathcal N(\sqrt{\bar\alpha_s} D_{0:s} x_0,
\sigma_s^2 I)` whenever :math:`x_t` has its forward marginal. The DDIM family takes
:math:`v_i = \eta^2 \sigma_s^2 (1 - \kappa\lambda_i)` (Song et al., 2021, eq. 12 and
16, per component): :math:`\eta = 1` is the ancestral posterior exactly, and
:math:`\eta = 0` carries every component deterministically. Components with
:math:`\lambda_i = 0` (the frequencies a downsample removes, outside the range of
:math:`M^\top`) carry no information about :math:`x_t` and take fresh noise,
:math:`v_i = \sigma_s^2`, at any :math:`\eta`. Numerically, components with
:math:`0 \le \lambda_i \le` ``null_tol`` (where dividing by :math:`\sqrt{\lambda_i}`
would amplify rounding error) use the ancestral coupling scaled by :math:`\eta`,
:math:`\sqrt{\sigma_s^2 - v_i} = \eta\sigma_s\sqrt{\kappa\lambda_i}`, i.e.
:math:`v_i = \sigma_s^2 (1 - \eta^2\kappa\lambda_i)`: again exact marginals, exact
ancestral at :math:`\eta = 1`, fresh noise at :math:`\lambda_i = 0`.

On steps with :math:`M = I` (every same-resolution step of Scale Space Diffusion, and
DDPM) this is exactly :meth:`scalemix.scheduler.DDPMScheduler.ddim_step` with an
:math:`x_0` prediction.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from .._utils import debug_check_finite, randn
from ..types import StepOutput
from ._checks import check_state
from .posterior import _step_pair, posterior_coefficients
from .protocol import GaussianDegradation, LinearDegradation, apply_range, apply_range_adjoint

__all__ = [
    "SeparableSpectrum",
    "SupportsGramSpectrum",
    "ddim_step",
    "gram_spectrum",
    "supports_ddim",
]

_IDENTITY = torch.ones((), dtype=torch.float64)


class SeparableSpectrum(NamedTuple):
    r"""The eigendecomposition of :math:`M^\top M`, :math:`M = D_{s+1:t}`, on square images.

    :math:`M^\top M X = U\bigl[\Lambda \odot (U^\top X U)\bigr]U^\top` for states ``X``
    of shape ``(b, c, n, n)`` at the resolution of ``s``: the eigenvectors are the
    outer products of the columns of one orthogonal ``(n, n)`` matrix :math:`U`.

    Attributes:
        basis: :math:`U`, float64 ``(n, n)``; ``None`` when :math:`M = I` (the step
            leaves the operator out, e.g. a same-resolution step of Scale Space
            Diffusion or any DDPM step).
        eigenvalues: :math:`\Lambda \ge 0`, float64 ``(n, n)`` (``ones(())`` when
            ``basis`` is ``None``).
    """

    basis: Tensor | None
    eigenvalues: Tensor


@runtime_checkable
class SupportsGramSpectrum(Protocol):
    r"""A degradation that gives the spectrum of :math:`D_{s+1:t}^\top D_{s+1:t}` in closed form."""

    def gram_spectrum(self, t: int, prev_t: int) -> SeparableSpectrum:
        r"""The :class:`SeparableSpectrum` of :math:`M^\top M` for the step ``t -> prev_t``."""
        ...


def _is_identity(degradation: LinearDegradation) -> bool:
    """A :class:`~scalemix.degradation.GaussianDegradation` whose operators are its own
    identity (a subclass that overrides ``apply`` or ``apply_adjoint`` is not)."""
    cls = type(degradation)
    return (
        isinstance(degradation, GaussianDegradation)
        and cls.apply is GaussianDegradation.apply
        and cls.apply_adjoint is GaussianDegradation.apply_adjoint
    )


def supports_ddim(degradation: LinearDegradation) -> bool:
    """Whether :func:`ddim_step` runs on ``degradation``: a :class:`SupportsGramSpectrum`
    (:class:`~scalemix.degradation.ScaleSpaceDegradation`,
    :class:`~scalemix.degradation.BlurDegradation`) or a
    :class:`~scalemix.degradation.GaussianDegradation` (:math:`D_t = I`)."""
    return isinstance(degradation, SupportsGramSpectrum) or _is_identity(degradation)


def gram_spectrum(degradation: LinearDegradation, t: int, prev_t: int) -> SeparableSpectrum:
    r"""The :class:`SeparableSpectrum` of :math:`D_{s+1:t}^\top D_{s+1:t}`, ``s = prev_t``.

    Args:
        degradation: see :func:`supports_ddim`.
        t: timestep in ``[0, T)``.
        prev_t: ``s`` in ``[0, t)``.

    Raises:
        TypeError: a degradation without a closed-form spectrum (including a subclass
            of :class:`~scalemix.degradation.GaussianDegradation` that overrides its
            operators).
    """
    if isinstance(degradation, SupportsGramSpectrum):
        return degradation.gram_spectrum(t, prev_t)
    if _is_identity(degradation):
        return SeparableSpectrum(None, _IDENTITY)
    raise TypeError(
        f"the DDIM step needs the spectrum of D^T D in closed form (a gram_spectrum "
        f"method), which {type(degradation).__name__} does not provide; use the "
        "ancestral sampler (sampler='ancestral') with method='lanczos'"
    )


def _check_eta(eta: float) -> float:
    """Return ``eta`` as a float if it is a real number in ``[0, 1]``, else raise ``ValueError``."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be a float in [0, 1], got {eta!r}")
    return float(eta)


def _factors(
    lam: Tensor, sigma_s: float, sigma_t: float, kappa: float, eta: float, null_tol: float
) -> tuple[Tensor, Tensor]:
    r"""Per-component weights ``(k, b)`` of :math:`G_i` and :math:`z_i` (float64, ``lam``'s shape).

    :math:`k_i = \sqrt{\sigma_s^2 - v_i} / (\sigma_t\sqrt{\lambda_i})` and
    :math:`b_i = \sqrt{v_i}` with the :math:`v_i` of the module docstring.
    """
    big = lam > null_tol
    safe = torch.where(big, lam, torch.ones_like(lam))
    k_big = sigma_s * ((1.0 - eta**2) / safe + eta**2 * kappa).sqrt()
    k = torch.where(big, k_big, torch.full_like(lam, eta * sigma_s * math.sqrt(kappa))) / sigma_t
    v_big = eta**2 * sigma_s**2 * (1.0 - kappa * lam)
    v_small = sigma_s**2 * (1.0 - eta**2 * kappa * lam)
    b = torch.where(big, v_big, v_small).clamp(min=0.0).sqrt()
    return k, b


def ddim_step(
    degradation: LinearDegradation,
    x0_pred: Tensor,
    t: Tensor | int,
    x_t: Tensor,
    *,
    prev_t: Tensor | int | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    clip_sample: float | None = None,
    null_tol: float = 1e-6,
) -> StepOutput:
    r"""One DDIM-family step :math:`x_t \to x_s` of a linear degradation (module docstring).

    .. math::
        x_s = \sqrt{\bar\alpha_s}\,\hat y + U\bigl[k \odot (U^\top M^\top r\, U)
            + b \odot (U^\top \xi U)\bigr]U^\top,
        \qquad r = x_t - \sqrt{\bar\alpha_t} M \hat y,

    with :math:`k_i = \sqrt{\sigma_s^2 - v_i}/(\sigma_t\sqrt{\lambda_i})`,
    :math:`b_i = \sqrt{v_i}`, :math:`v_i = \eta^2\sigma_s^2(1 - \kappa\lambda_i)`
    (:math:`\sigma_s^2` where :math:`\lambda_i = 0`). ``eta = 1`` is
    :func:`~scalemix.degradation.reverse_step` with ``method="exact"`` (same mean and
    covariance, and the same sample for the same ``noise``); ``eta = 0`` draws noise only
    for the components with :math:`\lambda_i \le` ``null_tol``.

    Noise is drawn (one :math:`\xi` of the shape of ``x0_pred``) when ``eta > 0`` or
    :math:`M \ne I`; a step with :math:`M = I` and ``eta = 0`` draws none. ``s = -1``
    returns the (clipped) :math:`\hat y`.

    Args:
        degradation: a :class:`SupportsGramSpectrum` or a
            :class:`~scalemix.degradation.GaussianDegradation`.
        x0_pred: :math:`\hat y \approx D_{0:s} x_0`, shape ``(b, c, *spatial_shape(s))``.
        t: shared timestep in ``[0, T)`` (int, or a tensor with equal entries).
        x_t: current sample, shape ``(b, c, *spatial_shape(t))``.
        prev_t: ``s`` in ``[-1, t)`` (default ``t - 1``).
        eta: in ``[0, 1]``; the fraction of the posterior standard deviation kept as noise.
        generator: source of :math:`\xi`.
        noise: explicit :math:`\xi` of shape ``(b, c, *spatial_shape(s))``; overrides
            ``generator``.
        clip_sample: if a float ``a``, clamp :math:`\hat y` to ``[-a, a]`` first.
        null_tol: eigenvalues :math:`\lambda_i \le` ``null_tol`` count as (numerically)
            outside the range of :math:`M^\top`.

    Returns:
        :class:`~scalemix.scheduler.StepOutput` ``(prev_sample, pred_original_sample)``,
        both of shape ``(b, c, *spatial_shape(s))``.

    Raises:
        ValueError: ``eta`` outside ``[0, 1]``, bad ``clip_sample``, ``null_tol``, shapes
            or timesteps, or (inside :func:`scalemix.debug.check_values`) non-finite inputs.
        TypeError: a degradation without a closed-form spectrum.
    """
    eta = _check_eta(eta)
    if clip_sample is not None and not clip_sample > 0:
        raise ValueError(f"clip_sample must be None or a positive float, got {clip_sample}")
    if not 0.0 <= null_tol < 1.0:
        raise ValueError(f"null_tol must lie in [0, 1), got {null_tol}")
    t_, s = _step_pair(degradation, t, prev_t)
    check_state("x_t", x_t, degradation.spatial_shape(t_))
    b, ch = int(x_t.shape[0]), int(x_t.shape[1])
    check_state("x0_pred", x0_pred, degradation.spatial_shape(s), batch=b, channels=ch)
    debug_check_finite("x_t", x_t)
    debug_check_finite("x0_pred", x0_pred)
    if clip_sample is not None:
        x0_pred = x0_pred.clamp(-clip_sample, clip_sample)
    if s < 0:
        return StepOutput(x0_pred, x0_pred)
    spec = gram_spectrum(degradation, t_, s)
    co = posterior_coefficients(degradation, t_, s)
    sigma_t = math.sqrt(1.0 - (co.c * co.sqrt_abar_s) ** 2)
    kappa = co.rho * co.c**2
    mean0 = co.sqrt_abar_s * x0_pred
    resid = x_t - co.c * apply_range(degradation, mean0, s, t_)
    g = apply_range_adjoint(degradation, resid, s, t_)
    if spec.basis is None and eta == 0.0:  # M = I: DDIM, no noise
        return StepOutput(mean0 + (co.sigma_s / sigma_t) * g, x0_pred)
    if noise is None:
        xi = randn(mean0.shape, generator=generator, device=mean0.device, dtype=mean0.dtype)
    else:
        xi = check_state("noise", noise, mean0.shape[2:], batch=b, channels=ch)
    if spec.basis is None:  # M = I: the DDIM update with lambda = 1
        var = eta**2 * co.sigma_s**2 * max(1.0 - kappa, 0.0)
        k = math.sqrt(max(co.sigma_s**2 - var, 0.0)) / sigma_t
        return StepOutput(mean0 + k * g + math.sqrt(var) * xi, x0_pred)
    kf, bf = _factors(spec.eigenvalues, co.sigma_s, sigma_t, kappa, eta, null_tol)
    u = spec.basis.to(device=x_t.device, dtype=x_t.dtype)
    kf = kf.to(device=x_t.device, dtype=x_t.dtype)
    bf = bf.to(device=x_t.device, dtype=x_t.dtype)
    coef = kf * (u.T @ g @ u) + bf * (u.T @ xi @ u)
    return StepOutput(mean0 + u @ coef @ u.T, x0_pred)
