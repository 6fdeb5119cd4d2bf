"""Scale Space Diffusion training and sampling (Mukhopadhyay et al., 2026).

The forward process lives in :class:`scalemix.degradation.ScaleSpaceDegradation`;
this package holds the x0-at-next-resolution loss, the sampler's scale-space spelling
(:func:`scale_space_sample`, an alias of :func:`scalemix.sample`) and
:class:`UpsampleInput`, which makes any fixed-resolution network a
:class:`ScaleSpaceDenoiser`.
"""

from __future__ import annotations

from .denoiser import ScaleSpaceDenoiser as ScaleSpaceDenoiser
from .loss import ScaleSpaceLossTerms as ScaleSpaceLossTerms
from .loss import TimestepSampling as TimestepSampling
from .loss import sample_training_timesteps as sample_training_timesteps
from .loss import scale_space_loss as scale_space_loss
from .loss import scale_space_loss_terms as scale_space_loss_terms
from .sampler import FinalStep as FinalStep
from .sampler import ScaleSpaceSamplerName as ScaleSpaceSamplerName
from .sampler import scale_space_sample as scale_space_sample
from .upsample_input import UpsampleInput as UpsampleInput

__all__ = [
    "FinalStep",
    "ScaleSpaceDenoiser",
    "ScaleSpaceLossTerms",
    "ScaleSpaceSamplerName",
    "TimestepSampling",
    "UpsampleInput",
    "sample_training_timesteps",
    "scale_space_loss",
    "scale_space_loss_terms",
    "scale_space_sample",
]
