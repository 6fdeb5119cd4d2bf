"""Hypothesis strategies for scalemix components.

Tensors are drawn from a seed (a ``torch.Generator``) rather than element by element:
hypothesis shrinks the batch size, the timesteps and the seed, and the tensors stay
cheap to draw at image sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
from hypothesis import assume
from hypothesis import strategies as st
from torch import Tensor

from ..degradation.protocol import LinearDegradation
from ..degradation.resolution import ResolutionScheduleName
from ..degradation.respacing import respaced_timesteps
from ..degradation.scale_space import ScaleSpaceDegradation
from ..scheduler import DDPMScheduler

__all__ = [
    "TimestepForm",
    "batches",
    "class_labels",
    "scale_space_degradations",
    "scheduler_configs",
    "schedulers",
    "step_pairs",
    "timesteps",
]

TimestepForm = Literal["int", "0d", "batch"]


def _check_forms(forms: Sequence[str], name: str = "forms") -> tuple[TimestepForm, ...]:
    allowed = get_args(TimestepForm)
    if not forms or any(f not in allowed for f in forms):
        raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {tuple(forms)}")
    return tuple(forms)  # type: ignore[arg-type]


def timesteps(
    num_timesteps: int,
    batch_size: int,
    *,
    forms: Sequence[TimestepForm] = ("int", "0d", "batch"),
    shared: bool = False,
    allow_clean: bool = False,
) -> st.SearchStrategy[int | Tensor]:
    """Timesteps in ``[0, T)`` (``[-1, T)`` with ``allow_clean``) in the accepted forms.

    Args:
        num_timesteps: ``T``.
        batch_size: ``b``, the length of the ``"batch"`` form.
        forms: any of ``"int"`` (a Python int), ``"0d"`` (a 0-d int64 tensor) and
            ``"batch"`` (an int64 tensor of shape ``(b,)``).
        shared: ``"batch"`` tensors hold one value repeated (degradations whose batch
            shares a timestep).
        allow_clean: include ``-1`` (clean data).

    Returns:
        A strategy of ``int`` or int64 tensors of shape ``()`` or ``(b,)``.
    """
    chosen = _check_forms(forms)
    if num_timesteps < 1 or batch_size < 1:
        raise ValueError(f"need num_timesteps, batch_size >= 1, got {num_timesteps}, {batch_size}")
    low = -1 if allow_clean else 0
    value = st.integers(low, num_timesteps - 1)

    @st.composite
    def draw_t(draw: st.DrawFn) -> int | Tensor:
        form = draw(st.sampled_from(chosen))
        if form == "int":
            return draw(value)
        if form == "0d":
            return torch.tensor(draw(value), dtype=torch.long)
        if shared:
            return torch.full((batch_size,), draw(value), dtype=torch.long)
        items = draw(st.lists(value, min_size=batch_size, max_size=batch_size))
        return torch.tensor(items, dtype=torch.long)

    return draw_t()


def class_labels(
    batch_size: int, num_classes: int, *, include_null: bool = True
) -> st.SearchStrategy[Tensor]:
    """Class labels of a conditional denoiser: int64 tensors of shape ``(batch_size,)``.

    Labels lie in ``[0, K]`` (``K = num_classes``), ``K`` being the null class of
    classifier-free guidance; with ``include_null=False``, in ``[0, K)``. They shrink
    towards class 0.

    Raises:
        ValueError: ``batch_size`` or ``num_classes`` below 1.
    """
    if batch_size < 1 or num_classes < 1:
        raise ValueError(f"need batch_size, num_classes >= 1, got {batch_size}, {num_classes}")
    high = num_classes if include_null else num_classes - 1
    items = st.lists(st.integers(0, high), min_size=batch_size, max_size=batch_size)
    return items.map(lambda values: torch.tensor(values, dtype=torch.long))


def batches(
    shape: Sequence[int],
    *,
    batch_sizes: tuple[int, int] = (1, 4),
    dtype: torch.dtype = torch.float32,
    scales: Sequence[float] = (1.0, 0.1, 10.0),
) -> st.SearchStrategy[Tensor]:
    """Batches ``(b, *shape)`` of standard normal data times a drawn scale.

    Args:
        shape: the shape of one item, e.g. ``(2,)`` or ``(3, 16, 16)``.
        batch_sizes: inclusive range of ``b``.
        dtype: floating dtype of the batch.
        scales: factors to draw from (the first is the simplest for shrinking).

    Returns:
        A strategy of tensors of shape ``(b, *shape)`` drawn from a seeded generator.
    """
    item = tuple(int(s) for s in shape)
    lo, hi = batch_sizes
    if any(s < 1 for s in item) or not 1 <= lo <= hi:
        raise ValueError(f"bad shape {item} or batch_sizes {batch_sizes}")

    @st.composite
    def draw_batch(draw: st.DrawFn) -> Tensor:
        b = draw(st.integers(lo, hi))
        scale = draw(st.sampled_from(tuple(scales)))
        seed = draw(st.integers(0, 2**31 - 1))
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn((b, *item), generator=gen, dtype=torch.float64) * scale).to(dtype)

    return draw_batch()


def scheduler_configs(*, max_timesteps: int = 200) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments of valid :class:`~scalemix.scheduler.DDPMScheduler` configurations.

    Draws ``T`` in ``[2, max_timesteps]``, every beta schedule, beta ranges around the
    usual ``1e-4 .. 0.02``, every prediction and variance type, an optional
    ``clip_sample`` and zero terminal SNR (only with ``"sample"``/``"v_prediction"``).
    """
    if max_timesteps < 2:
        raise ValueError(f"max_timesteps must be >= 2, got {max_timesteps}")

    @st.composite
    def draw_config(draw: st.DrawFn) -> dict[str, Any]:
        prediction = draw(st.sampled_from(("epsilon", "sample", "v_prediction")))
        return {
            "num_train_timesteps": draw(st.integers(2, max_timesteps)),
            "beta_schedule": draw(st.sampled_from(("linear", "quadratic", "cosine", "sigmoid"))),
            "beta_start": draw(st.sampled_from((1e-4, 1e-3, 1e-5))),
            "beta_end": draw(st.sampled_from((0.02, 0.05, 0.01))),
            "prediction_type": prediction,
            "variance_type": draw(st.sampled_from(("fixed_small", "fixed_large"))),
            "clip_sample": draw(st.sampled_from((None, 1.0))),
            "rescale_betas_zero_snr": prediction != "epsilon" and draw(st.booleans()),
        }

    return draw_config()


