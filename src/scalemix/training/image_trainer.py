r"""The image trainer :func:`train_images`: any model, any loss, a ``DataLoader`` of images.

One optimiser step of :func:`train_images` averages the loss over ``accumulation``
micro-batches, :math:`\mathcal L = \frac1A \sum_{a=1}^{A} \ell(f_\theta, x^{(a)})`, each
``ell = loss(model, batch, generator)`` (an :class:`ImageLoss`, e.g. a closure over
:func:`~scalemix.scale_space.scale_space_loss`), optionally under autocast, then clips
the gradient norm, takes an AdamW step at the learning rate
:math:`\eta_s = \eta\, \lambda(s)` of :func:`lr_factor` (a
:class:`~torch.optim.lr_scheduler.LambdaLR`), and every ``ema_every`` steps updates the
EMA :math:`\theta^\text{EMA} \leftarrow \delta\,\theta^\text{EMA} + (1-\delta)\,\theta`
(:class:`~torch.optim.swa_utils.AveragedModel`, buffers averaged too; the first update
copies :math:`\theta`). The settings are an :class:`~scalemix.training.ImageTrainConfig`.

Under ``torchrun`` (a ``torch.distributed`` process group is initialised) the model is
wrapped in ``DistributedDataParallel``; each process passes its own ``generator`` and a
``DataLoader`` over its shard (e.g. ``DistributedSampler``), and process 0 writes the
checkpoints.

**Exact resume.** With ``checkpoint_dir`` a checkpoint (see
:mod:`scalemix.training.checkpoint`) is written every ``checkpoint_every`` steps and
after the last one, holding the model and EMA weights (safetensors), the optimiser,
learning-rate schedule, gradient scaler and EMA counter, the data position (epoch,
batch, the epoch's sampler RNG snapshot) and every process's ``generator`` and global
torch RNG state. A later call with the same arguments continues from the newest valid
checkpoint; on a CPU the result equals an uninterrupted run bit for bit (on a GPU,
as far as its kernels are deterministic). Restrictions: the world size must match; the
dataset and its transforms must not draw from random sources other than the generators
above; skipping to the middle of an epoch loads the skipped batches once.

**Labelled data.** With ``labels=True`` every batch is a pair ``(images, labels)`` (a
dataset of ``(image, label)`` items, e.g. ``FashionMNIST(labels=True)``, batched by the
``DataLoader``); the labels are replaced by the null class (the model's
``num_classes``) with probability ``label_dropout``
(:func:`~scalemix.training.drop_labels`, drawn from ``generator`` before the loss's
own draws, so resume stays exact) and the loss is called as
``loss(model, images, generator, model_kwargs={"class_labels": labels})``
(a :class:`ConditionalImageLoss`).

**Precision.** ``precision="auto"`` is resolved before the first step by timing
training steps on copies (:func:`~scalemix.training.precision.choose_precision`; the
run equals the explicit run of the choice bit for bit), kept in the checkpoints for
resume, and reported as ``result.precision`` and ``state.precision``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Protocol, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from .._utils import progress_bar
from ._common import RunState, as_callbacks, backward, batch_to, optimizer_step
from ._image_resume import DataStream, _generators, rng_state, set_rng_state
from .checkpoint import STATE_FILE, find_latest_checkpoint
from .conditioning import drop_labels, resolve_null_label
from .config import ImageTrainConfig, lr_factor
from .ema import make_ema
from .precision import (
    Precision,
    PrecisionChoice,
    autocast_context,
    choose_precision,
    grad_scaler,
    step_on_copies,
)
from .results import Callback, ImageTrainResult, ImageTrainState

__all__ = ["ConditionalImageLoss", "ImageLoss", "train_images"]


class ImageLoss(Protocol):
    """A training loss: ``loss(model, batch, generator) -> scalar tensor``.

    ``batch`` is what the ``DataLoader`` yields, moved to the training device (a tensor,
    e.g. ``(b, c, h, w)`` images, or a tuple/list of tensors); all randomness comes from
    ``generator``.
    """

    def __call__(self, model: nn.Module, batch: Any, generator: torch.Generator) -> Tensor: ...


class ConditionalImageLoss(Protocol):
    """The loss of labelled data: ``loss(model, images, generator, *, model_kwargs)``.

    ``images`` is the batch's first element on the training device, ``model_kwargs`` is
    ``{"class_labels": labels}`` (int64 ``(b,)``, after label dropout), to be passed to
    every model call, e.g. ``scale_space_loss(model, degradation, images,
    generator=generator, model_kwargs=model_kwargs)``.
    """

    def __call__(
        self,
        model: nn.Module,
        images: Tensor,
        generator: torch.Generator,
        *,
        model_kwargs: dict[str, Tensor],
    ) -> Tensor: ...


def _split_batch(batch: Any) -> tuple[Tensor, Tensor]:
    """``(images, labels)`` of a labelled batch; shapes and dtypes only (no host sync)."""
    if not (isinstance(batch, list | tuple) and len(batch) == 2):
        raise ValueError(
            f"labels=True needs batches (images, labels), got {type(batch).__name__}"
            + (f" of {len(batch)} items" if isinstance(batch, list | tuple) else "")
        )
    images, labels = batch
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
        raise ValueError("labels=True needs batches (images, labels) of two tensors")
    if labels.is_floating_point() or labels.is_complex() or labels.shape != images.shape[:1]:
        raise ValueError(
            f"labels must be integers of shape ({images.shape[0]},), one per image, got "
            f"{labels.dtype} of shape {tuple(labels.shape)}"
        )
    return images, labels.long()


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _adamw(model: nn.Module, config: ImageTrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )


def _run_state(
    model: nn.Module, config: ImageTrainConfig, dev: torch.device, precision: Precision
) -> RunState:
    optimizer = _adamw(model, config)
    ema = make_ema(model, decay=config.ema_decay, warmup=None)
    ema.eval()
    return RunState(
        model,
        ema,
        optimizer,
        LambdaLR(
            optimizer,
            lambda s: lr_factor(
                s,
                warmup_steps=config.warmup_steps,
                total_steps=config.steps,
                schedule=config.lr_schedule,
            ),
        ),
        grad_scaler(precision, dev),
        torch.zeros(config.steps, dtype=torch.float32, device=dev),
    )


def _first_batch(loader: DataLoader[Any], dev: torch.device) -> Any:
    """The loader's first batch; its generators and torch's global one are put back, so
    the run draws the same batches and random numbers as without this look."""
    peek = DataStream(loader)
    batch = batch_to(next(peek), dev)
    snapshot = peek.state_dict()["rng"]
    for key, gen in _generators(loader).items():
        gen.set_state(snapshot[key])
    torch.set_rng_state(snapshot["global"])
    return batch


def _resolve_precision(
    model: nn.Module,
    loss: ImageLoss | ConditionalImageLoss,
    loader: DataLoader[Any],
    config: ImageTrainConfig,
    generator: torch.Generator,
    dev: torch.device,
    null: int | None,
    found: Path | None,
    world: int,
) -> PrecisionChoice:
    """``config.precision``, or for ``"auto"`` the checkpoint's choice (exact resume) or
    a new one; under ``torchrun`` every process takes process 0's."""
    if config.precision != "auto":
        return choose_precision(config.precision, dev)
    if found is not None:  # the choice of the run resumed, for an exact resume
        state = torch.load(found / STATE_FILE, map_location="cpu", weights_only=True)
        if state.get("precision") in ("fp32", "bf16"):
            return PrecisionChoice(state["precision"], "auto", reason=f"read from {found}")
    choice: PrecisionChoice
    if dev.type == "cpu":
        batch = _first_batch(loader, dev)

        def loss_of(net: nn.Module, gen: torch.Generator) -> Tensor:
            if null is None:
                return cast(ImageLoss, loss)(net, batch, gen)
            images, y = _split_batch(batch)
            y = drop_labels(y, config.label_dropout, null_label=null, generator=gen)
            return cast(ConditionalImageLoss, loss)(
                net, images, gen, model_kwargs={"class_labels": y}
            )

        with torch.random.fork_rng(devices=[]):
            step = step_on_copies(
                model, partial(_adamw, config=config), loss_of, generator, config.grad_clip
            )
            choice = choose_precision("auto", dev, step)
    else:
        choice = choose_precision("auto", dev)
    return cast(PrecisionChoice, _gather(choice, world)[0])


