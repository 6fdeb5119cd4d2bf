"""Helpers of the ensemble trainer :func:`scalemix.training.train_ensemble`: stacking data
and weights, per-copy gradient clipping, and copying the stacked weights back into
modules."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap

from .._utils import check_finite
from .conditioning import check_labels


def stack_data(data: Tensor | Sequence[Tensor], n: int, device: torch.device) -> Tensor:
    """``(N, n_data, ...)``: one shared tensor (expanded, no copy) or ``N`` equal shapes."""
    if isinstance(data, Tensor):
        items: list[Tensor] = [data]
    else:
        items = list(data)
        if len(items) != n:
            raise ValueError(f"data must be one tensor or {n} tensors, got {len(items)}")
    for i, item in enumerate(items):
        if not isinstance(item, Tensor) or item.ndim < 2 or item.shape[0] == 0:
            got = tuple(item.shape) if isinstance(item, Tensor) else type(item).__name__
            raise ValueError(f"data[{i}] must have shape (N, ...) with N >= 1, got {got}")
        if item.shape != items[0].shape:
            raise ValueError(
                f"every data set must have one shape; got {tuple(items[0].shape)} and "
                f"{tuple(item.shape)}"
            )
        check_finite(f"data[{i}]", item)
    if len(items) == 1:
        return items[0].to(device).unsqueeze(0).expand(n, *items[0].shape)
    return torch.stack([item.to(device) for item in items])


def stack_labels(
    labels: Tensor | Sequence[Tensor],
    n: int,
    n_data: int,
    num_classes: int | None,
    device: torch.device,
) -> Tensor:
    """``(N, n_data)`` int64 labels: one shared tensor (expanded) or ``N`` of them, each
    checked by :func:`~scalemix.training.conditioning.check_labels`."""
    items = [labels] if isinstance(labels, Tensor) else list(labels)
    if len(items) not in (1, n):
        raise ValueError(f"labels must be one tensor or {n} tensors, got {len(items)}")
    for item in items:
        check_labels(item, n_data, num_classes)
    if len(items) == 1:
        return items[0].to(device=device, dtype=torch.long).unsqueeze(0).expand(n, n_data)
    return torch.stack([item.to(device=device, dtype=torch.long) for item in items])


def check_models(models: Sequence[nn.Module]) -> None:
    if len(models) < 1:
        raise ValueError("models must hold at least one model")
    first = models[0]
    shapes = [(k, v.shape) for k, v in first.state_dict().items()]
    for i, model in enumerate(models):
        if (
            type(model) is not type(first)
            or [(k, v.shape) for k, v in model.state_dict().items()] != shapes
        ):
            raise ValueError(
                f"models[{i}] ({type(model).__name__}) differs from models[0] "
                f"({type(first).__name__}) in type or parameter shapes"
            )


def clip_per_copy(params: list[Tensor], max_norm: float) -> None:
    """Scale each copy's gradients of the stacked ``params`` (leading axis ``N``) so that
    their global norm is at most ``max_norm``."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads], dim=1)  # (N, P)
    coef = (max_norm / (norms.norm(dim=1) + 1e-6)).clamp(max=1.0)  # (N,)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.ndim - 1))))


class Wrap(nn.Module):
    """Holds a function so that :func:`compile_model` can compile it."""

    def __init__(self, fn: Callable[..., Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any) -> Tensor:
        return self.fn(*args)


def vmap_works(
    call: Callable[..., Tensor],
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    x: Tensor,
    kwargs: dict[str, Tensor] | None = None,
) -> bool:
    """Whether ``vmap`` can batch the model's training forward (probe on two points per
    copy, with autograd on, as in training; ``kwargs`` rows as ``x``'s)."""
    t = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
    try:
        if kwargs is None:
            vmap(call)(params, buffers, x, t)
        else:
            vmap(call)(params, buffers, x, t, kwargs)
    except RuntimeError as err:
        if "vmap" in str(err) or "batch" in str(err).lower():
            return False
        raise
    return True


def unstack(
    models: Sequence[nn.Module],
    states: list[Tensor],
    ema_states: list[Tensor],
    device: torch.device,
) -> tuple[list[nn.Module], list[nn.Module]]:
    """Copy slice ``k`` of the stacked weights into ``models[k]`` and into an EMA copy."""
    trained: list[nn.Module] = []
    averaged: list[nn.Module] = []
    for k, model in enumerate(models):
        model.to(device)
        targets = list(model.parameters()) + list(model.buffers())
        ema_model = copy.deepcopy(model)
        ema_targets = list(ema_model.parameters()) + list(ema_model.buffers())
        with torch.no_grad():
            for dst, ema_dst, src, ema_src in zip(
                targets, ema_targets, states, ema_states, strict=True
            ):
                dst.copy_(src[k])
                ema_dst.copy_(ema_src[k])
        trained.append(model)
        averaged.append(ema_model)
    return trained, averaged
