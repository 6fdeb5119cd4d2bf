r"""Scale Space Diffusion: downsampling as the linear degradation.

Mukhopadhyay, Udhayanan & Shrivastava, "Scale Space Diffusion", CVPR 2026
(arXiv:2603.08709). The forward marginal is

.. math:: x_t = \sqrt{\bar\alpha_t}\,D_{0:t}(x_0) + \sqrt{1-\bar\alpha_t}\,\epsilon,
    \qquad \epsilon \sim \mathcal N(0, I_{r(t) \times r(t)}),

where :math:`D_t` is an antialiased bilinear resize to the next (smaller) size of a
pyramid at the timesteps where the resolution :math:`r(t)` changes and the identity
elsewhere. The pyramid halves by default; any factor (:func:`~scalemix.degradation.pyramid_sizes`)
or any explicit strictly decreasing sizes work. Because the resize is separable
(:math:`M = D \otimes D`, :mod:`scalemix.degradation.resize`), the reverse covariance
root has the closed form

.. math:: \Sigma^{1/2}\xi = \sigma_s\,U\bigl[\sqrt{1-\rho c^2\lambda_i\lambda_j}
    \odot (U^\top \xi U)\bigr]U^\top, \qquad D^\top D = U\operatorname{diag}(\lambda)U^\top .
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from typing_extensions import Unpack

from .._utils import assume_constant
from ..schedules import BetaScheduleName
from ..types import StepOutput
from ._checks import check_state, shared_timestep, timesteps_cpu
from .ddim import SeparableSpectrum
from .noise_schedule import NoiseSchedule
from .posterior import ReverseStepOptions, posterior_coefficients, reverse_step
from .pyramid import Pyramid, _make_pyramid
from .resize import DownsampleSpectrum, resize, resize_adjoint, resize_spectrum
from .resolution import ResolutionScheduleName
from .resolution import resolution_schedule as _resolution_table
from .respacing import Spacing, respaced_timesteps

__all__ = ["ScaleSpaceDegradation"]


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """float32 for half-precision inputs (the antialiased resize and the closed-form
    root run in float32), else the input's own dtype."""
    return torch.float32 if x.dtype in _LOW_PRECISION else x.dtype


@assume_constant
def _max_eigenvalue(n_in: int, n_out: int) -> float:
    r""":math:`\lambda_{\max}(D^\top D)` of the ``n_in -> n_out`` resize, a Python float.

    A constant of the sizes (the spectrum is cached): marked as such so that a compiled
    reverse step reads no tensor value back.
    """
    return float(resize_spectrum(n_in, n_out, dtype=torch.float64).eigenvalues.max())


