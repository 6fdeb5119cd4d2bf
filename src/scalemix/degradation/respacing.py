r"""Respaced sampling schedules that keep every change of the state's shape.

A reverse step from ``t`` to an earlier kept step ``s`` applies
:math:`M = D_{s+1:t}`. If every *change step* :math:`t_c` (a timestep whose state shape
differs from that of :math:`t_c - 1`) is kept, then between two consecutive kept steps
``s < t`` the only possible change step is ``t`` itself, so each step crosses at most
one resolution change (for Scale Space Diffusion :math:`M` is one resize to the next
pyramid size, or the identity) and :math:`r(s) = r(t - 1)`: the model is asked for
exactly the resolution it was trained to output at ``t``.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from .._utils import check_choice
from .protocol import LinearDegradation

__all__ = ["Spacing", "change_steps", "even_timesteps", "respaced_timesteps"]

Spacing = Literal["trailing", "even"]


def even_timesteps(num_timesteps: int, num_inference_steps: int) -> tuple[int, ...]:
    r"""guided-diffusion's ``space_timesteps(T, [k])``: ``k`` evenly strided steps of ``[0, T)``.

    With stride :math:`q = (T - 1)/(k - 1)` (:math:`q = 1` for ``k = 1``) the kept steps
    are ``round(j q)``, ``j = 0..k-1``, where ``j q`` is accumulated as in the original
    (``cur += q``) and ``round`` is Python's (half to even); they include 0 and, for
    ``k > 1``, ``T - 1`` (Nichol & Dhariwal, 2021, sec. 4; the Scale Space Diffusion
    reference keeps these steps).

    Args:
        num_timesteps: ``T >= 1``.
        num_inference_steps: ``k`` in ``[1, T]``.

    Returns:
        The kept steps, ascending.
    """
    if isinstance(num_inference_steps, bool) or not 1 <= num_inference_steps <= num_timesteps:
        raise ValueError(
            f"num_inference_steps must be an int in [1, {num_timesteps}], got "
            f"{num_inference_steps!r}"
        )
    stride = (num_timesteps - 1) / (num_inference_steps - 1) if num_inference_steps > 1 else 1
    cur = 0.0
    kept: list[int] = []
    for _ in range(num_inference_steps):
        kept.append(round(cur))
        cur += stride
    return tuple(sorted(set(kept)))


def change_steps(degradation: LinearDegradation) -> tuple[int, ...]:
    """Timesteps ``t`` in ``[1, T)`` whose state shape differs from that of ``t - 1``.

    Args:
        degradation: any :class:`~scalemix.degradation.LinearDegradation`.

    Returns:
        Ascending tuple (empty for shape-preserving degradations such as DDPM).
    """
    T = degradation.num_train_timesteps
    shapes = [degradation.spatial_shape(t) for t in range(T)]
    return tuple(t for t in range(1, T) if shapes[t] != shapes[t - 1])


def respaced_timesteps(
    degradation: LinearDegradation,
    num_inference_steps: int | None = None,
    spacing: Spacing = "trailing",
) -> Tensor:
    r"""Strictly decreasing int64 sampling timesteps that keep every change step.

    The base grid is, for ``spacing="trailing"`` (scalemix's default), the spacing
    :math:`\mathrm{round}(T - iT/n) - 1`, ``i = 0..n-1`` (Lin et al., 2024, Table 2; it
    starts at ``T - 1``), and for ``spacing="even"`` (the reference code's) guided-diffusion's
    evenly strided steps :func:`even_timesteps` (they include ``T - 1`` and 0). Either is
    merged with :func:`change_steps`. The result therefore has between ``n`` and
    ``n + len(change_steps)`` entries; with no change steps it equals
    :meth:`scalemix.scheduler.DDPMScheduler.timesteps` with ``"trailing"`` spacing.
    A sampler steps from ``ts[i]`` to ``ts[i + 1]`` and from the last entry to ``-1``.

    Args:
        degradation: any :class:`~scalemix.degradation.LinearDegradation`.
        num_inference_steps: ``n`` in ``[1, T]``; ``None`` keeps every timestep.
        spacing: ``"trailing"`` or ``"even"``.

    Returns:
        Int64 tensor of shape ``(m,)``, strictly decreasing, starting at ``T - 1``.

    Raises:
        ValueError: ``num_inference_steps`` is not an int in ``[1, T]``, or an unknown
            ``spacing``.
    """
    check_choice("spacing", spacing, get_args(Spacing))
    T = degradation.num_train_timesteps
    n = T if num_inference_steps is None else num_inference_steps
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= T:
        raise ValueError(f"num_inference_steps must be None or an int in [1, {T}], got {n!r}")
    if spacing == "even":
        base = torch.tensor(even_timesteps(T, n), dtype=torch.long)
    else:
        i = torch.arange(n, dtype=torch.float64)
        base = (torch.floor(T - i * T / n + 0.5) - 1).to(torch.long)
    kept = torch.cat([base, torch.tensor(change_steps(degradation), dtype=torch.long)])
    unique: Tensor = torch.unique(kept)
    return unique.flip(0)
