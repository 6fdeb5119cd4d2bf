"""Checks that a model fits a scale-space degradation before it is trained or sampled.

A model declares whether it can return its prediction at another size than its input
(``out_size`` different from ``x``'s size) with the class attribute
``changes_resolution``: ``False`` for a fixed-resolution network such as
:class:`~scalemix.interop.DiffusersUNet`, ``True`` for one that honours ``out_size``
(:class:`~scalemix.nn.FlexiUNet`, :class:`~scalemix.scale_space.UpsampleInput`).
A model that declares nothing is not checked.
"""

from __future__ import annotations

from torch import nn

__all__ = [
    "check_scale_space_model",
    "declared_attribute",
    "declared_changes_resolution",
    "declared_num_classes",
]


def declared_attribute(model: object, name: str) -> tuple[object, object] | None:
    """The first ``(owner, value)`` of attribute ``name`` not ``None``, through wrappers.

    ``model`` is asked first; an object without the attribute is unwrapped through
    ``.module`` (:class:`~torch.optim.swa_utils.AveragedModel`, DDP) or ``._orig_mod``
    (:func:`torch.compile`). ``None`` when nothing declares it.
    """
    obj: object = model
    for _ in range(32):  # wrappers nest a few levels at most
        value = getattr(obj, name, None)
        if value is not None:
            return obj, value
        inner = getattr(obj, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(obj, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return None
        obj = inner
    return None


def declared_num_classes(model: object) -> int | None:
    """The ``num_classes`` of a class-conditional model (its null label), through
    wrappers (:func:`declared_attribute`); ``None`` when it has no int ``>= 1``."""
    found = declared_attribute(model, "num_classes")
    value = None if found is None else found[1]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def declared_changes_resolution(model: object) -> bool | None:
    """The ``changes_resolution`` a model declares, looking through wrappers
    (:func:`declared_attribute`); ``None`` when nothing declares it.

    Raises:
        TypeError: a ``changes_resolution`` that is not a bool.
    """
    found = declared_attribute(model, "changes_resolution")
    if found is None:
        return None
    owner, declared = found
    if not isinstance(declared, bool):
        raise TypeError(
            f"{type(owner).__name__}.changes_resolution must be True or False, got {declared!r}"
        )
    return declared


def _sizes(degradation: object) -> list[tuple[int, ...]]:
    """The distinct ``spatial_shape(t)`` for ``t`` in ``[0, T)``, in order of ``t``."""
    shape_of = getattr(degradation, "spatial_shape", None)
    steps = getattr(degradation, "num_train_timesteps", None)
    if not callable(shape_of) or not isinstance(steps, int):
        return []
    sizes: list[tuple[int, ...]] = []
    for t in range(steps):
        shape = tuple(shape_of(t))
        if not sizes or sizes[-1] != shape:
            sizes.append(shape)
    return sizes


def check_scale_space_model(
    model: object, degradation: object, *, upsample_top_level: bool = False
) -> None:
    """Raise if a fixed-resolution model meets a pyramid whose size changes with ``t``.

    On a change step the scale-space loss and sampler ask the model for a prediction
    at the next, larger pyramid size (``model(x, t, out_size=r)`` with ``r`` larger
    than ``x``'s size). A model declaring ``changes_resolution = False`` (see
    :func:`declared_changes_resolution`) cannot, so with a degradation whose
    ``spatial_shape(t)`` takes more than one value over ``t`` this raises before any
    step is taken. With ``upsample_top_level=True`` (the loss's and sampler's flag) a
    two-level pyramid passes: its only change step is then resolution-preserving.

    Args:
        model: the model (or a wrapper of it: ``AveragedModel``, DDP, compiled).
        degradation: the forward process, e.g. a
            :class:`~scalemix.degradation.ScaleSpaceDegradation`.
        upsample_top_level: whether the caller upsamples the input of the step into
            full resolution.

    Raises:
        ValueError: the model cannot change resolution and the pyramid does; the
            message names the sizes and the fix.
    """
    if declared_changes_resolution(model) is not False:
        return
    changes = getattr(degradation, "change_steps", None)  # cached by the pyramids
    if isinstance(changes, tuple) and len(changes) <= (1 if upsample_top_level else 0):
        return  # the fast path of a training step: no walk over the timesteps
    sizes = _sizes(degradation)
    if len(sizes) < 2 or (upsample_top_level and len(sizes) == 2):
        return
    listed = " -> ".join("x".join(map(str, s)) for s in reversed(sizes))
    raise ValueError(
        f"{type(model).__name__} keeps the resolution of its input (changes_resolution="
        f"False), but the degradation's size changes with t ({listed}), so on a change "
        "step the model must predict at a larger size than it is given. Wrap it: "
        "scalemix.scale_space.UpsampleInput(model) upsamples its input to "
        "out_size; for a two-level pyramid, upsample_top_level=True in the loss and the "
        "sampler does the same"
    )
