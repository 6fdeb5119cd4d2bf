"""``scale_space_sample``: the Scale Space Diffusion spelling of :func:`scalemix.sample`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
from torch import Tensor

from .._utils import check_choice
from ..degradation.posterior import ReverseMethod
from ..degradation.protocol import LinearDegradation
from ..sampling import FinalStep, sample
from ..schedules import Spacing
from ..types import SamplingState, ScaleSpaceDenoiser

__all__ = ["FinalStep", "ScaleSpaceSamplerName", "scale_space_sample"]

#: The reverse step of :func:`scale_space_sample`: ``"ancestral"`` is
#: :func:`scalemix.sample`'s ``"ddpm"``.
ScaleSpaceSamplerName = Literal["ancestral", "ddim"]


def _model_channels(model: object) -> int | None:
    """``model.in_channels`` (or that of a wrapped ``model.module``) when it is an int."""
    for m in (model, getattr(model, "module", None)):
        c = getattr(m, "in_channels", None)
        if isinstance(c, int) and not isinstance(c, bool):
            return c
    return None


def scale_space_sample(
    model: ScaleSpaceDenoiser,
    degradation: LinearDegradation,
    batch_size: int,
    *,
    channels: int | None = None,
    steps: int | None = None,
    sampler: ScaleSpaceSamplerName = "ancestral",
    eta: float = 0.0,
    method: ReverseMethod = "exact",
    clip_sample: float | None = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[SamplingState], None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    x_T: Tensor | None = None,
    upsample_top_level: bool = False,
    final_step: FinalStep = "x0_prediction",
    spacing: Spacing = "trailing",
) -> Tensor:
    """:func:`scalemix.sample` for a linear degradation, with the output size given as
    ``batch_size`` and ``channels``; the same samples for the same seed.

    ``scale_space_sample(model, degradation, b, channels=c, sampler="ancestral", ...)``
    is ``sample(model, degradation, (b, c, *degradation.spatial_shape(-1)),
    sampler="ddpm", ...)`` (``sampler="ddim"`` keeps its name); every other argument
    is passed on unchanged and is documented there.

    Args:
        model: a :class:`~scalemix.types.ScaleSpaceDenoiser`.
        degradation: the forward process the model was trained on.
        batch_size: number of samples ``b``.
        channels: image channels ``c``; default: ``x_T``'s, else the model's
            ``in_channels`` (also through a wrapper's ``.module``, e.g.
            :class:`~torch.optim.swa_utils.AveragedModel`).
        steps: see :func:`scalemix.sample`.
        sampler: ``"ancestral"`` or ``"ddim"``.
        eta: see :func:`scalemix.sample`.
        method: see :func:`scalemix.sample`.
        clip_sample: see :func:`scalemix.sample` (default 1.0).
        generator: see :func:`scalemix.sample`.
        progress: see :func:`scalemix.sample`.
        callback: see :func:`scalemix.sample`.
        device: see :func:`scalemix.sample`.
        dtype: see :func:`scalemix.sample`.
        x_T: see :func:`scalemix.sample`.
        upsample_top_level: see :func:`scalemix.sample`.
        final_step: see :func:`scalemix.sample`.
        spacing: see :func:`scalemix.sample`.

    Returns:
        Samples of shape ``(b, c, *degradation.spatial_shape(-1))``.

    Raises:
        ValueError: ``channels`` not given and not inferable, a non-positive
            ``batch_size`` or ``channels``, and everything :func:`scalemix.sample` raises.
    """
    check_choice("sampler", sampler, get_args(ScaleSpaceSamplerName))
    if channels is None:
        channels = int(x_T.shape[1]) if x_T is not None and x_T.ndim > 1 else None
        channels = channels or _model_channels(model)
        if channels is None:
            raise ValueError(
                f"channels is not given and {type(model).__name__} has no int in_channels "
                "attribute; pass channels=c (or x_T)"
            )
    for name, value in (("batch_size", batch_size), ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return sample(
        model,
        degradation,
        (batch_size, channels, *degradation.spatial_shape(-1)),
        sampler="ddpm" if sampler == "ancestral" else "ddim",
        steps=steps,
        spacing=spacing,
        eta=eta,
        method=method,
        clip_sample=clip_sample,
        upsample_top_level=upsample_top_level,
        final_step=final_step,
        generator=generator,
        progress=progress,
        callback=callback,
        device=device,
        dtype=dtype,
        x_T=x_T,
    )
