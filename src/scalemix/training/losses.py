r"""Denoising losses: the simple MSE objective and a hybrid MSE + variational-bound loss.

For clean data :math:`x_0`, uniform :math:`t \sim \mathcal U\{0, \dots, T-1\}` and
:math:`\epsilon \sim \mathcal N(0, I)`, :math:`x_t = \sqrt{\bar\alpha_t} x_0 +
\sqrt{1-\bar\alpha_t}\epsilon` and

* :func:`eps_mse_loss`: :math:`L_\text{simple} = \lVert f_\theta(x_t, t) - y \rVert^2`
  averaged over batch and dimensions (Ho et al., 2020, eq. 14), with :math:`y` the
  scheduler's target (:math:`\epsilon` for ``prediction_type="epsilon"``);
* :func:`hybrid_loss`: :math:`L_\text{simple} + \lambda L_\text{vlb}` (Nichol & Dhariwal,
  2021, eq. 16 with fixed variances) where :math:`L_\text{vlb}` is the per-timestep
  term of the variational bound, :func:`vlb_term`.

The noise is drawn before the timesteps, both from ``generator``. Every loss takes
``model_kwargs``, the conditioning passed to each model call as
``model(x_t, t, **model_kwargs)`` (e.g. ``{"class_labels": labels}``, int64 ``(b,)``);
its tensors must have the batch's ``b`` rows (see
:mod:`scalemix.training.conditioning`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .._utils import append_dims, as_timesteps, check_finite, randn
from ..scheduler import DDPMScheduler
from .conditioning import check_model_kwargs

__all__ = [
    "LossFn",
    "draw_noise_and_timesteps",
    "eps_mse_loss",
    "evaluate_eps_mse",
    "hybrid_loss",
    "vlb_term",
]


class LossFn(Protocol):
    """A training loss ``(model, scheduler, x0, *, generator, model_kwargs) -> scalar``.

    ``model_kwargs`` (conditioning, ``None`` for none) goes to every model call as
    ``model(x_t, t, **model_kwargs)``; the trainers pass it only for labelled data.
    """

    def __call__(
        self,
        model: torch.nn.Module,
        scheduler: DDPMScheduler,
        x0: Tensor,
        *,
        generator: torch.Generator | None,
        model_kwargs: Mapping[str, Tensor] | None = None,
    ) -> Tensor: ...


def draw_noise_and_timesteps(
    scheduler: DDPMScheduler, x0: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    r"""Draw :math:`\epsilon \sim \mathcal N(0, I)` then :math:`t \sim \mathcal U\{0..T-1\}`.

    Both are drawn on the generator's device (so a seed gives the same numbers on any
    device) and moved to ``x0``'s device.

    Args:
        scheduler: gives ``T``.
        x0: data of shape ``(b, ...)``.
        generator: source of randomness (``None``: torch's default generator).

    Returns:
        ``noise`` of the shape and dtype of ``x0`` and ``t`` of shape ``(b,)`` int64.
    """
    noise = randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    gen_device = generator.device if generator is not None else x0.device
    t = torch.randint(
        0, scheduler.num_train_timesteps, (x0.shape[0],), generator=generator, device=gen_device
    )
    return noise, t.to(x0.device)


def _prepare(
    scheduler: DDPMScheduler,
    x0: Tensor,
    generator: torch.Generator | None,
    noise: Tensor | None,
    t: Tensor | None,
) -> tuple[Tensor, Tensor]:
    if x0.ndim < 2 or x0.shape[0] == 0:
        raise ValueError(f"x0 must have shape (b, ...) with b >= 1, got {tuple(x0.shape)}")
    if (noise is None) != (t is None):
        raise ValueError("pass both noise and t, or neither (then both are drawn)")
    if noise is None or t is None:
        return draw_noise_and_timesteps(scheduler, x0, generator)
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    return noise, as_timesteps(t, x0.shape[0], scheduler.num_train_timesteps, x0.device)


def eps_mse_loss(
    model: torch.nn.Module,
    scheduler: DDPMScheduler,
    x0: Tensor,
    *,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    t: Tensor | None = None,
    model_kwargs: Mapping[str, Tensor] | None = None,
) -> Tensor:
    r""":math:`L_\text{simple}`: mean squared error to the scheduler's target.

    Args:
        model: a denoiser called as ``model(x_t, t, **model_kwargs)`` returning the
            shape of ``x_t``.
        scheduler: the diffusion process.
        x0: clean data, shape ``(b, ...)``.
        generator: draws :math:`\epsilon` then :math:`t` (unless both are given).
        noise: optional fixed :math:`\epsilon`, shape of ``x0``.
        t: optional fixed timesteps, shape ``(b,)``.
        model_kwargs: conditioning of every model call, tensors with ``b`` rows.

    Returns:
        0-d tensor, the mean over batch and dimensions.

    Raises:
        ValueError: on shape mismatches (of ``model_kwargs`` too, naming the key) or
            when only one of ``noise``/``t`` is given.
    """
    kwargs = check_model_kwargs(model_kwargs, x0.shape[0] if x0.ndim else 0)
    noise, t = _prepare(scheduler, x0, generator, noise, t)
    x_t = scheduler.add_noise(x0, noise, t)
    return F.mse_loss(model(x_t, t, **kwargs), scheduler.target(x0, noise, t))


def vlb_term(
    scheduler: DDPMScheduler, model_output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor
) -> Tensor:
    r"""Per-element variational-bound term :math:`L_{t}` with fixed variances, in nats.

    For :math:`t \ge 1` it is the Gaussian KL (Ho et al., 2020, eq. 5) between the true
    posterior and the model's reverse step, which share the variance
    :math:`\sigma_t^2 = \tilde\beta_t`:

    .. math::
        \mathrm{KL}\big(q(x_{t-1} \mid x_t, x_0) \,\|\, p_\theta(x_{t-1} \mid x_t)\big)
        = \frac{(\tilde\mu_t(x_t, x_0) - \tilde\mu_t(x_t, \hat x_0))^2}{2 \sigma_t^2},

    where :math:`\hat x_0` is the model's estimate (:meth:`DDPMScheduler.predict_x0`).
    For :math:`t = 0` (where :math:`\tilde\beta_0 = 0`) it is the decoder term
    :math:`-\log \mathcal N(x_0; \hat x_0, \beta_0)` without its constant
    :math:`\tfrac12 \log 2\pi\beta_0`, i.e. the same formula with
    :math:`\sigma_0^2 = \beta_0` (there :math:`\tilde\mu_0(x_0, x_0) = x_0`).
    It vanishes when :math:`\hat x_0 = x_0` (for epsilon prediction: when the model
    predicts the true noise).

    Args:
        scheduler: the diffusion process.
        model_output: the model's prediction at ``(x_t, t)``, shape ``(b, ...)``.
        x0: clean data, shape ``(b, ...)``.
        x_t: noisy data, shape ``(b, ...)``.
        t: timesteps, shape ``(b,)``.

    Returns:
        Tensor of shape ``(b, ...)``.
    """
    tt = as_timesteps(t, x_t.shape[0], scheduler.num_train_timesteps, torch.device("cpu"))
    mean_q = scheduler.posterior(x0, x_t, tt.to(x_t.device)).mean
    x0_hat = scheduler.predict_x0(model_output, x_t, tt.to(x_t.device))
    mean_p = scheduler.posterior(x0_hat, x_t, tt.to(x_t.device)).mean
    var = torch.where(tt == 0, scheduler.betas[0], scheduler.posterior_variance[tt])
    var = append_dims(var.to(device=x_t.device, dtype=x_t.dtype), x_t.ndim)
    return (mean_q - mean_p).square() / (2.0 * var)


def hybrid_loss(
    model: torch.nn.Module,
    scheduler: DDPMScheduler,
    x0: Tensor,
    *,
    generator: torch.Generator | None = None,
    kl_weight: float = 0.1,
    noise: Tensor | None = None,
    t: Tensor | None = None,
    model_kwargs: Mapping[str, Tensor] | None = None,
) -> Tensor:
    r""":math:`L_\text{simple} + \lambda\, \overline{L_\text{vlb}}` (the paper text's
    "MSE + 0.1 KL"), both averaged over batch and dimensions.

    Args:
        model: a denoiser ``model(x_t, t, **model_kwargs)``.
        scheduler: the diffusion process.
        x0: clean data, shape ``(b, ...)``.
        generator: draws :math:`\epsilon` then :math:`t` (unless both are given).
        kl_weight: :math:`\lambda \ge 0`.
        noise: optional fixed :math:`\epsilon`, shape of ``x0``.
        t: optional fixed timesteps, shape ``(b,)``.
        model_kwargs: conditioning of the model call, tensors with ``b`` rows.

    Returns:
        0-d tensor.

    Raises:
        ValueError: ``kl_weight < 0``, or shape mismatches as in :func:`eps_mse_loss`.
    """
    if not kl_weight >= 0:
        raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
    kwargs = check_model_kwargs(model_kwargs, x0.shape[0] if x0.ndim else 0)
    noise, t = _prepare(scheduler, x0, generator, noise, t)
    x_t = scheduler.add_noise(x0, noise, t)
    output = model(x_t, t, **kwargs)
    mse = F.mse_loss(output, scheduler.target(x0, noise, t))
    kl = vlb_term(scheduler, output, x0, x_t, t)
    return mse + kl_weight * kl.mean()


@torch.no_grad()
def evaluate_eps_mse(
    model: torch.nn.Module,
    scheduler: DDPMScheduler,
    data: Tensor,
    *,
    batch_size: int = 10_000,
    generator: torch.Generator | None = None,
    model_kwargs: Mapping[str, Tensor] | None = None,
) -> float:
    r"""The study's evaluation loss: one pass over ``data`` at uniform random timesteps.

    .. math:: \frac{1}{N d} \sum_{i} \lVert f_\theta(x_{t_i}^{(i)}, t_i, c_i) - y_i \rVert^2

    with :math:`y_i` the scheduler's target (:math:`\epsilon_i` for epsilon prediction).
    Points are visited in order, in chunks of ``batch_size``; for each chunk the noise
    and then the timesteps are drawn from ``generator``. The model runs in eval mode
    without gradients; its training mode is restored afterwards. (The reference averages
    per-batch means; this is the exact mean over all points.) The conditioning
    :math:`c_i` is row :math:`i` of ``model_kwargs``' tensors, chunked with the data.

    Args:
        model: a denoiser ``model(x_t, t, **model_kwargs)``.
        scheduler: the diffusion process.
        data: clean data of shape ``(N, ...)``, on the model's device.
        batch_size: chunk size (only affects speed and memory, and which random
            numbers each chunk receives).
        generator: source of randomness.
        model_kwargs: conditioning of every point, tensors with ``N`` rows.

    Returns:
        The mean squared error as a Python float.
    """
    if data.ndim < 2 or data.shape[0] == 0:
        raise ValueError(f"data must have shape (N, ...) with N >= 1, got {tuple(data.shape)}")
    kwargs = check_model_kwargs(model_kwargs, data.shape[0])
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    was_training = model.training
    model.eval()
    try:
        total = torch.zeros((), dtype=torch.float64, device=data.device)
        for start in range(0, data.shape[0], batch_size):
            x0 = data[start : start + batch_size]
            chunk = {
                k: v[start : start + batch_size] if isinstance(v, Tensor) else v
                for k, v in kwargs.items()
            }
            noise, t = draw_noise_and_timesteps(scheduler, x0, generator)
            pred = model(scheduler.add_noise(x0, noise, t), t, **chunk)
            err = (pred - scheduler.target(x0, noise, t)).square().sum()
            total += err.to(torch.float64)
    finally:
        model.train(was_training)
    return float(check_finite("evaluation loss", total / data.numel()))
