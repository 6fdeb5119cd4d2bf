r"""Heat-dissipation blurring as a linear degradation.

Rissanen, Heinonen & Solin, "Generative Modelling With Inverse Heat Dissipation"
(ICLR 2023), and Hoogeboom & Salimans, "Blurring Diffusion Models" (ICLR 2023), blur
an image by running the heat equation :math:`\partial_\tau u = \Delta u` on the pixel
grid with Neumann (reflecting) boundaries. The orthonormal DCT-II diagonalises it: the
coefficient of frequency :math:`(k, l)` of an :math:`N \times N` image decays as

.. math:: \tilde u_{kl}(\tau) = e^{-\lambda_{kl}\tau}\,\tilde u_{kl}(0), \qquad
    \lambda_{kl} = \pi^2\,\frac{k^2 + l^2}{N^2},

and heat time :math:`\tau = \sigma_B^2 / 2` blurs about as much as a Gaussian of
standard deviation :math:`\sigma_B` pixels (Rissanen et al., sec. 2). The blur times
here are log-linear in the timestep,

.. math:: \sigma_B(t) = \sigma_{\min}\,(\sigma_{\max}/\sigma_{\min})^{t/(T-1)},
    \qquad \tau_t = \sigma_B(t)^2 / 2, \qquad \tau_{-1} = 0,

with :math:`\sigma_{\min} = 0.5` and :math:`\sigma_{\max} = N/2` px by default. Step
``t`` multiplies every coefficient by :math:`e^{-\lambda_{kl}(\tau_t - \tau_{t-1})}`,
so :math:`D_{0:t}` is the heat flow to time :math:`\tau_t`, and the forward marginal is
:math:`x_t = \sqrt{\bar\alpha_t} D_{0:t} x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon` with the
noise schedule of :class:`~scalemix.degradation.ScaleSpaceDegradation`.

Every operator is symmetric and diagonal in the same basis, so the reverse covariance
of :mod:`scalemix.degradation.posterior` has the closed form

.. math:: \Sigma^{1/2}\xi = \sigma_s\,C^\top\Bigl[\sqrt{1 - \rho c^2
    e^{-2\lambda_{kl}(\tau_t - \tau_s)}} \odot (C \xi C^\top)\Bigr] C,

with :math:`C` the orthonormal DCT-II matrix: exact for any pair ``s < t``. It is PSD
for every schedule, since :math:`e^{-2\lambda\Delta\tau} \le 1` and
:math:`\rho c^2 \le 1`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from typing_extensions import Unpack

from ..schedules import BetaScheduleName
from ..types import StepOutput
from ._checks import check_state, shared_timestep, timesteps_cpu
from .ddim import SeparableSpectrum
from .noise_schedule import NoiseSchedule
from .posterior import ReverseStepOptions, posterior_coefficients, reverse_step
from .respacing import respaced_timesteps

__all__ = ["BlurDegradation", "dct_matrix"]


def dct_matrix(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""The orthonormal DCT-II matrix :math:`C` of size ``(n, n)``.

    .. math:: C_{kj} = w_k \cos\bigl(\pi k (j + \tfrac12) / n\bigr), \quad
        w_0 = \sqrt{1/n},\ w_{k>0} = \sqrt{2/n};

    :math:`C C^\top = I`, and the coefficients of an image ``X`` are :math:`C X C^\top`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    k = torch.arange(n, dtype=torch.float64)
    c = torch.cos(math.pi * k[:, None] * (k[None, :] + 0.5) / n) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.to(dtype)


class BlurDegradation(NoiseSchedule):
    r"""Heat-dissipation blur plus Gaussian noise (module docstring).

    Implements :class:`~scalemix.degradation.LinearDegradation` and
    :class:`~scalemix.degradation.SupportsCovarianceRoot`, and offers the training
    interface of :class:`~scalemix.degradation.ScaleSpaceDegradation` (``add_noise``,
    ``target``, ``snr``, ``resolution``, ``change_steps``), so that
    :func:`~scalemix.scale_space.scale_space_loss` and
    :func:`~scalemix.scale_space.scale_space_sample` run it unchanged. The state keeps
    the full size ``(image_size, image_size)`` at every step.

    Args:
        image_size: side ``N`` of the square images.
        num_train_timesteps: ``T``.
        beta_schedule: see :func:`scalemix.schedules.make_beta_schedule`.
        beta_start: first beta.
        beta_end: last beta.
        blur_sigma_min: :math:`\sigma_{\min}` in pixels (blur at ``t = 0``).
        blur_sigma_max: :math:`\sigma_{\max}` in pixels (blur at ``t = T - 1``);
            ``None`` means ``image_size / 2``.

    Raises:
        ValueError: a non-positive size, or blur sigmas not ``0 < min <= max``.
    """

    def __init__(
        self,
        image_size: int,
        num_train_timesteps: int = 1000,
        beta_schedule: BetaScheduleName = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        blur_sigma_min: float = 0.5,
        blur_sigma_max: float | None = None,
    ) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        sigma_max = image_size / 2 if blur_sigma_max is None else float(blur_sigma_max)
        if not 0.0 < blur_sigma_min <= sigma_max:
            raise ValueError(
                "need 0 < blur_sigma_min <= blur_sigma_max, got "
                f"blur_sigma_min={blur_sigma_min}, blur_sigma_max={sigma_max}"
            )
        self.image_size: int = image_size
        super().__init__(beta_schedule, num_train_timesteps, beta_start, beta_end)
        T = self.num_train_timesteps
        frac = torch.arange(T, dtype=torch.float64) / max(T - 1, 1)
        sigma = blur_sigma_min * (sigma_max / blur_sigma_min) ** frac
        #: :math:`\sigma_B(t)` in pixels, float64 ``(T,)``
        self.blur_sigmas: Tensor = sigma
        #: heat times :math:`\tau_t = \sigma_B(t)^2/2`, float64 ``(T,)``
        self.blur_times: Tensor = sigma**2 / 2
        self._tau_ext = torch.cat([torch.zeros(1, dtype=torch.float64), self.blur_times])
        self._tau_list: list[float] = self._tau_ext.tolist()  # read per step without a tensor
        k = torch.arange(image_size, dtype=torch.float64)
        lam = (math.pi * k / image_size) ** 2
        #: :math:`\lambda_{kl}`, float64 ``(N, N)``
        self.eigenvalues: Tensor = lam[:, None] + lam[None, :]
        self._dct = dct_matrix(image_size)
        #: no step changes the state's shape
        self.change_steps: tuple[int, ...] = ()

    # ------------------------------------------------------------------ schedule
    def resolution(self, t: Tensor | int) -> int:
        """``image_size`` for every shared timestep in ``[-1, T)``."""
        shared_timestep(t, None, self.num_train_timesteps, allow_clean=True)
        return self.image_size

    def spatial_shape(self, t: int) -> tuple[int, ...]:
        """``(image_size, image_size)`` for ``t`` in ``[-1, T)``."""
        r = self.resolution(t)
        return (r, r)

    def timesteps(self, num_inference_steps: int | None = None) -> Tensor:
        """Respaced sampling timesteps; see :func:`~scalemix.degradation.respaced_timesteps`."""
        return respaced_timesteps(self, num_inference_steps)

    # ------------------------------------------------------------------ operators
    def _timesteps(self, t: Tensor | int, batch: int | None, *, allow_clean: bool) -> Tensor:
        """``t`` as a CPU int64 tensor (:func:`~scalemix.degradation._checks.timesteps_cpu`)."""
        return timesteps_cpu(t, batch, self.num_train_timesteps, low=-1 if allow_clean else 0)

    def _heat(self, x: Tensor, dtau: Tensor) -> Tensor:
        """Heat flow of ``x`` ``(b, c, N, N)`` for times ``dtau`` (float64, 0-d or ``(b,)``)."""
        decay = torch.exp(-self.eigenvalues * dtau.reshape(-1, 1, 1, 1))
        return self._spectral(x, decay)

    def _spectral(self, x: Tensor, factor: Tensor) -> Tensor:
        """:math:`C^\\top [f \\odot (C x C^\\top)] C` with ``factor`` ``(1 or b, 1, N, N)``."""
        c = self._dct.to(device=x.device, dtype=x.dtype)
        f = factor.to(device=x.device, dtype=x.dtype)
        return c.T @ (f * (c @ x @ c.T)) @ c

    def degrade(self, x0: Tensor, t: Tensor | int) -> Tensor:
        r""":math:`D_{0:t}(x_0)`: the heat flow to time :math:`\tau_t` (``t = -1``: ``x0``).

        Args:
            x0: clean images, shape ``(b, c, N, N)``.
            t: int, 0-d or ``(b,)`` integer tensor in ``[-1, T)`` (items may differ).

        Returns:
            Shape ``(b, c, N, N)``.
        """
        check_state("x0", x0, (self.image_size, self.image_size))
        tt = self._timesteps(t, int(x0.shape[0]), allow_clean=True)
        return self._heat(x0, self._tau_ext[tt + 1])

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        r""":math:`x_t = \sqrt{\bar\alpha_t} D_{0:t}(x_0) + \sqrt{1-\bar\alpha_t}\,\epsilon`.

        Args:
            x0: shape ``(b, c, N, N)``.
            noise: :math:`\epsilon`, shape ``(b, c, N, N)``.
            t: int, 0-d or ``(b,)`` integer tensor in ``[0, T)``.

        Returns:
            Shape ``(b, c, N, N)``.
        """
        check_state("x0", x0, (self.image_size, self.image_size))
        b, c = int(x0.shape[0]), int(x0.shape[1])
        check_state("noise", noise, (self.image_size,) * 2, batch=b, channels=c)
        tt = self._timesteps(t, b, allow_clean=False)
        abar = self._abar[tt.expand(b)].to(device=x0.device, dtype=x0.dtype).view(b, 1, 1, 1)
        return abar.sqrt() * self.degrade(x0, tt) + (1.0 - abar).sqrt() * noise

    def target(self, x0: Tensor, t: Tensor | int) -> Tensor:
        r"""The training target :math:`D_{0:t-1}(x_0)` (``t = 0`` gives ``x0``).

        Args:
            x0: shape ``(b, c, N, N)``.
            t: int, 0-d or ``(b,)`` integer tensor in ``[0, T)``.

        Returns:
            Shape ``(b, c, N, N)``.
        """
        tt = self._timesteps(t, int(x0.shape[0]), allow_clean=False)
        return self.degrade(x0, tt - 1)

    def apply(self, x: Tensor, t: int) -> Tensor:
        r""":math:`D_t x`, the heat flow for :math:`\tau_t - \tau_{t-1}`; ``(b, c, N, N)``."""
        t_ = shared_timestep(t, None, self.num_train_timesteps)
        check_state("x", x, (self.image_size, self.image_size))
        return self._heat(x, self._tau_ext[t_ + 1] - self._tau_ext[t_])

    def apply_adjoint(self, y: Tensor, t: int) -> Tensor:
        r""":math:`D_t^\top y = D_t y` (the heat flow is symmetric); ``(b, c, N, N)``."""
        t_ = shared_timestep(t, None, self.num_train_timesteps)
        check_state("y", y, (self.image_size, self.image_size))
        return self._heat(y, self._tau_ext[t_ + 1] - self._tau_ext[t_])

    # ------------------------------------------------------------------ reverse step
    def covariance_root(self, xi: Tensor, t: int, prev_t: int) -> Tensor:
        r"""Closed-form :math:`\Sigma^{1/2}\xi` of the step ``t -> prev_t`` (module docstring).

        Args:
            xi: shape ``(b, c, N, N)``.
            t: timestep in ``[0, T)``.
            prev_t: ``s`` in ``[-1, t)``.

        Returns:
            Shape of ``xi`` (zeros for ``s = -1``).
        """
        co = posterior_coefficients(self, t, prev_t)
        t_ = shared_timestep(t, None, self.num_train_timesteps)
        s = shared_timestep(prev_t, None, self.num_train_timesteps, allow_clean=True)
        check_state("xi", xi, (self.image_size, self.image_size))
        dtau = self._tau_list[t_ + 1] - self._tau_list[s + 1]
        gain = torch.exp(-2.0 * self.eigenvalues * dtau)
        scale = co.sigma_s * (1.0 - co.rho * co.c**2 * gain).clamp(min=0.0).sqrt()
        return self._spectral(xi, scale[None, None])

    def gram_spectrum(self, t: int, prev_t: int) -> SeparableSpectrum:
        r"""The spectrum of :math:`M^\top M`, :math:`M = D_{s+1:t}`, for the DDIM step.

        See :func:`~scalemix.degradation.ddim_step`.

        :math:`M^\top M = C^\top \operatorname{diag}(e^{-2\lambda_{kl}(\tau_t - \tau_s)}) C`
        in the DCT basis: ``basis`` :math:`U = C^\top` and eigenvalues
        :math:`e^{-2\lambda_{kl}(\tau_t - \tau_s)}`, ``(N, N)``, for any ``s < t``.

        Args:
            t: timestep in ``[0, T)``.
            prev_t: ``s`` in ``[-1, t)``.
        """
        posterior_coefficients(self, t, prev_t)  # validates the pair
        t_ = shared_timestep(t, None, self.num_train_timesteps)
        s = shared_timestep(prev_t, None, self.num_train_timesteps, allow_clean=True)
        dtau = self._tau_list[t_ + 1] - self._tau_list[s + 1]
        return SeparableSpectrum(self._dct.T, torch.exp(-2.0 * self.eigenvalues * dtau))

    def reverse_step(
        self, x0_pred: Tensor, t: Tensor | int, x_t: Tensor, **options: Unpack[ReverseStepOptions]
    ) -> StepOutput:
        """One ancestral step; see :func:`scalemix.degradation.reverse_step`.

        ``x0_pred`` (:math:`\\approx D_{0:s} x_0`) and ``x_t`` have shape ``(b, c, N, N)``;
        ``options`` are its keyword arguments, see
        :class:`~scalemix.degradation.posterior.ReverseStepOptions`.
        """
        return reverse_step(self, x0_pred, t, x_t, **options)

    def __repr__(self) -> str:
        return (
            f"BlurDegradation(image_size={self.image_size}, "
            f"num_train_timesteps={self.num_train_timesteps}, "
            f"blur_sigma=({float(self.blur_sigmas[0]):g}, {float(self.blur_sigmas[-1]):g}))"
        )