def _resume(
    run: RunState, found: Path, data: DataStream, generator: torch.Generator, rank: int, world: int
) -> tuple[int, float]:
    ckpt = run.read(found)
    state = ckpt.state
    if int(state["world_size"]) != world:
        raise ValueError(
            f"checkpoint {found} was written by {state['world_size']} processes; "
            f"exact resume needs the same number, got {world}"
        )
    run.restore(ckpt)
    data.load_state_dict(state["processes"][rank]["data"])
    set_rng_state(state["processes"][rank]["rng"], run.losses.device, generator)
    return ckpt.step, float(state["elapsed"])


def train_images(
    model: nn.Module,
    loss: ImageLoss | ConditionalImageLoss,
    loader: DataLoader[Any],
    config: ImageTrainConfig,
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    checkpoint_dir: str | Path | None = None,
    callback: Callback[ImageTrainState] = None,
    progress: bool = False,
    find_unused_parameters: bool = False,
    on_checkpoint_file: Callable[[Path], None] | None = None,
    labels: bool = False,
) -> ImageTrainResult:
    """Train ``model`` on ``loader`` for ``config.steps`` optimiser steps (module docstring).

    Args:
        model: the denoiser, already on ``device`` (its parameters are trained in place).
        loss: an :class:`ImageLoss`; with ``labels=True`` a :class:`ConditionalImageLoss`.
        loader: a ``DataLoader`` whose batches ``loss`` understands (with ``labels=True``:
            pairs ``(images, labels)``); iterated epoch after epoch.
        config: the :class:`~scalemix.training.ImageTrainConfig`.
        generator: source of the loss's randomness (on the device ``loss`` draws on);
            its state is part of every checkpoint.
        device: the training device (default: that of the model's first parameter).
        checkpoint_dir: where checkpoints go and where a run resumes from (the newest
            valid checkpoint there, falling back past damaged ones with a warning);
            ``None``: nothing is written.
        callback: a function, or a sequence of functions, called on every process after
            each optimiser step with an :class:`~scalemix.training.ImageTrainState`
            (after the EMA update, before the checkpoint).
        progress: progress on process 0 (a tqdm bar on a terminal, else a line every 5 %).
        find_unused_parameters: passed to ``DistributedDataParallel`` (needed when a step
            leaves parameters unused, e.g. a FlexiUNet below full resolution).
        on_checkpoint_file: passed to :func:`~scalemix.training.save_checkpoint` as
            ``on_file_written``.
        labels: the batches are ``(images, labels)`` pairs; the labels, after
            ``config.label_dropout`` to the model's ``num_classes``, go to the loss as
            ``model_kwargs={"class_labels": labels}`` (module docstring).

    Returns:
        An :class:`~scalemix.training.ImageTrainResult`; its ``losses`` hold one float
        per optimiser step of the run (this process's loss, the mean over micro-batches).

    Raises:
        TypeError: ``config`` is not an :class:`~scalemix.training.ImageTrainConfig`.
        ValueError: a checkpoint from another world size, an empty ``loader``, a batch
            that is not ``(images, labels)`` with ``labels=True``, or
            ``label_dropout > 0`` with labels for a model without ``num_classes``.
        CheckpointError: every checkpoint in ``checkpoint_dir`` is damaged.
    """
    if not isinstance(config, ImageTrainConfig):
        raise TypeError(f"config must be an ImageTrainConfig, got {type(config).__name__}")
    hooks = as_callbacks(callback)
    p_drop = config.label_dropout
    null = resolve_null_label(model, p_drop) if labels else -1
    rank, world = _world()
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    found = find_latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    chosen = _resolve_precision(
        model, loss, loader, config, generator, dev, null if labels else None, found, world
    )
    if progress and rank == 0 and config.precision == "auto":
        sys.stderr.write(chosen.summary() + "\n")
        sys.stderr.flush()
    run = _run_state(model, config, dev, chosen.precision)
    optimizer, ema, scaler = run.optimizer, run.ema, run.scaler
    data = DataStream(loader)
    start, elapsed, last_ckpt = 0, 0.0, None
    if found is not None:
        start, elapsed = _resume(run, found, data, generator, rank, world)
        last_ckpt = found
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters,
        )
    amp = autocast_context(chosen.precision, dev)
    clip = None
    if config.grad_clip is not None:
        clip = partial(nn.utils.clip_grad_norm_, list(model.parameters()), config.grad_clip)
    every = config.checkpoint_every
    steps = range(start + 1, config.steps + 1)
    t0 = time.perf_counter()
    for step in progress_bar(steps, enabled=progress and rank == 0, total=len(steps), desc="train"):
        model.train()
        total = torch.zeros((), device=dev)
        for micro in range(config.accumulation):
            batch = batch_to(next(data), dev)
            last = micro == config.accumulation - 1
            sync = nullcontext() if world == 1 or last else net.no_sync()  # type: ignore[operator]
            with sync:
                if labels:
                    images, y = _split_batch(batch)
                    y = drop_labels(y, p_drop, null_label=null, generator=generator)
                    with amp:
                        value = cast(ConditionalImageLoss, loss)(
                            net, images, generator, model_kwargs={"class_labels": y}
                        )
                else:
                    with amp:
                        value = cast(ImageLoss, loss)(net, batch, generator)
                backward(value / config.accumulation, scaler)
            total += value.detach().float()
        lr = float(run.lr_schedule.get_last_lr()[0])
        grad_norm = optimizer_step(optimizer, scaler, clip)
        if grad_norm is None:
            grad_norm = torch.full((), math.nan, device=dev)
        optimizer.zero_grad(set_to_none=True)
        run.lr_schedule.step()
        if step % config.ema_every == 0:
            ema.update_parameters(model)
        mean_loss = total / config.accumulation
        run.losses[step - 1] = mean_loss
        if hooks:
            now = elapsed + time.perf_counter() - t0
            state = ImageTrainState(
                step,
                start,
                mean_loss,
                grad_norm,
                lr,
                data.epoch,
                now,
                model,
                ema,
                chosen.precision,
            )
            for hook in hooks:
                hook(state)
        final = step == config.steps
        if checkpoint_dir is not None and (final or (every is not None and step % every == 0)):
            mine = {"data": data.state_dict(), "rng": rng_state(dev, generator)}
            processes = _gather(mine, world)
            if rank == 0:
                extra = {
                    "world_size": world,
                    "elapsed": elapsed + time.perf_counter() - t0,
                    "processes": processes,
                    "precision": chosen.precision,
                }
                last_ckpt = run.save(
                    checkpoint_dir,
                    step,
                    extra,
                    keep=config.keep_checkpoints,
                    on_file_written=on_checkpoint_file,
                )
    seconds = elapsed + time.perf_counter() - t0
    final_step = max(start, config.steps)
    losses = run.losses.cpu()
    return ImageTrainResult(model, ema, final_step, start, seconds, last_ckpt, losses, chosen)
