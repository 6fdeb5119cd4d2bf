"""scalemix: composable denoiser components for diffusion models in PyTorch.

The most used names are importable from the top level; everything else lives in the
subpackages :mod:`scalemix.nn`, :mod:`scalemix.degradation`, :mod:`scalemix.scale_space`,
:mod:`scalemix.metrics`, :mod:`scalemix.datasets`, :mod:`scalemix.training`,
:mod:`scalemix.schedules`, :mod:`scalemix.solvers` and :mod:`scalemix.debug`. Importing
scalemix has no side effects.
"""

from __future__ import annotations

from . import debug as debug
from . import schedules as schedules
from . import solvers as solvers
from ._version import __version__ as __version__
from .degradation import LinearDegradation as LinearDegradation
from .degradation import ScaleSpaceDegradation as ScaleSpaceDegradation
from .nn import DualScaleBlock as DualScaleBlock
from .nn import DualScaleDenoiser as DualScaleDenoiser
from .nn import FlexiUNet as FlexiUNet
from .nn import MLPDenoiser as MLPDenoiser
from .nn import SinusoidalEmbedding as SinusoidalEmbedding
from .nn import TimestepGate as TimestepGate
from .sampling import Denoiser as Denoiser
from .sampling import SamplerName as SamplerName
from .sampling import SamplingSpacing as SamplingSpacing
from .sampling import SamplingState as SamplingState
from .sampling import sample as sample
from .scale_space import scale_space_loss as scale_space_loss
from .scale_space import scale_space_sample as scale_space_sample
from .scheduler import DDPMScheduler as DDPMScheduler
from .scheduler import Posterior as Posterior
from .scheduler import PredictionType as PredictionType
from .scheduler import StepOutput as StepOutput
from .scheduler import TimestepSpacing as TimestepSpacing
from .scheduler import VarianceType as VarianceType

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
    "SinusoidalEmbedding",
    "StepOutput",
    "TimestepGate",
    "TimestepSpacing",
    "VarianceType",
    "__version__",
    "debug",
    "sample",
    "scale_space_loss",
    "scale_space_sample",
    "schedules",
    "solvers",
]
