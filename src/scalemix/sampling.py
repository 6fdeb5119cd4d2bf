"""Reverse-process samplers for any ``model(x, t)`` and a :class:`DDPMScheduler`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, get_args

import torch
from torch import Tensor

from . import solvers
from ._utils import check_choice, check_finite, check_steps, progress_bar, randn
from ._validation import check_model_dtype, shared_timesteps
from .scheduler import DDPMScheduler
from .types import Denoiser, SamplingState, StepOutput

__all__ = ["Denoiser", "SamplerName", "SamplingSpacing", "SamplingState", "sample"]

#: The reverse-process update of :func:`sample`: ancestral DDPM, DDIM, Euler and Heun
#: in the noise level of Karras et al. (2022), or DPM-Solver++ (2M).
SamplerName = Literal["ddpm", "ddim", "euler", "heun", "dpmpp_2m", "dpmpp_2m_sde"]
#: Timestep placement of :func:`sample`: the three spacings of
#: :func:`~scalemix.schedules.timestep_schedule`, or ``"logsnr"``
#: (:func:`~scalemix.solvers.logsnr_timesteps`).
SamplingSpacing = Literal["trailing", "leading", "linspace", "logsnr"]


def _timesteps(scheduler: DDPMScheduler, steps: int | None, spacing: SamplingSpacing) -> list[int]:
    check_choice("spacing", spacing, get_args(SamplingSpacing))
    if spacing == "logsnr":
        n = scheduler.num_train_timesteps if steps is None else steps
        return solvers.logsnr_timesteps(scheduler.alphas_cumprod, n).tolist()
    return scheduler.timesteps(steps, spacing).tolist()


def _heun_step(
    model: Denoiser, scheduler: DDPMScheduler, out: Tensor, t: Tensor, x: Tensor, prev: int
) -> StepOutput:
    """Euler to ``prev``, then (unless ``prev`` is clean data) Heun's correction with a
    second model call at the Euler point (Karras et al., 2022, Algorithm 1)."""
    _, x0, abar_t, abar_s = scheduler._step_inputs(out, t, x, prev)
    x_euler = solvers.euler_update(x0, x, abar_t, abar_s)
    if prev < 0:
        return StepOutput(x_euler, x0)
    s_batch = shared_timesteps(prev, x.shape[0], x.device)
    out_s = scheduler._check_pair("model_output", model(x_euler, s_batch), x_euler)
    x0_euler = scheduler._x0_hat(out_s, x_euler, abar_s)
    return StepOutput(solvers.heun_update(x0, x, abar_t, abar_s, x_euler, x0_euler), x0)


@torch.no_grad()
def sample(
    model: Denoiser,
    scheduler: DDPMScheduler,
    shape: Sequence[int],
    *,
    steps: int | None = None,
    sampler: SamplerName = "ddpm",
    eta: float = 0.0,
    spacing: SamplingSpacing = "trailing",
    threshold: solvers.DynamicThreshold | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[SamplingState], None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    x_T: Tensor | None = None,
) -> Tensor:
    r"""Run the reverse process from :math:`x_T \sim \mathcal N(0, I)` to :math:`x_0`.

    The timesteps are ``scheduler.timesteps(steps, spacing)`` (or, for
    ``spacing="logsnr"``, :func:`~scalemix.solvers.logsnr_timesteps`); step ``i`` goes
    from ``ts[i]`` to ``ts[i + 1]`` (the last one to clean data) with

    * ``"ddpm"``: the ancestral update :meth:`DDPMScheduler.step` (Ho et al. 2020,
      Algorithm 2, strided as in Nichol & Dhariwal 2021);
    * ``"ddim"``: :meth:`DDPMScheduler.ddim_step` (Song et al. 2021, with ``eta``);
    * ``"euler"``: Euler in the noise level :math:`\sigma/\alpha` of Karras et al.
      (2022) (:func:`~scalemix.solvers.euler_update`; the same map as DDIM, ``eta=0``);
    * ``"heun"``: Heun's method of Karras et al. (2022), Algorithm 1 (two model calls per
      step except the last, ``2 * steps - 1`` calls in all);
    * ``"dpmpp_2m"``: the multistep DPM-Solver++ (2M) of Lu et al. (2022)
      (:meth:`DDPMScheduler.dpmpp_2m_step`), first order on the first and on the last
      step; the last step returns the model's :math:`\hat x_0`;
    * ``"dpmpp_2m_sde"``: its stochastic form, the SDE-DPM-Solver++ (2M)
      (``dpmpp_2m_step(..., sde=True)``): second-order ancestral sampling, which
      converges to the same samples as ``"ddpm"`` with fewer steps.

    Every sampler except ``"heun"`` calls the model once per step.

    Args:
        model: a :class:`Denoiser`, called as ``model(x, t)``.
        scheduler: the diffusion the model was trained on.
        shape: output shape ``(b, ...)``.
        steps: number of reverse steps (default: every training timestep).
        sampler: ``"ddpm"``, ``"ddim"``, ``"euler"``, ``"heun"``, ``"dpmpp_2m"`` or
            ``"dpmpp_2m_sde"``.
        eta: DDIM noise scale (``0`` deterministic; ``1`` is ancestral DDPM).
        spacing: ``"trailing"``, ``"leading"``, ``"linspace"`` (see
            :meth:`DDPMScheduler.timesteps`) or ``"logsnr"`` (evenly spaced in
            log-SNR, as Lu et al. 2022 recommend for few steps).
        threshold: :class:`~scalemix.solvers.DynamicThreshold` for
            :math:`\hat x_0` (the ``"dpmpp_2m"`` samplers only).
        generator: source of all noise (initial and per step); same seed, same output.
        progress: show a tqdm progress bar (needs the ``examples`` extra).
        callback: called with a :class:`SamplingState` after every step.
        device: device of the samples (default: the generator's device, else CPU).
        dtype: dtype of the samples.
        x_T: optional starting noise of shape ``shape``.

    Returns:
        Samples of shape ``shape``.

    Raises:
        ValueError: bad ``shape``, ``sampler``, ``spacing``, ``eta``, ``threshold`` or
            ``x_T``, or a NaN/inf in ``x_T``; and, after the loop, a NaN/inf anywhere in
            the result (one check per call, which names the model's class; run the call
            inside :func:`scalemix.debug.check_values` to find the step that made it).
        TypeError: ``dtype`` differs from the floating dtype of the parameters of a
            ``torch.nn.Module`` model.
    """
    check_choice("sampler", sampler, get_args(SamplerName))
    check_choice("spacing", spacing, get_args(SamplingSpacing))
    check_steps(steps, scheduler.num_train_timesteps)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty sequence of positive ints, got {shape}")
    if sampler != "ddim" and eta != 0.0:
        raise ValueError("eta only applies to sampler='ddim'; use sampler='ddim' with eta")
    if threshold is not None and (
        sampler not in ("dpmpp_2m", "dpmpp_2m_sde")
        or not isinstance(threshold, solvers.DynamicThreshold)
    ):
        raise ValueError(
            "threshold must be None or a scalemix.solvers.DynamicThreshold, and applies "
            "to sampler='dpmpp_2m' or 'dpmpp_2m_sde' only; got "
            f"{threshold!r} with sampler={sampler!r}"
        )
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    if isinstance(model, torch.nn.Module):
        check_model_dtype(model, dtype)
    if x_T is None:
        x = randn(shape, generator=generator, device=device, dtype=dtype)
    else:
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape}, got {tuple(x_T.shape)}")
        x = check_finite("x_T", x_T).to(device=device, dtype=dtype)
    num_t = scheduler.num_train_timesteps
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_t
    ):
        raise ValueError(
            f"steps must be None (every training timestep) or an int in [1, {num_t}] "
            f"(the scheduler's num_train_timesteps), got {steps!r}"
        )
    ts = _timesteps(scheduler, steps, spacing)
    targets = [*ts[1:], -1]
    last: tuple[Tensor, Tensor] | None = None  # dpmpp_2m*: the previous x0_hat and t
    for i in progress_bar(range(len(ts)), enabled=progress, total=len(ts), desc="sampling"):
        t_batch = shared_timesteps(ts[i], shape[0], x.device)
        out = model(x, t_batch)
        if sampler == "ddpm":
            res = scheduler.step(out, t_batch, x, prev_t=targets[i], generator=generator)
        elif sampler == "ddim":
            res = scheduler.ddim_step(
                out, t_batch, x, prev_t=targets[i], eta=eta, generator=generator
            )
        elif sampler in ("dpmpp_2m", "dpmpp_2m_sde"):
            res = scheduler.dpmpp_2m_step(
                out,
                t_batch,
                x,
                prev_t=targets[i],
                last_x0=None if last is None else last[0],
                last_t=None if last is None else last[1],
                threshold=threshold,
                sde=sampler == "dpmpp_2m_sde",
                generator=generator,
            )
            last = (res.pred_original_sample, t_batch)
        elif sampler == "euler":
            _, x0, abar_t, abar_s = scheduler._step_inputs(out, t_batch, x, targets[i])
            res = StepOutput(solvers.euler_update(x0, x, abar_t, abar_s), x0)
        else:
            res = _heun_step(model, scheduler, out, t_batch, x, targets[i])
        if callback is not None:
            callback(SamplingState(i, ts[i], x, res.pred_original_sample, res.prev_sample))
        x = res.prev_sample
    if not bool(torch.isfinite(x).all()):  # one host synchronisation per call
        raise ValueError(
            f"sample() produced NaN or infinite values with the model "
            f"{type(model).__name__} (sampler={sampler!r}); rerun the call inside "
            "`with scalemix.debug.check_values():` to raise at the first step whose model "
            "output or sample is not finite"
        )
    return x
