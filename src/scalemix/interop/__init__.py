"""Interoperability with other diffusion libraries: diffusers' schedulers and UNets.

:func:`scheduler_from_diffusers` and :func:`scheduler_to_diffusers_config` (also
:meth:`scalemix.DDPMScheduler.from_diffusers` and
:meth:`~scalemix.DDPMScheduler.to_diffusers_config`) convert a diffusion process
between the two libraries; :class:`DiffusersUNet` makes a diffusers ``UNet2DModel`` a
scalemix denoiser. None of them imports diffusers; its tests need the extra
``scalemix[diffusers]``.
"""

from __future__ import annotations

from ._diffusers_scheduler import scheduler_from_diffusers as scheduler_from_diffusers
from ._diffusers_scheduler import scheduler_to_diffusers_config as scheduler_to_diffusers_config
from ._diffusers_scheduler import timestep_spacing_from_diffusers as timestep_spacing_from_diffusers
from ._diffusers_unet import DiffusersUNet as DiffusersUNet

__all__ = [
    "DiffusersUNet",
    "scheduler_from_diffusers",
    "scheduler_to_diffusers_config",
    "timestep_spacing_from_diffusers",
]
