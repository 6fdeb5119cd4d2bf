"""Input validation shared by the degradation modules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .._utils import as_timesteps, debug_check_finite

__all__ = ["check_state", "shared_timestep", "timesteps_cpu"]


def timesteps_cpu(
    t: Tensor | int, batch: int | None, num_timesteps: int, *, low: int = 0
) -> Tensor:
    """``t`` as a CPU int64 tensor, checked by :func:`~scalemix._utils.as_timesteps`:
    shape ``(batch,)``, or ``t``'s own shape for ``batch=None`` (e.g. for ``snr``)."""
    cpu = torch.device("cpu")
    if batch is not None:
        return as_timesteps(t, batch, num_timesteps, cpu, low=low)
    shaped = torch.as_tensor(t)
    flat = as_timesteps(shaped.reshape(-1), shaped.numel(), num_timesteps, cpu, low=low)
    return flat.reshape(shaped.shape)


def shared_timestep(
    t: Tensor | int,
    batch: int | None,
    num_timesteps: int,
    *,
    allow_clean: bool = False,
    name: str = "t",
) -> int:
    """Return the one timestep a whole batch shares, as a Python int.

    Args:
        t: an int (Python or numpy), a 0-d integer tensor, or an integer tensor of shape
            ``(batch,)`` whose entries are all equal.
        batch: expected batch size of a 1-D ``t`` (``None``: any length).
        num_timesteps: ``T``; ``t`` must lie in ``[0, T)`` (``[-1, T)`` with
            ``allow_clean``, ``-1`` meaning clean data).
        allow_clean: accept ``-1``.
        name: argument name used in error messages.

    Raises:
        TypeError: ``t`` is a bool, a float or a floating-point tensor.
        ValueError: wrong shape, out of range, or batch items with different timesteps.
    """
    if isinstance(t, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or an integer tensor, got a bool")
    if isinstance(t, Tensor):
        if torch.is_floating_point(t) or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got dtype {t.dtype}")
        if t.ndim > 1 or (t.ndim == 1 and batch is not None and t.shape[0] != batch):
            raise ValueError(
                f"{name} must be an int, a 0-d tensor or have shape ({batch},); "
                f"got shape {tuple(t.shape)}"
            )
        if t.numel() == 0:
            raise ValueError(f"{name} is empty")
        lo, hi = int(t.min()), int(t.max())
        if lo != hi:
            raise ValueError(
                f"all batch items must share one timestep {name}; got values in [{lo}, {hi}] "
                "(sample one timestep per batch)"
            )
        value = lo
    elif isinstance(t, (int, np.integer)):
        value = int(t)
    else:
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(t).__name__}")
    low = -1 if allow_clean else 0
    if not low <= value < num_timesteps:
        raise ValueError(f"{name} must lie in [{low}, {num_timesteps}), got {value}")
    return value


def check_state(
    name: str,
    x: Tensor,
    spatial: Sequence[int],
    *,
    batch: int | None = None,
    channels: int | None = None,
) -> Tensor:
    """Check that ``x`` is a floating tensor of shape ``(batch, channels, *spatial)``.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: wrong rank or shape (the message gives the expected shape), or a NaN
            or an infinity inside :func:`scalemix.debug.check_values`.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    spatial = tuple(spatial)
    if (
        x.ndim != 2 + len(spatial)
        or tuple(x.shape[2:]) != spatial
        or (batch is not None and x.shape[0] != batch)
        or (channels is not None and x.shape[1] != channels)
    ):
        b = "b" if batch is None else str(batch)
        c = "c" if channels is None else str(channels)
        expected = ", ".join([b, c, *(str(s) for s in spatial)])
        raise ValueError(f"{name} must have shape ({expected}), got {tuple(x.shape)}")
    return debug_check_finite(name, x)  # values only inside scalemix.debug.check_values()
