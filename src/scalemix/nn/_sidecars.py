"""The diffusion process saved beside a model: scheduler and degradation configs.

``scheduler_config.json`` is a :class:`~scalemix.DDPMScheduler` in diffusers' format;
``degradation_config.json`` the constructor arguments of a
:class:`~scalemix.degradation.ScaleSpaceDegradation` or
:class:`~scalemix.degradation.BlurDegradation`. ``save_pretrained`` writes them;
:mod:`scalemix.hub` reads them back and documents them.
"""

from __future__ import annotations

from typing import Any

import torch

from .._diffusers_config import scheduler_to_diffusers_config
from .._schedule_match import match_schedule
from ..degradation import BlurDegradation, ScaleSpaceDegradation
from ..scheduler import DDPMScheduler
from ._config_json import as_float, as_int, as_int_tuple, as_str, decode_arguments, optional

__all__ = ["degradation_config", "degradation_from_config", "scheduler_config"]

_BLUR_FIELDS = {
    "image_size": as_int,
    "num_train_timesteps": as_int,
    "beta_schedule": as_str,
    "beta_start": as_float,
    "beta_end": as_float,
    "blur_sigma_min": as_float,
    "blur_sigma_max": as_float,
}

_DEGRADATION_FIELDS = {
    "image_size": optional(as_int),
    "num_levels": optional(as_int),
    "num_train_timesteps": as_int,
    "beta_schedule": as_str,
    "resolution_schedule": as_str,
    "gamma": as_float,
    "beta_start": as_float,
    "beta_end": as_float,
    "factor": as_float,
    "resolutions": optional(as_int_tuple),
    "unet_levels": optional(as_int),
}


def scheduler_config(scheduler: DDPMScheduler) -> dict[str, Any]:
    """The ``scheduler_config.json`` of a :class:`~scalemix.DDPMScheduler`.

    diffusers' ``DDPMScheduler`` config of the same diffusion process
    (:func:`scalemix.interop.scheduler_to_diffusers_config`: the beta schedule by name
    when it is one of the named schedules, else ``trained_betas``), with
    ``_class_name="DDPMScheduler"``. :func:`load_scheduler` reads it back.

    Raises:
        TypeError: ``scheduler`` is not a :class:`~scalemix.DDPMScheduler`.
    """
    if not isinstance(scheduler, DDPMScheduler):
        raise TypeError(f"scheduler must be a DDPMScheduler, got {type(scheduler).__name__}")
    return {"_class_name": "DDPMScheduler", **scheduler_to_diffusers_config(scheduler)}


def _same_degradation(a: ScaleSpaceDegradation, b: ScaleSpaceDegradation) -> bool:
    """Whether two degradations define the same process (betas to a relative 1e-10)."""
    return (
        a.pyramid == b.pyramid
        and a.resolution_schedule == b.resolution_schedule
        and a.gamma == b.gamma
        and a.factor == b.factor
        and torch.equal(a.resolution_table, b.resolution_table)
        and a.betas.shape == b.betas.shape
        and bool(torch.allclose(a.betas, b.betas, rtol=1e-10, atol=0.0))
    )


def _named_schedule(betas: torch.Tensor) -> dict[str, Any]:
    """``num_train_timesteps``, ``beta_schedule``, ``beta_start``, ``beta_end`` of betas."""
    found = match_schedule(betas)
    if found is None or found[3]:
        raise ValueError(
            "the degradation's betas follow none of the named beta schedules (linear, "
            "quadratic, cosine, sigmoid; not rescaled to zero terminal SNR), so its "
            "constructor arguments cannot describe it"
        )
    name, start, end, _ = found
    return {
        "num_train_timesteps": int(betas.numel()),
        "beta_schedule": name,
        "beta_start": start,
        "beta_end": end,
    }


