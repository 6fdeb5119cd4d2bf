r"""Settings of the trainers: one frozen dataclass per trainer, validated on construction.

:class:`TrainConfig` holds the settings of :func:`~scalemix.training.train` and
:func:`~scalemix.training.train_ensemble`, :class:`ImageTrainConfig` those of
:func:`~scalemix.training.train_images`. Both derive from :class:`BaseTrainConfig`,
which holds and checks the settings every trainer has (steps, AdamW, clipping, EMA,
precision, checkpoints). A config checks every field when it is built and raises a
``ValueError`` naming the field, its value and the accepted values; the trainers
therefore never see an invalid setting. Only ``steps`` may be given by position.

The objects a run works on (model, data, generator, device, callback, checkpoint
directory) are arguments of the trainer, not settings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal, TypeVar, get_args

from typing_extensions import TypedDict

from .._utils import check_choice
from .losses import LossFn
from .precision import Precision, PrecisionSetting

__all__ = [
    "BaseTrainConfig",
    "Batching",
    "ImageTrainConfig",
    "LRScheduleName",
    "LossName",
    "TrainConfig",
    "TrainSettings",
    "lr_factor",
]

#: The built-in losses of :func:`~scalemix.training.train`: ``"mse"``
#: (:func:`~scalemix.training.eps_mse_loss`) and ``"hybrid"``
#: (:func:`~scalemix.training.hybrid_loss`).
LossName = Literal["mse", "hybrid"]
#: How :func:`~scalemix.training.train` draws batches from an in-memory tensor.
Batching = Literal["epoch", "replacement"]
#: The learning-rate decay of :func:`~scalemix.training.train_images` after warm-up.
LRScheduleName = Literal["constant", "cosine", "linear"]

_C = TypeVar("_C", bound="BaseTrainConfig")


def _fail(config: object, name: str, expected: str, value: object) -> ValueError:
    return ValueError(f"{type(config).__name__}.{name} must be {expected}, got {value!r}")


def _check_int(config: object, name: str, low: int, *, optional: bool = False) -> None:
    value = getattr(config, name)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        expected = f"{'None or ' if optional else ''}an int >= {low}"
        raise _fail(config, name, expected, value)


def _check_number(
    config: object, name: str, *, low: float = 0.0, strict: bool = True, high: float = math.inf
) -> None:
    value = getattr(config, name)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (value > low if strict else value >= low) and value <= high):
        bounds = f"{'>' if strict else '>='} {low:g}" + (
            "" if high == math.inf else f" and <= {high:g}"
        )
        raise _fail(config, name, f"a finite number {bounds}", value)


def _check_choice(config: object, name: str, options: tuple[object, ...]) -> None:
    check_choice(f"{type(config).__name__}.{name}", getattr(config, name), options)


@dataclass(frozen=True)
class BaseTrainConfig:
    """The settings every trainer has; see :class:`TrainConfig` and :class:`ImageTrainConfig`.

    Attributes:
        steps: optimiser steps of the whole run (an int >= 1).
        lr: peak AdamW learning rate :math:`\\eta` (> 0).
        weight_decay: AdamW's decoupled weight decay (>= 0).
        grad_clip: maximum global gradient norm (> 0), or ``None`` for no clipping.
        ema_decay: EMA decay :math:`\\delta \\in [0, 1]`.
        ema_every: optimiser steps between two EMA updates (>= 1).
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"fp16"`` (autocast and a
            gradient scaler); see :mod:`scalemix.training.precision`. ``"auto"`` (the
            image trainer only) picks ``"bf16"`` or ``"fp32"`` for the device at the
            start of the run (:func:`~scalemix.training.precision.choose_precision`).
        checkpoint_every: steps between checkpoints (``None``: only after the last step);
            used only when the trainer is given a ``checkpoint_dir``.
        keep_checkpoints: complete checkpoints kept on disk (>= 1).
        label_dropout: for labelled data, the probability :math:`p_\text{uncond}` in
            ``[0, 1]`` that a label is replaced by the null class, the model's
            ``num_classes`` (:func:`~scalemix.training.drop_labels`, drawn from the
            trainer's generator); 0 passes the labels unchanged. Not used without labels.

    Raises:
        ValueError: a field outside its range, named with the accepted values.
    """

    steps: int
    _: KW_ONLY
    lr: float = 3e-4
    weight_decay: float = 1e-2
    grad_clip: float | None = 0.5
    ema_decay: float = 0.995
    ema_every: int = 10
    precision: PrecisionSetting = "fp32"
    checkpoint_every: int | None = None
    keep_checkpoints: int = 3
    label_dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "ema_every", "keep_checkpoints"):
            _check_int(self, name, 1)
        _check_int(self, "checkpoint_every", 1, optional=True)
        _check_number(self, "lr")
        _check_number(self, "weight_decay", strict=False)
        if self.grad_clip is not None:
            _check_number(self, "grad_clip")
        _check_number(self, "ema_decay", strict=False, high=1.0)
        _check_number(self, "label_dropout", strict=False, high=1.0)
        _check_choice(self, "precision", get_args(PrecisionSetting))


@dataclass(frozen=True, kw_only=True)
class TrainConfig(BaseTrainConfig):
    """Settings of :func:`~scalemix.training.train` and :func:`~scalemix.training.train_ensemble`.

    Adds to :class:`BaseTrainConfig` (whose defaults are this recipe's: the 2D study's
    AdamW at ``lr=3e-4`` with weight decay 0.01, clipping at 0.5, an EMA of decay 0.995
    updated every 10 steps):

    Attributes:
        batch_size: points per batch (>= 1).
        ema_warmup: the reference's EMA warm-up length :math:`w` in steps (>= 0), see
            :mod:`scalemix.training.vector_trainer`; ``None`` for a constant
            ``ema_decay``.
        loss: ``"mse"``, ``"hybrid"`` (with ``kl_weight``) or any
            :class:`~scalemix.training.LossFn` (``train`` only; ``train_ensemble`` takes
            the two names).
        kl_weight: :math:`\\lambda` of the hybrid loss (>= 0).
        batching: ``"epoch"`` (a fresh permutation per epoch) or ``"replacement"``.
        compile: ``False``, ``True`` or a backend name for :func:`torch.compile` (see
            :func:`~scalemix.training.compile_model`).

    Raises:
        ValueError: a field outside its range, named with the accepted values.
        TypeError: ``compile`` is neither a bool nor a string.
    """

    batch_size: int = 256
    ema_warmup: int | None = 100
    loss: LossName | LossFn = "mse"
    kl_weight: float = 0.1
    batching: Batching = "epoch"
    compile: bool | str = False
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice(self, "precision", get_args(Precision))  # no "auto" here
        _check_int(self, "batch_size", 1)
        _check_int(self, "ema_warmup", 0, optional=True)
        if not callable(self.loss):
            _check_choice(self, "loss", get_args(LossName))
        _check_number(self, "kl_weight", strict=False)
        _check_choice(self, "batching", get_args(Batching))
        if not isinstance(self.compile, bool | str):
            raise TypeError(
                f"compile must be a bool or a backend name, got {type(self.compile).__name__}"
            )


@dataclass(frozen=True, kw_only=True)
class ImageTrainConfig(BaseTrainConfig):
    """Settings of :func:`~scalemix.training.train_images`.

    Its defaults for the fields of :class:`BaseTrainConfig` are those of image models:
    ``lr=1e-4``, no weight decay, clipping at 1.0, an EMA of decay 0.9999 updated every
    step. It adds:

    Attributes:
        betas: AdamW betas, two numbers in ``[0, 1)``.
        warmup_steps: linear warm-up length (>= 0, see :func:`lr_factor`).
        lr_schedule: ``"constant"``, ``"cosine"`` or ``"linear"`` decay after warm-up.
        accumulation: micro-batches per optimiser step (>= 1).

    Raises:
        ValueError: a field outside its range, named with the accepted values.
    """

    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float = 0.9999
    ema_every: int = 1
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    lr_schedule: LRScheduleName = "constant"
    accumulation: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int(self, "warmup_steps", 0)
        _check_int(self, "accumulation", 1)
        _check_choice(self, "lr_schedule", get_args(LRScheduleName))
        betas = self.betas
        if not (
            isinstance(betas, tuple)
            and len(betas) == 2
            and all(isinstance(b, int | float) and 0.0 <= b < 1.0 for b in betas)
        ):
            raise _fail(self, "betas", "a tuple of two numbers in [0, 1)", betas)


class TrainSettings(TypedDict, total=False):
    """The fields of :class:`TrainConfig` as keyword arguments of ``train`` and
    ``train_ensemble``; each one given replaces the config's value."""

    steps: int
    lr: float
    weight_decay: float
    grad_clip: float | None
    ema_decay: float
    ema_every: int
    precision: Precision
    checkpoint_every: int | None
    keep_checkpoints: int
    label_dropout: float
    batch_size: int
    ema_warmup: int | None
    loss: LossName | LossFn
    kl_weight: float
    batching: Batching
    compile: bool | str


def resolve_config(
    cls: type[_C], config: _C | None, settings: Mapping[str, Any], caller: str
) -> _C:
    """``config`` with ``settings`` applied, or a new ``cls(**settings)`` without one.

    Raises:
        TypeError: ``config`` is not a ``cls``, or neither it nor ``steps`` is given.
    """
    if config is None:
        if "steps" not in settings:
            raise TypeError(f"{caller}() needs config={cls.__name__}(...) or steps=")
        return cls(**settings)
    if not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}")
    return dataclasses.replace(config, **settings) if settings else config


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
