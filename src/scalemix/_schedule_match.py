r"""Recognise a named beta schedule from its betas.

A :class:`~scalemix.DDPMScheduler` keeps only its betas; writing a diffusers config by
schedule name needs the name and range back. :func:`match_schedule` finds them for the
four named schedules of :mod:`scalemix.schedules`, rescaled to zero terminal SNR or not.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .schedules import (
    BetaScheduleName,
    alphas_cumprod_from_betas,
    cosine_beta_schedule,
    linear_beta_schedule,
    quadratic_beta_schedule,
    rescale_zero_terminal_snr,
    sigmoid_beta_schedule,
)

__all__ = ["match_schedule"]

MATCH_RTOL = 1e-10  # a schedule matches when every beta agrees to this relative error
_MAX_END = 0.999  # largest beta_end searched for a rescaled schedule
_GRID = 96  # log-spaced candidates of beta_end for a rescaled schedule
_MAX_ROOTS = 8  # brackets refined per schedule family
_F64 = torch.float64
_SCHEDULES: dict[str, Callable[[int, float, float], Tensor]] = {
    "linear": linear_beta_schedule,
    "quadratic": quadratic_beta_schedule,
    "sigmoid": sigmoid_beta_schedule,
}
_SIGMOID_LOW = 1.0 / (1.0 + math.exp(6.0))  # sigmoid(-6), the sigmoid schedule's t = 0 weight


def _tidy(x: float) -> list[float]:
    """``x`` rounded to 6, 8, 10 and 12 significant digits, then as computed: the
    shortest that reproduces the schedule is written."""
    return [*(float(f"{x:.{d}g}") for d in (6, 8, 10, 12)), x]


def _valid_range(start: float, end: float) -> bool:
    """Whether ``0 < start <= end < 1``, the range scalemix's schedules accept."""
    return 0.0 < start <= end < 1.0 and not (math.isnan(start) or math.isnan(end))


def _same(a: Tensor, b: Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=MATCH_RTOL, atol=0.0))


def _first_match(
    name: str, betas: Tensor, starts: list[float], ends: list[float], rescale: bool
) -> tuple[BetaScheduleName, float, float] | None:
    """The first rounded ``(start, end)`` whose schedule reproduces ``betas``."""
    n = int(betas.numel())
    for s in starts:
        for e in ends:
            if not _valid_range(s, e):
                continue
            candidate = _SCHEDULES[name](n, s, e)
            if rescale:
                candidate = rescale_zero_terminal_snr(candidate)
            if _same(candidate, betas):
                return name, s, e  # type: ignore[return-value]
    return None


def _match_plain(betas: Tensor) -> tuple[BetaScheduleName, float, float] | None:
    n = int(betas.numel())
    if _same(cosine_beta_schedule(n), betas):
        return "cosine", 1e-4, 0.02  # the cosine schedule has no range
    first, last = float(betas[0]), float(betas[-1])
    # linear and quadratic schedules start at beta_start and end at beta_end; the
    # sigmoid one has beta_0 = s + sigmoid(-6)(e - s) and beta_{T-1} = s + sigmoid(6)(e - s)
    span = (last - first) / (1.0 - 2.0 * _SIGMOID_LOW)
    ranges = {
        "linear": (first, last),
        "quadratic": (first, last),
        "sigmoid": (first - _SIGMOID_LOW * span, first - _SIGMOID_LOW * span + span),
    }
    for name, (start, end) in ranges.items():
        found = _first_match(name, betas, _tidy(start), _tidy(end), rescale=False)
        if found is not None:
            return found
    return None


def _family(name: str, n: int, start: Tensor, end: Tensor) -> Tensor:
    """The schedules ``name`` for every pair ``(start[g], end[g])``: shape ``(G, n)``."""
    u = torch.linspace(0.0, 1.0, n, dtype=_F64)
    s, e = start[:, None], end[:, None]
    if name == "linear":
        return s + (e - s) * u
    if name == "quadratic":
        return (s.sqrt() + (e.sqrt() - s.sqrt()) * u) ** 2
    return s + (e - s) * torch.sigmoid(torch.linspace(-6.0, 6.0, n, dtype=_F64))


