r"""Settings of the image trainer: :class:`ImageTrainConfig` and the learning-rate factor."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from .._utils import check_choice
from .precision import Precision

__all__ = ["ImageTrainConfig", "LRScheduleName", "lr_factor"]

LRScheduleName = Literal["constant", "cosine", "linear"]


@dataclass(frozen=True)
class ImageTrainConfig:
    """Optimisation settings of :func:`train_images`.

    Attributes:
        steps: optimiser steps of the whole run.
        lr: peak AdamW learning rate :math:`\\eta`.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: linear warm-up length (see :func:`lr_factor`).
        lr_schedule: ``"constant"``, ``"cosine"`` or ``"linear"`` decay after warm-up.
        grad_clip: gradient-norm clip (``None``: no clipping).
        accumulation: micro-batches per optimiser step.
        ema_decay: EMA decay :math:`\\delta` per update.
        ema_every: steps between EMA updates.
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"fp16"`` (autocast and
            gradient scaling).
        checkpoint_every: steps between checkpoints (``None``: only after the last step);
            used only with a ``checkpoint_dir``.
        keep_checkpoints: complete checkpoints kept on disk.
    """

    steps: int
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    lr_schedule: LRScheduleName = "constant"
    grad_clip: float | None = 1.0
    accumulation: int = 1
    ema_decay: float = 0.9999
    ema_every: int = 1
    precision: Precision = "fp32"
    checkpoint_every: int | None = None
    keep_checkpoints: int = 3

    def __post_init__(self) -> None:
        ints = {"steps": (self.steps, 1), "warmup_steps": (self.warmup_steps, 0)}
        ints |= {"accumulation": (self.accumulation, 1), "ema_every": (self.ema_every, 1)}
        ints |= {"keep_checkpoints": (self.keep_checkpoints, 1)}
        if self.checkpoint_every is not None:
            ints["checkpoint_every"] = (self.checkpoint_every, 1)
        for name, (value, low) in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        positive = {"lr": self.lr} | (
            {} if self.grad_clip is None else {"grad_clip": self.grad_clip}
        )
        for name, x in positive.items():
            if not (isinstance(x, int | float) and math.isfinite(x) and x > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {x!r}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1], got {self.ema_decay!r}")
        if not self.weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        check_choice("lr_schedule", self.lr_schedule, get_args(LRScheduleName))
        check_choice("precision", self.precision, get_args(Precision))


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: LRScheduleName) -> float:
    r"""The learning-rate multiplier :math:`\lambda(s)` of optimiser step ``s`` (0-based).

    .. math::
        \lambda(s) = \begin{cases}
        (s + 1) / W & s < W \\
        1 & \text{constant} \\
        \tfrac12\bigl(1 + \cos(\pi u)\bigr) & \text{cosine} \\
        1 - u & \text{linear}
        \end{cases}, \qquad u = \frac{s - W}{\max(S - W, 1)},

    with :math:`W` = ``warmup_steps`` and :math:`S` = ``total_steps``.
    """
    check_choice("schedule", schedule, get_args(LRScheduleName))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    u = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * u))
    if schedule == "linear":
        return 1.0 - u
    return 1.0
