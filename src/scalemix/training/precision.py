r"""Mixed precision and compilation switches shared by the training loops.

``precision`` selects the arithmetic of the forward pass and the loss:

* ``"fp32"``: everything in float32 (no autocast);
* ``"bf16"``: :func:`torch.autocast` with ``torch.bfloat16`` (same exponent range as
  float32, so no loss scaling is needed);
* ``"fp16"``: :func:`torch.autocast` with ``torch.float16`` and a
  :class:`torch.amp.GradScaler`, which multiplies the loss by a scale :math:`S` before
  the backward pass, unscales the gradients :math:`g = \nabla(S L) / S` before clipping,
  skips steps whose gradients are not finite and adapts :math:`S`.

Parameters, optimiser state and the EMA stay in float32 in every mode.
"""

from __future__ import annotations

import contextlib
from typing import Literal, get_args

import torch
from torch import nn

from .._utils import check_choice

__all__ = ["Precision", "autocast_context", "compile_model", "grad_scaler"]

Precision = Literal["fp32", "bf16", "fp16"]
"""Arithmetic of the forward pass and the loss (module docstring)."""

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(
    precision: Precision, device: torch.device
) -> contextlib.AbstractContextManager[object]:
    """The autocast context of ``precision`` on ``device`` (a null context for fp32).

    Raises:
        ValueError: an unknown ``precision``, or one that torch cannot autocast on
            ``device``'s type.
    """
    check_choice("precision", precision, get_args(Precision))
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = _AUTOCAST_DTYPES[precision]
    if not torch.amp.is_autocast_available(device.type):
        raise ValueError(
            f"precision={precision!r} needs autocast, which torch does not offer on "
            f"device type {device.type!r}; use precision='fp32'"
        )
    try:
        return torch.autocast(device.type, dtype=dtype)
    except RuntimeError as err:  # e.g. a dtype this build cannot autocast to on the device
        raise ValueError(
            f"precision={precision!r} is not supported on {device.type!r} by this torch "
            f"build ({err}); use precision='bf16' or 'fp32'"
        ) from err


def grad_scaler(precision: Precision, device: torch.device) -> torch.amp.GradScaler | None:
    """A :class:`torch.amp.GradScaler` for ``"fp16"``, else ``None``."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def compile_model(model: nn.Module, compile: bool | str) -> nn.Module:
    """``model`` itself (``compile=False``) or :func:`torch.compile` of it.

    Args:
        model: the network; the compiled wrapper shares its parameters.
        compile: ``False``, ``True`` (torch's default backend, ``"inductor"``) or the
            name of a backend (``"eager"``, ``"aot_eager"``, ``"inductor"``, ...).

    Raises:
        TypeError: ``compile`` is neither a bool nor a string.
    """
    if isinstance(compile, bool):
        if not compile:
            return model
        return torch.compile(model)  # type: ignore[return-value]
    if isinstance(compile, str):
        return torch.compile(model, backend=compile)  # type: ignore[return-value]
    raise TypeError(f"compile must be a bool or a backend name, got {type(compile).__name__}")
