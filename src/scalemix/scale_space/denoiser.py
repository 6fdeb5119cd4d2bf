"""The call signature a Scale Space Diffusion denoiser must have."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

__all__ = ["ScaleSpaceDenoiser"]


class ScaleSpaceDenoiser(Protocol):
    """A network that predicts clean images at the input or the next pyramid resolution.

    ``model(x, t, out_size=r)`` takes noisy images ``x`` of shape ``(b, c, r_in, r_in)``
    and int64 timesteps ``t`` of shape ``(b,)`` and returns the prediction of
    :math:`D_{0:t-1}(x_0)` with shape ``(b, c, out_size, out_size)``, where ``out_size``
    is ``r_in`` (resolution-preserving step) or the next larger pyramid size, e.g.
    ``2 * r_in`` for a halving pyramid or ``40`` for ``r_in = 28`` in ``64/40/28/20``
    (resolution-increasing step); ``None`` means ``r_in``.
    :class:`scalemix.nn.flexi_unet.FlexiUNet` qualifies, and so does any
    ``torch.nn.Module`` or function with that signature.
    """

    def __call__(self, x: Tensor, t: Tensor, /, out_size: int | None = None) -> Tensor: ...