def _rescaled_abar(betas: Tensor, k: int) -> Tensor:
    r""":math:`\bar\alpha'_k` of each row of ``betas`` ``(G, n)`` after the zero-terminal-SNR
    rescaling (Lin et al., 2024, Algorithm 1): :math:`a' = (a - a_{n-1}) a_0 / (a_0 - a_{n-1})`,
    :math:`a = \sqrt{\bar\alpha}`. Shape ``(G,)``."""
    a = torch.cumprod(1.0 - betas, dim=1).sqrt()
    a0, a_last = a[:, 0], a[:, -1]
    return ((a[:, k] - a_last) * a0 / (a0 - a_last)) ** 2


def _match_rescaled(betas: Tensor) -> tuple[BetaScheduleName, float, float] | None:
    r"""Rescaling keeps :math:`\beta_0`, which fixes ``beta_start`` given ``beta_end``;
    ``beta_end`` is a root of :math:`g(e) = \bar\alpha'_k(e) - \bar\alpha_k`,
    :math:`k = \max(n/2 - 1, 1)`. :math:`g` is not monotone, so every root that a log-spaced grid
    brackets is refined by bisection and checked against the whole schedule."""
    n = int(betas.numel())
    if n < 3:
        return None
    if _same(rescale_zero_terminal_snr(cosine_beta_schedule(n)), betas):
        return "cosine", 1e-4, 0.02
    first, k = float(betas[0]), max(n // 2 - 1, 1)  # abar'_0 and abar'_{n-1} are fixed
    target = float(alphas_cumprod_from_betas(betas)[k])
    if not 0.0 < first < _MAX_END:
        return None

    def start_of(name: str, end: Tensor) -> Tensor:
        if name == "sigmoid":
            return (first - _SIGMOID_LOW * end) / (1.0 - _SIGMOID_LOW)
        return torch.full_like(end, first)

    def gap(name: str, end: Tensor) -> Tensor:
        start = start_of(name, end)
        valid = (start > 0) & (start <= end) & (end < 1)
        g = _rescaled_abar(_family(name, n, start.clamp(min=1e-12), end), k) - target
        return torch.where(valid, g, torch.nan)

    grid = first * (_MAX_END / first) ** torch.linspace(0.0, 1.0, _GRID, dtype=_F64)[1:]
    for name in _SCHEDULES:
        values = gap(name, grid)
        idx = torch.nonzero(values[:-1] * values[1:] <= 0).flatten()[:_MAX_ROOTS]
        lo, hi = grid[idx], grid[idx + 1]
        g_lo = gap(name, lo)
        for _ in range(56):  # bisection of every bracket at once, to float64 resolution
            mid = (lo + hi) / 2
            g_mid = gap(name, mid)
            left = g_lo * g_mid <= 0
            lo, hi = torch.where(left, lo, mid), torch.where(left, mid, hi)
            g_lo = torch.where(left, g_lo, g_mid)
        ends = (lo + hi) / 2
        for end, start in zip(ends.tolist(), start_of(name, ends).tolist(), strict=True):
            found = _first_match(name, betas, _tidy(start), _tidy(end), rescale=True)
            if found is not None:
                return found
    return None


def match_schedule(betas: Tensor) -> tuple[BetaScheduleName, float, float, bool] | None:
    """The named schedule that gives ``betas``, if any.

    Args:
        betas: float64 schedule of shape ``(T,)``.

    Returns:
        ``(beta_schedule, beta_start, beta_end, rescaled)`` such that
        ``make_beta_schedule(beta_schedule, T, beta_start, beta_end)``, rescaled to zero
        terminal SNR when ``rescaled``, equals ``betas`` to a relative ``1e-10``
        (``beta_start``/``beta_end`` rounded to the fewest digits that do); ``None``
        for any other schedule. The cosine schedule reports the default range.
    """
    if float(betas[-1]) == 1.0:
        found = _match_rescaled(betas)
        return None if found is None else (*found, True)
    found = _match_plain(betas)
    return None if found is None else (*found, False)
