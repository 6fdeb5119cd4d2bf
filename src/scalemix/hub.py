r"""Pretrained models as folders: the model, and what it takes to sample from it.

:class:`~scalemix.nn.MLPDenoiser`, :class:`~scalemix.nn.DualScaleDenoiser` and
:class:`~scalemix.nn.FlexiUNet` have ``save_pretrained(folder)`` and
``from_pretrained(folder_or_repo_id)`` in the format of huggingface_hub's
``PyTorchModelHubMixin`` (``config.json`` with the constructor arguments,
``model.safetensors`` with the weights), from :class:`PretrainedMixin`. This module adds
the files and helpers around them:

* :func:`export_pretrained` writes the final EMA model of :func:`scalemix.training.train`
  or :func:`scalemix.training.train_images` (or any of the three models, unwrapping an
  :class:`~torch.optim.swa_utils.AveragedModel`, DDP or :func:`torch.compile`) in one call;
* :func:`scheduler_config` / :func:`load_scheduler`: the :class:`~scalemix.DDPMScheduler`
  as ``scheduler_config.json``, in diffusers' format (so diffusers'
  ``DDPMScheduler.from_pretrained(folder)`` reads it too);
* :func:`degradation_config` / :func:`load_degradation`: the
  :class:`~scalemix.degradation.ScaleSpaceDegradation` or
  :class:`~scalemix.degradation.BlurDegradation` as ``degradation_config.json``, its
  constructor arguments.

Everything needs the extra ``scalemix[hub]`` (huggingface_hub and safetensors); nothing
writes a file unless called.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .nn._pretrained import (
    CONFIG_NAME,
    DEGRADATION_CONFIG_NAME,
    SCHEDULER_CONFIG_NAME,
    WEIGHTS_NAME,
    PretrainedMixin,
    as_float,
    as_int,
    as_int_tuple,
    as_str,
    decode_arguments,
    optional,
    read_json,
    require_hub,
    resolve_file,
)

if TYPE_CHECKING:
    from .degradation import BlurDegradation, ScaleSpaceDegradation
    from .scheduler import DDPMScheduler

__all__ = [
    "CONFIG_NAME",
    "DEGRADATION_CONFIG_NAME",
    "SCHEDULER_CONFIG_NAME",
    "WEIGHTS_NAME",
    "PretrainedMixin",
    "degradation_config",
    "degradation_from_config",
    "export_pretrained",
    "load_degradation",
    "load_scheduler",
    "scheduler_config",
]

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


# ------------------------------------------------------------------ scheduler
def scheduler_config(scheduler: DDPMScheduler) -> dict[str, Any]:
    """The ``scheduler_config.json`` of a :class:`~scalemix.DDPMScheduler`.

    diffusers' ``DDPMScheduler`` config of the same diffusion process
    (:func:`scalemix.interop.scheduler_to_diffusers_config`: the beta schedule by name
    when it is one of the named schedules, else ``trained_betas``), with
    ``_class_name="DDPMScheduler"``. :func:`load_scheduler` reads it back.

    Raises:
        TypeError: ``scheduler`` is not a :class:`~scalemix.DDPMScheduler`.
    """
    from .interop import scheduler_to_diffusers_config
    from .scheduler import DDPMScheduler

    if not isinstance(scheduler, DDPMScheduler):
        raise TypeError(f"scheduler must be a DDPMScheduler, got {type(scheduler).__name__}")
    return {"_class_name": "DDPMScheduler", **scheduler_to_diffusers_config(scheduler)}


def load_scheduler(
    pretrained_model_name_or_path: str | os.PathLike[str], **hub_kwargs: Any
) -> DDPMScheduler:
    """The :class:`~scalemix.DDPMScheduler` saved beside a model (``scheduler_config.json``).

    Args:
        pretrained_model_name_or_path: a folder, or a Hub repository id.
        hub_kwargs: ``revision``, ``cache_dir``, ``force_download``,
            ``local_files_only``, ``token`` for :func:`huggingface_hub.hf_hub_download`.

    Raises:
        ImportError: without the extra ``scalemix[hub]``.
        FileNotFoundError: no ``scheduler_config.json`` there.
        ValueError: a config :func:`scalemix.interop.scheduler_from_diffusers` rejects.
    """
    from .interop import scheduler_from_diffusers

    require_hub()
    path = resolve_file(pretrained_model_name_or_path, SCHEDULER_CONFIG_NAME, **hub_kwargs)
    if path is None:
        raise FileNotFoundError(
            f"{os.fspath(pretrained_model_name_or_path)!r} holds no {SCHEDULER_CONFIG_NAME}; "
            "write it with save_pretrained(folder, scheduler=...)"
        )
    try:
        return scheduler_from_diffusers(read_json(path))
    except (TypeError, ValueError) as err:
        raise type(err)(f"{path}: {err}") from err


# ------------------------------------------------------------------ degradation
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
    from .interop import scheduler_to_diffusers_config
    from ._diffusers_config import BETA_SCHEDULE_NAMES
    from .scheduler import DDPMScheduler

    process = scheduler_to_diffusers_config(DDPMScheduler(betas=betas))
    if process["trained_betas"] is not None:
        raise ValueError(
            "the degradation's betas follow none of the named beta schedules (linear, "
            "quadratic, cosine, sigmoid), so its constructor arguments cannot describe it"
        )
    return {
        "num_train_timesteps": int(betas.numel()),
        "beta_schedule": BETA_SCHEDULE_NAMES[process["beta_schedule"]],
        "beta_start": process["beta_start"],
        "beta_end": process["beta_end"],
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
    from .degradation import BlurDegradation, ScaleSpaceDegradation

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
    from .degradation import BlurDegradation, ScaleSpaceDegradation

    if isinstance(config, dict) and config.get("_class_name") == "BlurDegradation":
        return BlurDegradation(**decode_arguments("BlurDegradation", config, _BLUR_FIELDS))
    kwargs = decode_arguments("ScaleSpaceDegradation", config, _DEGRADATION_FIELDS)
    return ScaleSpaceDegradation(**kwargs)


def load_degradation(
    pretrained_model_name_or_path: str | os.PathLike[str], **hub_kwargs: Any
) -> ScaleSpaceDegradation | BlurDegradation:
    """The degradation saved beside a model (``degradation_config.json``).

    Args:
        pretrained_model_name_or_path: a folder, or a Hub repository id.
        hub_kwargs: as in :func:`load_scheduler`.

    Raises:
        ImportError: without the extra ``scalemix[hub]``.
        FileNotFoundError: no ``degradation_config.json`` there.
        ValueError: an unknown argument or a value the constructor rejects (named).
        TypeError: an argument of the wrong JSON type (named).
    """
    require_hub()
    path = resolve_file(pretrained_model_name_or_path, DEGRADATION_CONFIG_NAME, **hub_kwargs)
    if path is None:
        raise FileNotFoundError(
            f"{os.fspath(pretrained_model_name_or_path)!r} holds no {DEGRADATION_CONFIG_NAME}; "
            "write it with save_pretrained(folder, degradation=...)"
        )
    try:
        return degradation_from_config(read_json(path))
    except (TypeError, ValueError) as err:
        raise type(err)(f"{path}: {err}") from err


# ------------------------------------------------------------------ export
def _final_model(result_or_model: object) -> nn.Module:
    """The network to save: a result's EMA, unwrapped from its averaging / DDP / compile."""
    from torch.optim.swa_utils import AveragedModel

    obj = getattr(result_or_model, "ema_model", result_or_model)
    while True:
        if isinstance(obj, (AveragedModel, nn.parallel.DistributedDataParallel, nn.DataParallel)):
            obj = obj.module
        elif isinstance(obj, nn.Module) and isinstance(getattr(obj, "_orig_mod", None), nn.Module):
            obj = obj._orig_mod  # a torch.compile wrapper
        else:
            break
    if not isinstance(obj, nn.Module):
        raise TypeError(
            "result_or_model must be a training result (with an ema_model), an "
            f"AveragedModel or a model, got {type(result_or_model).__name__}"
        )
    return obj


