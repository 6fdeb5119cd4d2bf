"""Neural-network building blocks: embeddings, gates, dual-scale blocks and denoisers.

:class:`PretrainedMixin` gives them, and any network of your own, ``save_pretrained``
and ``from_pretrained``.
"""

from __future__ import annotations

from ._pretrained import PretrainedMixin as PretrainedMixin
from .batched import StackedLayout as StackedLayout
from .batched import StackedLinear as StackedLinear
from .dual_denoiser import DualScaleDenoiser as DualScaleDenoiser
from .dual_denoiser import DualScalePreset as DualScalePreset
from .dual_scale import DualScaleBlock as DualScaleBlock
from .embedding import SinusoidalEmbedding as SinusoidalEmbedding
from .embedding import sinusoidal_frequencies as sinusoidal_frequencies
from .flexi_unet import FlexiUNet as FlexiUNet
from .gate import GateMode as GateMode
from .gate import TimestepGate as TimestepGate
from .mlp import MLPDenoiser as MLPDenoiser
from .mlp import MLPResidualBlock as MLPResidualBlock
from .rescale import AffineInit as AffineInit
from .rescale import AvgPoolDownscale as AvgPoolDownscale
from .rescale import InterpolateMode as InterpolateMode
from .rescale import InterpolateUpscale as InterpolateUpscale
from .rescale import LearnedAffineUpscale as LearnedAffineUpscale
from .rescale import ScaleUpscale as ScaleUpscale

__all__ = [
    "AffineInit",
    "AvgPoolDownscale",
    "DualScaleBlock",
    "DualScaleDenoiser",
    "DualScalePreset",
    "FlexiUNet",
    "GateMode",
    "InterpolateMode",
    "InterpolateUpscale",
    "LearnedAffineUpscale",
    "MLPDenoiser",
    "MLPResidualBlock",
    "PretrainedMixin",
    "ScaleUpscale",
    "SinusoidalEmbedding",
    "StackedLayout",
    "StackedLinear",
    "TimestepGate",
    "sinusoidal_frequencies",
]
