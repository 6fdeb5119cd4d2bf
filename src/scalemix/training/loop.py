r"""A small, reusable training loop for denoisers on in-memory data.

It reproduces the 2D study's recipe (tiny-diffusion): AdamW, a cosine learning-rate
schedule annealed to 0 over the run, gradient-norm clipping, and an exponential moving
average (EMA) of the weights updated every :math:`m` = ``ema_every`` steps,

.. math::
    \theta^\text{EMA}_0 = \theta_{m}, \qquad
    \theta^\text{EMA}_{j} = \delta_j\, \theta^\text{EMA}_{j-1}
        + (1 - \delta_j)\, \theta_{(j+1)m},

where :math:`\theta_s` are the weights after optimiser step :math:`s` and buffers are
averaged like parameters (:class:`torch.optim.swa_utils.AveragedModel` with
``use_buffers=True``, built by :func:`~scalemix.training.make_ema`). By default the decay
warms up as in the reference's ``ema_pytorch``:
:math:`\delta_j =` :func:`~scalemix.training.ema_warmup_decay` at :math:`k = jm`, a copy
of the weights for :math:`k \le` ``ema_warmup`` and then
:math:`\min(\delta, 1 - (1 + k - w)^{-2/3})`, so short runs get a trained average;
``ema_warmup=None`` gives the constant :math:`\delta_j = \delta` = ``ema_decay``.
(The reference updates after steps :math:`1, m + 1, 2m + 1, \dots`; here the updates
follow steps :math:`m, 2m, \dots`, so the last update sees the end of the run.)

Batches: with ``batching="epoch"`` (the reference's shuffled ``DataLoader``) every epoch
visits a fresh permutation of the data in chunks of ``batch_size``, the last chunk of
an epoch possibly smaller; with ``"replacement"`` every batch is ``batch_size`` indices
drawn uniformly with replacement. The permutations/indices, the noise and the
timesteps all come from ``generator``, so one seed gives one run. Nothing is written to
disk unless a ``checkpoint_dir`` is given.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR
from torch.optim.swa_utils import AveragedModel

from .._utils import check_choice, check_finite, progress_bar
from ..scheduler import DDPMScheduler
from ._loop_resume import LoopCheckpoints
from .ema import ema_updater, make_ema
from .losses import LossFn, eps_mse_loss, hybrid_loss
from .precision import Precision, autocast_context, compile_model, grad_scaler

if TYPE_CHECKING:
    from ..degradation import BlurDegradation, ScaleSpaceDegradation

__all__ = ["Batching", "LossName", "TrainResult", "TrainState", "train"]

LossName = Literal["mse", "hybrid"]
Batching = Literal["epoch", "replacement"]


@dataclass(frozen=True)
class TrainState:
    """What a callback receives after each optimiser step.

    Attributes:
        step: number of optimiser steps done (1 .. ``steps``).
        loss: the training loss of this step.
        lr: the learning rate used by this step.
        model: the model being trained.
        ema_model: its running average (``ema_model.module`` is the averaged network).
    """

    step: int
    loss: float
    lr: float
    model: nn.Module
    ema_model: AveragedModel


@dataclass
class TrainResult:
    """The outcome of :func:`train`.

    Attributes:
        model: the trained model (the same object that was passed in).
        ema_model: the :class:`~torch.optim.swa_utils.AveragedModel` holding the EMA.
        losses: float32 CPU tensor of shape ``(steps,)``, the loss of every step.
        seconds: wall-clock duration of the loop.
    """

    model: nn.Module
    ema_model: AveragedModel
    losses: Tensor
    seconds: float

    @property
    def ema(self) -> nn.Module:
        """The averaged network, ready to sample with."""
        return self.ema_model.module

    def export_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        scheduler: DDPMScheduler | None = None,
        degradation: ScaleSpaceDegradation | BlurDegradation | None = None,
    ) -> Path:
        """Write the final EMA model as a pretrained folder (``config.json`` + weights).

        :func:`scalemix.hub.export_pretrained` of this result: ``save_pretrained`` of
        :attr:`ema`, with the ``scheduler`` and ``degradation`` configs if given. Needs
        the extra ``scalemix[hub]``.

        Returns:
            ``save_directory`` as a :class:`~pathlib.Path`.
        """
        from ..hub import export_pretrained

        return export_pretrained(self, save_directory, scheduler=scheduler, degradation=degradation)


def _batches(
    n: int, batch_size: int, batching: Batching, generator: torch.Generator | None
) -> Iterator[Tensor]:
    device = generator.device if generator is not None else torch.device("cpu")
    while True:
        if batching == "replacement":
            yield torch.randint(0, n, (batch_size,), generator=generator, device=device)
        elif batching == "epoch":
            perm = torch.randperm(n, generator=generator, device=device)
            for begin in range(0, n, batch_size):
                yield perm[begin : begin + batch_size]
        else:  # pragma: no cover - validated by train()
            raise ValueError(f"unknown batching {batching!r}; accepted: {get_args(Batching)}")


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if isinstance(value, bool) or not (math.isfinite(value) and ok):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def check_settings(
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    grad_clip: float | None,
    ema_decay: float,
    ema_every: int,
    ema_warmup: int | None,
    kl_weight: float,
    batching: Batching,
) -> None:
    """Validate the optimisation settings shared by ``train`` and ``train_ensemble``."""
    for name, value in (("steps", steps), ("batch_size", batch_size), ("ema_every", ema_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    _check_positive("lr", lr)
    _check_positive("weight_decay", weight_decay, allow_zero=True)
    _check_positive("kl_weight", kl_weight, allow_zero=True)
    if grad_clip is not None:
        _check_positive("grad_clip", grad_clip)
    if not 0.0 <= ema_decay <= 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1], got {ema_decay}")
    if ema_warmup is not None and (
        isinstance(ema_warmup, bool) or not isinstance(ema_warmup, int) or ema_warmup < 0
    ):
        raise ValueError(f"ema_warmup must be None or an integer >= 0, got {ema_warmup!r}")
    check_choice("batching", batching, get_args(Batching))


def _resolve_loss(loss: LossName | LossFn, kl_weight: float) -> LossFn:
    if callable(loss):
        return loss
    check_choice("loss", loss, get_args(LossName))
    if loss == "mse":
        return eps_mse_loss
    return partial(hybrid_loss, kl_weight=kl_weight)


def train(
    model: nn.Module,
    scheduler: DDPMScheduler,
    data: Tensor,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 3e-4,
    weight_decay: float = 1e-2,
    grad_clip: float | None = 0.5,
    ema_decay: float = 0.995,
    ema_every: int = 10,
    ema_warmup: int | None = 100,
    loss: LossName | LossFn = "mse",
    kl_weight: float = 0.1,
    batching: Batching = "epoch",
    generator: torch.Generator | None = None,
    progress: bool = False,
    callbacks: Sequence[Callable[[TrainState], None]] = (),
    device: torch.device | str | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    precision: Precision = "fp32",
    compile: bool | str = False,
) -> TrainResult:
    """Train ``model`` in place on ``data`` (see the module docstring for the recipe).

    Args:
        model: a denoiser ``model(x_t, t)``; moved to ``device`` if one is given.
        scheduler: the diffusion process.
        data: clean training data of shape ``(N, ...)`` (floating point, finite).
        steps: number of optimiser steps (> 0); also the cosine schedule's length.
        batch_size: points per batch.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay (torch's default 0.01, as the
            reference used).
        grad_clip: maximum global gradient norm, or ``None`` for no clipping.
        ema_decay: EMA decay :math:`\\delta \\in [0, 1]`.
        ema_every: update the EMA after every ``ema_every``-th step.
        ema_warmup: the reference's warm-up length :math:`w` in steps (module
            docstring); ``None`` for a constant ``ema_decay``.
        loss: ``"mse"`` (:func:`~scalemix.training.eps_mse_loss`), ``"hybrid"``
            (:func:`~scalemix.training.hybrid_loss` with ``kl_weight``) or any
            :class:`~scalemix.training.LossFn`.
        kl_weight: :math:`\\lambda` of the hybrid loss.
        batching: ``"epoch"`` or ``"replacement"`` (module docstring).
        generator: the only source of randomness of the loop.
        progress: show a tqdm progress bar.
        callbacks: functions called with a :class:`TrainState` after every step.
        device: where to train; default: the device of the model's parameters.
        checkpoint_dir: write checkpoints here (:mod:`scalemix.training.checkpoint`,
            the newest 3 kept) and resume from the newest valid one found there; with a
            ``generator`` the resumed run equals an uninterrupted one on the CPU.
            ``losses`` of the result then cover the whole run. ``None``: no files.
        checkpoint_every: steps between checkpoints (``None``: only after the last).
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"fp16"`` (autocast and a
            gradient scaler); see :mod:`scalemix.training.precision`.
        compile: ``True`` or a backend name to run the model through
            :func:`torch.compile` (see :func:`~scalemix.training.compile_model`).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: non-positive ``steps``/``batch_size``/``lr``/``ema_every``,
            ``ema_decay`` outside ``[0, 1]``, a negative ``ema_warmup``, unknown
            ``loss``/``batching``, bad data, or a loss that becomes NaN or infinite.
    """
    check_settings(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        ema_decay=ema_decay,
        ema_every=ema_every,
        ema_warmup=ema_warmup,
        kl_weight=kl_weight,
        batching=batching,
    )
    ckpt = None if checkpoint_dir is None else LoopCheckpoints(checkpoint_dir, checkpoint_every, 3)
    loss_fn = _resolve_loss(loss, kl_weight)
    if data.ndim < 2 or data.shape[0] == 0:
        raise ValueError(f"data must have shape (N, ...) with N >= 1, got {tuple(data.shape)}")
    check_finite("data", data)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")

    if device is not None:
        model.to(device)
    target_device = params[0].device
    data = data.to(device=target_device, dtype=params[0].dtype)
    fused = target_device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    lr_schedule = CosineAnnealingLR(optimizer, T_max=steps)
    ema = make_ema(model, decay=ema_decay, every=ema_every, warmup=ema_warmup)
    amp = autocast_context(precision, target_device)
    scaler = grad_scaler(precision, target_device)
    step_model = compile_model(model, compile)
    losses = torch.zeros(steps, dtype=torch.float32, device=target_device)
    batches = _batches(data.shape[0], batch_size, batching, generator)
    per_epoch = -(-data.shape[0] // batch_size) if batching == "epoch" else 1
    first = 1
    if ckpt is not None:
        args = (model, ema, optimizer, lr_schedule, losses, generator)
        first += ckpt.restore(*args, batches, batching == "epoch", scaler)
    update_ema = ema_updater(ema, model)  # after a restore: it reads ema.n_averaged

    model.train()
    start = time.perf_counter()
    bar = progress_bar(range(first, steps + 1), enabled=progress, total=steps, desc="train")
    for step in bar:
        if ckpt is not None:
            ckpt.before_batch(step, per_epoch, generator)
        x0 = data.index_select(0, next(batches).to(target_device))  # = data[index], faster
        step_lr = optimizer.param_groups[0]["lr"]
        with amp:
            loss_value = loss_fn(step_model, scheduler, x0, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss_value if scaler is None else scaler.scale(loss_value))
        if scaler is not None:
            scaler.unscale_(optimizer)
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        lr_schedule.step()
        if step % ema_every == 0:
            update_ema()
        detached = loss_value.detach()
        losses[step - 1] = detached
        if step % ema_every == 0 or step == steps:
            current = detached.item()
            if not math.isfinite(current):
                raise ValueError(f"the training loss became {current} at step {step}")
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{current:.4f}")
        if callbacks:
            state = TrainState(step, detached.item(), float(step_lr), model, ema)
            for callback in callbacks:
                callback(state)
        if ckpt is not None:
            ckpt.maybe_save(
                step,
                steps,
                per_epoch,
                model,
                ema,
                optimizer,
                lr_schedule,
                losses,
                generator,
                scaler,
            )
    seconds = time.perf_counter() - start
    return TrainResult(model=model, ema_model=ema, losses=losses.cpu(), seconds=seconds)
