r"""Any fixed-resolution network as a scale-space denoiser, by upsampling its input.

A scale-space model is called as ``model(x_t, t, out_size=r)`` and must return its
prediction at ``r x r``, which on a change step is the next (larger) pyramid size. A
network that keeps the resolution of its input (a diffusers ``UNet2DModel``, most
image UNets) cannot do that by itself; :class:`UpsampleInput` upsamples ``x_t`` to
``r x r`` first, the reference implementation's treatment of the step into full
resolution applied at every change step.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UpsampleInput"]


class UpsampleInput(nn.Module):
    r"""Wrap a resolution-preserving network so that it honours ``out_size``.

    ``UpsampleInput(model)(x, t, out_size=r)`` computes

    .. math::
        \operatorname{model}\big(\operatorname{up}_r(x),\, t\big), \qquad
        \operatorname{up}_r = \text{bilinear resize to } r \times r
        \text{ (``align_corners=False``)},

    and calls ``model(x, t)`` unchanged when ``r`` is ``None`` or already ``x``'s size
    (every resolution-preserving step). So a network that only ever maps
    ``(b, c, h, w)`` to ``(b, c, h, w)`` trains with
    :func:`~scalemix.scale_space.scale_space_loss` and samples with
    :func:`~scalemix.scale_space.scale_space_sample` on a pyramid of any number of
    levels. It declares ``changes_resolution = True`` (the wrapped model typically
    declares ``False``), which is what
    ``scalemix._model_checks.check_scale_space_model`` reads (the scale-space loss and
    :func:`scalemix.sample` call it). The wrapped
    model's parameters are the wrapper's (``model.`` prefix in the state dict).

    Args:
        model: the network, called as ``model(x, t, **kwargs)`` and returning a tensor
            of the spatial size of its input.

    Shape:
        - ``x``: ``(b, c, h, w)``; ``t``: ``(b,)`` int64 timesteps (whatever ``model``
          takes).
        - output: ``(b, c', r, r)`` with ``r = out_size`` (``(b, c', h, w)`` when
          ``out_size`` is ``None``).

    Attributes:
        model: the wrapped network.
        in_channels: ``model.in_channels`` when that is an int, else ``None`` (read by
            :func:`~scalemix.scale_space.scale_space_sample` to choose the channels).

    Raises:
        TypeError: ``model`` is not a ``torch.nn.Module``.
    """

    #: this wrapper returns its prediction at ``out_size`` on every step
    changes_resolution: ClassVar[bool] = True

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        super().__init__()
        self.model = model
        channels = getattr(model, "in_channels", None)
        self.in_channels: int | None = (
            channels if isinstance(channels, int) and not isinstance(channels, bool) else None
        )

    def forward(self, x: Tensor, t: Tensor, out_size: int | None = None, **kwargs: Any) -> Tensor:
        """The wrapped model's prediction for ``x`` upsampled to ``out_size``.

        Args:
            x: noisy images, shape ``(b, c, h, w)``.
            t: timesteps, shape ``(b,)``.
            out_size: the side ``r`` of the prediction; ``None`` keeps ``(h, w)``.
            kwargs: passed on to the wrapped model.

        Returns:
            The prediction, shape ``(b, c', r, r)``.

        Raises:
            ValueError: ``x`` is not 4-d, ``out_size`` is not a positive int, or the
                wrapped model returns another spatial size than its input's.
        """
        if x.ndim != 4:
            raise ValueError(f"x must have shape (b, c, h, w), got {tuple(x.shape)}")
        if out_size is not None:
            if isinstance(out_size, bool) or not isinstance(out_size, int) or out_size < 1:
                raise ValueError(f"out_size must be None or a positive int, got {out_size!r}")
            if tuple(x.shape[-2:]) != (out_size, out_size):
                x = F.interpolate(
                    x, size=(out_size, out_size), mode="bilinear", align_corners=False
                )
        out = self.model(x, t, **kwargs)
        if not isinstance(out, Tensor) or out.shape[-2:] != x.shape[-2:]:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"the wrapped model must keep the spatial size of its input "
                f"{tuple(x.shape[-2:])}, got {got}"
            )
        return out
