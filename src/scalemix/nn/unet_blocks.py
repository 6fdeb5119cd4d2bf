"""Building blocks of a diffusion UNet conditioned on the timestep.

The layout follows the DDPM UNet (Ho et al., 2020, appendix B) as refined by
Nichol & Dhariwal (2021, "Improved DDPM") and Dhariwal & Nichol (2021,
"Diffusion Models Beat GANs", section 3): pre-activation residual blocks with
GroupNorm, a timestep embedding injected into every residual block (optionally
as an adaptive scale and shift of the second normalisation), self-attention at
chosen resolutions, and zero-initialised output convolutions so that every
residual branch starts as the identity.

Blocks that take the timestep embedding as a second input derive from
:class:`TimestepBlock`; :class:`TimestepEmbedSequential` chains blocks and
passes the embedding only to those that accept it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TypeVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from scalemix._utils import append_dims
from scalemix.nn.embedding import SinusoidalEmbedding

__all__ = [
    "AttentionBlock",
    "Downsample",
    "ResBlock",
    "TimeEmbedding",
    "TimestepBlock",
    "TimestepEmbedSequential",
    "Upsample",
    "group_norm",
    "width_adapter",
    "zero_module",
]

_M = TypeVar("_M", bound=nn.Module)


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm (Wu & He, 2018) with ``gcd(max_groups, channels)`` groups.

    The usual 32 groups when ``channels`` is a multiple of 32; otherwise the
    largest divisor of ``channels`` that also divides ``max_groups``, so narrow
    test-sized networks (e.g. 16 or 24 channels) work.

    Args:
        channels: number of channels ``c`` of the ``(b, c, h, w)`` input.
        max_groups: upper bound on the number of groups.

    Returns:
        An ``nn.GroupNorm`` with affine parameters.

    Raises:
        ValueError: if ``channels`` or ``max_groups`` is not positive.
    """
    if channels < 1 or max_groups < 1:
        raise ValueError(
            f"channels and max_groups must be positive, got {channels} and {max_groups}"
        )
    return nn.GroupNorm(math.gcd(max_groups, channels), channels)


def width_adapter(in_channels: int, out_channels: int) -> nn.Module:
    """A 1x1 convolution between widths, or the identity when they agree."""
    if in_channels == out_channels:
        return nn.Identity()
    return nn.Conv2d(in_channels, out_channels, 1)


def zero_module(module: _M) -> _M:
    """Set every parameter of ``module`` to zero in place and return it."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


class TimeEmbedding(nn.Module):
    """Timestep embedding: sinusoidal features followed by a two-layer SiLU MLP.

    ``emb = W_2 silu(W_1 [sin(t w), cos(t w)] + b_1) + b_2`` (Ho et al., 2020), the
    features from :class:`~scalemix.nn.embedding.SinusoidalEmbedding`.

    Args:
        dim: width of the sinusoidal features (even, at least 4).
        hidden_dim: width of the returned embedding (conventionally ``4 * dim``).

    Raises:
        ValueError: if ``dim`` is odd or below 4, or ``hidden_dim`` is not positive.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be positive, got {hidden_dim}")
        self.sinusoidal = SinusoidalEmbedding(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim)
        )

    def forward(self, t: Tensor) -> Tensor:
        """Embed timesteps ``t`` of shape ``(b,)`` into a ``(b, hidden_dim)`` tensor."""
        out: Tensor = self.mlp(self.sinusoidal(t))
        return out


