r"""Resolution schedules of Scale Space Diffusion (Mukhopadhyay et al., 2026, sec. 4).

A pyramid of ``n`` levels :math:`R_0 < \dots < R_{n-1}` (each twice the previous,
:math:`R_{n-1}` the image size) is traversed as the timestep grows: with
:math:`\tau = t / (T - 1)` and a warp :math:`x(\tau) \in [0, 1]`,

.. math:: \mathrm{idx}(t) = n - 1 - \min(\lfloor n\,x(\tau) \rfloor, n - 1),
    \qquad r(t) = R_{\mathrm{idx}(t)} .

``"convex"`` uses :math:`x = 1 - (1 - \tau)^\gamma` (the paper's "convex decay";
:math:`\gamma = 0.5` is the default, :math:`\gamma = 2` its concave ablation) and
``"linear"`` uses :math:`x = \tau` (equal split of the timesteps between levels).
For 64 px, 4 levels and :math:`\gamma = 0.5`: 64 for ``t < 438``, 32 for 438..749,
16 for 750..936 and 8 for 937..999.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

from .._utils import check_choice

__all__ = ["ResolutionScheduleName", "resolution_levels", "resolution_schedule"]

ResolutionScheduleName = Literal["convex", "linear"]


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def resolution_levels(image_size: int, num_levels: int) -> tuple[int, ...]:
    """The pyramid ``(R_0, ..., R_{n-1})``, ascending, with ``R_{n-1} = image_size``.

    Args:
        image_size: side of the full-resolution images; a power of two.
        num_levels: number of levels ``n >= 1``; the smallest level must keep at least
            2 pixels, i.e. ``image_size / 2**(n-1) >= 2`` (for ``n >= 2``).

    Returns:
        ``tuple(image_size // 2**(n-1-i) for i in range(n))``.

    Raises:
        TypeError: non-integer arguments.
        ValueError: ``image_size`` not a power of two, or too many levels for it.
    """
    _check_int("image_size", image_size, 1)
    _check_int("num_levels", num_levels, 1)
    if image_size & (image_size - 1) != 0:
        raise ValueError(f"image_size must be a power of two, got {image_size}")
    smallest = image_size >> (num_levels - 1)
    if num_levels > 1 and smallest < 2:
        max_levels = image_size.bit_length() - 1
        raise ValueError(
            f"num_levels={num_levels} is too large for image_size={image_size}: the smallest "
            f"level would be {image_size / 2 ** (num_levels - 1):g} px (< 2); "
            f"use at most {max_levels} levels"
        )
    return tuple(image_size >> (num_levels - 1 - i) for i in range(num_levels))


def resolution_schedule(
    image_size: int,
    num_levels: int,
    num_timesteps: int,
    schedule: ResolutionScheduleName = "convex",
    gamma: float = 0.5,
) -> Tensor:
    r"""The resolution :math:`r(t)` of every timestep, as an int64 tensor of shape ``(T,)``.

    Implements the formula of the module docstring (evaluated in double precision,
    timestep by timestep, so boundaries are reproducible).

    Args:
        image_size: full resolution (power of two).
        num_levels: number of pyramid levels ``n``.
        num_timesteps: ``T >= 1``.
        schedule: ``"convex"`` (:math:`x = 1 - (1-\tau)^\gamma`) or ``"linear"``
            (:math:`x = \tau`, equal split; ``gamma`` is ignored).
        gamma: exponent of the convex schedule, ``> 0``.

    Returns:
        Non-increasing int64 tensor with ``r[0] = image_size`` and
        ``r[T-1] = R_0`` when ``T > 1``.

    Raises:
        ValueError: unknown ``schedule``, ``gamma <= 0``, bad sizes, or a schedule that
            skips a level (``T`` too small for ``num_levels``): every resolution change
            must be a single halving.
    """
    levels = resolution_levels(image_size, num_levels)
    _check_int("num_timesteps", num_timesteps, 1)
    check_choice("resolution_schedule", schedule, get_args(ResolutionScheduleName))
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a positive finite float, got {gamma!r}")
    n = num_levels
    out: list[int] = []
    for t in range(num_timesteps):
        tau = t / (num_timesteps - 1) if num_timesteps > 1 else 0.0
        if schedule == "convex":
            x = 1.0 - (1.0 - tau) ** float(gamma)
        elif schedule == "linear":
            x = tau
        else:  # pragma: no cover - guarded by check_choice
            raise ValueError(f"unknown resolution_schedule {schedule!r}; use 'convex' or 'linear'")
        idx = n - 1 - min(math.floor(n * x), n - 1)
        out.append(levels[idx])
    res = torch.tensor(out, dtype=torch.long)
    ratios = res[:-1] // res[1:]
    if bool(((ratios != 1) & (ratios != 2)).any()):
        raise ValueError(
            f"the resolution schedule skips a level: num_timesteps={num_timesteps} is too small "
            f"for num_levels={num_levels} with schedule={schedule!r} (gamma={gamma}); every "
            "resolution change must be a single 2x halving"
        )
    return res
