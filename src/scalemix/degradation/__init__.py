"""Generalized linear degradations and Scale Space Diffusion.

:class:`LinearDegradation` declares a forward process
:math:`x_t = \\sqrt{\\bar\\alpha_t} D_{0:t} x_0 + \\sqrt{1-\\bar\\alpha_t}\\,\\epsilon`;
:class:`GaussianDegradation` is DDPM (:math:`D_t = I`) and
:class:`ScaleSpaceDegradation` downsamples (Mukhopadhyay et al., 2026);
:class:`BlurDegradation` blurs by heat dissipation (Rissanen et al., 2023).
:func:`reverse_step` is the exact ancestral step of any of them, :func:`ddim_step`
its DDIM family (deterministic at ``eta = 0``).

The linear algebra behind them (dense resize and DCT matrices, the eigendecompositions
of :math:`D^\\top D`, Lanczos and power iteration) is imported from its defining
module: :mod:`scalemix.degradation.resize`, :mod:`~scalemix.degradation.blur`,
:mod:`~scalemix.degradation.lanczos` and :mod:`~scalemix.degradation.posterior`.
"""

from __future__ import annotations

from .blur import BlurDegradation as BlurDegradation
from .ddim import SeparableSpectrum as SeparableSpectrum
from .ddim import SupportsGramSpectrum as SupportsGramSpectrum
from .ddim import ddim_step as ddim_step
from .ddim import gram_spectrum as gram_spectrum
from .ddim import supports_ddim as supports_ddim
from .noise_schedule import NoiseSchedule as NoiseSchedule
from .posterior import PosteriorCoefficients as PosteriorCoefficients
from .posterior import ReverseMethod as ReverseMethod
from .posterior import ReverseStepOptions as ReverseStepOptions
from .posterior import posterior_coefficients as posterior_coefficients
from .posterior import posterior_mean as posterior_mean
from .posterior import reverse_step as reverse_step
from .protocol import GaussianDegradation as GaussianDegradation
from .protocol import LinearDegradation as LinearDegradation
from .protocol import SupportsCovarianceRoot as SupportsCovarianceRoot
from .protocol import apply_range as apply_range
from .protocol import apply_range_adjoint as apply_range_adjoint
from .pyramid import Pyramid as Pyramid
from .pyramid import pyramid_sizes as pyramid_sizes
from .pyramid import unet_level as unet_level
from .resize import downsample as downsample
from .resize import downsample_adjoint as downsample_adjoint
from .resize import resize as resize
from .resize import resize_adjoint as resize_adjoint
from .resolution import ResolutionScheduleName as ResolutionScheduleName
from .resolution import level_schedule as level_schedule
from .resolution import resolution_levels as resolution_levels
from .resolution import resolution_schedule as resolution_schedule
from .resolution import sigmoid_like as sigmoid_like
from .resolution import tanh_like as tanh_like
from .respacing import Spacing as Spacing
from .respacing import change_steps as change_steps
from .respacing import even_timesteps as even_timesteps
from .respacing import respaced_timesteps as respaced_timesteps
from .scale_space import ScaleSpaceDegradation as ScaleSpaceDegradation
from .trainable import TrainableDegradation as TrainableDegradation

__all__ = [
    "BlurDegradation",
    "GaussianDegradation",
    "LinearDegradation",
    "NoiseSchedule",
    "PosteriorCoefficients",
    "Pyramid",
    "ResolutionScheduleName",
    "ReverseMethod",
    "ReverseStepOptions",
    "ScaleSpaceDegradation",
    "SeparableSpectrum",
    "Spacing",
    "SupportsCovarianceRoot",
    "SupportsGramSpectrum",
    "TrainableDegradation",
    "apply_range",
    "apply_range_adjoint",
    "change_steps",
    "ddim_step",
    "downsample",
    "downsample_adjoint",
    "even_timesteps",
    "gram_spectrum",
    "level_schedule",
    "posterior_coefficients",
    "posterior_mean",
    "pyramid_sizes",
    "resize",
    "resize_adjoint",
    "resolution_levels",
    "resolution_schedule",
    "respaced_timesteps",
    "reverse_step",
    "sigmoid_like",
    "supports_ddim",
    "tanh_like",
    "unet_level",
]