class TimestepBlock(nn.Module, ABC):
    """A module whose ``forward`` takes the timestep embedding as a second input."""

    @abstractmethod
    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Apply the block to ``x`` of shape ``(b, c, h, w)`` given ``emb`` of shape ``(b, e)``."""


class TimestepEmbedSequential(TimestepBlock):
    """Apply ``layers`` in order, passing ``emb`` to those that are :class:`TimestepBlock`.

    Args:
        *layers: modules mapping ``(b, c, h, w)`` tensors; timestep blocks get ``(x, emb)``.
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Run every layer on ``x`` (``(b, c, h, w)``) with embedding ``emb`` (``(b, e)``)."""
        for layer in self.layers:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class ResBlock(TimestepBlock):
    """Pre-activation residual block conditioned on the timestep embedding.

    ``h = conv_1(silu(GN(x)))``; with ``scale_shift``,
    ``h = GN(h) * (1 + s) + m`` where ``(s, m) = W silu(emb)`` (adaptive group
    normalisation, Dhariwal & Nichol 2021, section 3), otherwise
    ``h = GN(h + W silu(emb))``; then ``out = skip(x) + conv_2(dropout(silu(h)))``
    with ``conv_2`` zero-initialised and ``skip`` a 1x1 convolution when the
    width changes.

    Args:
        in_channels: channels of the input ``x``.
        out_channels: channels of the output.
        emb_dim: width ``e`` of the timestep embedding.
        dropout: dropout probability before the second convolution.
        scale_shift: condition by scale and shift (True) or by addition (False).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        dropout: float = 0.0,
        scale_shift: bool = True,
    ) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, (2 if scale_shift else 1) * out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Map ``x`` of shape ``(b, in, h, w)`` and ``emb`` ``(b, e)`` to ``(b, out, h, w)``."""
        h = self.conv1(F.silu(self.norm1(x)))
        e = append_dims(self.emb_proj(F.silu(emb)), 4)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        out: Tensor = self.skip(x) + h
        return out


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the ``h * w`` positions, with a residual connection.

    ``out = x + W_o softmax(Q K^T / sqrt(d)) V`` per head, ``Q, K, V`` from a 1x1
    convolution of ``GN(x)`` (Vaswani et al. 2017, eq. 1); ``W_o`` is
    zero-initialised. Uses ``torch.nn.functional.scaled_dot_product_attention``.

    Args:
        channels: channels ``c`` of the input; must be divisible by ``num_heads``.
        num_heads: number of attention heads.

    Raises:
        ValueError: if ``channels`` is not divisible by ``num_heads``.
    """

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if num_heads < 1 or channels % num_heads != 0:
            raise ValueError(
                f"attention over {channels} channels needs a positive number of heads "
                f"dividing {channels}, got num_heads={num_heads}"
            )
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` of shape ``(b, c, h, w)`` to the same shape."""
        b, c, height, width = x.shape
        qkv = self.qkv(self.norm(x))
        if qkv.is_cpu and qkv.dtype == torch.float32:
            # (b, 3c, h, w) -> (3, b, n, h w, d) through a (b, h w, 3c) copy: d with unit
            # stride takes the fused CPU kernel of scaled_dot_product_attention, faster
            # in float32 than the unfused math that strided d falls back to (in bf16 the
            # math is the faster one)
            qkv = qkv.flatten(2).transpose(1, 2).contiguous()
            qkv = qkv.view(b, height * width, 3, self.num_heads, c // self.num_heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
        else:
            q, k, v = rearrange(
                qkv, "b (three n d) h w -> three b n (h w) d", three=3, n=self.num_heads
            )
        a = F.scaled_dot_product_attention(q, k, v)
        a = rearrange(a, "b n (h w) d -> b (n d) h w", h=height, w=width)
        out: Tensor = x + self.proj(a)
        return out


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 convolution.

    ``(b, in, r, r) -> (b, out, r/2, r/2)``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Downsample ``x`` of shape ``(b, in, r, r)`` (``r`` even) to ``(b, out, r/2, r/2)``."""
        out: Tensor = self.conv(x)
        return out


class Upsample(nn.Module):
    """Double the resolution (or resize to a given size), then a 3x3 convolution.

    ``(b, in, r, r) -> (b, out, 2r, 2r)`` by nearest-neighbour x2; with ``size`` given,
    ``(b, in, r, r) -> (b, out, size, size)``, nearest x2 when ``size = 2r`` and
    bilinear interpolation (``align_corners=False``) for any other size (used by
    :class:`~scalemix.nn.FlexiUNet` for pyramids that do not halve).

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor, size: int | None = None) -> Tensor:
        """Upsample ``x`` of shape ``(b, in, r, r)`` to ``(b, out, 2r, 2r)`` or ``size``."""
        if size is None or size == 2 * x.shape[-1]:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out: Tensor = self.conv(x)
        return out
