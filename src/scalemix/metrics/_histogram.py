"""Plug-in KL divergence between two point clouds binned on a shared grid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._inputs import FloatArray, Points, as_points_pair, check_base

__all__ = ["histogram_kl", "histogram_probabilities"]

#: Largest number of grid cells accepted (``bins ** d``), to fail fast instead of exhausting memory.
MAX_CELLS = 10**7

Range = Sequence[tuple[float, float]] | tuple[float, float]


def _bins_per_dim(bins: int | Sequence[int], d: int) -> list[int]:
    per_dim = [bins] * d if isinstance(bins, (int, np.integer)) else list(bins)
    if len(per_dim) != d:
        raise ValueError(f"bins must be an int or a sequence of d={d} ints, got {bins!r}")
    for b in per_dim:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise ValueError(f"bins must hold positive integers, got {bins!r}")
    cells = math.prod(int(b) for b in per_dim)
    if cells > MAX_CELLS:
        raise ValueError(f"the grid has {cells} cells (> {MAX_CELLS}); use fewer bins")
    return [int(b) for b in per_dim]


def _ranges(x: FloatArray, y: FloatArray, range: Range | None) -> list[tuple[float, float]]:
    d = x.shape[1]
    if range is None:
        lo = np.minimum(x.min(axis=0), y.min(axis=0))
        hi = np.maximum(x.max(axis=0), y.max(axis=0))
        # A constant coordinate gets a unit-width bin range around its value.
        flat = lo == hi
        return [
            (float(a) - 0.5, float(b) + 0.5) if f else (float(a), float(b))
            for a, b, f in zip(lo, hi, flat, strict=True)
        ]
    flat_pair = len(range) == 2 and all(isinstance(v, (int, float, np.number)) for v in range)
    pairs: list[Any] = [range] if flat_pair and d == 1 else list(range)
    if len(pairs) != d:
        raise ValueError(f"range must hold d={d} (low, high) pairs, got {range!r}")
    out = []
    for pair in pairs:
        try:
            lo_, hi_ = float(pair[0]), float(pair[1])
            if len(pair) != 2:
                raise ValueError
        except (TypeError, ValueError, IndexError) as err:
            raise ValueError(f"each range entry must be a (low, high) pair, got {pair!r}") from err
        if not (math.isfinite(lo_) and math.isfinite(hi_) and lo_ < hi_):
            raise ValueError(f"each range must be finite (low, high) with low < high, got {pair}")
        out.append((lo_, hi_))
    lows = np.array([p[0] for p in out])
    highs = np.array([p[1] for p in out])
    for name, arr in (("x", x), ("y", y)):
        outside = int(np.count_nonzero(((arr < lows) | (arr > highs)).any(axis=1)))
        if outside:
            raise ValueError(
                f"{outside} of the {arr.shape[0]} points of {name} fall outside range={out}; "
                "widen the range or pass range=None to cover both sets"
            )
    return out


def histogram_probabilities(
    x: Points,
    y: Points,
    *,
    bins: int | Sequence[int] = 50,
    range: Range | None = None,
    pseudocount: float = 0.5,
) -> tuple[FloatArray, FloatArray]:
    r"""Smoothed cell probabilities of ``x`` and ``y`` on one shared grid.

    With counts :math:`c_j` (``n`` points) and :math:`c'_j` (``m`` points) in the ``B``
    cells of :func:`numpy.histogramdd` and pseudocount :math:`a`, returns
    :math:`p_j = (c_j + a) / (n + B a)` and :math:`q_j = (c'_j + a) / (m + B a)`, each of
    shape ``(B,)`` (flattened grid). Arguments are those of :func:`histogram_kl`.
    """
    if isinstance(pseudocount, bool) or not isinstance(pseudocount, (int, float)):
        raise TypeError(f"pseudocount must be a number >= 0, got {pseudocount!r}")
    if not (math.isfinite(pseudocount) and pseudocount >= 0):
        raise ValueError(f"pseudocount must be finite and >= 0, got {pseudocount}")
    xa, ya = as_points_pair(x, y)
    per_dim = _bins_per_dim(bins, xa.shape[1])
    ranges = _ranges(xa, ya, range)
    counts_x, _ = np.histogramdd(xa, bins=per_dim, range=ranges)
    counts_y, _ = np.histogramdd(ya, bins=per_dim, range=ranges)
    cells = counts_x.size
    p = (counts_x.ravel() + pseudocount) / (xa.shape[0] + cells * pseudocount)
    q = (counts_y.ravel() + pseudocount) / (ya.shape[0] + cells * pseudocount)
    return p.astype(np.float64), q.astype(np.float64)


def histogram_kl(
    x: Points,
    y: Points,
    *,
    bins: int | Sequence[int] = 50,
    range: Range | None = None,
    pseudocount: float = 0.5,
    base: float = 2.0,
) -> float:
    r"""Plug-in KL divergence :math:`\sum_j p_j \log(p_j / q_j)` of two binned point clouds.

    Both sets are counted on the same regular grid (:func:`numpy.histogramdd`, any ``d``;
    ``bins ** d`` cells); every cell count gets ``pseudocount`` added before normalising
    (:func:`histogram_probabilities`), so the result stays finite when ``y`` leaves a cell
    empty that ``x`` occupies. The default 0.5 is the Krichevsky-Trofimov (Jeffreys-prior)
    estimator of cell probabilities; smaller values weight empty cells more heavily. The
    value estimates the KL divergence between the *binned* distributions, which is at most
    the continuous KL divergence (data processing) and depends on the grid.

    Args:
        x: ``(n, d)`` or ``(n,)`` points of P (numpy or torch).
        y: ``(m, d)`` or ``(m,)`` points of Q.
        bins: cells per dimension, an int or one int per dimension.
        range: ``(low, high)`` per dimension (a single pair for ``d = 1``); ``None`` spans
            the minimum and maximum of both sets together. Points outside it raise.
        pseudocount: ``a >= 0`` added to every cell count.
        base: logarithm base of the result: 2.0 for bits, ``math.e`` for nats.

    Returns:
        The estimate as a Python float (>= 0).

    Raises:
        ValueError: for inputs rejected by the shared point checks, bad ``bins``/``range``,
            points outside ``range``, a negative ``pseudocount``, or (with ``pseudocount=0``)
            a cell occupied by ``x`` but empty in ``y``, where the divergence is infinite.
    """
    log_base = check_base(base)
    p, q = histogram_probabilities(x, y, bins=bins, range=range, pseudocount=pseudocount)
    support = p > 0
    if np.any(support & (q == 0)):
        empty = int(np.count_nonzero(support & (q == 0)))
        raise ValueError(
            f"{empty} cells hold points of x but none of y, so the binned KL is infinite; "
            "use pseudocount > 0"
        )
    return float(np.sum(p[support] * np.log(p[support] / q[support]))) / log_base
