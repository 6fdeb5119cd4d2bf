r"""The Gaussian (DDPM) diffusion process as a stateless scheduler.

Notation (Ho et al., 2020): :math:`\alpha_t = 1 - \beta_t`,
:math:`\bar\alpha_t = \prod_{s\le t}\alpha_s`, and the forward marginal

.. math:: x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon .

Timesteps are integers in ``[0, T)``; the value ``-1`` stands for "clean data"
(:math:`\bar\alpha_{-1} = 1`) and is only accepted as the target ``prev_t`` of a step.

:class:`DDPMScheduler` holds the schedule's buffers and validates arguments; the
formulas live in two units it calls: the forward process, conversions and posterior in
``scalemix._forward_process``, and the reverse-step rules (ancestral, DDIM, Euler,
Heun, DPM-Solver++) as pure functions in :mod:`scalemix.solvers`, where each rule's
equation is written once. The sampling loop is :func:`scalemix.sample`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _diffusers_config as dc
from . import _forward_process as fp
from . import solvers
from ._forward_process import PredictionType, VarianceType
from ._utils import debug_check_finite, randn, range_checked
from ._validation import check_like
from .schedules import (
    Spacing,
    TimestepSpacing,
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


class DDPMScheduler(fp.GaussianForwardProcess):
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

    def _inputs(
        self, model_output: Tensor, t: Tensor | int, x_t: Tensor, prev_t: Tensor | int | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""Validate a step's arguments; return ``(model_output, x0_hat, abar_t, abar_s)``:
        the output cast to ``x_t``'s dtype, the (clipped) :math:`\hat x_0` and the
        float64 ``(b, 1, ..., 1)`` coefficients of ``t`` and of the target ``prev_t``."""
        model_output = check_like("model_output", model_output, x_t)
        debug_check_finite("x_t", x_t)
        tt = self._t(t, x_t)
        abar_t, abar_s = self._abar(tt, x_t), self._abar(self._prev_t(prev_t, tt, x_t), x_t)
        x0 = fp.predict_x0(model_output, x_t, abar_t, self.prediction_type)
        if self.clip_sample is not None:
            x0 = x0.clamp(-self.clip_sample, self.clip_sample)
        return model_output, x0, abar_t, abar_s

    def _noise(
        self, noise: Tensor | None, x_t: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        if noise is None:
            return randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        return check_like("noise", noise, x_t)

    # -------------------------------------------------------------- reverse steps
    # Each step takes (model_output, t, x_t) and the keyword prev_t (default t - 1, -1 is
    # clean data) and returns a StepOutput (prev_sample, pred_original_sample); the rule
    # and its equation are documented at the pure function in scalemix.solvers.
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
        r"""One ancestral step :math:`x_t \to x_s` (:func:`scalemix.solvers.ancestral_update`).

        Args:
            model_output: the model's prediction (of ``prediction_type``), ``(b, ...)``.
            t: current timestep, int or ``(b,)``.
            x_t: current sample, ``(b, ...)``.
            prev_t: target timestep ``s`` (default ``t - 1``; ``-1`` means clean data).
            generator: source of the noise ``z``.
            noise: explicit ``z`` of shape ``(b, ...)``; overrides ``generator``.
        """
        _, x0, abar_t, abar_s = self._inputs(model_output, t, x_t, prev_t)
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
        """One DDIM step (:func:`scalemix.solvers.ddim_update`); ``eta = 0`` is
        deterministic, ``eta = 1`` the ancestral :meth:`step` (``"fixed_small"``) for the
        same ``z``. Arguments as in :meth:`step`."""
        if not eta >= 0.0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        model_output, x0, abar_t, abar_s = self._inputs(model_output, t, x_t, prev_t)
        if self.prediction_type == "epsilon" and self.clip_sample is None:
            eps = model_output
        else:  # consistent with the (possibly clipped) x0; finite at SNR = 0
            eps = fp.predict_eps(x0, x_t, abar_t, "sample")
        z = self._noise(noise, x_t, generator) if eta > 0 else None
        return StepOutput(solvers.ddim_update(x0, eps, abar_t, abar_s, eta, z), x0)

    def euler_step(
        self,
        model_output: Tensor,
        t: Tensor | int,
        x_t: Tensor,
        *,
        prev_t: Tensor | int | None = None,
    ) -> StepOutput:
        """One Euler step of the probability-flow ODE (:func:`scalemix.solvers.euler_update`;
        the same map as :meth:`ddim_step` with ``eta = 0``). Arguments as in :meth:`step`."""
        _, x0, abar_t, abar_s = self._inputs(model_output, t, x_t, prev_t)
        return StepOutput(solvers.euler_update(x0, x_t, abar_t, abar_s), x0)

    def heun_step(
        self,
        model_output: Tensor,
        t: Tensor | int,
        x_t: Tensor,
        *,
        prev_t: Tensor | int,
        euler_sample: Tensor,
        euler_model_output: Tensor,
    ) -> StepOutput:
        """Heun's correction of an Euler step (:func:`scalemix.solvers.heun_update`).

        Args:
            model_output: the model's prediction at ``(x_t, t)``, ``(b, ...)``.
            t: current timestep, int or ``(b,)``.
            x_t: current sample, ``(b, ...)``.
            prev_t: target timestep ``s`` (``-1``: clean data, the Euler step itself).
            euler_sample: :meth:`euler_step`'s ``prev_sample`` for the same arguments.
            euler_model_output: the model's prediction at ``(euler_sample, prev_t)``.
        """
        _, x0, abar_t, abar_s = self._inputs(model_output, t, x_t, prev_t)
        euler_sample = check_like("euler_sample", euler_sample, x_t)
        s = self._prev_t(prev_t, self._t(t, x_t), x_t)
        _, x0_euler, _, _ = self._inputs(euler_model_output, s.clamp(min=0), euler_sample, -1)
        x_s = solvers.heun_update(x0, x_t, abar_t, abar_s, euler_sample, x0_euler)
        return StepOutput(x_s, x0)

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
        r"""One multistep DPM-Solver++ (2M) step (Lu et al., 2022):
        :func:`scalemix.solvers.dpmpp_2m_update`, or with ``sde=True`` the SDE solver
        :func:`scalemix.solvers.dpmpp_2m_sde_update`.

        The step is stateless: the caller passes the previous step's :math:`\hat x_0`
        (its ``pred_original_sample``) and timestep. Without them (the first step) and
        on a step into clean data it is first order (the ODE form then equals
        :meth:`ddim_step` with ``eta = 0``, the SDE form the ancestral :meth:`step`).

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
        _, x0, abar_t, abar_s = self._inputs(model_output, t, x_t, prev_t)
        if threshold is not None:
            x0 = threshold(x0)
        abar_last = None
        if last_x0 is not None and last_t is not None:
            last_x0 = check_like("last_x0", last_x0, x_t)
            tt, lt = self._t(t, x_t), self._t(last_t, x_t, "last_t")
            if range_checked(lt) and lt.numel() > 0 and bool((lt <= tt).any()):
                raise ValueError("last_t must be larger than t for every batch element")
            abar_last = self._abar(lt, x_t)
        if not sde:
            return StepOutput(
                solvers.dpmpp_2m_update(x0, x_t, abar_t, abar_s, last_x0, abar_last), x0
            )
        z = self._noise(noise, x_t, generator)
        x_s = solvers.dpmpp_2m_sde_update(x0, x_t, abar_t, abar_s, z, last_x0, abar_last)
        return StepOutput(x_s, x0)

    def timesteps(
        self, num_inference_steps: int | None = None, spacing: Spacing = "trailing"
    ) -> Tensor:
        """The sampling schedule for this scheduler's ``T``: strictly decreasing int64
        ``(n,)`` (:func:`~scalemix.schedules.timestep_schedule`, all five spacings). A
        sampler steps from ``ts[i]`` to ``ts[i + 1]`` and from the last entry to -1.

        Args:
            num_inference_steps: ``n`` in ``[1, T]``; ``None`` means ``T`` (every step).
            spacing: a :data:`~scalemix.schedules.Spacing`.
        """
        return timestep_schedule(
            self.num_train_timesteps,
            num_inference_steps,
            spacing,
            alphas_cumprod=self.alphas_cumprod,
        )

    # ------------------------------------------------------------------ diffusers
    @classmethod
    def from_diffusers(
        cls, scheduler_or_config: object, *, ignore: tuple[str, ...] = ()
    ) -> DDPMScheduler:
        """The scheduler of a diffusers scheduler or config dict (diffusers is not
        imported); :func:`scalemix.interop.scheduler_from_diffusers` is the same function."""
        return cls(**dc.scheduler_kwargs_from_diffusers(scheduler_or_config, ignore=ignore))

    def to_diffusers_config(self, spacing: Spacing = "trailing") -> dict[str, object]:
        """The diffusers ``DDPMScheduler`` config of this process with timestep spacing
        ``spacing``; :func:`scalemix.interop.scheduler_to_diffusers_config` is the same."""
        return dc.scheduler_to_diffusers_config(self, spacing=spacing)