def _blur_config(degradation: BlurDegradation) -> dict[str, Any]:
    """The constructor arguments of a blur degradation, checked by rebuilding it."""
    sigmas = degradation.blur_sigmas
    config = {
        "_class_name": "BlurDegradation",
        "image_size": degradation.image_size,
        **_named_schedule(degradation.betas),
        "blur_sigma_min": float(sigmas[0]),
        "blur_sigma_max": float(sigmas[-1]),
    }
    rebuilt = degradation_from_config(config)
    if not (
        isinstance(rebuilt, type(degradation))
        and torch.allclose(rebuilt.betas, degradation.betas, rtol=1e-10, atol=0.0)
        and torch.allclose(rebuilt.blur_sigmas, sigmas, rtol=1e-10, atol=0.0)
    ):  # pragma: no cover - every constructed blur degradation is rebuilt
        raise ValueError("no constructor arguments rebuild this blur degradation")
    return config


def degradation_config(degradation: ScaleSpaceDegradation | BlurDegradation) -> dict[str, Any]:
    """The constructor arguments of a :class:`~scalemix.degradation.ScaleSpaceDegradation`
    or a :class:`~scalemix.degradation.BlurDegradation`.

    A blur degradation is described by its image size, its beta schedule (by name) and
    the first and last entries of its blur schedule ``blur_sigmas``.

    The degradation keeps its betas and its pyramid, not the arguments it was built
    with, so they are recognised: the beta schedule by name as in
    :func:`scheduler_config`, the pyramid as ``image_size``, ``num_levels``, ``factor``
    (and ``unet_levels`` where the rounding rule needs it) or as explicit
    ``resolutions``. The arguments are checked by building the degradation again:
    same pyramid, resolution table, schedule options and betas (to a relative
    :math:`10^{-10}`).

    Returns:
        ``{"_class_name": <class name>, <argument>: <value>, ...}``, the class name
        ``"ScaleSpaceDegradation"`` or ``"BlurDegradation"``.

    Raises:
        TypeError: neither of the two classes.
        ValueError: its betas follow none of the named schedules (its constructor
            takes no explicit betas), or no arguments rebuild it.
    """
    if type(degradation) is BlurDegradation:
        return _blur_config(degradation)
    if type(degradation) is not ScaleSpaceDegradation:
        raise TypeError(
            "degradation must be a ScaleSpaceDegradation or a BlurDegradation, got "
            f"{type(degradation).__name__}"
        )
    common: dict[str, Any] = {
        **_named_schedule(degradation.betas),
        "resolution_schedule": degradation.resolution_schedule,
        "gamma": degradation.gamma,
        "factor": degradation.factor,
    }
    sizes = degradation.pyramid.sizes
    unet_levels: list[int | None] = [None, *range(1, sizes[0].bit_length() + 1)]
    candidates: list[dict[str, Any]] = [
        {"image_size": sizes[0], "num_levels": len(sizes), "unet_levels": u} for u in unet_levels
    ] + [{"resolutions": list(sizes), "unet_levels": u} for u in unet_levels]
    for pyramid in candidates:
        config = {"_class_name": "ScaleSpaceDegradation", **common, **pyramid}
        try:
            rebuilt = degradation_from_config(config)
        except (TypeError, ValueError):
            continue
        if isinstance(rebuilt, ScaleSpaceDegradation) and _same_degradation(rebuilt, degradation):
            return config
    raise ValueError(  # pragma: no cover - every constructed degradation is matched
        f"no constructor arguments rebuild this degradation (pyramid {degradation.pyramid})"
    )


def degradation_from_config(config: dict[str, Any]) -> ScaleSpaceDegradation | BlurDegradation:
    """The degradation of a :func:`degradation_config`, by its ``_class_name``.

    Raises:
        ValueError: a config of another class (named), an unknown argument (named), or
            values the constructor rejects.
        TypeError: an argument of the wrong JSON type (named).
    """
    if isinstance(config, dict) and config.get("_class_name") == "BlurDegradation":
        return BlurDegradation(**decode_arguments("BlurDegradation", config, _BLUR_FIELDS))
    kwargs = decode_arguments("ScaleSpaceDegradation", config, _DEGRADATION_FIELDS)
    return ScaleSpaceDegradation(**kwargs)
