"""Small shared helpers: broadcasting, validation and coefficient gathering.

Every module of scalemix validates user input through these helpers so that bad
input fails with the same kind of message everywhere.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from .debug import values_checked

__all__ = [
    "append_dims",
    "as_timesteps",
    "assume_constant",
    "check_choice",
    "check_finite",
    "check_floating",
    "check_steps",
    "debug_check_finite",
    "gather",
    "progress_bar",
    "progress_lines",
    "randn",
    "range_checked",
]

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])


def assume_constant(fn: _F) -> _F:
    """:func:`torch.compiler.assume_constant_result`, typed: ``fn`` of constant arguments
    (ints, schedule objects) returns a constant, which a compiled graph embeds instead of
    tracing (and breaking on) the tensor reads inside ``fn``.

    Until ``torch._dynamo`` is imported this sets the mark that function sets (its whole
    effect) without importing it: importing the compiler takes seconds, and
    ``import scalemix`` should not pay for it when nothing is compiled.
    """
    if "torch._dynamo" in sys.modules:
        return cast(_F, torch.compiler.assume_constant_result(fn))  # type: ignore[no-untyped-call]
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


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


def check_steps(steps: int | None, num_timesteps: int, name: str = "steps") -> int | None:
    """Return ``steps`` if it is ``None`` or an int in ``[1, num_timesteps]``.

    Raises:
        TypeError: a non-integer ``steps``.
        ValueError: an int outside ``[1, num_timesteps]``.
    """
    if steps is None:
        return None
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"{name} must be None or an int, got {type(steps).__name__}")
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"{name} must be None or an int in [1, {num_timesteps}], got {steps}")
    return int(steps)


def check_finite(name: str, x: Tensor) -> Tensor:
    """Raise a ``ValueError`` if ``x`` holds a NaN or an infinity; return ``x``.

    This reads a value back to the host (a synchronisation on accelerators): use it at
    entry points, and :func:`debug_check_finite` on hot paths.
    """
    check_floating(name, x)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_floating(name: str, x: Tensor) -> Tensor:
    """Raise a ``TypeError`` unless ``x`` is a floating-point tensor; return ``x``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a floating-point tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def debug_check_finite(name: str, x: Tensor) -> Tensor:
    """:func:`check_finite` inside :func:`scalemix.debug.check_values`, else only the dtype.

    The hot-path form of the value check: free (no host synchronisation, no graph
    break) unless the switch is on.
    """
    if values_checked():
        return check_finite(name, x)
    return check_floating(name, x)


def range_checked(t: Tensor) -> bool:
    """Whether to check a timestep tensor's range here: where it costs no synchronisation
    (a CPU tensor in eager mode) or inside :func:`scalemix.debug.check_values`."""
    if values_checked():
        return True
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def as_timesteps(
    t: Tensor | int | np.integer[Any] | npt.NDArray[np.integer[Any]],
    batch: int,
    num_timesteps: int,
    device: torch.device,
    *,
    name: str = "t",
    low: int = 0,
) -> Tensor:
    """Validate timesteps and return them as a ``(batch,)`` int64 tensor on ``device``.

    Python and numpy integers are range-checked for free. A tensor is range-checked
    where that costs nothing (on the CPU in eager mode) or inside
    :func:`scalemix.debug.check_values`; elsewhere (an accelerator, or under
    :func:`torch.compile`) it is not read back, and :func:`gather` maps out-of-range
    entries to NaN.

    Args:
        t: an int (Python or numpy), a 0-d tensor, or an integer tensor (or numpy
            array) of shape ``(batch,)``.
        batch: the batch size of the tensor the timesteps index.
        num_timesteps: ``T``; every timestep must lie in ``[low, T)``.
        device: the device of the returned tensor.
        name: the argument name used in error messages.
        low: the smallest accepted timestep (``-1`` where clean data is allowed).

    Raises:
        TypeError: if ``t`` is a bool, a float or a floating-point tensor.
        ValueError: if ``t`` has the wrong shape or lies outside ``[low, T)``.
    """
    if isinstance(t, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or an integer tensor, got a bool")
    if isinstance(t, (int, np.integer)):
        value = int(t)
        if not low <= value < num_timesteps:
            raise ValueError(f"{name} must lie in [{low}, {num_timesteps}), got {value}")
        return torch.full((batch,), value, dtype=torch.long, device=device)
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, Tensor):
        raise TypeError(
            f"{name} must be an int or an integer tensor of shape ({batch},), "
            f"got {type(t).__name__}"
        )
    if torch.is_floating_point(t) or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {t.dtype}")
    if t.ndim == 0:
        tt = t.to(device=device, dtype=torch.long).expand(batch)
    elif t.ndim == 1 and t.shape[0] == batch:
        tt = t.to(device=device, dtype=torch.long)
    else:
        raise ValueError(
            f"{name} must be a scalar or have shape ({batch},) to match the batch; "
            f"got shape {tuple(t.shape)}"
        )
    if t.numel() > 0 and range_checked(t):  # t itself: a 0-d t counts for an empty batch
        lo, hi = int(t.min()), int(t.max())
        if lo < low or hi >= num_timesteps:
            raise ValueError(
                f"{name} must lie in [{low}, {num_timesteps}); got values in [{lo}, {hi}]"
            )
    return tt


def gather(buffer: Tensor, t: Tensor, like: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
    """Gather ``buffer[t]`` and shape it to broadcast against ``like``.

    The indexing never reads out of bounds (no host synchronisation, no device-side
    assert): entries of ``t`` outside ``[0, T)`` give NaN. For a synchronisation-free
    call keep ``buffer`` on the device of ``t``.

    Args:
        buffer: 1-D coefficient table of shape ``(T,)`` (float64, on any device).
        t: int64 indices of shape ``(b,)``.
        like: the tensor of shape ``(b, ...)`` the coefficients multiply.
        dtype: dtype of the result (default: ``like``'s); the device is ``like``'s.

    Returns:
        Tensor of shape ``(b, 1, ..., 1)`` with ``like.ndim`` dims.
    """
    n = buffer.shape[0]
    idx = t.to(buffer.device)
    values = buffer[idx.clamp(0, n - 1)]
    values = torch.where((idx >= 0) & (idx < n), values, torch.nan)
    out_dtype = like.dtype if dtype is None else dtype
    return append_dims(values.to(device=like.device, dtype=out_dtype), like.ndim)


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
