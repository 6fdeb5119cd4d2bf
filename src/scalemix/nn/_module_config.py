"""Nested modules of a saved model (a gate, an upscale) as JSON objects and back.

A :class:`~scalemix.nn.DualScaleDenoiser` takes its gate and its upscale as modules;
``config.json`` describes each as an object with its own ``_class_name`` and
constructor arguments.
"""

from __future__ import annotations

from typing import Any, cast

from torch import nn

from ._config_json import Decoder, as_float, as_int, as_str, decode_arguments
from .gate import TimestepGate
from .rescale import LearnedAffineUpscale, ScaleUpscale

__all__ = ["build_module", "module_config"]


def module_config(module: nn.Module, name: str) -> dict[str, Any]:
    """The config object of a nested module (a gate or an upscale) of a saved model."""
    if isinstance(module, TimestepGate):
        network = module.network
        hidden = cast(nn.Linear, network[0]).out_features if network is not None else 256
        slope = 0.2
        if network is not None and module.mode == "deep":
            slope = float(cast(nn.LeakyReLU, network[1]).negative_slope)
        return {
            "_class_name": "TimestepGate",
            "mode": module.mode,
            "num_branches": module.num_branches,
            "embedding_dim": module.embedding_dim,
            "hidden_dim": hidden,
            "time_scale": module.time_embedding.scale,
            "negative_slope": slope,
        }
    if type(module) is LearnedAffineUpscale:
        return {"_class_name": "LearnedAffineUpscale", "dim": module.dim}
    if type(module) is ScaleUpscale:
        return {"_class_name": "ScaleUpscale", "factor": module.factor}
    raise TypeError(
        f"save_pretrained cannot describe {name}={type(module).__name__} in config.json; "
        "accepted: TimestepGate, LearnedAffineUpscale, ScaleUpscale"
    )


_MODULE_FIELDS: dict[str, dict[str, Decoder]] = {
    "TimestepGate": {
        "mode": as_str,
        "num_branches": as_int,
        "embedding_dim": as_int,
        "hidden_dim": as_int,
        "time_scale": as_float,
        "negative_slope": as_float,
    },
    "LearnedAffineUpscale": {"dim": as_int},
    "ScaleUpscale": {"factor": as_float},
}


def build_module(name: str, value: Any) -> nn.Module:
    """The nested module that :func:`module_config` describes, freshly initialised."""
    if not isinstance(value, dict):
        raise TypeError(f"config argument {name!r} must be an object, got {value!r}")
    kind = value.get("_class_name")
    if kind not in _MODULE_FIELDS:
        raise ValueError(
            f"config argument {name!r} has _class_name={kind!r}; accepted: "
            f"{', '.join(_MODULE_FIELDS)}"
        )
    kwargs = decode_arguments(kind, value, _MODULE_FIELDS[kind], prefix=f"{name}.")
    if kind == "TimestepGate":
        return TimestepGate(**kwargs)
    if kind == "LearnedAffineUpscale":
        return LearnedAffineUpscale(**kwargs)
    return ScaleUpscale(**kwargs)
