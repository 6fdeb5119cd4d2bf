r"""Reverse-step rules of Gaussian diffusion as pure functions of the schedule.

Each ``*_update`` maps the model's :math:`\hat x_0` and the current sample :math:`x_t`
(shape ``(b, ...)``) to the sample :math:`x_s` at an earlier timestep ``s``, given the
cumulative products :math:`\bar\alpha_t, \bar\alpha_s` as float64 tensors of shape
``(b, 1, ..., 1)`` (:math:`\bar\alpha = 1` is clean data). They hold no state and do
no validation: :class:`~scalemix.DDPMScheduler`'s step methods validate, gather the
coefficients and call them, and :func:`~scalemix.sample` loops over them. Coefficients
are formed in float64 and cast to the data's dtype where they multiply data.

Notation: :math:`\alpha_t = \sqrt{\bar\alpha_t}`, :math:`\sigma_t = \sqrt{1-\bar\alpha_t}`,
:math:`\lambda_t = \log(\alpha_t / \sigma_t)` (half the log-SNR), and in the
parameterisation of Karras et al. (2022) :math:`\varsigma_t = \sigma_t / \alpha_t`
with :math:`y = x / \alpha` (so :math:`y_t = x_0 + \varsigma_t \epsilon`).

All first-order rules coincide: DDIM with ``eta = 0``, Euler in :math:`\varsigma` and
the first-order DPM-Solver++ are the same map
:math:`x_s = (\sigma_s/\sigma_t)\,x_t + \alpha_s (1 - e^{-h})\,\hat x_0`,
:math:`h = \lambda_s - \lambda_t`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._forward_process import VarianceType, cast, posterior_moments
from ._utils import append_dims
from .schedules import logsnr_timesteps as logsnr_timesteps

__all__ = [
    "DynamicThreshold",
    "ancestral_update",
    "ddim_update",
    "dpmpp_2m_sde_update",
    "dpmpp_2m_update",
    "euler_update",
    "heun_update",
    "logsnr_timesteps",
]


def ancestral_update(
    x0: Tensor,
    x_t: Tensor,
    abar_t: Tensor,
    abar_s: Tensor,
    z: Tensor,
    variance_type: VarianceType = "fixed_small",
) -> Tensor:
    r"""Ancestral step (Ho et al., 2020, Algorithm 2; strided as Nichol & Dhariwal, 2021).

    .. math:: x_s = \tilde\mu(\hat x_0, x_t) + \sqrt{\tilde\beta}\,z,
        \qquad z = 0 \text{ where } \bar\alpha_s = 1 \text{ (clean data)}

    Args:
        x0: :math:`\hat x_0`, shape ``(b, ...)``.
        x_t: shape ``(b, ...)``.
        abar_t: :math:`\bar\alpha_t`, float64 ``(b, 1, ..., 1)``.
        abar_s: :math:`\bar\alpha_s`, float64 ``(b, 1, ..., 1)``.
        z: standard normal noise, shape ``(b, ...)``.
        variance_type: :math:`\tilde\beta` (``"fixed_small"``) or :math:`\beta_{t|s}`.

    Returns:
        :math:`x_s`, shape ``(b, ...)``.
    """
    mean, var = posterior_moments(x0, x_t, abar_t, abar_s, variance_type)
    keep = (abar_s < 1.0).to(var.dtype)
    return mean + cast(keep * var.sqrt(), x_t) * z


def ddim_update(
    x0: Tensor,
    eps: Tensor,
    abar_t: Tensor,
    abar_s: Tensor,
    eta: float = 0.0,
    z: Tensor | None = None,
) -> Tensor:
    r"""DDIM step (Song et al., 2021, eq. 12 and 16).

    .. math::
        \sigma^2 = \eta^2\,\frac{1-\bar\alpha_s}{1-\bar\alpha_t}
        \Bigl(1 - \frac{\bar\alpha_t}{\bar\alpha_s}\Bigr),\qquad
        x_s = \sqrt{\bar\alpha_s}\,\hat x_0
        + \sqrt{1-\bar\alpha_s-\sigma^2}\,\hat\epsilon + \sigma z

    Args:
        x0: :math:`\hat x_0`, shape ``(b, ...)``.
        eps: :math:`\hat\epsilon`, shape ``(b, ...)``.
        abar_t, abar_s: float64 ``(b, 1, ..., 1)``.
        eta: noise scale, ``>= 0``.
        z: standard normal noise ``(b, ...)``; required when ``eta > 0``.

    Returns:
        :math:`x_s`, shape ``(b, ...)``.
    """
    var = eta**2 * (1.0 - abar_s) / (1.0 - abar_t) * (1.0 - abar_t / abar_s)
    dir_coef = (1.0 - abar_s - var).clamp(min=0.0).sqrt()
    out = cast(abar_s.sqrt(), x0) * x0 + cast(dir_coef, x0) * eps
    if eta > 0:
        if z is None:
            raise ValueError("ddim_update with eta > 0 needs the noise z")
        out = out + cast(var.sqrt(), x0) * z
    return out


def _varsigma(abar: Tensor) -> Tensor:
    return ((1.0 - abar) / abar).sqrt()


def euler_update(x0: Tensor, x_t: Tensor, abar_t: Tensor, abar_s: Tensor) -> Tensor:
    r"""Euler step of the probability-flow ODE in :math:`\varsigma` (Karras et al., 2022, eq. 4).

    .. math::
        \frac{dy}{d\varsigma} = \frac{y - \hat x_0(y)}{\varsigma},\qquad
        y_s = y_t + (\varsigma_s - \varsigma_t)\,\frac{y_t - \hat x_0}{\varsigma_t},
        \qquad x_s = \alpha_s\,y_s

    Written as :math:`x_s = (\sigma_s/\sigma_t)\,x_t + \alpha_s(1 - \varsigma_s/\varsigma_t)
    \hat x_0`, which is finite at SNR 0 and equals :func:`ddim_update` with ``eta = 0``.
    Shapes as in :func:`ddim_update`.
    """
    ratio = (((1.0 - abar_s) * abar_t) / (abar_s * (1.0 - abar_t))).sqrt()  # varsigma_s / _t
    coef_xt = ((1.0 - abar_s) / (1.0 - abar_t)).sqrt()  # alpha_s * ratio / alpha_t
    return cast(coef_xt, x_t) * x_t + cast(abar_s.sqrt() * (1.0 - ratio), x_t) * x0


def heun_update(
    x0: Tensor,
    x_t: Tensor,
    abar_t: Tensor,
    abar_s: Tensor,
    x_euler: Tensor,
    x0_euler: Tensor,
) -> Tensor:
    r"""Heun's second-order correction (Karras et al., 2022, Algorithm 1, no churn).

    With :math:`d_t = (y_t - \hat x_0)/\varsigma_t` at :math:`x_t`, the Euler point
    ``x_euler`` (:func:`euler_update`) and the model's :math:`\hat x_0'` there
    (``x0_euler``), :math:`d' = (y' - \hat x_0')/\varsigma_s` and

    .. math:: y_s = y_t + (\varsigma_s - \varsigma_t)\,\tfrac12 (d_t + d'),
        \qquad x_s = \alpha_s\,y_s .

    A step into clean data (:math:`\varsigma_s = 0`) is the Euler step itself. Needs a
    finite :math:`\varsigma_t` (SNR > 0 at ``t``). Shapes: all data ``(b, ...)``,
    coefficients float64 ``(b, 1, ..., 1)``.
    """
    sig_t, sig_s = _varsigma(abar_t), _varsigma(abar_s)
    alpha_t, alpha_s = abar_t.sqrt(), abar_s.sqrt()
    final = abar_s >= 1.0
    safe_sig_s = torch.where(final, torch.ones_like(sig_s), sig_s)
    y_t = x_t / cast(alpha_t, x_t)
    d_t = (y_t - x0) / cast(sig_t, x_t)
    d_s = (x_euler / cast(alpha_s, x_t) - x0_euler) / cast(safe_sig_s, x_t)
    y_s = y_t + cast(sig_s - sig_t, x_t) * 0.5 * (d_t + d_s)
    return torch.where(append_dims(final, x_t.ndim), x_euler, cast(alpha_s, x_t) * y_s)


def _half_logsnr(abar: Tensor) -> Tensor:
    return 0.5 * (torch.log(abar) - torch.log1p(-abar))


def dpmpp_2m_update(
    x0: Tensor,
    x_t: Tensor,
    abar_t: Tensor,
    abar_s: Tensor,
    x0_last: Tensor | None = None,
    abar_last: Tensor | None = None,
) -> Tensor:
    r"""Multistep DPM-Solver++ (2M) step (Lu et al., 2022, Algorithm 2).

    With :math:`h = \lambda_s - \lambda_t` and, for the second order, the previous step's
    :math:`h_{\text{last}} = \lambda_t - \lambda_{\text{last}}`, :math:`r = h_{\text{last}}/h`:

    .. math::
        D = \Bigl(1 + \frac{1}{2r}\Bigr)\hat x_0 - \frac{1}{2r}\,\hat x_0^{\text{last}},
        \qquad
        x_s = \frac{\sigma_s}{\sigma_t}\,x_t - \alpha_s\,(e^{-h} - 1)\,D

    Without ``x0_last`` (the first step) :math:`D = \hat x_0`: first order, equal to DDIM.
    A step into clean data (:math:`\bar\alpha_s = 1`, :math:`h = \infty`) is first order
    too and returns :math:`\hat x_0` (as diffusers' ``final_sigmas_type="zero"``);
    :math:`e^{-h} = \sigma_s\alpha_t / (\alpha_s\sigma_t)` is formed as that ratio, so
    the step stays finite there and at SNR 0.

    Args:
        x0: :math:`\hat x_0` at ``t``, shape ``(b, ...)``.
        x_t: shape ``(b, ...)``.
        abar_t, abar_s: float64 ``(b, 1, ..., 1)``.
        x0_last: :math:`\hat x_0` of the previous step (at timestep ``last > t``).
        abar_last: :math:`\bar\alpha_{\text{last}}`, float64 ``(b, 1, ..., 1)``; required
            with ``x0_last``.

    Returns:
        :math:`x_s`, shape ``(b, ...)``.
    """
    alpha_t, sigma_t = abar_t.sqrt(), (1.0 - abar_t).sqrt()
    alpha_s, sigma_s = abar_s.sqrt(), (1.0 - abar_s).sqrt()
    exp_neg_h = (sigma_s * alpha_t) / (alpha_s * sigma_t)
    d = _second_order_x0(x0, abar_t, abar_s, x0_last, abar_last)
    return cast(sigma_s / sigma_t, x_t) * x_t + cast(alpha_s * (1.0 - exp_neg_h), x_t) * d


def _second_order_x0(
    x0: Tensor, abar_t: Tensor, abar_s: Tensor, x0_last: Tensor | None, abar_last: Tensor | None
) -> Tensor:
    """``D`` of the 2M rules: ``x0`` extrapolated along lambda by half a step ratio."""
    if x0_last is None:
        return x0
    if abar_last is None:
        raise ValueError("a second-order step with x0_last needs abar_last")
    lam_t = _half_logsnr(abar_t)
    h = _half_logsnr(abar_s) - lam_t
    h_last = lam_t - _half_logsnr(abar_last)
    half_inv_r = torch.where(abar_s < 1.0, h / (2.0 * h_last), torch.zeros_like(h))
    return x0 + cast(half_inv_r, x0) * (x0 - x0_last)


def dpmpp_2m_sde_update(
    x0: Tensor,
    x_t: Tensor,
    abar_t: Tensor,
    abar_s: Tensor,
    noise: Tensor,
    x0_last: Tensor | None = None,
    abar_last: Tensor | None = None,
) -> Tensor:
    r"""Multistep SDE-DPM-Solver++ (2M) step (Lu et al., 2022b, Sec. 4; midpoint form).

    The second-order solver of the reverse SDE in data prediction, with ``D`` as in
    :func:`dpmpp_2m_update` and fresh noise :math:`z \sim \mathcal N(0, I)`:

    .. math::
        x_s = \frac{\sigma_s}{\sigma_t} e^{-h}\,x_t + \alpha_s (1 - e^{-2h})\,D
        + \sigma_s \sqrt{1 - e^{-2h}}\,z

    Its first-order step (``x0_last=None``) is the ancestral DDPM step: the mean
    :math:`\frac{\alpha_t\sigma_s^2}{\alpha_s\sigma_t^2} x_t + \frac{\alpha_s
    (1 - \bar\alpha_t/\bar\alpha_s)}{\sigma_t^2}\hat x_0` and the variance
    :math:`\sigma_s^2 (1 - e^{-2h}) = \tilde\beta` of the posterior
    :math:`q(x_s \mid x_t, \hat x_0)`. A step into clean data (:math:`\bar\alpha_s = 1`)
    returns :math:`\hat x_0`. Equal to diffusers' ``DPMSolverMultistepScheduler(
    algorithm_type="sde-dpmsolver++", solver_order=2, solver_type="midpoint")``.

    Args:
        x0, x_t, abar_t, abar_s, x0_last, abar_last: as in :func:`dpmpp_2m_update`.
        noise: :math:`z`, shape ``(b, ...)``.

    Returns:
        :math:`x_s`, shape ``(b, ...)``.
    """
    alpha_t, sigma_t = abar_t.sqrt(), (1.0 - abar_t).sqrt()
    alpha_s, sigma_s = abar_s.sqrt(), (1.0 - abar_s).sqrt()
    exp_neg_h = (sigma_s * alpha_t) / (alpha_s * sigma_t)
    one_minus = 1.0 - exp_neg_h.square()
    d = _second_order_x0(x0, abar_t, abar_s, x0_last, abar_last)
    return (
        cast(sigma_s / sigma_t * exp_neg_h, x_t) * x_t
        + cast(alpha_s * one_minus, x_t) * d
        + cast(sigma_s * one_minus.clamp(min=0.0).sqrt(), x_t) * noise
    )


@dataclass(frozen=True)
class DynamicThreshold:
    r"""Dynamic thresholding of :math:`\hat x_0` (Saharia et al., 2022, Sec. 2.3).

    Per sample, :math:`s = \min(\max(q_{\text{ratio}}(|\hat x_0|), 1), \text{max\_value})`
    (:math:`q` the quantile over all of a sample's entries), then
    :math:`\hat x_0 \leftarrow \operatorname{clamp}(\hat x_0, -s, s) / s`. Pixels that
    saturate are pushed inwards instead of clipped at :math:`\pm 1`. Equal to diffusers'
    ``thresholding=True`` with ``dynamic_thresholding_ratio=ratio`` and
    ``sample_max_value=max_value``.

    Args:
        ratio: the quantile, in ``(0, 1]``.
        max_value: the largest threshold, ``>= 1``.
    """

    ratio: float = 0.995
    max_value: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must lie in (0, 1], got {self.ratio}")
        if not self.max_value >= 1.0:
            raise ValueError(f"max_value must be >= 1, got {self.max_value}")

    def __call__(self, x0: Tensor) -> Tensor:
        """Threshold ``x0`` of shape ``(b, ...)``; returns its shape and dtype."""
        flat = x0.reshape(x0.shape[0], -1).abs()
        if flat.dtype not in (torch.float32, torch.float64):  # quantile needs fp32/fp64
            flat = flat.float()
        s = torch.quantile(flat, self.ratio, dim=1).clamp(min=1.0, max=self.max_value)
        s = append_dims(s, x0.ndim).to(x0.dtype)
        return torch.maximum(torch.minimum(x0, s), -s) / s
