"""scalemix: composable denoiser components for diffusion models in PyTorch.

The most used names are importable from the top level; everything else lives in the
subpackages :mod:`scalemix.nn`, :mod:`scalemix.degradation`, :mod:`scalemix.scale_space`,
:mod:`scalemix.metrics`, :mod:`scalemix.datasets`, :mod:`scalemix.training`,
:mod:`scalemix.schedules`, :mod:`scalemix.solvers`, :mod:`scalemix.samplers`,
:mod:`scalemix.types`, :mod:`scalemix.guidance` and :mod:`scalemix.debug`. Importing
scalemix has no side effects.
"""

from __future__ import annotations

from . import debug as debug
from . import guidance as guidance
from . import samplers as samplers
from . import schedules as schedules
from . import solvers as solvers
from . import types as types
from ._version import __version__ as __version__
from .degradation import LinearDegradation as LinearDegradation
from .degradation import ScaleSpaceDegradation as ScaleSpaceDegradation
from .nn import DualScaleBlock as DualScaleBlock
from .nn import DualScaleDenoiser as DualScaleDenoiser
from .nn import FlexiUNet as FlexiUNet
from .nn import MLPDenoiser as MLPDenoiser
from .nn import SinusoidalEmbedding as SinusoidalEmbedding
from .nn import TimestepGate as TimestepGate
from .samplers import SamplerName as SamplerName
from .sampling import SamplingSpacing as SamplingSpacing
from .sampling import sample as sample
from .scale_space import scale_space_loss as scale_space_loss
from .scale_space import scale_space_sample as scale_space_sample
from .scheduler import DDPMScheduler as DDPMScheduler
from .scheduler import PredictionType as PredictionType
from .scheduler import VarianceType as VarianceType
from .schedules import Spacing as Spacing
from .schedules import TimestepSpacing as TimestepSpacing
from .types import Denoiser as Denoiser
from .types import Posterior as Posterior
from .types import SamplingState as SamplingState
from .types import ScaleSpaceDenoiser as ScaleSpaceDenoiser
from .types import StepOutput as StepOutput

__all__ = [
    "DDPMScheduler",
    "Denoiser",
    "DualScaleBlock",
    "DualScaleDenoiser",
    "FlexiUNet",
    "LinearDegradation",
    "MLPDenoiser",
    "Posterior",
    "PredictionType",
    "SamplerName",
    "SamplingSpacing",
    "SamplingState",
    "ScaleSpaceDegradation",
    "ScaleSpaceDenoiser",
    "SinusoidalEmbedding",
    "Spacing",
    "StepOutput",
    "TimestepGate",
    "TimestepSpacing",
    "VarianceType",
    "__version__",
    "debug",
    "guidance",
    "sample",
    "samplers",
    "scale_space_loss",
    "scale_space_sample",
    "schedules",
    "solvers",
    "types",
]
