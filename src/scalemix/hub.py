r"""Pretrained models as folders: the model, and what it takes to sample from it.

:class:`~scalemix.nn.MLPDenoiser`, :class:`~scalemix.nn.DualScaleDenoiser` and
:class:`~scalemix.nn.FlexiUNet` have ``save_pretrained(folder)`` and
``from_pretrained(folder_or_repo_id)`` in the format of huggingface_hub's
``PyTorchModelHubMixin`` (``config.json`` with the constructor arguments,
``model.safetensors`` with the weights), from :class:`~scalemix.nn.PretrainedMixin`.
This module adds the files and helpers around them:

* :func:`export_pretrained` writes the final EMA model of :func:`scalemix.training.train`
  or :func:`scalemix.training.train_images` (or any of the three models, unwrapping an
  :class:`~torch.optim.swa_utils.AveragedModel`, DDP or :func:`torch.compile`) in one call;
  a network of your own too, once it subclasses :class:`~scalemix.nn.PretrainedMixin`
  (the page "Your own network");
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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from torch import nn
from torch.optim.swa_utils import AveragedModel

from ._diffusers_config import scheduler_kwargs_from_diffusers
from .degradation import BlurDegradation, ScaleSpaceDegradation
from .nn._config_json import read_json
from .nn._hub_files import (
    CONFIG_NAME,
    DEGRADATION_CONFIG_NAME,
    SCHEDULER_CONFIG_NAME,
    WEIGHTS_NAME,
    require_hub,
    resolve_file,
)
from .nn._pretrained import PretrainedMixin as PretrainedMixin  # documented in scalemix.nn
from .nn._pretrained import unsupported_model
from .nn._sidecars import degradation_config as degradation_config
from .nn._sidecars import degradation_from_config as degradation_from_config
from .nn._sidecars import scheduler_config as scheduler_config
from .scheduler import DDPMScheduler

__all__ = [
    "CONFIG_NAME",
    "DEGRADATION_CONFIG_NAME",
    "SCHEDULER_CONFIG_NAME",
    "WEIGHTS_NAME",
    "degradation_config",
    "degradation_from_config",
    "export_pretrained",
    "load_degradation",
    "load_scheduler",
    "scheduler_config",
]

_T = TypeVar("_T")


def _load_config(
    path_or_id: str | os.PathLike[str],
    filename: str,
    argument: str,
    build: Callable[[dict[str, Any]], _T],
    hub_kwargs: dict[str, Any],
) -> _T:
    """``build`` of the JSON file ``filename`` saved beside a model; errors name the file."""
    require_hub()
    path = resolve_file(path_or_id, filename, **hub_kwargs)
    if path is None:
        raise FileNotFoundError(
            f"{os.fspath(path_or_id)!r} holds no {filename}; "
            f"write it with save_pretrained(folder, {argument}=...)"
        )
    try:
        return build(read_json(path))
    except (TypeError, ValueError) as err:
        raise type(err)(f"{path}: {err}") from err


def _scheduler_from_config(config: dict[str, Any]) -> DDPMScheduler:
    return DDPMScheduler(**scheduler_kwargs_from_diffusers(config))


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
    return _load_config(
        pretrained_model_name_or_path,
        SCHEDULER_CONFIG_NAME,
        "scheduler",
        _scheduler_from_config,
        hub_kwargs,
    )


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
    return _load_config(
        pretrained_model_name_or_path,
        DEGRADATION_CONFIG_NAME,
        "degradation",
        degradation_from_config,
        hub_kwargs,
    )


def _final_model(result_or_model: object) -> nn.Module:
    """The network to save: a result's EMA, unwrapped from its averaging / DDP / compile."""
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
        TypeError: an object with no such model, or a model that is no
            :class:`~scalemix.nn.PretrainedMixin` (:class:`~scalemix.nn.MLPDenoiser`,
            :class:`~scalemix.nn.DualScaleDenoiser`, :class:`~scalemix.nn.FlexiUNet`, or
            a network of your own declaring its config: the page "Your own network").
    """
    model = _final_model(result_or_model)
    if not isinstance(model, PretrainedMixin):
        raise unsupported_model(
            model,
            "it is no PretrainedMixin (accepted: MLPDenoiser, DualScaleDenoiser, FlexiUNet, "
            "a network of your own that subclasses PretrainedMixin, or a training result "
            "holding one)",
        )
    return model.save_pretrained(save_directory, scheduler=scheduler, degradation=degradation)
