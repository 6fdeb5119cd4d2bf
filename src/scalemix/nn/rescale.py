r"""Maps that take the input of a dual-scale block to the local branch's scale and back.

* :class:`LearnedAffineUpscale` -- :math:`u(x) = W x + b` on vectors ``(b, d)``: what the
  published 2D study does (its ``Linear(2, 4)`` of which only the first two outputs are
  used is, in effect, a learned affine map of ``x``).
* :class:`ScaleUpscale` -- :math:`u(x) = f\, x`, a fixed zoom of the coordinates.
* :class:`InterpolateUpscale` -- spatial upsampling of images ``(b, c, h, w)`` by
  :func:`torch.nn.functional.interpolate` (the paper's text says "interpolation").
* :class:`AvgPoolDownscale` -- average pooling (area downsampling) that brings the local
  branch's image output back to the input resolution.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils import check_choice

__all__ = [
    "AffineInit",
    "AvgPoolDownscale",
    "InterpolateMode",
    "InterpolateUpscale",
    "LearnedAffineUpscale",
    "ScaleUpscale",
]

AffineInit = Literal["default", "identity"]
InterpolateMode = Literal["nearest", "nearest-exact", "bilinear", "bicubic"]


def _check_factor(factor: float) -> float:
    if isinstance(factor, bool) or not isinstance(factor, (int, float)):
        raise TypeError(f"factor must be a number, got {type(factor).__name__}")
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"factor must be a positive finite number, got {factor}")
    return float(factor)


def _check_image(name: str, x: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} expects images of shape (b, c, h, w), got {tuple(x.shape)}")


class LearnedAffineUpscale(nn.Module):
    r"""Learned affine map :math:`u(x) = W x + b` on the last dimension.

    Args:
        dim: ``d``, the size of the last dimension.
        init: ``"default"`` (PyTorch's ``nn.Linear`` initialisation, as published) or
            ``"identity"`` (:math:`W = I`, :math:`b = 0`, so the local branch starts on
            the global branch's input).

    Shape:
        ``(*, d) -> (*, d)``.
    """

    def __init__(self, dim: int, init: AffineInit = "default") -> None:
        super().__init__()
        check_choice("init", init, get_args(AffineInit))
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.linear = nn.Linear(dim, dim)
        if init == "identity":
            with torch.no_grad():
                self.linear.weight.copy_(torch.eye(dim))
                self.linear.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """Apply :math:`W x + b`; ``x`` has shape ``(*, d)``."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected a last dimension of {self.dim}, got {tuple(x.shape)}")
        out: Tensor = self.linear(x)
        return out


class ScaleUpscale(nn.Module):
    r"""Fixed zoom :math:`u(x) = f\, x` (any shape).

    Args:
        factor: the positive factor :math:`f`.
    """

    def __init__(self, factor: float = 2.0) -> None:
        super().__init__()
        self.factor = _check_factor(factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

    def forward(self, x: Tensor) -> Tensor:
        """Return ``factor * x`` (shape of ``x``)."""
        return x * self.factor


class InterpolateUpscale(nn.Module):
    """Spatial upsampling of images by :func:`torch.nn.functional.interpolate`.

    Args:
        factor: spatial scale factor ``f > 0`` (output size ``floor(f h) x floor(f w)``).
        mode: ``"nearest"``, ``"nearest-exact"``, ``"bilinear"`` or ``"bicubic"``
            (the last two with ``align_corners=False``).

    Shape:
        ``(b, c, h, w) -> (b, c, floor(f h), floor(f w))``.
    """

    def __init__(self, factor: float = 2.0, mode: InterpolateMode = "bilinear") -> None:
        super().__init__()
        self.factor = _check_factor(factor)
        self.mode: InterpolateMode = check_choice("mode", mode, get_args(InterpolateMode))

    def extra_repr(self) -> str:
        return f"factor={self.factor}, mode={self.mode!r}"

    def forward(self, x: Tensor) -> Tensor:
        """Upsample ``x`` of shape ``(b, c, h, w)``."""
        _check_image("InterpolateUpscale", x)
        align = False if self.mode in ("bilinear", "bicubic") else None
        return F.interpolate(x, scale_factor=self.factor, mode=self.mode, align_corners=align)


class AvgPoolDownscale(nn.Module):
    r"""Area downsampling by an integer factor: each output pixel is the mean of a
    ``k x k`` block, :math:`y_{ij} = k^{-2} \sum_{a,b<k} x_{ki+a,\,kj+b}`.

    It is the adjoint of nearest upsampling up to the factor :math:`k^{-2}`, and
    ``AvgPoolDownscale(k)(nearest_upsample(x, k)) == x`` exactly.

    Args:
        factor: integer ``k >= 1``.

    Shape:
        ``(b, c, k h, k w) -> (b, c, h, w)``.
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
        self.factor = factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

    def forward(self, x: Tensor) -> Tensor:
        """Average-pool ``x`` of shape ``(b, c, H, W)`` with ``H, W`` divisible by ``k``."""
        _check_image("AvgPoolDownscale", x)
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(
                f"spatial size {tuple(x.shape[-2:])} is not divisible by factor {self.factor}"
            )
        return F.avg_pool2d(x, self.factor)
