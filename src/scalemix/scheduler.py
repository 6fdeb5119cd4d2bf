r"""The Gaussian (DDPM) diffusion process as a stateless scheduler.

Notation (Ho et al., 2020): :math:`\alpha_t = 1 - \beta_t`,
:math:`\bar\alpha_t = \prod_{s\le t}\alpha_s`, and the forward marginal

.. math:: x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon .

Timesteps are integers in ``[0, T)``; the value ``-1`` stands for "clean data"
(:math:`\bar\alpha_{-1} = 1`) and is only accepted as the target ``prev_t`` of a step.

:class:`DDPMScheduler` holds the schedule's buffers and validates arguments; the
formulas live in two units it calls: the forward process, conversions and posterior in
``scalemix._forward_process``, and the reverse-step rules (ancestral, DDIM, Euler,
Heun, DPM-Solver++) as pure functions in :mod:`scalemix.solvers`.
"""

from __future__ import annotations

from typing import get_args

import torch
from torch import Tensor

from . import _forward_process as fp
from . import solvers
from ._forward_process import PredictionType, VarianceType
from ._utils import (
    as_timesteps,
    check_choice,
    check_floating,
    debug_check_finite,
    gather,
    randn,
    range_checked,
)
from .schedules import (
    BetaScheduleName,
    TimestepSpacing,
    check_betas,
    make_beta_schedule,
    rescale_zero_terminal_snr,
    timestep_schedule,
)
from .types import Posterior, StepOutput

__all__ = [
    "DDPMScheduler",
    "Posterior",
    "PredictionType",
    "StepOutput",
    "TimestepSpacing",
    "VarianceType",
]


