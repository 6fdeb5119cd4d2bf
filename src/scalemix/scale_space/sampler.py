r"""Ancestral sampling for Scale Space Diffusion and any linear degradation.

Starting from :math:`x_{t_0} \sim \mathcal N(0, I)` at the smallest resolution, each
step asks the model for :math:`\hat x_0` at the resolution of the next kept timestep
``s`` (twice the current one at a resolution change) and draws
:math:`x_s \sim q(x_s \mid x_t, \hat x_0)` with
:func:`scalemix.degradation.reverse_step`; the last step returns the posterior mean at
``s = -1``, i.e. :math:`\hat x_0` at full resolution (Mukhopadhyay et al., 2026,
Algorithm 2). With one pyramid level this is exactly DDPM ancestral sampling with an
:math:`x_0`-parameterised model (Ho et al., 2020, Algorithm 2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .._utils import check_finite, check_steps, progress_bar, randn
from .._validation import check_model_dtype, shared_timesteps
from ..degradation.posterior import ReverseMethod, reverse_step
from ..degradation.protocol import LinearDegradation
from ..degradation.respacing import respaced_timesteps
from ..sampling import SamplingState
from .denoiser import ScaleSpaceDenoiser

__all__ = ["scale_space_sample"]


def _out_size(shape: tuple[int, ...]) -> int:
    if len(shape) == 0:
        raise ValueError("the degradation's states need at least one spatial dimension")
    return int(shape[-1])


@torch.no_grad()
def scale_space_sample(
    model: ScaleSpaceDenoiser,
    degradation: LinearDegradation,
    batch_size: int,
    *,
    channels: int = 3,
    steps: int | None = None,
    method: ReverseMethod = "exact",
    clip_sample: float | None = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[SamplingState], None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    x_T: Tensor | None = None,
    upsample_top_level: bool = False,
) -> Tensor:
    r"""Draw samples by ancestral sampling through the resolution pyramid.

    The timesteps are :func:`~scalemix.degradation.respaced_timesteps` (every
    resolution change kept, so one step crosses at most one change). Step ``i`` calls
    ``model(x_t, t, out_size=r(s))`` with ``t = ts[i]`` and ``s = ts[i + 1]`` (``-1``
    after the last), then :func:`~scalemix.degradation.reverse_step`. Noise is drawn
    from ``generator`` in a fixed order: :math:`x_{t_0}` first, then one
    :math:`\xi` per step except the last.

    Args:
        model: a :class:`ScaleSpaceDenoiser`.
        degradation: the forward process the model was trained on, e.g. a
            :class:`~scalemix.degradation.ScaleSpaceDegradation`.
        batch_size: number of samples ``b``.
        channels: image channels ``c``.
        steps: number of base inference steps (``None``: every timestep); change steps
            are added to it.
        method: covariance root of the reverse step: ``"exact"`` (closed form),
            ``"lanczos"`` (generic) or ``"isotropic"`` (shortcut, for comparison).
        clip_sample: clamp :math:`\hat x_0` to ``[-clip_sample, clip_sample]``
            (``None``: no clamp). The paper clamps to ``[-1, 1]``.
        generator: source of all noise; same seed, same samples.
        progress: show a tqdm progress bar (needs ``scalemix[examples]``).
        callback: called after every step with a :class:`~scalemix.sampling.SamplingState`
            ``(index, t, x_t, pred_original_sample, prev_sample)``; shapes change with
            the resolution.
        device: device of the samples (default: the generator's device, else CPU).
        dtype: dtype of the samples.
        x_T: optional starting noise of shape ``(b, c, *spatial_shape(T - 1))``.
        upsample_top_level: the reference implementation's variant: on the step into
            full resolution, upsample :math:`x_t` bilinearly to full size and ask the
            model for a resolution-preserving prediction, ``model(up(x_t), t,
            out_size=image_size)``. The posterior still uses the original :math:`x_t`.

    Returns:
        Samples of shape ``(b, c, *spatial_shape(-1))``.

    Raises:
        ValueError: bad sizes, a model output of the wrong shape, or non-finite values
            in ``x_T``.
        TypeError: ``dtype`` differs from the floating dtype of the model's parameters.
    """
    for name, value in (("batch_size", batch_size), ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    check_steps(steps, degradation.num_train_timesteps)
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    if isinstance(model, torch.nn.Module):
        check_model_dtype(model, dtype)
    ts = [int(v) for v in respaced_timesteps(degradation, steps).tolist()]
    full_shape = degradation.spatial_shape(-1)
    start_shape = (batch_size, channels, *degradation.spatial_shape(ts[0]))
    if x_T is None:
        x = randn(start_shape, generator=generator, device=device, dtype=dtype)
    else:
        if tuple(x_T.shape) != start_shape:
            raise ValueError(f"x_T must have shape {start_shape}, got {tuple(x_T.shape)}")
        x = check_finite("x_T", x_T).to(device=device, dtype=dtype)
    targets = [*ts[1:], -1]
    for i in progress_bar(range(len(ts)), enabled=progress, total=len(ts), desc="sampling"):
        t, s = ts[i], targets[i]
        s_shape = degradation.spatial_shape(s)
        t_batch = shared_timesteps(t, batch_size, x.device)
        model_in = x
        if upsample_top_level and s_shape == full_shape != tuple(x.shape[2:]):
            model_in = F.interpolate(x, size=s_shape, mode="bilinear", align_corners=False)
        x0_pred = model(model_in, t_batch, out_size=_out_size(s_shape))
        expected = (batch_size, channels, *s_shape)
        if not isinstance(x0_pred, Tensor) or tuple(x0_pred.shape) != expected:
            got = tuple(x0_pred.shape) if isinstance(x0_pred, Tensor) else type(x0_pred)
            raise ValueError(f"the model returned {got} at t={t}; expected shape {expected}")
        out = reverse_step(
            degradation,
            x0_pred.to(dtype=x.dtype),
            t,
            x,
            prev_t=s,
            method=method,
            generator=generator,
            clip_sample=clip_sample,
        )
        if callback is not None:
            callback(SamplingState(i, t, x, out.pred_original_sample, out.prev_sample))
        x = out.prev_sample
    return x
