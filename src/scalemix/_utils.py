"""Small shared helpers: broadcasting, validation and coefficient gathering.

Every module of scalemix validates user input through these helpers so that bad
input fails with the same kind of message everywhere.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import torch
from torch import Tensor

__all__ = [
    "append_dims",
    "as_timesteps",
    "check_choice",
    "check_finite",
    "gather",
    "progress_bar",
    "progress_lines",
    "randn",
]

_T = TypeVar("_T")


def append_dims(x: Tensor, target_ndim: int) -> Tensor:
    """Append trailing singleton dimensions so that ``x`` has ``target_ndim`` dims.

    Args:
        x: tensor of shape ``(b, ...)`` with ``x.ndim <= target_ndim``.
        target_ndim: the rank of the tensor ``x`` should broadcast against.

    Returns:
        A view of ``x`` with shape ``x.shape + (1,) * (target_ndim - x.ndim)``.

    Raises:
        ValueError: if ``x`` already has more than ``target_ndim`` dimensions.
    """
    extra = target_ndim - x.ndim
    if extra < 0:
        raise ValueError(
            f"cannot broadcast a tensor of rank {x.ndim} (shape {tuple(x.shape)}) "
            f"to rank {target_ndim}: it already has more dimensions"
        )
    return x.reshape(*x.shape, *([1] * extra))


def check_choice(name: str, value: _T, options: Iterable[_T]) -> _T:
    """Return ``value`` if it is one of ``options``, else raise a ``ValueError``.

    The message names the argument and lists every accepted value.
    """
    opts = tuple(options)
    if value not in opts:
        accepted = ", ".join(repr(o) for o in opts)
        raise ValueError(f"unknown {name} {value!r}; accepted values are: {accepted}")
    return value


def check_finite(name: str, x: Tensor) -> Tensor:
    """Raise a ``ValueError`` if ``x`` holds a NaN or an infinity; return ``x``."""
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def as_timesteps(t: Tensor | int, batch: int, num_timesteps: int, device: torch.device) -> Tensor:
    """Validate timesteps and return them as a ``(batch,)`` int64 tensor on ``device``.

    Args:
        t: an integer, a 0-d tensor, or an integer tensor of shape ``(batch,)``.
        batch: the batch size of the tensor the timesteps index.
        num_timesteps: ``T``; every timestep must lie in ``[0, T)``.
        device: the device of the returned tensor.

    Raises:
        TypeError: if ``t`` is a floating-point tensor.
        ValueError: if ``t`` has the wrong shape or lies outside ``[0, T)``.
    """
    if isinstance(t, bool):
        raise TypeError("timesteps must be integers, got a bool")
    if isinstance(t, int):
        tt = torch.full((batch,), t, dtype=torch.long, device=device)
    else:
        if not isinstance(t, Tensor):
            raise TypeError(
                f"timesteps must be an int or an integer tensor, got {type(t).__name__}"
            )
        if torch.is_floating_point(t) or t.dtype == torch.bool:
            raise TypeError(f"timesteps must be an integer tensor, got dtype {t.dtype}")
        if t.ndim == 0:
            tt = t.to(device=device, dtype=torch.long).expand(batch)
        elif t.ndim == 1 and t.shape[0] == batch:
            tt = t.to(device=device, dtype=torch.long)
        else:
            raise ValueError(
                f"timesteps must be a scalar or have shape ({batch},) to match the batch; "
                f"got shape {tuple(t.shape)}"
            )
    if tt.numel() > 0:
        lo, hi = int(tt.min()), int(tt.max())
        if lo < 0 or hi >= num_timesteps:
            raise ValueError(
                f"timesteps must lie in [0, {num_timesteps}); got values in [{lo}, {hi}]"
            )
    return tt


def gather(buffer: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """Gather ``buffer[t]`` and shape it to broadcast against ``like``.

    The buffer (float64, on any device) is indexed on its own device, then cast to
    ``like``'s dtype and device, so schedules stay in float64 until they meet data.

    Args:
        buffer: 1-D coefficient table of shape ``(T,)``.
        t: int64 indices of shape ``(b,)``.
        like: the tensor of shape ``(b, ...)`` the coefficients multiply.

    Returns:
        Tensor of shape ``(b, 1, ..., 1)`` with ``like.ndim`` dims.
    """
    values = buffer[t.to(buffer.device)]
    return append_dims(values.to(device=like.device, dtype=like.dtype), like.ndim)


def randn(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw standard normal noise of ``shape`` from ``generator``.

    The noise is drawn on the generator's device in float32 (so half-precision
    outputs are reproducible across devices that support the generator) and then moved
    to ``device``/``dtype``. ``generator=None`` uses torch's default generator.
    """
    gen_device = generator.device if generator is not None else device
    noise = torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)


def progress_bar(
    iterable: Iterable[_T], *, enabled: bool, total: int | None = None, desc: str | None = None
) -> Iterable[_T]:
    """Wrap ``iterable`` in a tqdm progress bar when ``enabled``; else return it unchanged.

    A bar goes to a terminal only; when standard error is not a terminal (a log file, a
    pipe) the progress is written by :func:`progress_lines`, a line every 5 %.

    Raises:
        ModuleNotFoundError: when ``enabled`` and tqdm is missing, naming the extra to
            install.
    """
    if not enabled:
        return iterable
    if not sys.stderr.isatty():
        return progress_lines(iterable, total=total, desc=desc)
    try:
        from tqdm.auto import tqdm
    except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "progress bars need tqdm: pip install 'scalemix[examples]'"
        ) from err
    bar: Iterable[_T] = tqdm(iterable, total=total, desc=desc, leave=False)
    return bar


def progress_lines(
    iterable: Iterable[_T], *, total: int | None = None, desc: str | None = None, percent: int = 5
) -> Iterator[_T]:
    """Yield from ``iterable``, writing a line to standard error every ``percent`` %.

    Each line reads ``desc: 40% (400/1000), 12 s, ETA 18 s``: short enough for a log
    file, where a tqdm bar would write every refresh.
    """
    if total is None:
        total = len(iterable) if isinstance(iterable, Sequence) else None
    label = f"{desc}: " if desc else ""
    start = time.perf_counter()
    next_mark = percent
    for i, item in enumerate(iterable, start=1):
        yield item
        if not total:
            continue
        done = 100 * i // total
        if done >= next_mark or i == total:
            elapsed = time.perf_counter() - start
            eta = elapsed * (total - i) / i
            sys.stderr.write(f"{label}{done}% ({i}/{total}), {elapsed:.0f} s, ETA {eta:.0f} s\n")
            sys.stderr.flush()
            next_mark = (done // percent + 1) * percent
