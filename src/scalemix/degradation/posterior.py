r"""The exact reverse step of a generalized linear degradation.

For :math:`x_t = \sqrt{\bar\alpha_t} D_{0:t} x_0 + \sigma_t \epsilon` and an earlier
timestep :math:`s < t` (``s = t - 1``, or the next kept step of a respaced schedule),
write :math:`c = \sqrt{\bar\alpha_t / \bar\alpha_s}`, :math:`\rho = \sigma_s^2 /
\sigma_t^2`, :math:`M = D_{s+1:t}` and :math:`\hat x_0 \approx D_{0:s} x_0`. Gaussian
conditioning of :math:`x_t = c M x_s + \eta` gives (Mukhopadhyay et al., 2026, eq. 8-9)

.. math::
    \mu = \sqrt{\bar\alpha_s}\,\hat x_0
        + \rho c\, M^\top\bigl(x_t - c M \sqrt{\bar\alpha_s}\,\hat x_0\bigr), \qquad
    \Sigma = \sigma_s^2\,\bigl(I - \rho c^2 M^\top M\bigr),

which is exactly the DDPM posterior when :math:`M = I`. :math:`\Sigma` is PSD iff
:math:`\rho c^2 \lambda_{\max}(M^\top M) \le 1`. The step draws
:math:`x_s = \mu + \Sigma^{1/2}\xi`, :math:`\xi \sim \mathcal N(0, I)` (no noise when
``s = -1``), with :math:`\Sigma^{1/2}\xi` from one of three methods:

* ``"exact"``: the degradation's closed form (:class:`SupportsCovarianceRoot`);
* ``"lanczos"``: :func:`lanczos_covariance_root`, generic, from ``apply`` /
  ``apply_adjoint`` only;
* ``"isotropic"``: the shortcut :math:`\sigma_s\sqrt{1 - \rho c^2}\,\xi` (fresh white
  noise after the upsampling :math:`M^\top`, with the variance of a same-resolution
  step). It ignores the structure of :math:`\Sigma` (frequencies removed by :math:`M`
  should receive variance :math:`\sigma_s^2`) and is reported to cause saturation
  artifacts; it is offered only for comparison.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, TypedDict, get_args

import torch
from torch import Tensor

from .._utils import assume_constant, check_choice, debug_check_finite, randn
from ..types import StepOutput
from ._checks import check_state, shared_timestep
from .lanczos import lanczos_function, power_iteration
from .protocol import LinearDegradation, SupportsCovarianceRoot, apply_range, apply_range_adjoint

__all__ = [
    "PosteriorCoefficients",
    "ReverseMethod",
    "ReverseStepOptions",
    "lanczos_covariance_root",
    "posterior_coefficients",
    "posterior_mean",
    "reverse_step",
]

ReverseMethod = Literal["exact", "lanczos", "isotropic"]


class ReverseStepOptions(TypedDict, total=False):
    """The keyword arguments that a degradation's ``reverse_step`` method passes on.

    They are those of :func:`reverse_step` (where they are documented) except
    ``lanczos_iterations``.
    """

    prev_t: Tensor | int | None
    method: ReverseMethod
    generator: torch.Generator | None
    noise: Tensor | None
    clip_sample: float | None


class PosteriorCoefficients(NamedTuple):
    r"""Scalars of the reverse step ``t -> s`` (Python floats, computed in float64).

    Attributes:
        sqrt_abar_s: :math:`\sqrt{\bar\alpha_s}` (1 for ``s = -1``).
        c: :math:`\sqrt{\bar\alpha_t / \bar\alpha_s}`.
        rho: :math:`\sigma_s^2 / \sigma_t^2` (0 for ``s = -1``).
        sigma_s: :math:`\sqrt{1 - \bar\alpha_s}`.
    """

    sqrt_abar_s: float
    c: float
    rho: float
    sigma_s: float


def _step_pair(
    degradation: LinearDegradation, t: Tensor | int, prev_t: Tensor | int | None
) -> tuple[int, int]:
    T = degradation.num_train_timesteps
    t_ = shared_timestep(t, None, T)
    s = (
        t_ - 1
        if prev_t is None
        else shared_timestep(prev_t, None, T, allow_clean=True, name="prev_t")
    )
    if s >= t_:
        raise ValueError(f"prev_t must be smaller than t, got t={t_}, prev_t={s}")
    return t_, s


def posterior_coefficients(
    degradation: LinearDegradation, t: Tensor | int, prev_t: Tensor | int | None = None
) -> PosteriorCoefficients:
    r"""The scalars :math:`(\sqrt{\bar\alpha_s}, c, \rho, \sigma_s)` of the step ``t -> s``.

    Args:
        degradation: any :class:`LinearDegradation`.
        t: shared timestep in ``[0, T)``.
        prev_t: target in ``[-1, t)`` (default ``t - 1``).
    """
    t_, s = _step_pair(degradation, t, prev_t)
    return _coefficients(degradation, t_, s)


@assume_constant
def _coefficients(degradation: LinearDegradation, t: int, s: int) -> PosteriorCoefficients:
    """The coefficients of a validated step ``t -> s``: a constant of ``(degradation, t, s)``.

    Marked as such so that a compiled reverse step reads no schedule value back
    from a tensor (a graph break).
    """
    abar = degradation.alphas_cumprod
    abar_t = float(abar[t])
    abar_s = float(abar[s]) if s >= 0 else 1.0
    rho = (1.0 - abar_s) / (1.0 - abar_t)
    return PosteriorCoefficients(
        math.sqrt(abar_s), math.sqrt(abar_t / abar_s), rho, math.sqrt(1.0 - abar_s)
    )


def posterior_mean(
    degradation: LinearDegradation,
    x0_pred: Tensor,
    t: Tensor | int,
    x_t: Tensor,
    *,
    prev_t: Tensor | int | None = None,
) -> Tensor:
    r"""The posterior mean :math:`\mu` of the module docstring.

    Args:
        degradation: any :class:`LinearDegradation`.
        x0_pred: :math:`\hat x_0 \approx D_{0:s} x_0`, shape ``(b, c, *spatial_shape(s))``.
        t: shared timestep in ``[0, T)``.
        x_t: shape ``(b, c, *spatial_shape(t))``.
        prev_t: ``s`` in ``[-1, t)`` (default ``t - 1``).

    Returns:
        Shape ``(b, c, *spatial_shape(s))``.
    """
    t_, s = _step_pair(degradation, t, prev_t)
    check_state("x_t", x_t, degradation.spatial_shape(t_))
    b, ch = int(x_t.shape[0]), int(x_t.shape[1])
    check_state("x0_pred", x0_pred, degradation.spatial_shape(s), batch=b, channels=ch)
    co = posterior_coefficients(degradation, t_, s)
    mu_s = co.sqrt_abar_s * x0_pred
    resid = x_t - co.c * apply_range(degradation, mu_s, s, t_)
    return mu_s + (co.rho * co.c) * apply_range_adjoint(degradation, resid, s, t_)


def lanczos_covariance_root(
    degradation: LinearDegradation,
    xi: Tensor,
    t: Tensor | int,
    *,
    prev_t: Tensor | int | None = None,
    num_iterations: int = 40,
    power_iterations: int = 20,
    safety: float = 1e-3,
) -> Tensor:
    r""":math:`\Sigma^{1/2}\xi` by Lanczos, from ``apply`` / ``apply_adjoint`` only.

    Applies :math:`\sigma_s\,(I - \kappa M^\top M)^{1/2}` with :math:`\kappa = \rho c^2`
    via :func:`~scalemix.degradation.lanczos.lanczos_function` (one Krylov space per
    batch item). :math:`\lambda_{\max}(M^\top M)` is estimated by ``power_iterations``
    steps of power iteration from a fixed pseudo-random vector, and :math:`\kappa` is
    clamped to :math:`(1 - \text{safety}) / \lambda_{\max}` when larger: this keeps
    :math:`\Sigma` PSD for operators whose forward process would otherwise be
    ill-posed, at the cost of a (then approximate) covariance. For Scale Space
    Diffusion with a halving pyramid :math:`\kappa\lambda_{\max} \le 0.26` and the clamp
    never binds; the spectrum of :math:`I - \kappa M^\top M` lies in :math:`[0.74, 1]`,
    so 40 Lanczos steps converge to rounding error (error factor :math:`< 0.08` per
    step). Pyramids that shrink less per level have a larger :math:`\lambda_{\max}`
    (0.39 for 64 -> 40, 0.57 for 16 -> 12; it tends to 1 as the ratio of sizes tends
    to 1), so convergence is slower there: the spectrum lies in :math:`[0.48, 1]` for
    the pairs of the factor-1.5 pyramid 64/40/28/20 (error factor :math:`< 0.18` per step).

    Args:
        degradation: any :class:`LinearDegradation`.
        xi: standard normal noise, shape ``(b, c, *spatial_shape(s))``.
        t: shared timestep in ``[0, T)``.
        prev_t: ``s`` in ``[-1, t)`` (default ``t - 1``).
        num_iterations: Lanczos steps.
        power_iterations: power-iteration steps for :math:`\lambda_{\max}`.
        safety: relative margin of the clamp, in ``(0, 1)``.

    Returns:
        Shape of ``xi``.
    """
    if not 0.0 < safety < 1.0:
        raise ValueError(f"safety must lie in (0, 1), got {safety}")
    t_, s = _step_pair(degradation, t, prev_t)
    check_state("xi", xi, degradation.spatial_shape(s))
    co = posterior_coefficients(degradation, t_, s)
    if s < 0:
        return torch.zeros_like(xi)

    def gram(v: Tensor) -> Tensor:
        return apply_range_adjoint(degradation, apply_range(degradation, v, s, t_), s, t_)

    gen = torch.Generator(device="cpu").manual_seed(0)
    v0 = torch.randn((1, *xi.shape[1:]), generator=gen, dtype=torch.float64)
    lam_max = power_iteration(
        gram, v0.to(device=xi.device, dtype=xi.dtype), num_iterations=power_iterations
    )
    kappa = co.rho * co.c**2
    if lam_max > 0.0:
        kappa = min(kappa, (1.0 - safety) / lam_max)

    def cov(v: Tensor) -> Tensor:
        return v - kappa * gram(v)

    root = lanczos_function(
        cov, xi, lambda e: e.clamp(min=0.0).sqrt(), num_iterations=num_iterations
    )
    return co.sigma_s * root


def reverse_step(
    degradation: LinearDegradation,
    x0_pred: Tensor,
    t: Tensor | int,
    x_t: Tensor,
    *,
    prev_t: Tensor | int | None = None,
    method: ReverseMethod = "exact",
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    clip_sample: float | None = None,
    lanczos_iterations: int = 40,
) -> StepOutput:
    r"""One ancestral step :math:`x_t \to x_s \sim \mathcal N(\mu, \Sigma)` (module docstring).

    Args:
        degradation: any :class:`LinearDegradation` (``"exact"`` also needs
            :class:`SupportsCovarianceRoot`).
        x0_pred: the model's :math:`\hat x_0` at the resolution of ``s``, shape
            ``(b, c, *spatial_shape(s))``.
        t: shared timestep in ``[0, T)`` (int, or a tensor with equal entries).
        x_t: current sample, shape ``(b, c, *spatial_shape(t))``.
        prev_t: ``s`` in ``[-1, t)`` (default ``t - 1``; ``-1`` is clean data).
        method: ``"exact"``, ``"lanczos"`` or ``"isotropic"`` covariance root.
        generator: source of :math:`\xi`.
        noise: explicit :math:`\xi` of shape ``(b, c, *spatial_shape(s))``; overrides
            ``generator``. Unused when ``s = -1``.
        clip_sample: if a float ``a``, clamp :math:`\hat x_0` to ``[-a, a]`` first.
        lanczos_iterations: Lanczos steps of ``method="lanczos"``.

    Returns:
        :class:`~scalemix.scheduler.StepOutput` ``(prev_sample, pred_original_sample)``
        with ``prev_sample`` of shape ``(b, c, *spatial_shape(s))`` and the (clipped)
        :math:`\hat x_0`.

    Raises:
        ValueError: unknown ``method``, bad shapes, timesteps out of range, or (inside
            :func:`scalemix.debug.check_values`) non-finite inputs.
        TypeError: ``method="exact"`` for a degradation without a closed form.
    """
    check_choice("method", method, get_args(ReverseMethod))
    if clip_sample is not None and not clip_sample > 0:
        raise ValueError(f"clip_sample must be None or a positive float, got {clip_sample}")
    t_, s = _step_pair(degradation, t, prev_t)
    debug_check_finite("x_t", x_t)
    debug_check_finite("x0_pred", x0_pred)
    if clip_sample is not None:
        x0_pred = x0_pred.clamp(-clip_sample, clip_sample)
    mean = posterior_mean(degradation, x0_pred, t_, x_t, prev_t=s)
    if s < 0:
        return StepOutput(mean, x0_pred)
    if noise is None:
        xi = randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    else:
        xi = check_state(
            "noise", noise, mean.shape[2:], batch=mean.shape[0], channels=mean.shape[1]
        )
    if method == "exact":
        if not isinstance(degradation, SupportsCovarianceRoot):
            raise TypeError(
                f"method='exact' needs a closed-form covariance_root, which "
                f"{type(degradation).__name__} does not provide; use method='lanczos'"
            )
        root = degradation.covariance_root(xi, t_, s)
    elif method == "lanczos":
        root = lanczos_covariance_root(
            degradation, xi, t_, prev_t=s, num_iterations=lanczos_iterations
        )
    elif method == "isotropic":
        co = posterior_coefficients(degradation, t_, s)
        root = co.sigma_s * math.sqrt(max(1.0 - co.rho * co.c**2, 0.0)) * xi
    else:  # pragma: no cover - guarded by check_choice
        raise ValueError(f"unknown method {method!r}; use 'exact', 'lanczos' or 'isotropic'")
    return StepOutput(mean + root, x0_pred)
