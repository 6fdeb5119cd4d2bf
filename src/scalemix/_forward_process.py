r"""The Gaussian forward process and its posterior as pure functions of :math:`\bar\alpha`.

Every coefficient argument is a float64 tensor of :math:`\bar\alpha` values of shape
``(b, 1, ..., 1)`` (as :class:`AlphaBarTable` gathers them, ``1.0`` standing for clean
data); the arithmetic on coefficients runs in that precision and the result is cast to
the dtype of the data only where it multiplies data
(in bfloat16 :math:`\bar\alpha_0 = 0.9999` rounds to 1 and :math:`1 - \bar\alpha_0` to 0).

:class:`~scalemix.DDPMScheduler` validates its arguments, gathers the coefficients and
calls these functions; the reverse-step rules built on them live in
:mod:`scalemix.solvers`.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from ._utils import as_timesteps, check_choice, debug_check_finite, gather, range_checked
from ._validation import check_like
from .schedules import (
    BetaScheduleName,
    check_betas,
    make_beta_schedule,
    rescale_zero_terminal_snr,
)
from .types import Posterior

__all__ = [
    "AlphaBarTable",
    "GaussianForwardProcess",
    "cast",
    "posterior_moments",
    "predict_eps",
    "predict_x0",
    "roots",
]

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


class AlphaBarTable:
    r""":math:`\bar\alpha_t` for ``t = -1 .. T-1`` (``t = -1``: clean data, :math:`\bar\alpha = 1`).

    Copied to each device once and cached, so that a step gathers on the device of its
    data (no host round trip); float64 except on MPS, which has no float64.

    Args:
        alphas_cumprod: float64 :math:`\bar\alpha_t`, shape ``(T,)``.
    """

    def __init__(self, alphas_cumprod: Tensor) -> None:
        one = torch.ones(1, dtype=alphas_cumprod.dtype, device=alphas_cumprod.device)
        table = torch.cat([one, alphas_cumprod])  # indexed by t + 1
        self._tables: dict[torch.device, Tensor] = {table.device: table}
        self._cpu = table

    def __call__(self, t: Tensor, like: Tensor) -> Tensor:
        """float64 :math:`\bar\alpha_t` of shape ``(b, 1, ..., 1)`` on ``like``'s device
        for int64 ``t`` of shape ``(b,)`` in ``[-1, T)`` (NaN outside it)."""
        table = self._tables.get(like.device)
        if table is None:
            dtype = torch.float32 if like.device.type == "mps" else torch.float64
            table = self._cpu.to(device=like.device, dtype=dtype)
            self._tables[like.device] = table
        return gather(table, t + 1, like, dtype=table.dtype)


class GaussianForwardProcess:
    r"""The buffers, forward process, targets and posterior of a Gaussian diffusion.

    The base of :class:`~scalemix.DDPMScheduler`, which documents the constructor's
    arguments and adds the reverse steps. All buffers are float64 CPU tensors of shape
    ``(T,)``, gathered and cast to the dtype and device of the data only when used.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: BetaScheduleName = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: PredictionType = "epsilon",
        variance_type: VarianceType = "fixed_small",
        clip_sample: float | None = None,
        rescale_betas_zero_snr: bool = False,
        betas: Tensor | None = None,
    ) -> None:
        self.prediction_type: PredictionType = check_choice(
            "prediction_type", prediction_type, get_args(PredictionType)
        )
        self.variance_type: VarianceType = check_choice(
            "variance_type", variance_type, get_args(VarianceType)
        )
        if clip_sample is not None and not clip_sample > 0:
            raise ValueError(f"clip_sample must be None or a positive float, got {clip_sample}")
        self.clip_sample = clip_sample
        if betas is None:
            betas = make_beta_schedule(beta_schedule, num_train_timesteps, beta_start, beta_end)
        else:
            betas = check_betas(betas)
        if rescale_betas_zero_snr:
            if prediction_type == "epsilon":
                raise ValueError(
                    "zero terminal SNR makes x0 undefined from an epsilon prediction at the "
                    "last timestep; use prediction_type='v_prediction' or 'sample'"
                )
            betas = rescale_zero_terminal_snr(betas)
        self.betas: Tensor = betas
        self.num_train_timesteps: int = int(betas.numel())
        self.alphas: Tensor = 1.0 - betas
        self.alphas_cumprod: Tensor = torch.cumprod(self.alphas, dim=0)
        one = torch.ones(1, dtype=torch.float64)
        self.alphas_cumprod_prev: Tensor = torch.cat([one, self.alphas_cumprod[:-1]])
        #: :math:`\tilde\beta_t = \beta_t (1-\bar\alpha_{t-1}) / (1-\bar\alpha_t)`, shape (T,)
        self.posterior_variance: Tensor = (
            betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        self._abar = AlphaBarTable(self.alphas_cumprod)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_train_timesteps={self.num_train_timesteps}, "
            f"prediction_type={self.prediction_type!r}, variance_type={self.variance_type!r}, "
            f"clip_sample={self.clip_sample})"
        )

    # ------------------------------------------------------------------ helpers
    def _t(self, t: Tensor | int, x: Tensor, name: str = "t", low: int = 0) -> Tensor:
        return as_timesteps(t, x.shape[0], self.num_train_timesteps, x.device, name=name, low=low)

    def _prev_t(self, prev_t: Tensor | int | None, t: Tensor, x: Tensor) -> Tensor:
        if prev_t is None:
            return t - 1
        s = self._t(prev_t, x, "prev_t", -1)
        if range_checked(s):
            if s.numel() > 0 and bool((s >= t).any()):
                raise ValueError("prev_t must be smaller than t for every batch element")
            return s
        # unchecked (accelerator / compiled): s >= t indexes past the table, giving NaN
        return torch.where(s < t, s, self.num_train_timesteps)

    def _roots(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        # in the table's precision, then cast: in bf16 abar_0 = 0.9999 rounds to 1
        return roots(self._abar(t, like), like)

    # ------------------------------------------------------------ forward process
    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        r"""Sample :math:`q(x_t \mid x_0)`: :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 +
        \sqrt{1-\bar\alpha_t}\,\epsilon` (Ho et al., 2020, eq. 4).

        Args:
            x0: clean data, shape ``(b, ...)`` (any rank >= 1).
            noise: :math:`\epsilon`, same shape as ``x0`` (cast to its dtype).
            t: int or int64 tensor of shape ``(b,)`` with values in ``[0, T)``.

        Returns:
            :math:`x_t`, shape and dtype of ``x0``.
        """
        noise = check_like("noise", noise, x0, "x0")
        debug_check_finite("x0", x0)
        root_abar, root_one_minus = self._roots(self._t(t, x0), x0)
        return root_abar * x0 + root_one_minus * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        r"""The v target :math:`v = \sqrt{\bar\alpha_t}\,\epsilon -
        \sqrt{1-\bar\alpha_t}\,x_0` (Salimans & Ho, 2022, eq. 12); shapes as in
        :meth:`add_noise`."""
        noise = check_like("noise", noise, x0, "x0")
        root_abar, root_one_minus = self._roots(self._t(t, x0), x0)
        return root_abar * noise - root_one_minus * x0

    def target(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        """The regression target for ``prediction_type``: ``noise``, ``x0`` or ``v``.

        Shapes: ``x0`` and ``noise`` ``(b, ...)``, ``t`` ``(b,)``; returns ``(b, ...)``.
        """
        if self.prediction_type == "v_prediction":
            return self.velocity(x0, noise, t)
        noise = check_like("noise", noise, x0, "x0")
        self._t(t, x0)  # validated like the other targets' timesteps
        return noise if self.prediction_type == "epsilon" else x0

    def snr(self, t: Tensor | int) -> Tensor:
        r"""Signal-to-noise ratio :math:`\bar\alpha_t / (1 - \bar\alpha_t)`, float64 ``(b,)``."""
        n = 1 if isinstance(t, int) else max(t.numel(), 1)
        tt = as_timesteps(t, n, self.num_train_timesteps, torch.device("cpu"))
        abar = self.alphas_cumprod[tt]
        return abar / (1.0 - abar)

    def min_snr_weight(self, t: Tensor | int, gamma: float = 5.0) -> Tensor:
        r"""Min-SNR-:math:`\gamma` loss weights (Hang et al., 2023, eq. 9), float64 ``(b,)``.

        The weight makes a loss on this scheduler's target equal to
        :math:`\min(\mathrm{SNR}_t, \gamma)\,\lVert \hat x_0 - x_0\rVert^2`:
        :math:`\min(\mathrm{SNR}, \gamma)` for ``"sample"``, :math:`\min(1, \gamma /
        \mathrm{SNR})` for ``"epsilon"`` (1 at SNR = 0) and :math:`\min(\mathrm{SNR},
        \gamma) / (\mathrm{SNR} + 1)` for ``"v_prediction"``.
        """
        if not gamma > 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        snr = self.snr(t)
        if self.prediction_type == "sample":
            return snr.clamp(max=gamma)
        if self.prediction_type == "epsilon":
            return (gamma / snr).clamp(max=1.0)  # gamma / 0 = inf -> 1
        return snr.clamp(max=gamma) / (snr + 1.0)

    # --------------------------------------------------------------- conversions
    def predict_x0(self, model_output: Tensor, x_t: Tensor, t: Tensor | int) -> Tensor:
        r""":math:`\hat x_0` from a model output of ``prediction_type``
        (``scalemix._forward_process.predict_x0`` has the three formulas; no clipping).

        Shapes: ``model_output`` and ``x_t`` ``(b, ...)``, ``t`` ``(b,)``.
        """
        model_output = check_like("model_output", model_output, x_t)
        abar_t = self._abar(self._t(t, x_t), x_t)
        return predict_x0(model_output, x_t, abar_t, self.prediction_type)

    def predict_eps(self, model_output: Tensor, x_t: Tensor, t: Tensor | int) -> Tensor:
        r""":math:`\hat\epsilon` from a model output of ``prediction_type``
        (``scalemix._forward_process.predict_eps`` has the three formulas).

        Shapes: ``model_output`` and ``x_t`` ``(b, ...)``, ``t`` ``(b,)``.
        """
        model_output = check_like("model_output", model_output, x_t)
        abar_t = self._abar(self._t(t, x_t), x_t)
        return predict_eps(model_output, x_t, abar_t, self.prediction_type)

    def posterior(
        self, x0: Tensor, x_t: Tensor, t: Tensor | int, prev_t: Tensor | int | None = None
    ) -> Posterior:
        r"""Gaussian posterior :math:`q(x_s \mid x_t, x_0)`, ``s = prev_t`` (default ``t-1``).

        Ho et al. (2020), eq. (6)-(7), generalised to a stride
        (:math:`\alpha_{t|s} = \bar\alpha_t / \bar\alpha_s`,
        :math:`\beta_{t|s} = 1 - \alpha_{t|s}`):

        .. math::
            \tilde\mu = \frac{\sqrt{\bar\alpha_s}\,\beta_{t|s}}{1-\bar\alpha_t}x_0
            + \frac{\sqrt{\alpha_{t|s}}\,(1-\bar\alpha_s)}{1-\bar\alpha_t}x_t,
            \qquad
            \tilde\beta = \frac{1-\bar\alpha_s}{1-\bar\alpha_t}\,\beta_{t|s}

        With ``variance_type="fixed_large"`` the variance is :math:`\beta_{t|s}` instead.

        Args:
            x0: shape ``(b, ...)``.
            x_t: shape ``(b, ...)``.
            t: ``(b,)`` or int in ``[0, T)``.
            prev_t: ``(b,)`` or int in ``[-1, t)``; ``-1`` is clean data.
        """
        x0 = check_like("x0", x0, x_t)
        debug_check_finite("x_t", x_t)
        tt = self._t(t, x_t)
        abar_t, abar_s = self._abar(tt, x_t), self._abar(self._prev_t(prev_t, tt, x_t), x_t)
        mean, var = posterior_moments(x0, x_t, abar_t, abar_s, self.variance_type)
        return Posterior(mean, cast(var, x_t), cast(var.clamp(min=1e-20).log(), x_t))
