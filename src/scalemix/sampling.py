r"""One sampling entry point, :func:`sample`, for every diffusion process of scalemix."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from . import solvers
from ._model_checks import check_scale_space_model
from ._utils import check_choice, check_finite, check_steps, randn
from ._validation import check_model_dtype, shared_timesteps
from .degradation.ddim import supports_ddim
from .degradation.posterior import ReverseMethod
from .degradation.protocol import LinearDegradation
from .degradation.respacing import respaced_timesteps
from .samplers import SAMPLERS, Denoise, SamplerName, SamplerOptions
from .scheduler import DDPMScheduler
from .schedules import Spacing
from .types import Denoiser, SamplingState

__all__ = ["Denoiser", "FinalStep", "SamplerName", "SamplingSpacing", "SamplingState", "sample"]

#: The same literal as :data:`scalemix.schedules.Spacing` (its former name here).
SamplingSpacing = Spacing
#: The last step of a linear degradation's sampler (see :func:`sample`).
FinalStep = Literal["x0_prediction", "reference"]
_GAUSSIAN_ONLY = ("euler", "heun", "dpmpp_2m", "dpmpp_2m_sde")


def _check_options(
    process: object,
    sampler: str,
    eta: float,
    threshold: object,
    method: str,
    clip_sample: object,
    degradation_only: Mapping[str, bool],
) -> None:
    """Entry-point validation of the settings of :func:`sample` against the process."""
    check_choice("sampler", sampler, get_args(SamplerName))
    check_choice("method", method, get_args(ReverseMethod))
    if sampler != "ddim" and eta != 0.0:
        raise ValueError("eta only applies to sampler='ddim'; use sampler='ddim' with eta")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta >= 0.0:
        raise ValueError(f"eta must be a float >= 0, got {eta!r}")
    if threshold is not None and (
        sampler not in ("dpmpp_2m", "dpmpp_2m_sde")
        or not isinstance(threshold, solvers.DynamicThreshold)
    ):
        raise ValueError(
            "threshold must be None or a scalemix.solvers.DynamicThreshold, and applies "
            f"to sampler='dpmpp_2m' or 'dpmpp_2m_sde' only; got {threshold!r} with "
            f"sampler={sampler!r}"
        )
    if isinstance(process, DDPMScheduler):
        given = [name for name, set_ in degradation_only.items() if set_]
        if given:
            raise ValueError(
                f"{', '.join(given)} apply to a linear degradation, not to a DDPMScheduler "
                "(which clips x0 as its own clip_sample says: DDPMScheduler(clip_sample=...))"
            )
        return
    if not isinstance(process, LinearDegradation):
        raise TypeError(
            "process must be a scalemix.DDPMScheduler or a LinearDegradation (e.g. a "
            f"ScaleSpaceDegradation), got {type(process).__name__}"
        )
    if sampler in _GAUSSIAN_ONLY:
        raise ValueError(
            f"sampler={sampler!r} is a Gaussian ODE/SDE solver; a {type(process).__name__} "
            "samples with sampler='ddpm' (ancestral) or 'ddim'"
        )
    if clip_sample is not None and not (isinstance(clip_sample, float | int) and clip_sample > 0):
        raise ValueError(f"clip_sample must be None or a positive float, got {clip_sample!r}")
    if sampler == "ddim":
        if eta > 1.0:
            raise ValueError(f"eta must be a float in [0, 1] for a linear degradation, got {eta}")
        if method != "exact":
            raise ValueError(
                f"method={method!r} chooses the ancestral step's covariance root; "
                "sampler='ddim' has its own closed form (leave method='exact')"
            )
        if not supports_ddim(process):
            raise TypeError(
                f"sampler='ddim' needs the spectrum of D^T D in closed form (a "
                f"gram_spectrum method), which {type(process).__name__} does not provide; "
                "use sampler='ddpm' with method='lanczos'"
            )


def _denoiser(
    model: Callable[..., Tensor],
    process: DDPMScheduler | LinearDegradation,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    model_kwargs: Mapping[str, Any],
    upsample_top_level: bool,
) -> Denoise:
    """``denoise(x, t, s)``: the model called on one shared timestep, with
    ``model_kwargs`` (and, for a linear degradation, ``out_size`` of ``s`` and the
    prediction checked for shape and cast to the state's dtype)."""
    b = shape[0]
    if isinstance(process, DDPMScheduler):

        def gaussian(x: Tensor, t: int, s: int) -> Tensor:
            return model(x, shared_timesteps(t, b, x.device), **model_kwargs)

        return gaussian
    degradation, full = process, tuple(shape[2:])

    def scale_space(x: Tensor, t: int, s: int) -> Tensor:
        s_shape = degradation.spatial_shape(s)
        x_in = x
        if upsample_top_level and s_shape == full != tuple(x.shape[2:]):
            x_in = F.interpolate(x, size=s_shape, mode="bilinear", align_corners=False)
        t_batch = shared_timesteps(t, b, x.device)
        x0 = model(x_in.to(dtype), t_batch, out_size=int(s_shape[-1]), **model_kwargs)
        expected = (b, shape[1], *s_shape)
        if not isinstance(x0, Tensor) or tuple(x0.shape) != expected:
            got = tuple(x0.shape) if isinstance(x0, Tensor) else type(x0)
            raise ValueError(f"the model returned {got} at t={t}; expected shape {expected}")
        return x0.to(x.dtype)

    return scale_space


@torch.no_grad()
def sample(
    model: Callable[..., Tensor],
    process: DDPMScheduler | LinearDegradation,
    shape: Sequence[int],
    *,
    sampler: SamplerName = "ddpm",
    steps: int | None = None,
    spacing: Spacing = "trailing",
    eta: float = 0.0,
    model_kwargs: Mapping[str, Any] | None = None,
    threshold: solvers.DynamicThreshold | None = None,
    method: ReverseMethod = "exact",
    clip_sample: float | Literal["default"] | None = "default",
    upsample_top_level: bool = False,
    final_step: FinalStep = "x0_prediction",
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[SamplingState], None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    x_T: Tensor | None = None,
) -> Tensor:
    r"""Run the reverse process of ``process`` from noise to data.

    ``process`` is a :class:`~scalemix.DDPMScheduler` (the model predicts noise,
    :math:`x_0` or :math:`v` as its ``prediction_type`` says; ``model(x, t,
    **model_kwargs)``) or any :class:`~scalemix.degradation.LinearDegradation`, e.g. a
    :class:`~scalemix.ScaleSpaceDegradation` or a
    :class:`~scalemix.degradation.BlurDegradation` (the model predicts :math:`x_0` at the
    resolution of the next timestep: ``model(x, t, out_size=r, **model_kwargs)``, the
    :class:`~scalemix.types.ScaleSpaceDenoiser` contract).

    The timesteps are ``process.timesteps(steps, spacing)`` for a scheduler and
    :func:`~scalemix.degradation.respaced_timesteps` (the same grid plus every
    resolution change) for a degradation; step ``i`` goes from ``ts[i]`` to ``ts[i + 1]``
    and the last to clean data. The update is the sampler of that name in
    :mod:`scalemix.samplers`:

    * ``"ddpm"``: ancestral sampling (Ho et al. 2020, Algorithm 2), for every process
      (formerly ``"ancestral"`` in :func:`~scalemix.scale_space.scale_space_sample`);
    * ``"ddim"``: DDIM with ``eta`` (Song et al. 2021), for every process with a
      closed-form step (``eta`` in ``[0, 1]`` for a degradation; 1 is ancestral);
    * ``"euler"``, ``"heun"`` (Karras et al. 2022; ``2 * steps - 1`` model calls),
      ``"dpmpp_2m"`` and ``"dpmpp_2m_sde"`` (Lu et al. 2022): Gaussian solvers, for a
      :class:`~scalemix.DDPMScheduler` only.

    Every sampler except ``"heun"`` calls the model once per step. Noise comes from
    ``generator`` in a fixed order (:math:`x_T` first, then per step), so the same seed
    gives the same samples.

    Args:
        model: the denoiser (see above); any callable, e.g. a ``torch.nn.Module``.
        process: the forward process the model was trained on.
        shape: the shape of the samples, ``(b, ...)``; for a degradation
            ``(b, c, *process.spatial_shape(-1))`` (full resolution).
        sampler: one of :data:`~scalemix.samplers.SamplerName`.
        steps: number of reverse steps (``None``: every timestep); a degradation adds
            its resolution-change steps to them.
        spacing: ``"trailing"`` (default), ``"leading"``, ``"linspace"``, ``"even"``
            (the SSD reference's) or ``"logsnr"``
            (:func:`~scalemix.schedules.timestep_schedule`).
        eta: DDIM noise scale (``sampler="ddim"`` only).
        model_kwargs: extra keyword arguments of every model call, e.g. conditioning
            tensors of batch size ``b``.
        threshold: :class:`~scalemix.solvers.DynamicThreshold` for :math:`\hat x_0`
            (the ``"dpmpp_2m"`` samplers only).
        method: covariance root of the ancestral step of a degradation: ``"exact"``,
            ``"lanczos"`` or ``"isotropic"`` (see :func:`~scalemix.degradation.reverse_step`).
        clip_sample: clamp of :math:`\hat x_0` for a degradation (``"default"``: 1.0,
            as the paper; ``None``: none). A scheduler clips as its own ``clip_sample``.
        upsample_top_level: (degradation) the SSD reference's convention: on the step
            into full resolution the model gets :math:`x_t` upsampled bilinearly to full
            size; train with the same flag.
        final_step: (degradation) ``"x0_prediction"``: the last step goes to clean
            data and returns the clipped :math:`\hat x_0`; ``"reference"``: the SSD
            reference's, which returns the state at the last kept timestep (``t = 0``
            with ``spacing="even"``) with its remaining noise.
        generator: source of all noise.
        progress: show a tqdm progress bar (needs the ``examples`` extra).
        callback: called with a :class:`~scalemix.types.SamplingState` after every step
            (for a degradation, shapes change with the resolution).
        device: device of the samples (default: the generator's device, else CPU).
        dtype: dtype of the samples and of the model's input (a degradation keeps its
            state and steps in float32 when this is float16 or bfloat16).
        x_T: optional starting noise, of shape ``shape`` (a degradation: of the
            first timestep's resolution).

    Returns:
        Samples of shape ``shape``.

    Raises:
        ValueError: a bad ``shape``, ``sampler`` (a Gaussian solver for a degradation),
            ``spacing``, ``steps``, ``eta``, ``threshold`` or ``x_T``, degradation-only
            settings given with a scheduler, a model output of the wrong shape, or
            NaN/inf in ``x_T`` or, after the loop, anywhere in the samples (one check
            per call; run inside :func:`scalemix.debug.check_values` to find the step).
            A network that cannot change resolution (``changes_resolution = False``, e.g.
            :class:`~scalemix.interop.DiffusersUNet`) on a multi-level pyramid, with the
            fix (:class:`~scalemix.scale_space.UpsampleInput`) in the message.
        TypeError: ``dtype`` differs from the parameters of a ``torch.nn.Module`` model,
            an unknown kind of process, or ``"ddim"`` on a degradation without a
            closed-form spectrum.
    """
    check_choice("spacing", spacing, get_args(Spacing))
    check_choice("final_step", final_step, get_args(FinalStep))
    _check_options(
        process,
        sampler,
        eta,
        threshold,
        method,
        None if clip_sample == "default" else clip_sample,
        {
            "method": method != "exact",
            "clip_sample": clip_sample != "default",
            "upsample_top_level": upsample_top_level,
            "final_step": final_step != "x0_prediction",
        },
    )
    steps = check_steps(steps, process.num_train_timesteps)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty sequence of positive ints, got {shape}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    if isinstance(model, torch.nn.Module):
        check_model_dtype(model, dtype)
    work = dtype
    if isinstance(process, DDPMScheduler):
        ts = process.timesteps(steps, spacing).tolist()
        start = shape
    else:
        full = tuple(process.spatial_shape(-1))
        if len(shape) != 2 + len(full) or shape[2:] != full:
            raise ValueError(
                f"shape must be (b, c, *{full}) for this degradation (its full-resolution "
                f"spatial shape), got {shape}"
            )
        check_scale_space_model(model, process, upsample_top_level=upsample_top_level)
        ts = respaced_timesteps(process, steps, spacing).tolist()
        if final_step == "reference" and tuple(process.spatial_shape(ts[-1])) != full:
            raise ValueError(
                f"final_step='reference' returns the state at the last kept timestep "
                f"{ts[-1]}, whose shape {process.spatial_shape(ts[-1])} is not full size "
                f"{full}; use spacing='even' (it keeps t=0) or more steps"
            )
        start = (*shape[:2], *process.spatial_shape(ts[0]))
        if dtype in (torch.float16, torch.bfloat16):
            work = torch.float32
    if x_T is None:
        x = randn(start, generator=generator, device=device, dtype=dtype).to(work)
    else:
        if tuple(x_T.shape) != start:
            raise ValueError(f"x_T must have shape {start}, got {tuple(x_T.shape)}")
        x = check_finite("x_T", x_T).to(device=device, dtype=dtype).to(work)
    last = ts[-1] if final_step == "reference" else -1
    schedule = list(zip(ts, [*ts[1:], last], strict=True))
    denoise = _denoiser(model, process, shape, dtype, model_kwargs or {}, upsample_top_level)
    options = SamplerOptions(
        eta=float(eta),
        threshold=threshold,
        method=method,
        clip_sample=1.0 if clip_sample == "default" else clip_sample,
        generator=generator,
        callback=callback,
        progress=progress,
    )
    x = SAMPLERS[sampler](denoise, process, x, schedule, options).to(dtype)
    if not bool(torch.isfinite(x).all()):  # one host synchronisation per call
        raise ValueError(
            f"sample() produced NaN or infinite values with the model "
            f"{type(model).__name__} (sampler={sampler!r}, dtype={dtype}); rerun the call "
            "inside `with scalemix.debug.check_values():` to raise at the first step whose "
            "model output or sample is not finite"
        )
    return x
