r"""A diffusers ``UNet2DModel`` as the model of scalemix's samplers and losses."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

__all__ = ["DiffusersUNet"]


class DiffusersUNet(torch.nn.Module):
    r"""Wrap a diffusers ``UNet2DModel`` so that it is a scalemix denoiser.

    diffusers' UNets are called as ``unet(sample, timestep).sample``; scalemix's
    :class:`~scalemix.Denoiser` protocol is ``model(x, t) -> Tensor`` and its
    :class:`~scalemix.scale_space.ScaleSpaceDenoiser` protocol adds ``out_size=``. The
    wrapper calls ``unet(x, t, return_dict=False)[0]`` and returns that tensor, so the
    wrapped UNet works with :func:`scalemix.sample`, :func:`scalemix.scale_space_loss`
    and :func:`scalemix.scale_space_sample`. A ``UNet2DModel`` keeps the resolution, so
    the wrapper declares ``changes_resolution = False``: on a pyramid of several levels
    wrap it once more, ``UpsampleInput(DiffusersUNet(unet))``
    (:class:`~scalemix.scale_space.UpsampleInput` upsamples the input to
    ``out_size``); alone it serves a one-level pyramid
    (``ScaleSpaceDegradation(image_size, num_levels=1)``), where every step is
    resolution-preserving. The UNet's parameters are the wrapper's (``unet.`` prefix in
    the state dict), so it trains and saves like any module. Nothing here imports
    diffusers.

    Args:
        unet: a diffusers ``UNet2DModel`` (or any module with its call signature) whose
            ``out_channels`` equal its ``in_channels``.

    Attributes:
        unet: the wrapped module.
        in_channels: ``unet.config.in_channels`` when present (read by
            :func:`scalemix.scale_space_sample` to choose the sample channels).

    Raises:
        TypeError: ``unet`` is not a ``torch.nn.Module``.
    """

    #: a ``UNet2DModel`` predicts at the size of its input only
    changes_resolution: ClassVar[bool] = False

    def __init__(self, unet: torch.nn.Module) -> None:
        if not isinstance(unet, torch.nn.Module):
            raise TypeError(f"unet must be a torch.nn.Module, got {type(unet).__name__}")
        super().__init__()
        self.unet = unet
        channels = getattr(getattr(unet, "config", None), "in_channels", None)
        self.in_channels: int | None = (
            channels if isinstance(channels, int) and not isinstance(channels, bool) else None
        )

    def forward(self, x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        """The UNet's prediction for ``x`` at timesteps ``t``.

        Args:
            x: noisy images, shape ``(b, c, h, w)``.
            t: int64 timesteps, shape ``(b,)``.
            out_size: the size the scale-space functions ask for; must be ``None`` or
                ``w`` (a ``UNet2DModel`` keeps the resolution).

        Returns:
            The prediction, shape ``(b, c, h, w)``.

        Raises:
            ValueError: ``out_size`` differs from the input size, or the UNet's output
                does not have the shape of ``x`` (e.g. a learned-variance UNet with
                ``2 c`` output channels).
        """
        if out_size is not None and out_size != x.shape[-1]:
            raise ValueError(
                f"out_size={out_size} differs from the input size {x.shape[-1]}: a diffusers "
                "UNet2DModel keeps the resolution; wrap it as UpsampleInput(DiffusersUNet(unet)) "
                "(scalemix.scale_space.upsample_input), or use a one-level pyramid "
                "(ScaleSpaceDegradation(image_size, num_levels=1))"
            )
        out = self.unet(x, t, return_dict=False)[0]
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"the wrapped UNet must return a tensor of the input's shape {tuple(x.shape)}, "
                f"got {got}; scalemix models predict no variance (out_channels = in_channels)"
            )
        return out
