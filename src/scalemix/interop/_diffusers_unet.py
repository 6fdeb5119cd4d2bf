r"""A diffusers ``UNet2DModel`` as the model of scalemix's samplers and losses."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .._utils import range_checked
from .._validation import class_labels_of, class_labels_valid

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

    **Class conditioning.** A ``UNet2DModel`` built with ``num_class_embeds=K + 1`` (and
    no ``class_embed_type``) adds ``class_embedding(y)`` to its timestep embedding,
    ``emb = time_embed(t) + class_embed(y)``; the wrapper reads it as ``num_classes = K``
    with the last row, ``K = num_class_embeds - 1``, as the null class: the label it
    passes for ``class_labels=None``, and the unconditional half of classifier-free
    guidance (train with it, e.g. by dropping labels to ``K``).

    Args:
        unet: a diffusers ``UNet2DModel`` (or any module with its call signature) whose
            ``out_channels`` equal its ``in_channels``.

    Attributes:
        unet: the wrapped module.
        in_channels: ``unet.config.in_channels`` when present (read by
            :func:`scalemix.scale_space_sample` to choose the sample channels).
        num_classes: ``unet.config.num_class_embeds - 1`` for a class-conditional UNet
            (``K``, the null class), else ``None``.

    Raises:
        TypeError: ``unet`` is not a ``torch.nn.Module``.
        ValueError: a UNet whose ``class_embed_type`` is set (labels it does not embed
            as rows of a table), or ``num_class_embeds < 2``.
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
        self.num_classes: int | None = _num_classes(getattr(unet, "config", None))

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        out_size: int | None = None,
        *,
        class_labels: Tensor | None = None,
    ) -> Tensor:
        """The UNet's prediction for ``x`` at timesteps ``t`` (and labels ``class_labels``).

        Args:
            x: noisy images, shape ``(b, c, h, w)``.
            t: int64 timesteps, shape ``(b,)``.
            out_size: the size the scale-space functions ask for; must be ``None`` or
                ``w`` (a ``UNet2DModel`` keeps the resolution).
            class_labels: int64 labels of shape ``(b,)`` in ``[0, K]`` (``K`` =
                :attr:`num_classes`, the null class), passed to the UNet, which reads
                ``emb = time_embed(t) + class_embed(y)``; ``None``: ``K`` for every item.
                Where their range is not checked (off the CPU), an out-of-range label
                gives NaN for its item.

        Returns:
            The prediction, shape ``(b, c, h, w)``.

        Raises:
            ValueError: ``out_size`` differs from the input size, or the UNet's output
                does not have the shape of ``x`` (e.g. a learned-variance UNet with
                ``2 c`` output channels), ``class_labels`` of another shape, outside
                ``[0, K]``, or given to a UNet without ``num_class_embeds``.
            TypeError: ``class_labels`` that are no integer tensor.
        """
        if out_size is not None and out_size != x.shape[-1]:
            raise ValueError(
                f"out_size={out_size} differs from the input size {x.shape[-1]}: a diffusers "
                "UNet2DModel keeps the resolution; wrap it as UpsampleInput(DiffusersUNet(unet)) "
                "(scalemix.scale_space.upsample_input), or use a one-level pyramid "
                "(ScaleSpaceDegradation(image_size, num_levels=1))"
            )
        labels = class_labels_of(
            class_labels, x.shape[0], self.num_classes, x.device, owner="DiffusersUNet"
        )
        valid = None
        if labels is not None and self.num_classes is not None and not range_checked(labels):
            valid = class_labels_valid(labels, self.num_classes)  # no read back
            labels = labels.clamp(0, self.num_classes)
        if labels is None:
            out = self.unet(x, t, return_dict=False)[0]
        else:
            out = self.unet(x, t, class_labels=labels, return_dict=False)[0]
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"the wrapped UNet must return a tensor of the input's shape {tuple(x.shape)}, "
                f"got {got}; scalemix models predict no variance (out_channels = in_channels)"
            )
        if valid is not None:
            out = out.masked_fill(~valid.view(-1, *([1] * (out.ndim - 1))), float("nan"))
        return out


def _num_classes(config: object) -> int | None:
    """``num_class_embeds - 1`` of a class-conditional ``UNet2DModel`` config, else ``None``."""
    embeds = getattr(config, "num_class_embeds", None)
    if embeds is None:
        return None
    kind = getattr(config, "class_embed_type", None)
    if kind is not None:
        raise ValueError(
            f"DiffusersUNet supports class labels through num_class_embeds only; this UNet "
            f"has class_embed_type={kind!r}"
        )
    if isinstance(embeds, bool) or not isinstance(embeds, int) or embeds < 2:
        raise ValueError(
            f"num_class_embeds must be an int >= 2 (K classes and the null class K), got {embeds!r}"
        )
    return embeds - 1
