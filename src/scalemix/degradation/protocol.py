r"""Generalized linear degradations :math:`x_t = M_{1:t} x_0 + \sigma_t \epsilon`.

Scale Space Diffusion (Mukhopadhyay et al., 2026, sec. 3) writes the forward process as
:math:`x_t = M_t x_{t-1} + \eta_t`, :math:`\eta_t \sim \mathcal N(0, \sigma_t^2 I -
\sigma_{t-1}^2 M_t M_t^\top)`, so that the marginal is
:math:`x_t = M_{1:t} x_0 + \sigma_t \epsilon`. Here every operator factors as
:math:`M_t = \sqrt{\alpha_t} D_t` with a scalar part from a beta schedule
(:math:`\sigma_t^2 = 1 - \bar\alpha_t`) and a linear map :math:`D_t` (identity for DDPM,
a 2x downsample at the resolution changes of Scale Space Diffusion, a DCT-domain blur
for blurring diffusion). A reverse step only needs :math:`D_t`, its adjoint and the
shapes, which is what :class:`LinearDegradation` declares.

Timesteps run over ``[0, T)``; ``t = -1`` denotes clean data (:math:`\bar\alpha_{-1} =
1`), and ``spatial_shape(-1)`` is the data's shape. :math:`D_t` maps the state at
``t - 1`` to the state at ``t``, so :math:`D_{0:t} = D_t \cdots D_0`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor

from ..schedules import BetaScheduleName
from ._checks import check_state, shared_timestep
from .noise_schedule import NoiseSchedule

__all__ = [
    "GaussianDegradation",
    "LinearDegradation",
    "SupportsCovarianceRoot",
    "apply_range",
    "apply_range_adjoint",
]


@runtime_checkable
class LinearDegradation(Protocol):
    r"""Forward process :math:`x_t = \sqrt{\bar\alpha_t} D_{0:t} x_0 + \sigma_t \epsilon`.

    States are tensors of shape ``(b, c, *spatial_shape(t))``; the operators act on each
    batch item independently (they may mix channels).
    """

    @property
    def num_train_timesteps(self) -> int:
        """``T``, the number of training timesteps."""
        ...

    @property
    def alphas_cumprod(self) -> Tensor:
        r""":math:`\bar\alpha_t`, float64 ``(T,)``; :math:`\sigma_t^2 = 1 - \bar\alpha_t`."""
        ...

    def spatial_shape(self, t: int) -> tuple[int, ...]:
        """Trailing (after batch and channel) shape of the state at ``t`` in ``[-1, T)``."""
        ...

    def apply(self, x: Tensor, t: int) -> Tensor:
        """:math:`D_t x`: state shape at ``t - 1`` to state shape at ``t``, ``t`` in ``[0, T)``."""
        ...

    def apply_adjoint(self, y: Tensor, t: int) -> Tensor:
        r""":math:`D_t^\top y`: state shape at ``t`` to state shape at ``t - 1``."""
        ...


@runtime_checkable
class SupportsCovarianceRoot(Protocol):
    r"""A degradation that applies the exact reverse-step covariance root in closed form."""

    def covariance_root(self, xi: Tensor, t: int, prev_t: int) -> Tensor:
        r""":math:`\Sigma^{1/2}\xi` for the posterior :math:`q(x_s | x_t, x_0)`, ``s = prev_t``.

        ``xi`` and the result have shape ``(b, c, *spatial_shape(prev_t))``.
        """
        ...


def _operator_steps(degradation: LinearDegradation, start: int, stop: int) -> range:
    r"""The timesteps ``start + 1, ..., stop`` of the factors of :math:`D_{start+1:stop}`.

    Args:
        degradation: any :class:`LinearDegradation`.
        start: timestep in ``[-1, T)``.
        stop: timestep in ``[start, T)``.

    Returns:
        ``range(start + 1, stop + 1)``, ascending (empty for ``start = stop``).

    Raises:
        ValueError: unless ``-1 <= start <= stop < T``.
    """
    if not -1 <= start <= stop < degradation.num_train_timesteps:
        raise ValueError(
            f"need -1 <= start <= stop < {degradation.num_train_timesteps}, "
            f"got start={start}, stop={stop}"
        )
    return range(start + 1, stop + 1)


def apply_range(degradation: LinearDegradation, x: Tensor, start: int, stop: int) -> Tensor:
    r""":math:`D_{start+1:stop}\,x = D_{stop} \cdots D_{start+1} x` (identity if equal).

    Args:
        degradation: any :class:`LinearDegradation`.
        x: state at ``start``, shape ``(b, c, *spatial_shape(start))``.
        start: timestep in ``[-1, T)``.
        stop: timestep in ``[start, T)``.

    Returns:
        State at ``stop``, shape ``(b, c, *spatial_shape(stop))``.
    """
    for k in _operator_steps(degradation, start, stop):
        x = degradation.apply(x, k)
    return x


def apply_range_adjoint(degradation: LinearDegradation, y: Tensor, start: int, stop: int) -> Tensor:
    r""":math:`D_{start+1:stop}^\top\,y = D_{start+1}^\top \cdots D_{stop}^\top y`.

    The adjoint of :func:`apply_range`.

    Args:
        degradation: any :class:`LinearDegradation`.
        y: state at ``stop``, shape ``(b, c, *spatial_shape(stop))``.
        start: as in :func:`apply_range`.
        stop: as in :func:`apply_range`.

    Returns:
        Shape ``(b, c, *spatial_shape(start))``.
    """
    for k in reversed(_operator_steps(degradation, start, stop)):
        y = degradation.apply_adjoint(y, k)
    return y


class GaussianDegradation(NoiseSchedule):
    r"""The DDPM forward process as a :class:`LinearDegradation`: :math:`D_t = I`.

    :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon` (Ho et al.,
    2020, eq. 4); its reverse step is exactly the DDPM posterior. The schedule
    (``betas``, ``alphas_cumprod``, ``snr``) comes from
    :class:`~scalemix.degradation.noise_schedule.NoiseSchedule`.

    This is the identity of the degradation family, the point where every linear
    degradation's machinery (posterior, DDIM family, respacing, the scale-space loss)
    must reduce to DDPM; the tests use it to check exactly that. To train and sample a
    Gaussian diffusion model use :class:`~scalemix.DDPMScheduler`, which adds the
    noise and :math:`v` parameterisations and the ODE/SDE solvers; both go to the same
    :func:`scalemix.sample`.

    Args:
        spatial_shape: trailing shape of the data after ``(b, c)``, e.g. ``(64, 64)``.
        num_train_timesteps: ``T``.
        beta_schedule: name passed to :func:`scalemix.schedules.make_beta_schedule`.
        beta_start: first beta.
        beta_end: last beta.
    """

    def __init__(
        self,
        spatial_shape: Sequence[int],
        num_train_timesteps: int = 1000,
        beta_schedule: BetaScheduleName = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ) -> None:
        shape = tuple(int(s) for s in spatial_shape)
        if any(s < 1 for s in shape):
            raise ValueError(f"spatial_shape must hold positive sizes, got {shape}")
        self._shape = shape
        super().__init__(beta_schedule, num_train_timesteps, beta_start, beta_end)

    def spatial_shape(self, t: int) -> tuple[int, ...]:
        """The fixed data shape, for every ``t`` in ``[-1, T)``."""
        shared_timestep(t, 1, self.num_train_timesteps, allow_clean=True)
        return self._shape

    def apply(self, x: Tensor, t: int) -> Tensor:
        """Identity (after checking ``t`` and the shape of ``x``)."""
        shared_timestep(t, 1, self.num_train_timesteps)
        check_state("x", x, self._shape)
        return x

    def apply_adjoint(self, y: Tensor, t: int) -> Tensor:
        """Identity (after checking ``t`` and the shape of ``y``)."""
        shared_timestep(t, 1, self.num_train_timesteps)
        check_state("y", y, self._shape)
        return y

    def covariance_root(self, xi: Tensor, t: int, prev_t: int) -> Tensor:
        r""":math:`\tilde\beta^{1/2}\xi` with the DDPM posterior variance of ``t -> prev_t``.

        :math:`\tilde\beta = (1-\bar\alpha_s)(1 - \bar\alpha_t/\bar\alpha_s)/(1-\bar\alpha_t)`.
        """
        t_ = shared_timestep(t, 1, self.num_train_timesteps)
        s = shared_timestep(prev_t, 1, self.num_train_timesteps, allow_clean=True)
        if s >= t_:
            raise ValueError(f"prev_t must be smaller than t, got t={t_}, prev_t={s}")
        check_state("xi", xi, self._shape)
        abar_t = float(self._abar[t_])
        abar_s = float(self._abar[s]) if s >= 0 else 1.0
        var = (1.0 - abar_s) * (1.0 - abar_t / abar_s) / (1.0 - abar_t)
        return xi * math.sqrt(var)

    def __repr__(self) -> str:
        return (
            f"GaussianDegradation(spatial_shape={self._shape}, "
            f"num_train_timesteps={self.num_train_timesteps})"
        )
