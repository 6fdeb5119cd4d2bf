r"""The scalar noise schedule that every linear degradation here shares.

The operators of :mod:`scalemix.degradation.protocol` factor as :math:`M_t =
\sqrt{\alpha_t} D_t`. Their scalar part is a beta schedule,

.. math:: \alpha_t = 1 - \beta_t, \qquad \bar\alpha_t = \prod_{k=0}^{t} \alpha_k,
    \qquad \sigma_t^2 = 1 - \bar\alpha_t,

which :class:`NoiseSchedule` holds for :class:`~scalemix.degradation.GaussianDegradation`,
:class:`~scalemix.degradation.ScaleSpaceDegradation` and
:class:`~scalemix.degradation.BlurDegradation`, whatever their :math:`D_t`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..schedules import BetaScheduleName, make_beta_schedule
from ._checks import timesteps_cpu

__all__ = ["NoiseSchedule"]


class NoiseSchedule:
    r"""The betas of a degradation and what follows from them alone.

    Args:
        beta_schedule: see :func:`scalemix.schedules.make_beta_schedule`.
        num_train_timesteps: ``T``.
        beta_start: first beta.
        beta_end: last beta.
    """

    def __init__(
        self,
        beta_schedule: BetaScheduleName,
        num_train_timesteps: int,
        beta_start: float,
        beta_end: float,
    ) -> None:
        self.betas: Tensor = make_beta_schedule(
            beta_schedule, num_train_timesteps, beta_start, beta_end
        )
        self._abar: Tensor = torch.cumprod(1.0 - self.betas, dim=0)

    @property
    def num_train_timesteps(self) -> int:
        """``T``."""
        return int(self.betas.numel())

    @property
    def alphas_cumprod(self) -> Tensor:
        r""":math:`\bar\alpha_t`, float64 ``(T,)``."""
        return self._abar

    def snr(self, t: Tensor | int) -> Tensor:
        r""":math:`\mathrm{SNR}_t = \bar\alpha_t / (1 - \bar\alpha_t)`, float64 of ``t``'s shape."""
        abar = self._abar[timesteps_cpu(t, None, self.num_train_timesteps)]
        return abar / (1.0 - abar)
