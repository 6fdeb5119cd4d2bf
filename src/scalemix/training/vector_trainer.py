r"""The vector trainer :func:`train`: denoisers on in-memory data (points, vectors).

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
disk unless a ``checkpoint_dir`` is given. The settings are a
:class:`~scalemix.training.TrainConfig`.

Labelled data ``(x0, labels)``: each batch takes the labels of its points, replaces
them by the null class (the model's ``num_classes``) with probability
``label_dropout`` (:func:`~scalemix.training.drop_labels`, drawn from ``generator``
after the batch's indices and before the loss's noise), and passes them to the loss as
``model_kwargs={"class_labels": labels}``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR
from typing_extensions import Unpack

from .._utils import check_finite, progress_bar
from ..scheduler import DDPMScheduler
from ._common import (
    RunState,
    as_callbacks,
    backward,
    index_batches,
    optimizer_step,
    select_batch,
)
from ._vector_resume import VectorCheckpoints
from .conditioning import check_labels, drop_labels, null_label_of, resolve_null_label
from .config import TrainConfig, TrainSettings, resolve_config
from .ema import ema_updater, make_ema
from .losses import LossFn, eps_mse_loss, hybrid_loss
from .precision import autocast_context, compile_model, grad_scaler
from .results import Callback, TrainResult, TrainState

__all__ = ["train"]


def _loss_fn(config: TrainConfig) -> LossFn:
    if callable(config.loss):
        return config.loss
    if config.loss == "mse":
        return eps_mse_loss
    return partial(hybrid_loss, kl_weight=config.kl_weight)


def _check_data(data: Tensor) -> None:
    if not isinstance(data, Tensor):
        raise ValueError(f"data must be a tensor or a pair (x0, labels), got {type(data)}")
    if data.ndim < 2 or data.shape[0] == 0:
        raise ValueError(f"data must have shape (N, ...) with N >= 1, got {tuple(data.shape)}")
    check_finite("data", data)


def _split(data: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor | None]:
    if isinstance(data, Tensor):
        return data, None
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise ValueError(f"data must be a tensor or a pair (x0, labels), got {type(data)}")
    return data[0], data[1]


def train(
    model: nn.Module,
    scheduler: DDPMScheduler,
    data: Tensor | tuple[Tensor, Tensor],
    config: TrainConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    callback: Callback[TrainState] = None,
    callbacks: Sequence[Callable[[TrainState], None]] | None = None,
    checkpoint_dir: str | Path | None = None,
    **settings: Unpack[TrainSettings],
) -> TrainResult:
    """Train ``model`` in place on ``data`` (see the module docstring for the recipe).

    ``train(model, scheduler, data, TrainConfig(steps=1000, lr=1e-3))`` and
    ``train(model, scheduler, data, steps=1000, lr=1e-3)`` are the same run; keyword
    settings given with a ``config`` replace its fields.

    Args:
        model: a denoiser ``model(x_t, t)`` (``model(x_t, t, class_labels=y)`` for
            labelled data); moved to ``device`` if one is given.
        scheduler: the diffusion process.
        data: clean training data of shape ``(N, ...)`` (floating point, finite), or a
            pair ``(x0, labels)`` with integer ``labels`` of shape ``(N,)`` (in
            ``[0, num_classes]`` when the model has ``num_classes``).
        config: the :class:`~scalemix.training.TrainConfig` (steps, batch size, AdamW,
            clipping, EMA, loss, batching, precision, compile, checkpoint period).
        generator: the only source of randomness of the loop.
        device: where to train; default: the device of the model's parameters.
        progress: show a tqdm progress bar.
        callback: a function, or a sequence of functions, called with a
            :class:`~scalemix.training.TrainState` after every step.
        callbacks: deprecated spelling of ``callback`` (a sequence).
        checkpoint_dir: write checkpoints here (:mod:`scalemix.training.checkpoint`,
            every ``config.checkpoint_every`` steps and after the last, the newest
            ``config.keep_checkpoints`` kept) and resume from the newest valid one found
            there; with a ``generator`` the resumed run equals an uninterrupted one on
            the CPU. ``losses`` of the result then cover the whole run. ``None``: no
            files.
        **settings: fields of :class:`~scalemix.training.TrainConfig`
            (:class:`~scalemix.training.TrainSettings`), e.g. ``steps=1000``.

    Returns:
        A :class:`~scalemix.training.TrainResult`.

    Raises:
        TypeError: neither ``config`` nor ``steps`` given, or an unknown setting.
        ValueError: an invalid setting (named by the config), bad data or labels, a
            model without trainable parameters, ``label_dropout > 0`` for a model
            without ``num_classes``, or a loss that becomes NaN or infinite.
    """
    hooks = as_callbacks(callback, callbacks)
    config = resolve_config(TrainConfig, config, settings, "train")
    loss_fn = _loss_fn(config)
    data, labels = _split(data)
    _check_data(data)
    null, p_drop = -1, config.label_dropout
    if labels is not None:
        null = resolve_null_label(model, p_drop)
        check_labels(labels, data.shape[0], null_label_of(model))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")

    if device is not None:
        model.to(device)
    target_device = params[0].device
    data = data.to(device=target_device, dtype=params[0].dtype)
    if labels is not None:
        labels = labels.to(device=target_device, dtype=torch.long)
    fused = target_device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    optimizer = torch.optim.AdamW(
        params, lr=config.lr, weight_decay=config.weight_decay, fused=fused
    )
    steps, ema_every = config.steps, config.ema_every
    ema = make_ema(model, decay=config.ema_decay, every=ema_every, warmup=config.ema_warmup)
    run = RunState(
        model,
        ema,
        optimizer,
        CosineAnnealingLR(optimizer, T_max=steps),
        grad_scaler(config.precision, target_device),
        torch.zeros(steps, dtype=torch.float32, device=target_device),
    )
    amp = autocast_context(config.precision, target_device)
    step_model = compile_model(model, config.compile)
    batches = index_batches(data.shape[0], config.batch_size, config.batching, generator)
    epoch = config.batching == "epoch"
    per_epoch = -(-data.shape[0] // config.batch_size) if epoch else 1
    ckpt = None
    first = 1
    if checkpoint_dir is not None:
        every, keep = config.checkpoint_every, config.keep_checkpoints
        ckpt = VectorCheckpoints(checkpoint_dir, every, keep, run, generator, per_epoch)
        first += ckpt.restore(batches, epoch)
    update_ema = ema_updater(ema, model)  # after a restore: it reads ema.n_averaged
    clip = None
    if config.grad_clip is not None:
        clip = partial(nn.utils.clip_grad_norm_, params, config.grad_clip, foreach=True)

    model.train()
    start = time.perf_counter()
    bar = progress_bar(range(first, steps + 1), enabled=progress, total=steps, desc="train")
    for step in bar:
        if ckpt is not None:
            ckpt.before_batch(step)
        index = next(batches)
        x0 = select_batch(data, index)
        step_lr = optimizer.param_groups[0]["lr"]
        if labels is None:
            with amp:
                loss_value = loss_fn(step_model, scheduler, x0, generator=generator)
        else:
            y = drop_labels(
                select_batch(labels, index), p_drop, null_label=null, generator=generator
            )
            with amp:
                loss_value = loss_fn(
                    step_model, scheduler, x0, generator=generator, model_kwargs={"class_labels": y}
                )
        optimizer.zero_grad(set_to_none=True)
        backward(loss_value, run.scaler)
        optimizer_step(optimizer, run.scaler, clip)
        run.lr_schedule.step()
        if step % ema_every == 0:
            update_ema()
        detached = loss_value.detach()
        run.losses[step - 1] = detached
        if step % ema_every == 0 or step == steps:
            current = detached.item()
            if not math.isfinite(current):
                raise ValueError(f"the training loss became {current} at step {step}")
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{current:.4f}")
        if hooks:
            state = TrainState(step, detached.item(), float(step_lr), model, ema)
            for hook in hooks:
                hook(state)
        if ckpt is not None:
            ckpt.maybe_save(step, steps)
    seconds = time.perf_counter() - start
    return TrainResult(model=model, ema_model=ema, losses=run.losses.cpu(), seconds=seconds)