class DDPMScheduler:
    r"""Precomputed coefficients of a Gaussian diffusion process; holds no mutable state.

    All buffers are float64 CPU tensors of shape ``(T,)``; they are gathered and cast to
    the dtype and device of the data only when used, so a scheduler can serve fp32,
    bf16 and fp16 models on any device. Every method returns the dtype of its data
    argument (``x0`` or ``x_t``); the other tensors (noise, model output) are cast to it.

    Args:
        num_train_timesteps: ``T``.
        beta_schedule: ``"linear"``, ``"quadratic"``, ``"cosine"`` or ``"sigmoid"``
            (see :mod:`scalemix.schedules`); ignored when ``betas`` is given.
        beta_start: first beta of the linear/quadratic/sigmoid schedules.
        beta_end: last beta of the linear/quadratic/sigmoid schedules.
        prediction_type: what the model predicts: the noise :math:`\epsilon`
            (``"epsilon"``), the clean sample :math:`x_0` (``"sample"``), or the velocity
            :math:`v = \sqrt{\bar\alpha_t}\epsilon - \sqrt{1-\bar\alpha_t}x_0`
            (``"v_prediction"``, Salimans & Ho, 2022).
        variance_type: reverse-step variance :math:`\tilde\beta_t` (``"fixed_small"``,
            the true posterior variance) or :math:`\beta_t` (``"fixed_large"``).
        clip_sample: if a float ``c``, clamp :math:`\hat x_0` to ``[-c, c]`` in the steps.
        rescale_betas_zero_snr: rescale the schedule to zero terminal SNR
            (Lin et al., 2024); requires ``"sample"`` or ``"v_prediction"``.
        betas: optional explicit schedule of shape ``(T,)`` with entries in ``(0, 1)``.

    Raises:
        ValueError: unknown option names, betas outside ``(0, 1)``, or zero terminal
            SNR combined with epsilon prediction (``x_0`` is undefined at SNR 0).
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
        # abar indexed by t + 1 so that t = -1 ("clean data") maps to abar = 1.
        self._abar_ext = torch.cat([one, self.alphas_cumprod])
        self._device_tables: dict[torch.device, Tensor] = {self._abar_ext.device: self._abar_ext}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_train_timesteps={self.num_train_timesteps}, "
            f"prediction_type={self.prediction_type!r}, variance_type={self.variance_type!r}, "
            f"clip_sample={self.clip_sample})"
        )

    # ------------------------------------------------------------------ helpers
    def _table(self, device: torch.device) -> Tensor:
        r""":math:`\bar\alpha_{t}` for ``t = -1 .. T-1`` (index ``t + 1``) on ``device``.

        Copied to each device once and cached, so that a step gathers on the device of
        its data (no host round trip). float64 except on MPS, which has no float64.
        """
        table = self._device_tables.get(device)
        if table is None:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            table = self._abar_ext.to(device=device, dtype=dtype)
            self._device_tables[device] = table
        return table

    def _t(self, t: Tensor | int, x: Tensor) -> Tensor:
        return as_timesteps(t, x.shape[0], self.num_train_timesteps, x.device)

    def _prev_t(self, prev_t: Tensor | int | None, t: Tensor, x: Tensor) -> Tensor:
        if prev_t is None:
            return t - 1
        s = as_timesteps(
            prev_t, x.shape[0], self.num_train_timesteps, x.device, name="prev_t", low=-1
        )
        if range_checked(s):
            if s.numel() > 0 and bool((s >= t).any()):
                raise ValueError("prev_t must be smaller than t for every batch element")
            return s
        # unchecked (accelerator / compiled): s >= t indexes past the table, giving NaN
        return torch.where(s < t, s, self.num_train_timesteps)

    @staticmethod
    def _check_pair(name: str, a: Tensor, x_t: Tensor, x_name: str = "x_t") -> Tensor:
        """Check ``x_t`` (floating, ``(b, ...)``) and ``a`` (its shape); return ``a`` cast
        to ``x_t``'s dtype, the dtype every method returns."""
        check_floating(x_name, x_t)
        if x_t.ndim < 1:
            raise ValueError(f"{x_name} must have shape (b, ...), got a 0-d tensor")
        check_floating(name, a)
        if a.shape != x_t.shape:
            raise ValueError(
                f"{name} must have the shape of {x_name} {tuple(x_t.shape)}, got {tuple(a.shape)}"
            )
        debug_check_finite(name, a)
        return a.to(x_t.dtype)

    def _roots(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`(\sqrt{\bar\alpha_t}, \sqrt{1-\bar\alpha_t})`, each ``(b, 1, ..., 1)``.

        Computed in the table's precision and then cast to ``like``'s dtype: in bfloat16
        :math:`\bar\alpha_0 = 0.9999` rounds to 1, and :math:`1 - \bar\alpha_0` to 0.
        """
        return fp.roots(self._abar64(t, like), like)

    def _abar64(self, t: Tensor, like: Tensor) -> Tensor:
        """float64 coefficients of shape (b, 1, ..., 1) on ``like``'s device; see ``_roots``."""
        table = self._table(like.device)
        return gather(table, t + 1, like, dtype=table.dtype)

    # ------------------------------------------------------------ forward process
    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        r"""Sample the forward marginal :math:`q(x_t \mid x_0)` (Ho et al., 2020, eq. 4).

        .. math:: x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon

        Args:
            x0: clean data, shape ``(b, ...)`` (any rank >= 1).
            noise: :math:`\epsilon`, same shape as ``x0``.
            t: int or int64 tensor of shape ``(b,)`` with values in ``[0, T)``.

        Returns:
            :math:`x_t`, shape and dtype of ``x0`` (``noise`` is cast to that dtype).
        """
        noise = self._check_pair("noise", noise, x0, "x0")
        debug_check_finite("x0", x0)
        tt = self._t(t, x0)
        root_abar, root_one_minus = self._roots(tt, x0)
        return root_abar * x0 + root_one_minus * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        r"""The v target (Salimans & Ho, 2022, eq. 12).

        .. math:: v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\,x_0

        Shapes: ``x0`` and ``noise`` ``(b, ...)``, ``t`` ``(b,)``; returns ``(b, ...)``.
        """
        noise = self._check_pair("noise", noise, x0, "x0")
        tt = self._t(t, x0)
        root_abar, root_one_minus = self._roots(tt, x0)
        return root_abar * noise - root_one_minus * x0

    def target(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        """The regression target for ``prediction_type``: ``noise``, ``x0`` or ``v``.

        Shapes: ``x0`` and ``noise`` ``(b, ...)``, ``t`` ``(b,)``; returns ``(b, ...)``.
        """
        if self.prediction_type == "v_prediction":
            return self.velocity(x0, noise, t)
        noise = self._check_pair("noise", noise, x0, "x0")
        self._t(t, x0)  # validated like the other targets' timesteps
        return noise if self.prediction_type == "epsilon" else x0

    def snr(self, t: Tensor | int) -> Tensor:
        r"""Signal-to-noise ratio :math:`\bar\alpha_t / (1 - \bar\alpha_t)`, float64 ``(b,)``."""
        tt = as_timesteps(
            t,
            1 if isinstance(t, int) else max(t.numel(), 1),
            self.num_train_timesteps,
            torch.device("cpu"),
        )
        abar = self.alphas_cumprod[tt]
        return abar / (1.0 - abar)

    def min_snr_weight(self, t: Tensor | int, gamma: float = 5.0) -> Tensor:
        r"""Min-SNR-:math:`\gamma` loss weights (Hang et al., 2023, eq. 9), float64 ``(b,)``.

        The weight makes a loss on this scheduler's target equal to
        :math:`\min(\mathrm{SNR}_t, \gamma)\,\lVert \hat x_0 - x_0\rVert^2`:

        * ``"sample"``: :math:`\min(\mathrm{SNR}, \gamma)`
        * ``"epsilon"``: :math:`\min(\mathrm{SNR}, \gamma) / \mathrm{SNR}
          = \min(1, \gamma / \mathrm{SNR})` (finite, equal to 1, at SNR = 0)
        * ``"v_prediction"``: :math:`\min(\mathrm{SNR}, \gamma) / (\mathrm{SNR} + 1)`
        """
        if not gamma > 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        snr = self.snr(t)
        clipped = snr.clamp(max=gamma)
        if self.prediction_type == "sample":
            return clipped
        if self.prediction_type == "epsilon":
            return (gamma / snr).clamp(max=1.0)  # gamma / 0 = inf -> 1
        return clipped / (snr + 1.0)

    # --------------------------------------------------------------- conversions
    def predict_x0(self, model_output: Tensor, x_t: Tensor, t: Tensor | int) -> Tensor:
        r"""Estimate :math:`x_0` from a model output of ``prediction_type``.

        * epsilon: :math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\epsilon)
          / \sqrt{\bar\alpha_t}`
        * sample: :math:`\hat x_0` is the output
        * v: :math:`\hat x_0 = \sqrt{\bar\alpha_t}\,x_t - \sqrt{1-\bar\alpha_t}\,\hat v`

        Shapes: ``model_output`` and ``x_t`` ``(b, ...)``, ``t`` ``(b,)``.
        """
        model_output = self._check_pair("model_output", model_output, x_t)
        tt = self._t(t, x_t)
        return fp.predict_x0(model_output, x_t, self._abar64(tt, x_t), self.prediction_type)

    def predict_eps(self, model_output: Tensor, x_t: Tensor, t: Tensor | int) -> Tensor:
        r"""Estimate :math:`\epsilon` from a model output of ``prediction_type``.

        * epsilon: the output
        * sample: :math:`\hat\epsilon = (x_t - \sqrt{\bar\alpha_t}\,\hat x_0)
          / \sqrt{1-\bar\alpha_t}`
        * v: :math:`\hat\epsilon = \sqrt{1-\bar\alpha_t}\,x_t + \sqrt{\bar\alpha_t}\,\hat v`

        Shapes: ``model_output`` and ``x_t`` ``(b, ...)``, ``t`` ``(b,)``.
        """
        model_output = self._check_pair("model_output", model_output, x_t)
        tt = self._t(t, x_t)
        return fp.predict_eps(model_output, x_t, self._abar64(tt, x_t), self.prediction_type)

    # ------------------------------------------------------------------ posterior
    def _posterior(self, x0: Tensor, x_t: Tensor, t: Tensor, s: Tensor) -> Posterior:
        abar_t, abar_s = self._abar64(t, x_t), self._abar64(s, x_t)
        mean, var = fp.posterior_moments(x0, x_t, abar_t, abar_s, self.variance_type)
        return Posterior(mean, fp.cast(var, x_t), fp.cast(var.clamp(min=1e-20).log(), x_t))

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
        x0 = self._check_pair("x0", x0, x_t)
        debug_check_finite("x_t", x_t)
        tt = self._t(t, x_t)
        return self._posterior(x0, x_t, tt, self._prev_t(prev_t, tt, x_t))

    # ------------------------------------------------------------------- sampling
    def _x0_hat(self, model_output: Tensor, x_t: Tensor, abar_t: Tensor) -> Tensor:
        x0 = fp.predict_x0(model_output, x_t, abar_t, self.prediction_type)
        if self.clip_sample is not None:
            x0 = x0.clamp(-self.clip_sample, self.clip_sample)
        return x0

    def _step_inputs(
        self, model_output: Tensor, t: Tensor | int, x_t: Tensor, prev_t: Tensor | int | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Validate a step's arguments; return ``(model_output, x0_hat, abar_t, abar_s)``,
        the model output cast to ``x_t``'s dtype and the float64 ``(b, 1, ..., 1)``
        coefficients of ``t`` and of the target ``prev_t``."""
        model_output = self._check_pair("model_output", model_output, x_t)
        debug_check_finite("x_t", x_t)
        tt = self._t(t, x_t)
        s = self._prev_t(prev_t, tt, x_t)
        abar_t, abar_s = self._abar64(tt, x_t), self._abar64(s, x_t)
        return model_output, self._x0_hat(model_output, x_t, abar_t), abar_t, abar_s

    def _noise(
        self, noise: Tensor | None, x_t: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        if noise is None:
            return randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        return self._check_pair("noise", noise, x_t)

    def step(
        self,
        model_output: Tensor,
        t: Tensor | int,
        x_t: Tensor,
        *,
        prev_t: Tensor | int | None = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> StepOutput:
        r"""One ancestral step :math:`x_t \to x_s` (Ho et al., 2020, Algorithm 2).

        .. math:: x_s = \tilde\mu(\hat x_0, x_t) + \sqrt{\tilde\beta}\,z,
            \quad z \sim \mathcal N(0, I), \quad z = 0 \text{ when } s = -1

        Args:
            model_output: the model's prediction (of ``prediction_type``), shape ``(b, ...)``.
            t: current timestep, int or ``(b,)``.
            x_t: current sample, shape ``(b, ...)``.
            prev_t: target timestep ``s`` (default ``t - 1``; ``-1`` means clean data).
                Strided sampling passes the next entry of :meth:`timesteps`.
            generator: source of the noise ``z``.
            noise: explicit ``z`` of shape ``(b, ...)``; overrides ``generator``.

        Returns:
            :class:`StepOutput` ``(prev_sample, pred_original_sample)``.
        """
        _, x0, abar_t, abar_s = self._step_inputs(model_output, t, x_t, prev_t)
        z = self._noise(noise, x_t, generator)
        x_s = solvers.ancestral_update(x0, x_t, abar_t, abar_s, z, self.variance_type)
        return StepOutput(x_s, x0)

    def ddim_step(
        self,
        model_output: Tensor,
        t: Tensor | int,
        x_t: Tensor,
        *,
        prev_t: Tensor | int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> StepOutput:
        r"""One DDIM step :math:`x_t \to x_s` (Song et al., 2021, eq. 12 and 16).

        .. math::
            \sigma^2 = \eta^2\,\frac{1-\bar\alpha_s}{1-\bar\alpha_t}
            \Bigl(1 - \frac{\bar\alpha_t}{\bar\alpha_s}\Bigr),\qquad
            x_s = \sqrt{\bar\alpha_s}\,\hat x_0
            + \sqrt{1-\bar\alpha_s-\sigma^2}\,\hat\epsilon + \sigma z

        ``eta = 0`` is deterministic; ``eta = 1`` gives exactly the ancestral step of
        :meth:`step` (with ``variance_type="fixed_small"``) for the same ``z``.
        Arguments as in :meth:`step`.
        """
        if not eta >= 0.0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        model_output, x0, abar_t, abar_s = self._step_inputs(model_output, t, x_t, prev_t)
        if self.prediction_type == "epsilon" and self.clip_sample is None:
            eps = model_output
        else:  # consistent with the (possibly clipped) x0; finite at SNR = 0
            eps = fp.predict_eps(x0, x_t, abar_t, "sample")
        z = self._noise(noise, x_t, generator) if eta > 0 else None
        return StepOutput(solvers.ddim_update(x0, eps, abar_t, abar_s, eta, z), x0)

    def dpmpp_2m_step(
        self,
        model_output: Tensor,
        t: Tensor | int,
        x_t: Tensor,
        *,
        prev_t: Tensor | int | None = None,
        last_x0: Tensor | None = None,
        last_t: Tensor | int | None = None,
        threshold: solvers.DynamicThreshold | None = None,
        sde: bool = False,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> StepOutput:
        r"""One multistep DPM-Solver++ (2M) step :math:`x_t \to x_s` (Lu et al., 2022).

        With :math:`\lambda = \log(\sqrt{\bar\alpha}/\sqrt{1-\bar\alpha})`,
        :math:`h = \lambda_s - \lambda_t`, :math:`r = (\lambda_t - \lambda_{\text{last}})/h`:

        .. math::
            D = \Bigl(1 + \frac{1}{2r}\Bigr)\hat x_0 - \frac{1}{2r}\,\hat x_0^{\text{last}},
            \qquad
            x_s = \frac{\sqrt{1-\bar\alpha_s}}{\sqrt{1-\bar\alpha_t}}\,x_t
            + \sqrt{\bar\alpha_s}\,(1 - e^{-h})\,D

        (:func:`scalemix.solvers.dpmpp_2m_update`). The step is stateless: the caller
        passes the previous step's :math:`\hat x_0` (its ``pred_original_sample``) and
        timestep. Without them (the first step) and on a step into clean data
        (``prev_t = -1``, which then returns :math:`\hat x_0`) it is first order, equal
        to :meth:`ddim_step` with ``eta = 0``; this is diffusers'
        ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)``
        with ``final_sigmas_type="zero"`` and ``lower_order_final``.

        With ``sde=True`` it is the stochastic solver of the reverse SDE,
        :func:`scalemix.solvers.dpmpp_2m_sde_update`:
        :math:`x_s = \frac{\sigma_s}{\sigma_t}e^{-h}x_t + \alpha_s(1 - e^{-2h})D +
        \sigma_s\sqrt{1 - e^{-2h}}\,z` (its first-order step is the ancestral
        :meth:`step`; diffusers' ``algorithm_type="sde-dpmsolver++"``).

        Args:
            model_output: the model's prediction (of ``prediction_type``), ``(b, ...)``.
            t: current timestep, int or ``(b,)``.
            x_t: current sample, ``(b, ...)``.
            prev_t: target timestep ``s`` (default ``t - 1``; ``-1`` is clean data).
            last_x0: :math:`\hat x_0` of the previous step, ``(b, ...)``; ``None`` for a
                first-order step.
            last_t: the previous step's timestep (``> t``), int or ``(b,)``; given exactly
                when ``last_x0`` is.
            threshold: optional :class:`~scalemix.solvers.DynamicThreshold` applied to
                :math:`\hat x_0` (after ``clip_sample``).
            sde: the stochastic (SDE) solver instead of the ODE one.
            generator: source of :math:`z` (``sde=True``, when ``noise`` is not given).
            noise: explicit :math:`z`, shape of ``x_t`` (``sde=True`` only).

        Returns:
            :class:`StepOutput`; its ``pred_original_sample`` (thresholded) is the next
            step's ``last_x0``.

        Raises:
            ValueError: only one of ``last_x0`` and ``last_t`` given, or ``last_t <= t``.
        """
        if (last_x0 is None) != (last_t is None):
            raise ValueError("last_x0 and last_t must be given together (or both be None)")
        if noise is not None and not sde:
            raise ValueError("noise applies to sde=True only (the ODE step draws no noise)")
        _, x0, abar_t, abar_s = self._step_inputs(model_output, t, x_t, prev_t)
        if threshold is not None:
            x0 = threshold(x0)
        abar_last = None
        if last_x0 is not None and last_t is not None:
            last_x0 = self._check_pair("last_x0", last_x0, x_t)
            tt = self._t(t, x_t)
            lt = as_timesteps(
                last_t, x_t.shape[0], self.num_train_timesteps, x_t.device, name="last_t"
            )
            if range_checked(lt) and lt.numel() > 0 and bool((lt <= tt).any()):
                raise ValueError("last_t must be larger than t for every batch element")
            abar_last = self._abar64(lt, x_t)
        if not sde:
            return StepOutput(
                solvers.dpmpp_2m_update(x0, x_t, abar_t, abar_s, last_x0, abar_last), x0
            )
        z = self._noise(noise, x_t, generator)
        x_s = solvers.dpmpp_2m_sde_update(x0, x_t, abar_t, abar_s, z, last_x0, abar_last)
        return StepOutput(x_s, x0)

    def timesteps(
        self, num_inference_steps: int | None = None, spacing: TimestepSpacing = "trailing"
    ) -> Tensor:
        """The sampling schedule for this scheduler's ``T``.

        See :func:`~scalemix.schedules.timestep_schedule` for the three spacings.

        A sampler steps from ``ts[i]`` to ``ts[i + 1]`` and from the last entry to -1,
        looking the previous timestep up in this tensor (no fixed stride).

        Args:
            num_inference_steps: ``n`` in ``[1, T]``; ``None`` means ``T`` (every step).
            spacing: ``"trailing"``, ``"leading"`` or ``"linspace"``.

        Returns:
            Strictly decreasing int64 tensor of shape ``(n,)``.
        """
        return timestep_schedule(self.num_train_timesteps, num_inference_steps, spacing)

    # ------------------------------------------------------------------ diffusers
    @classmethod
    def from_diffusers(
        cls, scheduler_or_config: object, *, ignore: tuple[str, ...] = ()
    ) -> DDPMScheduler:
        """The scheduler of a diffusers scheduler or config dict; see
        :func:`scalemix.interop.scheduler_from_diffusers` (diffusers is not imported)."""
        from .interop import scheduler_from_diffusers

        return scheduler_from_diffusers(scheduler_or_config, ignore=ignore)

    def to_diffusers_config(self, spacing: TimestepSpacing = "trailing") -> dict[str, object]:
        """The diffusers ``DDPMScheduler`` config of this process, timestep spacing
        ``spacing``; see :func:`scalemix.interop.scheduler_to_diffusers_config`."""
        from .interop import scheduler_to_diffusers_config

        return scheduler_to_diffusers_config(self, spacing=spacing)