class ScaleSpaceDegradation(NoiseSchedule):
    r"""The Scale Space Diffusion forward process and its exact reverse step.

    Implements :class:`~scalemix.degradation.LinearDegradation` and
    :class:`~scalemix.degradation.SupportsCovarianceRoot`. Holds only precomputed
    float64 CPU buffers; every method is a pure function of its arguments.
    float16 and bfloat16 images are accepted: the antialiased resize and the
    closed-form root run in float32 and the results come back in the input's dtype.

    The pyramid is either ``resolutions`` (explicit, strictly decreasing, e.g.
    ``(64, 40, 24, 16)``) or :func:`~scalemix.degradation.pyramid_sizes` ``(image_size,
    num_levels, factor, unet_levels)`` (the reference code's rounding rule; with the
    default ``factor=2`` and a power-of-two ``image_size`` the sizes halve).

    Args:
        image_size: full resolution (optional when ``resolutions`` is given).
        num_levels: pyramid levels (1 gives plain DDPM at ``image_size``; optional when
            ``resolutions`` is given).
        num_train_timesteps: ``T``.
        beta_schedule: see :func:`scalemix.schedules.make_beta_schedule`.
        resolution_schedule: ``"convex"``, ``"linear"`` (alias ``"equal"``),
            ``"sigmoid"`` or ``"tanh"``, see
            :func:`~scalemix.degradation.resolution.resolution_schedule`.
        gamma: exponent of the schedule (0.5 in the paper, with ``"convex"``).
        beta_start: first beta.
        beta_end: last beta.
        factor: downsampling factor ``>= 1`` between pyramid levels (reference:
            ``ds_factor``).
        resolutions: explicit pyramid, strictly decreasing sizes ``>= 1``; overrides
            ``factor``.
        unet_levels: level count ``L`` of the UNet that will run the pyramid, used by
            the rounding rule and for :attr:`pyramid` (default ``num_levels``).

    Raises:
        ValueError: bad sizes, unknown schedule names, or a schedule that skips a level.
    """

    def __init__(
        self,
        image_size: int | None = None,
        num_levels: int | None = None,
        num_train_timesteps: int = 1000,
        beta_schedule: BetaScheduleName = "linear",
        resolution_schedule: ResolutionScheduleName = "convex",
        gamma: float = 0.5,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        *,
        factor: float = 2.0,
        resolutions: Sequence[int] | None = None,
        unet_levels: int | None = None,
    ) -> None:
        pyramid = _make_pyramid(image_size, num_levels, factor, resolutions, unet_levels)
        image_size, num_levels = pyramid.sizes[0], len(pyramid.sizes)
        self.image_size: int = image_size
        #: the pyramid, descending, with the UNet level each size runs at
        self.pyramid: Pyramid = pyramid
        #: the pyramid, ascending: ``(R_0, ..., R_{n-1} = image_size)``
        self.resolutions: tuple[int, ...] = pyramid.sizes[::-1]
        self.num_levels: int = num_levels
        self.factor: float = float(factor)
        super().__init__(beta_schedule, num_train_timesteps, beta_start, beta_end)
        self.resolution_schedule: ResolutionScheduleName = resolution_schedule
        self.gamma: float = gamma
        table = _resolution_table(
            image_size,
            num_levels,
            num_train_timesteps,
            resolution_schedule,
            gamma,
            resolutions=pyramid.sizes,
        )
        #: :math:`r(t)` for every timestep, int64 ``(T,)``
        self.resolution_table: Tensor = table
        self._res: list[int] = [int(r) for r in table]
        #: timesteps ``t_c`` with ``r(t_c) != r(t_c - 1)``, ascending
        self.change_steps: tuple[int, ...] = tuple(
            t for t in range(1, len(self._res)) if self._res[t] != self._res[t - 1]
        )

    # ------------------------------------------------------------------ schedule
    def resolution(self, t: Tensor | int) -> int:
        """:math:`r(t)` for a shared timestep ``t`` in ``[-1, T)`` (``r(-1) = image_size``)."""
        s = shared_timestep(t, None, self.num_train_timesteps, allow_clean=True)
        return self.image_size if s < 0 else self._res[s]

    def level(self, t: Tensor | int) -> int:
        """Index ``i`` of :math:`r(t) = R_i` in :attr:`resolutions` (``n - 1`` at full size)."""
        return self.resolutions.index(self.resolution(t))

    def spatial_shape(self, t: int) -> tuple[int, ...]:
        """``(r(t), r(t))`` for ``t`` in ``[-1, T)``."""
        r = self.resolution(t)
        return (r, r)

    def timesteps(
        self, num_inference_steps: int | None = None, spacing: Spacing = "trailing"
    ) -> Tensor:
        """Respaced sampling timesteps; see :func:`~scalemix.degradation.respaced_timesteps`.

        ``spacing="trailing"`` is scalemix's default, ``"even"`` the reference code's.
        """
        return respaced_timesteps(self, num_inference_steps, spacing)

    # ------------------------------------------------------------------ operators
    def _batch_resolution(self, t: Tensor | int, batch: int, offset: int = 0) -> int:
        """Resolution ``r(t + offset)`` shared by a batch (``t`` may vary within a level)."""
        if isinstance(t, Tensor) and t.ndim == 1:
            if t.shape[0] != batch:
                raise ValueError(f"t must have shape ({batch},), got {tuple(t.shape)}")
            if batch == 0:
                raise ValueError(
                    "t is empty (the batch has 0 items), so it names no resolution; "
                    "pass an int t to degrade an empty batch"
                )
            lo = shared_timestep(t.min(), None, self.num_train_timesteps)
            hi = shared_timestep(t.max(), None, self.num_train_timesteps)
            # r(t) is monotone in t, so the extremes decide
            r_lo, r_hi = self.resolution(lo + offset), self.resolution(hi + offset)
            if r_lo != r_hi:
                raise ValueError(
                    "all batch items must share one resolution: the timesteps t in "
                    f"[{lo}, {hi}] span resolutions {r_hi}..{r_lo}; sample one timestep "
                    "(or one level) per batch"
                )
            return r_lo
        return self.resolution(shared_timestep(t, batch, self.num_train_timesteps) + offset)

    def degrade(self, x0: Tensor, t: Tensor | int) -> Tensor:
        r""":math:`D_{0:t}(x_0)`: ``x0`` resized down the pyramid, level by level, to :math:`r(t)`.

        Args:
            x0: clean images, shape ``(b, c, image_size, image_size)``.
            t: int, or ``(b,)`` int tensor whose entries share one resolution.

        Returns:
            Shape ``(b, c, r(t), r(t))``.
        """
        check_state("x0", x0, (self.image_size, self.image_size))
        r = self._batch_resolution(t, x0.shape[0])
        return self._down_to(x0.to(_compute_dtype(x0)), r).to(x0.dtype)

    def _down_to(self, x: Tensor, r: int) -> Tensor:
        for size in self.pyramid.sizes:  # descending: one resize per level
            if r <= size < x.shape[-1]:
                x = resize(x, size)
        return x

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        r""":math:`x_t = \sqrt{\bar\alpha_t} D_{0:t}(x_0) + \sqrt{1-\bar\alpha_t}\,\epsilon`.

        Args:
            x0: shape ``(b, c, image_size, image_size)``.
            noise: :math:`\epsilon` at the resolution of ``t``, shape ``(b, c, r(t), r(t))``.
            t: int, or ``(b,)`` int tensor whose entries share one resolution.

        Returns:
            Shape ``(b, c, r(t), r(t))``.
        """
        check_state("x0", x0, (self.image_size, self.image_size))
        b, c = int(x0.shape[0]), int(x0.shape[1])
        r = self._batch_resolution(t, b)
        check_state("noise", noise, (r, r), batch=b, channels=c)
        tt = timesteps_cpu(t, b, self.num_train_timesteps)
        work = _compute_dtype(x0)
        abar = self._abar[tt].to(device=x0.device, dtype=work).view(b, 1, 1, 1)
        x_t = abar.sqrt() * self._down_to(x0.to(work), r) + (1.0 - abar).sqrt() * noise.to(work)
        return x_t.to(x0.dtype)

    def target(self, x0: Tensor, t: Tensor | int) -> Tensor:
        r"""The training target :math:`D_{0:t-1}(x_0)` at the next resolution :math:`r(t-1)`.

        Args:
            x0: shape ``(b, c, image_size, image_size)``.
            t: int, or ``(b,)`` int tensor whose entries share :math:`r(t-1)`
                (``t = 0`` gives ``x0``).

        Returns:
            Shape ``(b, c, r(t-1), r(t-1))``.
        """
        check_state("x0", x0, (self.image_size, self.image_size))
        r = self._batch_resolution(t, x0.shape[0], offset=-1)
        return self._down_to(x0.to(_compute_dtype(x0)), r).to(x0.dtype)

    def _step_sizes(self, t: int) -> tuple[int, int]:
        """``(r(t-1), r(t))`` for a step index ``t`` in ``[0, T)``."""
        t_ = shared_timestep(t, None, self.num_train_timesteps)
        return self.resolution(t_ - 1), self._res[t_]

    def apply(self, x: Tensor, t: int) -> Tensor:
        """:math:`D_t x`: the resize to ``r(t)`` if ``t`` is a change step, else the identity.

        ``x`` has shape ``(b, c, r(t-1), r(t-1))``; returns ``(b, c, r(t), r(t))``.
        """
        r_in, r_out = self._step_sizes(t)
        check_state("x", x, (r_in, r_in))
        return resize(x, r_out) if r_out != r_in else x

    def apply_adjoint(self, y: Tensor, t: int) -> Tensor:
        r""":math:`D_t^\top y` (:math:`Y \mapsto D^\top Y D` at a change step, else identity).

        ``y`` has shape ``(b, c, r(t), r(t))``; returns ``(b, c, r(t-1), r(t-1))``.
        """
        r_in, r_out = self._step_sizes(t)
        check_state("y", y, (r_out, r_out))
        return resize_adjoint(y, r_in) if r_out != r_in else y

    # ------------------------------------------------------------------ reverse step
    def covariance_root(self, xi: Tensor, t: int, prev_t: int) -> Tensor:
        r"""Closed-form :math:`\Sigma^{1/2}\xi` of the step ``t -> prev_t`` (module docstring).

        Same resolution: :math:`\sigma_s\sqrt{1 - \rho c^2}\,\xi` (the DDPM posterior
        standard deviation). One resolution change (any pair of sizes, e.g. 40 -> 64):
        two ``(n x n)`` matmuls per side with the cached eigendecomposition of
        :math:`D^\top D` (:func:`~scalemix.degradation.resize.resize_spectrum`), batched over
        ``(b, c)``.

        Args:
            xi: shape ``(b, c, r(s), r(s))``.
            t: timestep in ``[0, T)``.
            prev_t: ``s`` in ``[-1, t)`` with ``r(s)`` equal to ``r(t)`` or the next
                pyramid size above it.

        Raises:
            ValueError: more than one resolution change between ``s`` and ``t``, or a
                non-PSD covariance (:math:`\rho c^2 \max\lambda^2 \ge 1`).
        """
        co = posterior_coefficients(self, t, prev_t)
        r_t, r_s = self.resolution(t), self.resolution(prev_t)
        check_state("xi", xi, (r_s, r_s))
        kappa = co.rho * co.c**2
        if r_s == r_t:
            return (co.sigma_s * math.sqrt(max(1.0 - kappa, 0.0))) * xi
        spec = self._change_spectrum(
            t, prev_t, kappa, "degradation.timesteps() for respacing or method='lanczos'"
        )
        lam = spec.eigenvalues
        scale = (1.0 - kappa * lam[:, None] * lam[None, :]).clamp(min=0.0).sqrt()
        work = _compute_dtype(xi)
        u = spec.eigenvectors.to(device=xi.device, dtype=work)
        scale = (co.sigma_s * scale).to(device=xi.device, dtype=work)
        z = u.T @ xi.to(work) @ u
        return (u @ (scale * z) @ u.T).to(xi.dtype)

    def gram_spectrum(self, t: int, prev_t: int) -> SeparableSpectrum:
        r"""The spectrum of :math:`M^\top M`, :math:`M = D_{s+1:t}`, for the DDIM step.

        See :func:`~scalemix.degradation.ddim_step`.

        Same resolution: :math:`M = I` (``basis=None``). One resolution change:
        :math:`M^\top M = (D^\top D) \otimes (D^\top D)` with the cached
        :math:`D^\top D = U \operatorname{diag}(\lambda) U^\top`
        (:func:`~scalemix.degradation.resize.resize_spectrum`), so the basis is :math:`U` and
        the eigenvalues are :math:`\lambda_i \lambda_j`, ``(r(s), r(s))``.

        Args:
            t: timestep in ``[0, T)``.
            prev_t: ``s`` in ``[0, t)``, at most one resolution change below ``t``.

        Raises:
            ValueError: more than one resolution change between ``s`` and ``t``, or a
                non-PSD posterior covariance (as in :meth:`covariance_root`).
        """
        co = posterior_coefficients(self, t, prev_t)
        r_t, r_s = self.resolution(t), self.resolution(prev_t)
        if r_s == r_t:
            return SeparableSpectrum(None, torch.ones((), dtype=torch.float64))
        kappa = co.rho * co.c**2
        spec = self._change_spectrum(t, prev_t, kappa, "degradation.timesteps() for respacing")
        lam = spec.eigenvalues
        return SeparableSpectrum(spec.eigenvectors, lam[:, None] * lam[None, :])

    def _change_spectrum(
        self, t: int, prev_t: int, kappa: float, alternatives: str
    ) -> DownsampleSpectrum:
        r"""The spectrum of :math:`D^\top D` of a step ``t -> prev_t`` that changes resolution.

        The closed forms of :meth:`covariance_root` and :meth:`gram_spectrum` need
        :math:`M = D_{s+1:t}` to be one resize :math:`D` (from :math:`r(s)` down to
        :math:`r(t)`, the next pyramid size) and
        :math:`\Sigma = \sigma_s^2 (I - \kappa M^\top M)` to be PSD, i.e.
        :math:`\kappa \max\lambda^2 < 1` for the eigenvalues :math:`\lambda` of
        :math:`D^\top D`; this checks both.

        Args:
            t: timestep in ``[0, T)``.
            prev_t: ``s`` in ``[-1, t)`` with :math:`r(s) \ne r(t)`.
            kappa: :math:`\kappa = \rho c^2` of the step.
            alternatives: what the error for a step over several levels suggests instead.

        Returns:
            :func:`~scalemix.degradation.resize.resize_spectrum` of ``r(s) -> r(t)``, cached,
            float64: eigenvectors ``(r(s), r(s))``, eigenvalues ``(r(s),)``.

        Raises:
            ValueError: ``r(s)`` is not the pyramid size just above ``r(t)``, or
                :math:`\kappa \max\lambda^2 \ge 1`.
        """
        r_t, r_s = self.resolution(t), self.resolution(prev_t)
        if self.resolutions.index(r_s) != self.resolutions.index(r_t) + 1:
            raise ValueError(
                f"the closed form covers one resolution change per step; t={t} "
                f"(r={r_t}) -> prev_t={prev_t} (r={r_s}) spans more: use {alternatives}"
            )
        lam_max = _max_eigenvalue(r_s, r_t)
        if kappa * lam_max**2 >= 1.0:
            raise ValueError(
                f"the reverse covariance of t={t} -> prev_t={prev_t} is not PSD: "
                f"rho c^2 max(lam)^2 = {kappa * lam_max**2:.4f} >= 1"
            )
        return resize_spectrum(r_s, r_t, dtype=torch.float64)  # cached, a graph constant

    def reverse_step(
        self, x0_pred: Tensor, t: Tensor | int, x_t: Tensor, **options: Unpack[ReverseStepOptions]
    ) -> StepOutput:
        """One ancestral step; see :func:`scalemix.degradation.reverse_step`.

        ``x0_pred`` has shape ``(b, c, r(s), r(s))`` and ``x_t`` ``(b, c, r(t), r(t))``;
        ``options`` are the function's keyword arguments, see
        :class:`~scalemix.degradation.posterior.ReverseStepOptions`. Half-precision
        (float16, bfloat16) inputs (``noise`` too) are stepped in float32 and the outputs
        returned in ``x_t``'s dtype.
        """
        work = _compute_dtype(x_t)
        noise = options.get("noise")
        if noise is not None:
            options["noise"] = noise.to(work)
        out = reverse_step(self, x0_pred.to(work), t, x_t.to(work), **options)
        return StepOutput(*(v.to(x_t.dtype) for v in out))

    def __repr__(self) -> str:
        return (
            f"ScaleSpaceDegradation(resolutions={self.pyramid.sizes}, "
            f"num_train_timesteps={self.num_train_timesteps}, change_steps={self.change_steps})"
        )
