"""The call signature a Scale Space Diffusion denoiser must have (see :mod:`scalemix.types`)."""

from __future__ import annotations

from ..types import ScaleSpaceDenoiser as ScaleSpaceDenoiser

__all__ = ["ScaleSpaceDenoiser"]
