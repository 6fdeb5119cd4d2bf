r"""Resolution schedules of Scale Space Diffusion (Mukhopadhyay et al., 2026, sec. 4).

A pyramid of ``n`` levels :math:`R_0 < \dots < R_{n-1}` (:math:`R_{n-1}` the image
size; any sizes, see :mod:`~scalemix.degradation.pyramid`) is traversed as the timestep
grows. With :math:`\tau = t / (T - 1)` the level index :math:`\mathrm{idx}(t)` into
that ascending list is, for each schedule (the reference code's name in brackets):

* ``"linear"`` (alias ``"equal"``; reference ``equal``): equal split,
  :math:`\mathrm{idx} = n - 1 - \min(\lfloor \tau n \rfloor, n - 1)`;
* ``"convex"`` (reference ``convex_decay``, the paper's default with
  :math:`\gamma = 0.5`): :math:`x = 1 - (1-\tau)^\gamma`,
  :math:`\mathrm{idx} = n - 1 - \min(\lfloor x n \rfloor, n - 1)`;
* ``"tanh"`` (reference ``tanh_like``): :math:`x = 1 - \mathrm{tanh\_like}(1-\tau)`,
  :math:`\mathrm{idx} = \min(\lfloor x n \rfloor, n - 1)`;
* ``"sigmoid"`` (reference ``sigmoid_like``): :math:`x = 1 - \mathrm{sigmoid\_like}(1-\tau)`,
  :math:`\mathrm{idx} = \min(\lfloor x n \rfloor, n - 1)`;

with :math:`v = \operatorname{sign}(u)|u|^\gamma + 1/2`, :math:`h(u) = 3v^2 - 2v^3 - 1/2`,
:math:`H(u) = h(u) / h(-1/2)`, :math:`\mathrm{tanh\_like}(s) = H(s - 1/2)/2 + 1/2`,
:math:`G(y)` the root :math:`u \in [-1/2, 1/2]` of :math:`H(u)/2 = y` found by
``scipy.optimize.brentq`` and :math:`\mathrm{sigmoid\_like}(s) = (G(s - 1/2) /
G(-1/2))/2 + 1/2`. Everything is evaluated in float64 in exactly this order, because
level boundaries can fall on exact integers and the rounding decides them: with
``"convex"``, :math:`\gamma = 0.5` and 3 levels, :math:`x n` at ``t = 888`` is
``1.9999999999999996``, so the change happens at ``t = 889``.

For 64 px, 4 halving levels and :math:`\gamma = 0.5` (``"convex"``): 64 for
``t < 438``, 32 for 438..749, 16 for 750..936 and 8 for 937..999. With
:math:`\gamma = 2` the ``"tanh"`` schedule changes at 159, 500, 841 and ``"sigmoid"``
at 364, 500, 636.

The sigmoid-like root find has no sign change for some :math:`\gamma` (e.g. 0.25, 0.5,
0.75, 0.9, 1.5: :math:`H(1/2)` rounds to slightly above :math:`-1`), where the reference
code fails; scalemix raises a ``ValueError`` for those rather than invent values. The
tanh-like warp leaves :math:`[0, 1]` for :math:`\gamma < 1` (the smoothstep is applied
outside :math:`[0, 1]`), which would give negative indices; scalemix refuses
:math:`\gamma < 1` for both sigmoid- and tanh-like schedules.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor

from .._utils import check_choice
from .pyramid import pyramid_sizes

__all__ = [
    "ResolutionScheduleName",
    "level_schedule",
    "resolution_levels",
    "resolution_schedule",
    "sigmoid_like",
    "tanh_like",
]

ResolutionScheduleName = Literal["convex", "linear", "sigmoid", "tanh", "equal"]


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_gamma(gamma: float) -> float:
    if isinstance(gamma, bool) or not (
        isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0
    ):
        raise ValueError(f"gamma must be a positive finite float, got {gamma!r}")
    return float(gamma)


def _h_ratio(u: float, gamma: float) -> float:
    """:math:`H(u) = h(u) / h(-1/2)` with :math:`h(u) = 3v^2 - 2v^3 - 1/2`."""

    def h(w: float) -> float:
        v = math.copysign(1.0, w) * abs(w) ** gamma + 0.5 if w != 0 else 0.5
        return 3 * v**2 - 2 * v**3 - 0.5

    return h(u) / h(-0.5)


def tanh_like(s: float, gamma: float) -> float:
    r"""The reference code's ``tanh_like`` warp: :math:`H(s - 1/2)/2 + 1/2` (module docstring).

    Decreases from 1 at ``s = 0`` to 0 at ``s = 1``; float64.
    """
    return _h_ratio(s - 0.5, _check_gamma(gamma)) / 2 + 0.5


def _root(y: float, gamma: float) -> float:
    from scipy.optimize import brentq

    try:
        return float(brentq(lambda u: _h_ratio(u, gamma) / 2 - y, -0.5, 0.5))
    except ValueError as err:
        raise ValueError(
            f"the sigmoid-like resolution schedule is undefined for gamma={gamma}: its root "
            f"find (scipy.optimize.brentq of H(u)/2 = {y} on [-1/2, 1/2]) has no sign change, "
            "as in the reference code; use another gamma (1, 2, 3 and 5 work) or "
            "resolution_schedule='tanh'"
        ) from err


def sigmoid_like(s: float, gamma: float) -> float:
    r"""The reference code's ``sigmoid_like`` warp: :math:`(G(s - 1/2)/G(-1/2))/2 + 1/2`.

    :math:`G(y)` solves :math:`H(u)/2 = y` on :math:`[-1/2, 1/2]` with
    ``scipy.optimize.brentq`` (module docstring). Decreases from 1 at ``s = 0`` to 0 at
    ``s = 1``; float64.

    Raises:
        ValueError: if the root find has no sign change for this ``gamma``.
    """
    g = _check_gamma(gamma)
    return (_root(s - 0.5, g) / _root(-0.5, g)) / 2 + 0.5


def level_schedule(
    num_levels: int,
    num_timesteps: int,
    schedule: ResolutionScheduleName = "convex",
    gamma: float = 0.5,
) -> tuple[int, ...]:
    r"""The level index :math:`\mathrm{idx}(t)` of every timestep (module docstring).

    Args:
        num_levels: pyramid levels ``n >= 1``.
        num_timesteps: ``T >= 1``.
        schedule: ``"linear"`` (alias ``"equal"``), ``"convex"``, ``"sigmoid"`` or
            ``"tanh"``.
        gamma: the schedule's exponent, ``> 0`` (ignored by ``"linear"``).

    Returns:
        ``T`` ints in ``[0, n)``, non-increasing, index ``n - 1`` (full size) at ``t = 0``;
        ``idx`` refers to the *ascending* list of sizes.

    Raises:
        ValueError: unknown ``schedule``, bad ``gamma`` (including the sigmoid-like
            gammas whose root find fails and warps that leave ``[0, 1]``, such as the
            tanh-like one for ``gamma < 1``), or bad counts.
    """
    _check_int("num_levels", num_levels, 1)
    _check_int("num_timesteps", num_timesteps, 1)
    check_choice("resolution_schedule", schedule, get_args(ResolutionScheduleName))
    g = _check_gamma(gamma)
    if schedule in ("sigmoid", "tanh") and g < 1:
        raise ValueError(
            f"the {schedule!r} resolution schedule needs gamma >= 1, got gamma={gamma}: for "
            "gamma < 1 its smoothstep is evaluated outside [0, 1], the warp leaves [0, 1] and "
            "the level index is not monotone (the reference gives negative indices or fails)"
        )
    n, T = num_levels, num_timesteps
    g0 = _root(-0.5, g) if schedule == "sigmoid" else 1.0
    out: list[int] = []
    for t in range(T):
        tau = t / (T - 1) if T > 1 else 0.0
        if schedule in ("linear", "equal"):
            idx = n - 1 - min(math.floor(tau * n), n - 1)
        elif schedule == "convex":
            x = 1 - (1 - tau) ** g
            idx = n - 1 - min(math.floor(x * n), n - 1)
        elif schedule == "tanh":
            x = 1 - (_h_ratio((1 - tau) - 0.5, g) / 2 + 0.5)
            idx = min(math.floor(x * n), n - 1)
        elif schedule == "sigmoid":
            x = 1 - ((_root((1 - tau) - 0.5, g) / g0) / 2 + 0.5)
            idx = min(math.floor(x * n), n - 1)
        else:  # pragma: no cover - guarded by check_choice
            raise ValueError(f"unknown resolution_schedule {schedule!r}")
        if not 0 <= idx < n or (out and idx > out[-1]):
            raise ValueError(
                f"the {schedule!r} resolution schedule with gamma={gamma} is not a "
                f"non-increasing level index in [0, {n}) (got {idx} at t={t}): its warp leaves "
                "[0, 1] (the tanh-like warp does for gamma < 1); use gamma >= 1"
            )
        out.append(idx)
    return tuple(out)


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
    *,
    factor: float = 2.0,
    unet_levels: int | None = None,
    resolutions: Sequence[int] | None = None,
) -> Tensor:
    r"""The resolution :math:`r(t) = R_{\mathrm{idx}(t)}` of every timestep, int64 ``(T,)``.

    Implements the formulas of the module docstring (:func:`level_schedule`, evaluated
    in double precision, timestep by timestep, so boundaries are reproducible) on the
    pyramid :func:`~scalemix.degradation.pyramid_sizes` ``(image_size, num_levels,
    factor, unet_levels)``, or on ``resolutions`` when given.

    Args:
        image_size: full resolution.
        num_levels: number of pyramid levels ``n``.
        num_timesteps: ``T >= 1``.
        schedule: ``"convex"``, ``"linear"`` (alias ``"equal"``), ``"sigmoid"`` or
            ``"tanh"``.
        gamma: exponent of the schedule, ``> 0`` (ignored by ``"linear"``).
        factor: downsampling factor of the pyramid (``>= 1``).
        unet_levels: UNet level count of the rounding rule (default ``num_levels``).
        resolutions: explicit strictly decreasing sizes (``resolutions[0] ==
            image_size``, ``len == num_levels``); overrides ``factor``.

    Returns:
        Non-increasing int64 tensor with ``r[0] = image_size`` and ``r[T-1]`` the
        smallest size when ``T > 1``.

    Raises:
        ValueError: unknown ``schedule``, bad ``gamma``, bad sizes, or a schedule that
            skips a level (``T`` too small for ``num_levels``): every resolution change
            must move one level down the pyramid.
    """
    if resolutions is None:
        sizes = pyramid_sizes(image_size, num_levels, factor, unet_levels).sizes
    else:
        sizes = tuple(resolutions)
        if sizes[:1] != (image_size,) or len(sizes) != num_levels:
            raise ValueError(
                f"resolutions {sizes} must start at image_size={image_size} and have "
                f"num_levels={num_levels} entries"
            )
    ascending = sizes[::-1]
    idx = level_schedule(num_levels, num_timesteps, schedule, gamma)
    if any(a - b > 1 for a, b in itertools.pairwise(idx)):
        raise ValueError(
            f"the resolution schedule skips a level: num_timesteps={num_timesteps} is too small "
            f"for num_levels={num_levels} with schedule={schedule!r} (gamma={gamma}); every "
            "resolution change must move one level down the pyramid"
        )
    return torch.tensor([ascending[i] for i in idx], dtype=torch.long)
