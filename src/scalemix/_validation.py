"""Validation of what a model's forward receives: timesteps and input dtype.

Every denoiser (:class:`~scalemix.nn.MLPDenoiser`, :class:`~scalemix.nn.DualScaleDenoiser`,
:class:`~scalemix.nn.DualScaleBlock`, :class:`~scalemix.nn.TimestepGate`,
:class:`~scalemix.nn.FlexiUNet`) reads its ``t`` through :func:`model_timesteps` and
checks its input against its parameters with :func:`check_input_dtype`, so all accept
the same timestep kinds and fail with the same messages. Both look at metadata only
(type, dtype, shape): no host synchronisation and no graph break. A class-conditional
network reads its ``class_labels`` through :func:`class_labels_of`, whose range
check runs only where the timesteps' does (:func:`scalemix._utils.range_checked`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._utils import check_floating, debug_check_finite, range_checked

__all__ = [
    "check_input_dtype",
    "check_like",
    "check_model_dtype",
    "check_num_classes",
    "class_labels_of",
    "class_labels_valid",
    "model_timesteps",
    "shared_timesteps",
    "timestep_batch",
]


def model_timesteps(t: object, batch: int, device: torch.device, *, name: str = "t") -> Tensor:
    """Return a model's timesteps as a ``(batch,)`` tensor on ``device``.

    Accepted: a Python or numpy integer or float (the same timestep for every item),
    a 0-d tensor (broadcast to the batch), or a tensor / numpy array of shape
    ``(batch,)``. Integer and real timesteps keep their kind (an int becomes int64, a
    float float32). A broadcast timestep is returned as an expanded view (stride 0),
    which models may read as "one timestep for the whole batch".

    Raises:
        TypeError: a bool, complex or non-numeric ``t``.
        ValueError: a tensor of another shape.
    """
    if isinstance(t, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number or a tensor of timesteps, got a bool")
    if isinstance(t, (int, np.integer)):
        return torch.full((1,), int(t), dtype=torch.long, device=device).expand(batch)
    if isinstance(t, (float, np.floating)):
        return torch.full((1,), float(t), dtype=torch.float32, device=device).expand(batch)
    if isinstance(t, np.ndarray):
        if not (np.issubdtype(t.dtype, np.integer) or np.issubdtype(t.dtype, np.floating)):
            raise TypeError(f"{name} must hold integers or reals, got an array of {t.dtype}")
        t = torch.from_numpy(t)
    if not isinstance(t, Tensor):
        raise TypeError(
            f"{name} must be a number or a tensor of timesteps of shape ({batch},), "
            f"got {type(t).__name__}"
        )
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be an integer or real tensor, got dtype {t.dtype}")
    if t.ndim == 0:
        return t.to(device).reshape(1).expand(batch)
    if t.shape != (batch,):
        raise ValueError(
            f"{name} must have shape ({batch},) to match the batch (shape (b,)) or be a "
            f"scalar; got shape {tuple(t.shape)}"
        )
    return t.to(device)


def timestep_batch(t: object) -> int:
    """The batch size a bare ``t`` describes: its length, or 1 for a single timestep."""
    shape: tuple[int, ...] = tuple(getattr(t, "shape", ()))
    return int(shape[0]) if len(shape) >= 1 else 1


def check_input_dtype(name: str, x: Tensor, parameter: Tensor) -> None:
    """Raise a ``TypeError`` unless ``x`` has the dtype of the model's ``parameter``.

    Skipped under :func:`torch.autocast`, which casts per operation. Inside
    :func:`scalemix.debug.check_values` it also checks that ``x`` is finite.

    Raises:
        TypeError: ``x`` is not floating point, or its dtype differs from the parameters'.
        ValueError: a NaN or an infinity in ``x``, inside :func:`~scalemix.debug.check_values`.
    """
    debug_check_finite(name, x)  # the dtype always; the values inside check_values()
    if x.dtype != parameter.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"{name} has dtype {x.dtype} but the model's parameters are {parameter.dtype}; "
            f"cast the input (x.to({parameter.dtype})) or the model "
            f"(model.to({x.dtype})), or run under torch.autocast"
        )


def check_model_dtype(model: torch.nn.Module, dtype: torch.dtype, name: str = "dtype") -> None:
    """Raise a ``TypeError`` if ``model`` has floating parameters of another ``dtype``.

    For entry points that create the model's input themselves (the samplers' ``dtype``
    argument). Models without floating parameters, and calls under
    :func:`torch.autocast`, pass.
    """
    for parameter in model.parameters():
        if not torch.is_floating_point(parameter):
            continue
        if parameter.dtype != dtype and not torch.is_autocast_enabled(parameter.device.type):
            raise TypeError(
                f"{name}={dtype} does not match the model's parameters ({parameter.dtype}); "
                f"pass dtype={parameter.dtype} or cast the model with model.to({dtype})"
            )
        return


def shared_timesteps(t: int, batch: int, device: torch.device | str) -> Tensor:
    """One timestep for a whole batch: an int64 ``(batch,)`` view with stride 0.

    Models may read the zero stride as "compute the time-only work once".
    """
    return torch.full((1,), t, dtype=torch.long, device=device).expand(batch)


def check_like(name: str, a: Tensor, x: Tensor, x_name: str = "x_t") -> Tensor:
    """Check ``x`` (floating, ``(b, ...)``) and ``a`` (floating, ``x``'s shape); return ``a``
    cast to ``x``'s dtype, the dtype the scheduler's methods return."""
    check_floating(x_name, x)
    if x.ndim < 1:
        raise ValueError(f"{x_name} must have shape (b, ...), got a 0-d tensor")
    check_floating(name, a)
    if a.shape != x.shape:
        raise ValueError(
            f"{name} must have the shape of {x_name} {tuple(x.shape)}, got {tuple(a.shape)}"
        )
    debug_check_finite(name, a)
    return a.to(x.dtype)


def check_num_classes(num_classes: object) -> int | None:
    """Return a network's ``num_classes``: ``None`` (unconditional) or a positive int.

    Raises:
        TypeError: neither ``None`` nor an int (a bool included).
        ValueError: an int below 1.
    """
    if num_classes is None:
        return None
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be None or an int, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be None or a positive int, got {num_classes}")
    return int(num_classes)


def class_labels_of(
    labels: object,
    batch: int,
    num_classes: int | None,
    device: torch.device,
    *,
    owner: str = "the model",
) -> Tensor | None:
    """Return a network's class labels as an int64 ``(batch,)`` tensor on ``device``.

    The labels of a network built with ``num_classes=K`` lie in ``[0, K]``, ``K`` being
    the learned null class (the unconditional half, for classifier-free guidance).
    ``labels=None`` gives the null class for every item, as an expanded view (stride 0).
    The range is checked where the timesteps' is (:func:`scalemix._utils.range_checked`:
    a CPU tensor in eager mode, or inside :func:`scalemix.debug.check_values`); elsewhere
    nothing is read back to the host, and :func:`class_labels_valid` marks the items
    whose label is out of range.

    Args:
        labels: ``None`` or an integer tensor of shape ``(batch,)``.
        batch: the batch size of the network's input.
        num_classes: ``K``, or ``None`` for an unconditional network.
        device: the device of the returned tensor.
        owner: the network's name in error messages.

    Returns:
        ``None`` for an unconditional network given no labels, else the labels.

    Raises:
        ValueError: labels for an unconditional network, a shape other than
            ``(batch,)``, or a label outside ``[0, K]``.
        TypeError: labels that are no integer tensor.
    """
    if num_classes is None:
        if labels is not None:
            raise ValueError(
                f"{owner} was built without num_classes; build it with num_classes=K to "
                "pass class_labels, or call it without them"
            )
        return None
    if labels is None:
        return torch.full((1,), num_classes, dtype=torch.long, device=device).expand(batch)
    if not isinstance(labels, Tensor):
        raise TypeError(
            f"class_labels must be an int64 tensor of shape ({batch},), got {type(labels).__name__}"
        )
    if torch.is_floating_point(labels) or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"class_labels must be an int64 tensor, got dtype {labels.dtype}")
    if labels.shape != (batch,):
        raise ValueError(
            f"class_labels must have shape ({batch},) to match the batch, got shape "
            f"{tuple(labels.shape)}"
        )
    # vmapped labels (an ensemble trained as one model) hold no values to read here;
    # the trainers check them once, at the start
    batched = bool(torch._C._functorch.is_batchedtensor(labels))
    if labels.numel() > 0 and range_checked(labels) and not batched:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi > num_classes:
            raise ValueError(
                f"class_labels must lie in [0, {num_classes}] (classes 0..{num_classes - 1}, "
                f"and {num_classes} the null class); got values in [{lo}, {hi}]"
            )
    return labels.to(device=device, dtype=torch.long)


def class_labels_valid(labels: Tensor, num_classes: int) -> Tensor:
    """``(b,)`` bools: which labels lie in ``[0, num_classes]`` (no host synchronisation)."""
    return (labels >= 0) & (labels <= num_classes)
