"""Reverse-process samplers for any ``model(x, t)`` and a :class:`DDPMScheduler`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, Protocol, get_args

import torch
from torch import Tensor

from ._utils import check_choice, check_finite, check_steps, progress_bar, randn
from ._validation import check_model_dtype, shared_timesteps
from .scheduler import DDPMScheduler, TimestepSpacing

__all__ = ["Denoiser", "SamplerName", "SamplingState", "sample"]

SamplerName = Literal["ddpm", "ddim"]


class Denoiser(Protocol):
    """Anything that maps a noisy batch and its timesteps to a prediction.

    ``model(x, t)`` with ``x`` of shape ``(b, ...)`` and ``t`` int64 of shape ``(b,)``
    (the samplers pass one timestep for the whole batch as an expanded view, stride 0)
    returns a tensor of the shape of ``x`` (noise, ``x0`` or ``v``, as the scheduler's
    ``prediction_type`` says). Every ``torch.nn.Module`` with that forward qualifies.
    """

    def __call__(self, x: Tensor, t: Tensor, /) -> Tensor: ...


class SamplingState(NamedTuple):
    """What a sampling callback sees after each step.

    Attributes:
        step: step number, ``0 .. n-1``.
        t: the timestep just denoised.
        x_t: the sample at ``t``, shape ``(b, ...)``.
        pred_original_sample: the model's :math:`\\hat x_0` at ``t``, shape ``(b, ...)``.
        prev_sample: the new sample at the next timestep, shape ``(b, ...)``.
    """

    step: int
    t: int
    x_t: Tensor
    pred_original_sample: Tensor
    prev_sample: Tensor


@torch.no_grad()
def sample(
    model: Denoiser,
    scheduler: DDPMScheduler,
    shape: Sequence[int],
    *,
    steps: int | None = None,
    sampler: SamplerName = "ddpm",
    eta: float = 0.0,
    spacing: TimestepSpacing = "trailing",
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[SamplingState], None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    x_T: Tensor | None = None,
) -> Tensor:
    r"""Run the reverse process from :math:`x_T \sim \mathcal N(0, I)` to :math:`x_0`.

    The timesteps are ``scheduler.timesteps(steps, spacing)``; step ``i`` goes from
    ``ts[i]`` to ``ts[i + 1]`` (the last one to clean data) with the ancestral update
    :meth:`DDPMScheduler.step` (``sampler="ddpm"``, Ho et al. 2020, Algorithm 2,
    strided as in Nichol & Dhariwal 2021) or :meth:`DDPMScheduler.ddim_step`
    (``sampler="ddim"``, Song et al. 2021, with ``eta``).

    Args:
        model: a :class:`Denoiser`, called as ``model(x, t)``.
        scheduler: the diffusion the model was trained on.
        shape: output shape ``(b, ...)``.
        steps: number of reverse steps (default: every training timestep).
        sampler: ``"ddpm"`` or ``"ddim"``.
        eta: DDIM noise scale (``0`` deterministic; ``1`` is ancestral DDPM).
        spacing: timestep spacing, see :meth:`DDPMScheduler.timesteps`.
        generator: source of all noise (initial and per step); same seed, same output.
        progress: show a tqdm progress bar (needs the ``examples`` extra).
        callback: called with a :class:`SamplingState` after every step.
        device: device of the samples (default: the generator's device, else CPU).
        dtype: dtype of the samples.
        x_T: optional starting noise of shape ``shape``.

    Returns:
        Samples of shape ``shape``.

    Raises:
        ValueError: bad ``shape``, ``sampler``, ``eta`` or ``x_T``, or a NaN/inf in ``x_T``.
        TypeError: ``dtype`` differs from the floating dtype of the parameters of a
            ``torch.nn.Module`` model.
    """
    check_choice("sampler", sampler, get_args(SamplerName))
    check_steps(steps, scheduler.num_train_timesteps)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty sequence of positive ints, got {shape}")
    if sampler == "ddpm" and eta != 0.0:
        raise ValueError("eta only applies to sampler='ddim'; use sampler='ddim' with eta")
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
    ts = scheduler.timesteps(steps, spacing).tolist()
    targets = [*ts[1:], -1]
    for i in progress_bar(range(len(ts)), enabled=progress, total=len(ts), desc="sampling"):
        t_batch = shared_timesteps(ts[i], shape[0], x.device)
        out = model(x, t_batch)
        if sampler == "ddpm":
            res = scheduler.step(out, t_batch, x, prev_t=targets[i], generator=generator)
        else:
            res = scheduler.ddim_step(
                out, t_batch, x, prev_t=targets[i], eta=eta, generator=generator
            )
        if callback is not None:
            callback(SamplingState(i, ts[i], x, res.pred_original_sample, res.prev_sample))
        x = res.prev_sample
    return x
