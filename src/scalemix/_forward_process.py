r"""The Gaussian forward process and its posterior as pure functions of :math:`\bar\alpha`.

Every coefficient argument is a float64 tensor of :math:`\bar\alpha` values of shape
``(b, 1, ..., 1)`` (as :meth:`DDPMScheduler._abar64 <scalemix.DDPMScheduler>` gathers
them, ``1.0`` standing for clean data); the arithmetic on coefficients runs in that
precision and the result is cast to the dtype of the data only where it multiplies data
(in bfloat16 :math:`\bar\alpha_0 = 0.9999` rounds to 1 and :math:`1 - \bar\alpha_0` to 0).

:class:`~scalemix.DDPMScheduler` validates its arguments, gathers the coefficients and
calls these functions; the reverse-step rules built on them live in
:mod:`scalemix.solvers`.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

__all__ = ["cast", "posterior_moments", "predict_eps", "predict_x0", "roots"]

PredictionType = Literal["epsilon", "sample", "v_prediction"]
VarianceType = Literal["fixed_small", "fixed_large"]


def cast(coef: Tensor, like: Tensor) -> Tensor:
    """``coef`` on the device and in the dtype of ``like`` (the data it multiplies)."""
    return coef.to(device=like.device, dtype=like.dtype)


def roots(abar: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`(\sqrt{\bar\alpha}, \sqrt{1-\bar\alpha})` computed from ``abar`` (float64,
    ``(b, 1, ..., 1)``) and then cast to ``like``'s dtype."""
    return cast(abar.sqrt(), like), cast((1.0 - abar).sqrt(), like)


def predict_x0(
    model_output: Tensor, x_t: Tensor, abar_t: Tensor, prediction_type: PredictionType
) -> Tensor:
    r""":math:`\hat x_0` from a model output (shapes ``(b, ...)``; ``abar_t`` ``(b, 1, ...)``).

    * epsilon: :math:`(x_t - \sqrt{1-\bar\alpha_t}\,\hat\epsilon) / \sqrt{\bar\alpha_t}`
    * sample: the output
    * v: :math:`\sqrt{\bar\alpha_t}\,x_t - \sqrt{1-\bar\alpha_t}\,\hat v`
    """
    root_abar, root_one_minus = roots(abar_t, x_t)
    if prediction_type == "epsilon":
        return (x_t - root_one_minus * model_output) / root_abar
    if prediction_type == "sample":
        return model_output
    return root_abar * x_t - root_one_minus * model_output


def predict_eps(
    model_output: Tensor, x_t: Tensor, abar_t: Tensor, prediction_type: PredictionType
) -> Tensor:
    r""":math:`\hat\epsilon` from a model output (shapes as in :func:`predict_x0`).

    * epsilon: the output
    * sample: :math:`(x_t - \sqrt{\bar\alpha_t}\,\hat x_0) / \sqrt{1-\bar\alpha_t}`
    * v: :math:`\sqrt{1-\bar\alpha_t}\,x_t + \sqrt{\bar\alpha_t}\,\hat v`
    """
    root_abar, root_one_minus = roots(abar_t, x_t)
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "sample":
        return (x_t - root_abar * model_output) / root_one_minus
    return root_one_minus * x_t + root_abar * model_output


def posterior_moments(
    x0: Tensor, x_t: Tensor, abar_t: Tensor, abar_s: Tensor, variance_type: VarianceType
) -> tuple[Tensor, Tensor]:
    r"""Mean ``(b, ...)`` and float64 variance ``(b, 1, ..., 1)`` of :math:`q(x_s \mid x_t, x_0)`.

    Ho et al. (2020), eq. (6)-(7), with a stride
    (:math:`\alpha_{t|s} = \bar\alpha_t / \bar\alpha_s`, :math:`\beta_{t|s} = 1 - \alpha_{t|s}`):

    .. math::
        \tilde\mu = \frac{\sqrt{\bar\alpha_s}\,\beta_{t|s}}{1-\bar\alpha_t}x_0
        + \frac{\sqrt{\alpha_{t|s}}\,(1-\bar\alpha_s)}{1-\bar\alpha_t}x_t,
        \qquad
        \tilde\beta = \frac{1-\bar\alpha_s}{1-\bar\alpha_t}\,\beta_{t|s}

    (:math:`\beta_{t|s}` itself for ``variance_type="fixed_large"``).
    """
    alpha_ts = abar_t / abar_s
    beta_ts = 1.0 - alpha_ts
    coef_x0 = abar_s.sqrt() * beta_ts / (1.0 - abar_t)
    coef_xt = alpha_ts.sqrt() * (1.0 - abar_s) / (1.0 - abar_t)
    mean = cast(coef_x0, x_t) * x0 + cast(coef_xt, x_t) * x_t
    if variance_type == "fixed_small":
        return mean, beta_ts * (1.0 - abar_s) / (1.0 - abar_t)
    return mean, beta_ts