def export_pretrained(
    result_or_model: object,
    save_directory: str | os.PathLike[str],
    *,
    scheduler: DDPMScheduler | None = None,
    degradation: ScaleSpaceDegradation | BlurDegradation | None = None,
) -> Path:
    """Write the final EMA model of a training run (or a model) as a pretrained folder.

    Takes the result of :func:`scalemix.training.train` or
    :func:`scalemix.training.train_images` (their moving average, ``result.ema``), an
    :class:`~torch.optim.swa_utils.AveragedModel`, or a model, unwraps
    ``AveragedModel``, ``DistributedDataParallel`` and :func:`torch.compile`, and calls
    the model's ``save_pretrained(save_directory, scheduler=..., degradation=...)``.

    Returns:
        ``save_directory`` as a :class:`~pathlib.Path`.

    Raises:
        ImportError: without the extra ``scalemix[hub]``.
        TypeError: an object with no such model, or a model without ``save_pretrained``
            (only :class:`~scalemix.nn.MLPDenoiser`, :class:`~scalemix.nn.DualScaleDenoiser`
            and :class:`~scalemix.nn.FlexiUNet` have one).
    """
    model = _final_model(result_or_model)
    if not isinstance(model, PretrainedMixin):
        raise TypeError(
            f"{type(model).__name__} has no save_pretrained; accepted: MLPDenoiser, "
            "DualScaleDenoiser, FlexiUNet (or a training result holding one)"
        )
    return model.save_pretrained(save_directory, scheduler=scheduler, degradation=degradation)
