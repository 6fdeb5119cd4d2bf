r"""Resolution pyramids of any downsampling factor, and the UNet level each size runs at.

The Scale Space Diffusion reference code builds its pyramid from the full size
:math:`S` (``scale_max``), the number of levels :math:`n` (``num_levels``) and a factor
:math:`f \ge 1` (``ds_factor``), for a UNet with :math:`L` levels (the length of its
``channel_mult``) whose nominal sizes are :math:`N_i = S / 2^i`. A size :math:`c` lies
in *band* :math:`i` when :math:`N_i \ge c > N_{i+1}` (:math:`c > N_0` is band 0,
:math:`c \le N_{L-1}` band :math:`L-1`); it runs at UNet level :math:`i` and must be a
multiple of :math:`d_i = 2^{L-1-i}` (the UNet halves it :math:`L-1-i` more times).

Starting from :math:`c = S`, each level takes the multiple of :math:`d_i` nearest to
:math:`c` (remainders :math:`\le d_i/2`, ties included, round down), with :math:`i` the
band of :math:`c`, and then :math:`c \leftarrow \mathrm{round}(c / f)` (Python's
``round``; the unrounded-to-multiple :math:`c` carries on). For :math:`S = 64`,
:math:`L = 4`: :math:`f = 1.5` gives 64, 40, 28, 20 at UNet levels 0, 0, 1, 1 (nominal
64, 64, 32, 32) and :math:`f = 2` gives 64, 32, 16, 8 at levels 0, 1, 2, 3.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["Pyramid", "pyramid_sizes", "unet_level"]


class Pyramid(NamedTuple):
    """A resolution pyramid and the UNet level of each size.

    Attributes:
        sizes: the sizes, strictly decreasing, ``sizes[0]`` the full size.
        unet_levels: for each size, the index ``i`` of the UNet level it runs at
            (nominal size ``image_size / 2**i``).
    """

    sizes: tuple[int, ...]
    unet_levels: tuple[int, ...]


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _band(c: float, image_size: int, unet_levels: int) -> int:
    """The band ``i`` with ``S / 2^i >= c > S / 2^(i+1)``, clipped to ``[0, L - 1]``."""
    for i in range(unet_levels - 1):
        if c > image_size / 2 ** (i + 1):
            return i
    return unet_levels - 1


def unet_level(size: int, image_size: int, unet_levels: int) -> int:
    r"""The UNet level a ``size x size`` input runs at, by the band rule (module docstring).

    Args:
        size: input side ``r >= 1``.
        image_size: full size :math:`S` (level 0's nominal size).
        unet_levels: the UNet's level count :math:`L`.

    Returns:
        ``i`` in ``[0, L)`` with :math:`S/2^i \ge r > S/2^{i+1}` (clipped at both ends).

    Raises:
        ValueError: if ``size`` is not a multiple of :math:`2^{L-1-i}`, so that the UNet
            cannot halve it down to its last level.
    """
    _check_int("size", size, 1)
    _check_int("image_size", image_size, 1)
    _check_int("unet_levels", unet_levels, 1)
    i = _band(size, image_size, unet_levels)
    d = 2 ** (unet_levels - 1 - i)
    if size % d != 0:
        raise ValueError(
            f"size {size} runs at UNet level {i} (nominal {image_size / 2**i:g} px) and must "
            f"be a multiple of {d} to be halved {unet_levels - 1 - i} more times"
        )
    return i


def pyramid_sizes(
    image_size: int, num_levels: int, factor: float = 2.0, unet_levels: int | None = None
) -> Pyramid:
    r"""The reference code's pyramid of ``num_levels`` sizes from ``image_size`` by ``factor``.

    Implements the rounding rule of the module docstring, e.g.
    ``pyramid_sizes(64, 4, 1.5) == Pyramid((64, 40, 28, 20), (0, 0, 1, 1))`` and
    ``pyramid_sizes(48, 3, 2.0) == Pyramid((48, 24, 12), (0, 1, 2))``.

    Args:
        image_size: full size :math:`S`, a multiple of :math:`2^{L-1}`.
        num_levels: pyramid levels :math:`n \ge 1`.
        factor: downsampling factor :math:`f \ge 1` between consecutive levels.
        unet_levels: the UNet's level count :math:`L` (``len(channel_mult)``); default
            ``num_levels``.

    Returns:
        :class:`Pyramid` ``(sizes, unet_levels)``, sizes strictly decreasing.

    Raises:
        TypeError: non-integer sizes or counts, non-real ``factor``.
        ValueError: ``factor < 1``, ``image_size`` not a multiple of :math:`2^{L-1}`, or
            too many levels (a size below 2, or two equal consecutive sizes).
    """
    _check_int("image_size", image_size, 1)
    _check_int("num_levels", num_levels, 1)
    L = num_levels if unet_levels is None else unet_levels
    _check_int("unet_levels", L, 1)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)):
        raise TypeError(f"factor must be a float, got {type(factor).__name__}")
    if not (math.isfinite(factor) and factor >= 1.0):
        raise ValueError(f"factor must be a finite float >= 1, got {factor!r}")
    if image_size % 2 ** (L - 1) != 0:
        raise ValueError(
            f"image_size={image_size} must be a multiple of 2**(unet_levels - 1) = "
            f"{2 ** (L - 1)} so that a UNet with {L} levels can halve it {L - 1} times"
        )
    sizes: list[int] = []
    levels: list[int] = []
    c = image_size
    for _ in range(num_levels):
        i = _band(c, image_size, L)
        d = 2 ** (L - 1 - i)
        q, rem = divmod(round(c), d)
        size = q * d if rem <= d / 2 else (q + 1) * d
        if size < 2 or (sizes and size >= sizes[-1]):
            raise ValueError(
                f"num_levels={num_levels} is too large for image_size={image_size} with "
                f"factor={factor} and unet_levels={L}: the sizes so far are {sizes} and the "
                f"next would be {size} (sizes must be >= 2 and strictly decreasing)"
            )
        sizes.append(size)
        levels.append(i)
        c = round(c / factor)
    return Pyramid(tuple(sizes), tuple(levels))


def _make_pyramid(
    image_size: int | None,
    num_levels: int | None,
    factor: float,
    resolutions: Sequence[int] | None,
    unet_levels: int | None,
) -> Pyramid:
    """The pyramid of ``ScaleSpaceDegradation`` from its constructor arguments.

    Explicit ``resolutions`` get the band rule's UNet levels (without the divisibility
    check, which only a UNet needs).
    """
    if resolutions is None:
        if image_size is None or num_levels is None:
            raise ValueError("give image_size and num_levels, or resolutions")
        return pyramid_sizes(image_size, num_levels, factor, unet_levels)
    sizes = tuple(resolutions)
    if not sizes or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in sizes):
        raise ValueError(f"resolutions must be a non-empty sequence of positive ints, got {sizes}")
    if any(a <= b for a, b in itertools.pairwise(sizes)):
        raise ValueError(f"resolutions must be strictly decreasing, got {sizes}")
    for name, value, expected in (
        ("image_size", image_size, sizes[0]),
        ("num_levels", num_levels, len(sizes)),
    ):
        if value is not None and value != expected:
            raise ValueError(
                f"{name}={value} disagrees with resolutions={sizes} (expected {expected} or None)"
            )
    L = len(sizes) if unet_levels is None else unet_levels
    return Pyramid(sizes, tuple(_band(r, sizes[0], L) for r in sizes))
