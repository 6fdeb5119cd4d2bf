r"""Sinusoidal embeddings of scalars (timesteps and coordinates).

The transformer positional encoding (Vaswani et al., 2017, section 3.5) in the
layout used by tiny-diffusion: the first half of the features are sines, the
second half cosines, with geometrically spaced frequencies

.. math::
    \omega_i = \exp\!\Big(-\frac{\ln 10000}{h - 1}\, i\Big), \qquad
    i = 0, \dots, h - 1, \quad h = \text{dim} / 2,

    \operatorname{emb}(x) = \big[\sin(s x \omega_0), \dots, \sin(s x \omega_{h-1}),
    \cos(s x \omega_0), \dots, \cos(s x \omega_{h-1})\big],

where :math:`s` is the ``scale``. A large scale (25 in the 2D study) spreads the
embedding of a low-dimensional coordinate over high frequencies, which lets a small
MLP fit sharp features (Tancik et al., 2020).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalEmbedding", "sinusoidal_frequencies"]


def sinusoidal_frequencies(dim: int, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""The ``dim // 2`` frequencies :math:`\omega_i = \exp(-\ln(10000)\, i / (h - 1))`.

    Args:
        dim: embedding size; must be even and at least 4.
        dtype: dtype of the result (computed in float64 first).

    Returns:
        Tensor of shape ``(dim // 2,)``, decreasing from 1 to :math:`10^{-4}`.

    Raises:
        TypeError: if ``dim`` is not an int.
        ValueError: if ``dim`` is odd or smaller than 4.
    """
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if dim < 4 or dim % 2 != 0:
        raise ValueError(f"dim must be an even integer >= 4, got {dim}")
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64)
    return torch.exp(-math.log(10000.0) * i / (half - 1)).to(dtype)


class SinusoidalEmbedding(nn.Module):
    r"""Parameter-free sinusoidal embedding :math:`x \mapsto [\sin(s x\omega), \cos(s x\omega)]`.

    See the module docstring for the equation.

    Args:
        dim: embedding size (even, >= 4); half sines, half cosines.
        scale: the factor :math:`s` applied to the input before embedding.

    Shape:
        - input: ``(*)`` of any shape, integer or floating point (e.g. timesteps ``(b,)``
          or coordinates ``(b, d)``).
        - output: ``(*, dim)``, i.e. ``(b,) -> (b, dim)`` and ``(b, d) -> (b, d, dim)``.
          The phases are always computed in float32 (timesteps up to 1000 lose precision
          in half precision); the result is float32, or the floating dtype the module was
          cast to with ``.to(dtype)`` / ``.half()`` / ``.bfloat16()``.

    Raises:
        ValueError: if ``dim`` is odd or < 4, or ``scale`` is not a finite number.
    """

    freqs: Tensor

    def __init__(self, dim: int, scale: float = 1.0) -> None:
        super().__init__()
        freqs = sinusoidal_frequencies(dim)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a number, got {type(scale).__name__}")
        if not math.isfinite(scale):
            raise ValueError(f"scale must be finite, got {scale}")
        self.dim = dim
        self.scale = float(scale)
        self.register_buffer("freqs", freqs, persistent=False)
        self._out_dtype = torch.float32

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> SinusoidalEmbedding:
        # Follow device moves and record dtype casts, but keep the frequencies in float32.
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        self._out_dtype = fn(torch.zeros((), dtype=torch.float32)).dtype
        self.freqs = sinusoidal_frequencies(self.dim).to(self.freqs.device)
        return self

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale}"

    def forward(self, x: Tensor) -> Tensor:
        """Embed every entry of ``x``: ``(*) -> (*, dim)``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}")
        if torch.is_complex(x) or x.dtype == torch.bool:
            raise TypeError(f"x must be an integer or real tensor, got dtype {x.dtype}")
        args = (x.to(torch.float32) * self.scale).unsqueeze(-1) * self.freqs
        return torch.cat((torch.sin(args), torch.cos(args)), dim=-1).to(self._out_dtype)