def schedulers(*, max_timesteps: int = 200) -> st.SearchStrategy[DDPMScheduler]:
    """:class:`~scalemix.scheduler.DDPMScheduler` instances built from :func:`scheduler_configs`."""
    return scheduler_configs(max_timesteps=max_timesteps).map(lambda kw: DDPMScheduler(**kw))


def scale_space_degradations(
    *, image_sizes: Sequence[int] = (4, 8, 16), max_timesteps: int = 200
) -> st.SearchStrategy[ScaleSpaceDegradation]:
    """Small :class:`~scalemix.degradation.ScaleSpaceDegradation` pyramids.

    Draws the image size, 1 to ``log2(size)`` levels, ``T`` (at least 8 per level, so
    that no level is skipped), the convex or linear resolution schedule and ``gamma``.
    """
    sizes = tuple(int(s) for s in image_sizes)
    if not sizes or any(s < 2 or s & (s - 1) for s in sizes):
        raise ValueError(f"image_sizes must be powers of two >= 2, got {sizes}")

    @st.composite
    def draw_pyramid(draw: st.DrawFn) -> ScaleSpaceDegradation:
        size = draw(st.sampled_from(sizes))
        levels = draw(st.integers(1, size.bit_length() - 1))
        steps = draw(st.integers(min(8 * levels, max_timesteps), max_timesteps))
        schedule: ResolutionScheduleName = draw(st.sampled_from(("convex", "linear")))
        gamma = draw(st.sampled_from((0.5, 1.0, 2.0)))
        try:
            return ScaleSpaceDegradation(
                size, levels, steps, resolution_schedule=schedule, gamma=gamma
            )
        except ValueError:  # a schedule that skips a level at this T
            assume(False)
            raise  # pragma: no cover - assume(False) does not return

    return draw_pyramid()


def step_pairs(degradation: LinearDegradation) -> st.SearchStrategy[tuple[int, int]]:
    """Reverse-step pairs ``(t, s)``, ``s < t``, as a sampler takes them.

    Consecutive entries of :func:`~scalemix.degradation.respaced_timesteps` for a drawn
    number of steps (``s = -1`` after the last), so that every resolution change is
    its own step; all ``T`` steps give the pairs ``(t, t - 1)``.
    """
    T = degradation.num_train_timesteps

    @st.composite
    def draw_pair(draw: st.DrawFn) -> tuple[int, int]:
        n = draw(st.integers(1, T).map(lambda k: T + 1 - k))  # shrinks towards n = T
        ts = [int(v) for v in respaced_timesteps(degradation, n).tolist()]
        i = draw(st.integers(0, len(ts) - 1))
        return ts[i], ts[i + 1] if i + 1 < len(ts) else -1

    return draw_pair()
