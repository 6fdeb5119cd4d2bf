r"""Training loss of Scale Space Diffusion (Mukhopadhyay et al., 2026, sec. 4).

The network predicts :math:`x_0` at the *next* resolution: from
:math:`x_t = \sqrt{\bar\alpha_t} D_{0:t}(x_0) + \sqrt{1-\bar\alpha_t}\,\epsilon` it
outputs :math:`\hat x \approx D_{0:t-1}(x_0)` of size :math:`r(t-1)` (twice the input
size at a resolution change), and the loss is the Min-SNR-:math:`\gamma` weighted MSE
(Hang et al., 2023)

.. math:: \mathcal L = \mathbb E_{t, x_0, \epsilon}\bigl[\min(\mathrm{SNR}_t, \gamma)\,
    \lVert \hat x - D_{0:t-1}(x_0) \rVert^2 / d\bigr], \qquad
    \mathrm{SNR}_t = \bar\alpha_t / (1 - \bar\alpha_t),

with :math:`d` the number of target entries. A batch shares one resolution pair
:math:`(r(t), r(t-1))` so that it is one tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from .._model_checks import check_scale_space_model
from .._utils import check_choice, randn
from ..degradation._checks import check_state
from ..degradation.trainable import TrainableDegradation
from ..training.conditioning import check_model_kwargs
from .denoiser import ScaleSpaceDenoiser

__all__ = [
    "ScaleSpaceLossTerms",
    "TimestepSampling",
    "sample_training_timesteps",
    "scale_space_loss",
    "scale_space_loss_terms",
]

TimestepSampling = Literal["level", "shared"]


class ScaleSpaceLossTerms(NamedTuple):
    """The loss and what it was computed from.

    Attributes:
        loss: scalar, the mean of ``per_sample``.
        per_sample: weighted per-image MSE, shape ``(b,)``.
        t: the timesteps used, int64 ``(b,)``.
        weight: the Min-SNR weights, shape ``(b,)``.
    """

    loss: Tensor
    per_sample: Tensor
    t: Tensor
    weight: Tensor


def sample_training_timesteps(
    degradation: TrainableDegradation,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    mode: TimestepSampling = "level",
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Draw training timesteps that share one resolution pair :math:`(r(t), r(t-1))`.

    Both modes first draw :math:`t_0 \sim \mathcal U\{0, \dots, T-1\}`.

    * ``"shared"``: every item uses :math:`t_0`.
    * ``"level"``: if :math:`t_0` is a resolution-change step, every item uses it;
      otherwise each item draws its own :math:`t` uniformly from the run of
      non-change steps containing :math:`t_0` (the steps between two change steps,
      which share :math:`r(t) = r(t-1)`). Each item's marginal is still uniform over
      ``[0, T)``, with less variance than ``"shared"``.

    Args:
        degradation: the forward process.
        batch_size: ``b >= 1``.
        generator: source of randomness (its device is where the draws happen).
        mode: ``"level"`` or ``"shared"``.
        device: device of the result (default: the generator's, else CPU).

    Returns:
        Int64 tensor of shape ``(b,)``.
    """
    check_choice("mode", mode, get_args(TimestepSampling))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    out_device = gen_device if device is None else torch.device(device)
    T = degradation.num_train_timesteps
    t0 = int(torch.randint(0, T, (1,), generator=generator, device=gen_device))
    changes = degradation.change_steps
    if mode == "shared" or t0 in changes:
        return torch.full((batch_size,), t0, dtype=torch.long, device=out_device)
    lo = max((c + 1 for c in changes if c < t0), default=0)
    hi = min((c for c in changes if c > t0), default=T)
    t = torch.randint(lo, hi, (batch_size,), generator=generator, device=gen_device)
    return t.to(out_device)


