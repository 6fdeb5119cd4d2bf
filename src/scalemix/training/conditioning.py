r"""Conditioning in training: label dropout and the checks on ``model_kwargs``.

Conditioning reaches a model as keyword arguments, ``model(x, t, **model_kwargs)``
(guided diffusion's convention); class labels are ``model_kwargs["class_labels"]``,
int64 of shape ``(b,)``. A network built with ``num_classes=K`` reserves index ``K``
for the learned null class, the "no label" input of classifier-free guidance.

:func:`drop_labels` replaces labels by that null class at random, so that one network
learns both the conditional and the unconditional model (Ho & Salimans, 2022, who train
with :math:`p_\text{uncond} \in [0.1, 0.2]`). The trainers do it with their
``label_dropout`` setting and take the null label from the model (:func:`null_label_of`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .._model_checks import declared_num_classes

__all__ = [
    "check_labels",
    "check_model_kwargs",
    "drop_labels",
    "null_label_of",
    "resolve_null_label",
]


def drop_labels(
    labels: Tensor, p: float, *, null_label: int, generator: torch.Generator | None
) -> Tensor:
    r"""Replace each label by ``null_label`` independently with probability ``p``.

    One uniform number :math:`u_i \sim \mathcal U[0, 1)` is drawn per label from
    ``generator`` (on the generator's device; torch's default generator on the labels'
    device when ``generator`` is ``None``) and label :math:`i` becomes ``null_label``
    where :math:`u_i < p`. Nothing is read back to the host. ``p = 0`` draws nothing and
    returns a copy of ``labels``; ``p = 1`` returns ``null_label`` everywhere (and still
    draws, so the generator advances the same way for every ``p > 0``).

    Args:
        labels: integer class labels of any shape, e.g. ``(b,)``.
        p: the drop probability :math:`p_\text{uncond} \in [0, 1]`.
        null_label: the label of the null class (for a network built with
            ``num_classes=K``: ``K``).
        generator: source of the draws.

    Returns:
        A new tensor of the shape, dtype and device of ``labels``.

    Raises:
        ValueError: ``p`` outside ``[0, 1]``, or ``labels`` not an integer tensor.
        TypeError: ``null_label`` not an int.
    """
    ok = isinstance(p, int | float) and not isinstance(p, bool) and math.isfinite(p)
    if not (ok and 0.0 <= p <= 1.0):
        raise ValueError(f"p must be a number in [0, 1], got {p!r}")
    if isinstance(null_label, bool) or not isinstance(null_label, int):
        raise TypeError(f"null_label must be an int, got {null_label!r}")
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex():
        got = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an integer tensor, got {got}")
    if p == 0.0:
        return labels.clone()
    device = generator.device if generator is not None else labels.device
    u = torch.rand(labels.shape, generator=generator, device=device)
    drop = (u < p).to(labels.device, non_blocking=True)
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def check_model_kwargs(
    model_kwargs: Mapping[str, Tensor] | None, batch_size: int
) -> dict[str, Tensor]:
    """``model_kwargs`` as a dict, each tensor checked to hold ``batch_size`` rows.

    Only shapes are read (no host sync). Values that are not tensors pass unchecked.

    Args:
        model_kwargs: keyword arguments of the model call, or ``None`` (no conditioning).
        batch_size: ``b``, the rows of the batch the model is called on.

    Returns:
        A new dict (empty for ``None``).

    Raises:
        ValueError: a tensor whose first dimension is not ``b``, named by its key.
        TypeError: ``model_kwargs`` not a mapping with string keys.
    """
    if model_kwargs is None:
        return {}
    if not isinstance(model_kwargs, Mapping):
        raise TypeError(f"model_kwargs must be a mapping or None, got {type(model_kwargs)}")
    out = dict(model_kwargs)
    for key, value in out.items():
        if not isinstance(key, str):
            raise TypeError(f"model_kwargs keys must be strings, got {key!r}")
        if isinstance(value, Tensor) and (value.ndim == 0 or value.shape[0] != batch_size):
            raise ValueError(
                f"model_kwargs[{key!r}] must have batch size {batch_size} in dim 0, "
                f"got shape {tuple(value.shape)}"
            )
    return out


def null_label_of(model: nn.Module) -> int | None:
    """The null class label of ``model``: its ``num_classes`` attribute.

    Wrappers are looked through: when ``model`` has no int ``num_classes``, its
    ``.module`` (``DistributedDataParallel``, ``AveragedModel``) or ``._orig_mod``
    (:func:`torch.compile`) is asked.

    Returns:
        ``num_classes`` (an int ``K >= 1``: labels ``0 .. K-1`` and the null class
        ``K``), or ``None`` when neither the model nor what it wraps has one.
    """
    return declared_num_classes(model)


def resolve_null_label(model: nn.Module, label_dropout: float) -> int:
    """The null label the trainers drop labels to: :func:`null_label_of` ``model``.

    Returns:
        The model's ``num_classes``; ``-1`` (never used) when ``label_dropout`` is 0 and
        the model has none.

    Raises:
        ValueError: ``label_dropout > 0`` and the model has no int ``num_classes``.
    """
    null = null_label_of(model)
    if null is not None:
        return null
    if label_dropout > 0:
        raise ValueError(
            f"label_dropout={label_dropout} replaces labels by the null class, which is "
            f"the model's num_classes; build the model with num_classes (an int >= 1, "
            f"the null class being index num_classes) or set label_dropout=0"
        )
    return -1


def check_labels(labels: Tensor, n: int, num_classes: int | None) -> None:
    """Check in-memory ``labels`` against ``n`` data points (values read once, at entry).

    Raises:
        ValueError: not an integer tensor of shape ``(n,)``, or (when ``num_classes`` is
            known) a label outside ``[0, num_classes]``.
    """
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex():
        got = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an integer tensor, got {got}")
    if tuple(labels.shape) != (n,):
        raise ValueError(
            f"labels must have shape ({n},), one per data point, got {tuple(labels.shape)}"
        )
    if num_classes is not None and n > 0:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high > num_classes:
            raise ValueError(
                f"labels must lie in [0, {num_classes}] (num_classes={num_classes}, the "
                f"null class included), got values in [{low}, {high}]"
            )


def split_labelled(data: Any) -> tuple[Any, Any]:
    """``(x0, labels)`` of a trainer's ``data``: a pair ``(x0, labels)`` (tuple or list of
    two) is labelled data, anything else is ``x0`` without labels (``None``)."""
    if isinstance(data, tuple | list) and len(data) == 2 and _is_labels(data[1]):
        return data[0], data[1]
    return data, None


def _is_labels(obj: object) -> bool:
    """Integer tensors of rank 1, or a non-empty sequence of them."""
    if isinstance(obj, Tensor):
        return obj.ndim == 1 and not (obj.is_floating_point() or obj.is_complex())
    return isinstance(obj, tuple | list) and len(obj) > 0 and all(_is_labels(o) for o in obj)
