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

import torch
from torch import Tensor

from ..schedules import Spacing, even_timesteps, timestep_schedule
from .protocol import LinearDegradation

__all__ = ["Spacing", "change_steps", "even_timesteps", "respaced_timesteps"]


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

    The base grid is :func:`~scalemix.schedules.timestep_schedule` with ``spacing``
    (``"trailing"``, scalemix's default; ``"even"``, the reference code's, which keeps
    ``T - 1`` and 0; or ``"leading"``, ``"linspace"``, ``"logsnr"``), merged with
    :func:`change_steps`. The result therefore has between ``n`` and
    ``n + len(change_steps)`` entries; with no change steps it equals
    :meth:`scalemix.DDPMScheduler.timesteps` with the same spacing. A sampler steps from
    ``ts[i]`` to ``ts[i + 1]`` and from the last entry to ``-1``.

    Args:
        degradation: any :class:`~scalemix.degradation.LinearDegradation`.
        num_inference_steps: ``n`` in ``[1, T]``; ``None`` keeps every timestep.
        spacing: a :data:`~scalemix.schedules.Spacing`.

    Returns:
        Int64 tensor of shape ``(m,)``, strictly decreasing.

    Raises:
        ValueError: ``num_inference_steps`` is not an int in ``[1, T]``, or an unknown
            ``spacing``.
    """
    T = degradation.num_train_timesteps
    base = timestep_schedule(
        T, num_inference_steps, spacing, alphas_cumprod=degradation.alphas_cumprod
    )
    kept = torch.cat([base, torch.tensor(change_steps(degradation), dtype=torch.long)])
    unique: Tensor = torch.unique(kept)
    return unique.flip(0)