def scale_space_loss_terms(
    model: ScaleSpaceDenoiser,
    degradation: TrainableDegradation,
    x0: Tensor,
    *,
    generator: torch.Generator | None = None,
    t: Tensor | int | None = None,
    noise: Tensor | None = None,
    min_snr_gamma: float | None = 5.0,
    timestep_sampling: TimestepSampling = "level",
    upsample_top_level: bool = False,
    model_kwargs: Mapping[str, Tensor] | None = None,
) -> ScaleSpaceLossTerms:
    r"""The Scale Space Diffusion loss (module docstring) with its ingredients.

    Args:
        model: called as ``model(x_t, t, out_size=r(t-1), **model_kwargs)``.
        degradation: the forward process.
        x0: clean images in ``[-1, 1]``, shape ``(b, c, image_size, image_size)``.
        generator: source of ``t`` (when not given) and of the noise.
        t: optional timesteps (int or ``(b,)``) sharing one resolution pair; default:
            :func:`sample_training_timesteps` with ``timestep_sampling``.
        noise: optional :math:`\epsilon` of shape ``(b, c, r(t), r(t))``.
        min_snr_gamma: :math:`\gamma` of the Min-SNR weight; ``None`` for plain MSE.
        timestep_sampling: ``"level"`` or ``"shared"`` (see
            :func:`sample_training_timesteps`).
        upsample_top_level: train for the reference implementation's variant of
            :func:`~scalemix.scale_space.scale_space_sample` (same flag): at the change
            into full resolution, the model sees :math:`x_t` bilinearly upsampled to
            full size and makes a resolution-preserving prediction. scalemix's default is
            ``False``; the reference code always does it (``True``), in training and
            sampling alike.
        model_kwargs: conditioning of the model call (e.g. ``{"class_labels": y}``,
            int64 ``(b,)``), tensors with ``b`` rows; ``None`` for none.

    Returns:
        :class:`ScaleSpaceLossTerms`.

    Raises:
        ValueError: an empty batch, items with different resolution pairs, a wrong noise
            shape, a ``model_kwargs`` tensor without ``b`` rows (naming its key), a model
            output of the wrong shape, ``min_snr_gamma <= 0``, or a network that cannot
            change resolution (``changes_resolution = False``) on a multi-level pyramid
            (the message names the fix,
            :class:`~scalemix.scale_space.UpsampleInput`).
    """
    if min_snr_gamma is not None and not min_snr_gamma > 0:
        raise ValueError(f"min_snr_gamma must be None or positive, got {min_snr_gamma}")
    check_scale_space_model(model, degradation, upsample_top_level=upsample_top_level)
    size = degradation.image_size
    check_state("x0", x0, (size, size))
    b, c = int(x0.shape[0]), int(x0.shape[1])
    if b == 0:
        raise ValueError(
            f"x0 must hold at least one image: the loss is a mean over the batch, "
            f"got shape {tuple(x0.shape)}"
        )
    kwargs = check_model_kwargs(model_kwargs, b)
    if t is None:
        tt = sample_training_timesteps(
            degradation, b, generator=generator, mode=timestep_sampling, device=x0.device
        )
    else:
        tt = torch.as_tensor(t, device=x0.device)
        tt = tt.expand(b) if tt.ndim == 0 else tt
    target = degradation.target(x0, tt)
    r_t = degradation.resolution(int(tt[0]))
    if noise is None:
        noise = randn((b, c, r_t, r_t), generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = degradation.add_noise(x0, noise, tt)
    out_size = int(target.shape[-1])
    if upsample_top_level and out_size == size != x_t.shape[-1]:
        x_t = F.interpolate(x_t, size=(size, size), mode="bilinear", align_corners=False)
    pred = model(x_t, tt.to(torch.long), out_size=out_size, **kwargs)
    if not isinstance(pred, Tensor) or pred.shape != target.shape:
        got = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
        raise ValueError(
            f"the model must return the x0 prediction at the next resolution, shape "
            f"{tuple(target.shape)}, got {got}"
        )
    mse = (pred - target).pow(2).flatten(1).mean(dim=1)
    if min_snr_gamma is None:
        weight = torch.ones_like(mse)
    else:
        snr = degradation.snr(tt).clamp(max=float(min_snr_gamma))
        weight = snr.to(device=mse.device, dtype=mse.dtype)
    per_sample = weight * mse
    return ScaleSpaceLossTerms(per_sample.mean(), per_sample, tt, weight)


def scale_space_loss(
    model: ScaleSpaceDenoiser,
    degradation: TrainableDegradation,
    x0: Tensor,
    *,
    generator: torch.Generator | None = None,
    t: Tensor | int | None = None,
    noise: Tensor | None = None,
    min_snr_gamma: float | None = 5.0,
    timestep_sampling: TimestepSampling = "level",
    upsample_top_level: bool = False,
    model_kwargs: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """The scalar Scale Space Diffusion loss; see :func:`scale_space_loss_terms`."""
    return scale_space_loss_terms(
        model,
        degradation,
        x0,
        generator=generator,
        t=t,
        noise=noise,
        min_snr_gamma=min_snr_gamma,
        timestep_sampling=timestep_sampling,
        upsample_top_level=upsample_top_level,
        model_kwargs=model_kwargs,
    ).loss
