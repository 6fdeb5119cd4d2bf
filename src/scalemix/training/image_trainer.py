r"""A training loop for image denoisers: any model, any loss, a ``DataLoader`` of images.

One optimiser step of :func:`train_images` averages the loss over ``accumulation``
micro-batches, :math:`\mathcal L = \frac1A \sum_{a=1}^{A} \ell(f_\theta, x^{(a)})`, each
``ell = loss(model, batch, generator)`` (an :class:`ImageLoss`, e.g. a closure over
:func:`~scalemix.scale_space.scale_space_loss`), optionally under autocast, then clips
the gradient norm, takes an AdamW step at the learning rate
:math:`\eta_s = \eta\, \lambda(s)` of :func:`lr_factor` (a
:class:`~torch.optim.lr_scheduler.LambdaLR`), and every ``ema_every`` steps updates the
EMA :math:`\theta^\text{EMA} \leftarrow \delta\,\theta^\text{EMA} + (1-\delta)\,\theta`
(:class:`~torch.optim.swa_utils.AveragedModel`, buffers averaged too; the first update
copies :math:`\theta`).

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
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from .._utils import progress_bar
from ._resumable import DataStream, rng_state, set_rng_state
from .checkpoint import find_latest_checkpoint, load_checkpoint, save_checkpoint
from .ema import make_ema
from .image_config import ImageTrainConfig, lr_factor
from .precision import autocast_context

if TYPE_CHECKING:
    from ..degradation import BlurDegradation, ScaleSpaceDegradation
    from ..scheduler import DDPMScheduler

__all__ = [
    "ImageLoss",
    "ImageTrainResult",
    "ImageTrainState",
    "train_images",
]


class ImageLoss(Protocol):
    """A training loss: ``loss(model, batch, generator) -> scalar tensor``.

    ``batch`` is what the ``DataLoader`` yields, moved to the training device (a tensor,
    e.g. ``(b, c, h, w)`` images, or a tuple/list of tensors); all randomness comes from
    ``generator``.
    """

    def __call__(self, model: nn.Module, batch: Any, generator: torch.Generator) -> Tensor: ...


@dataclass(frozen=True)
class ImageTrainState:
    """What the callback of :func:`train_images` receives after each optimiser step.

    Attributes:
        step: optimiser steps done (``start_step + 1 .. steps``).
        start_step: the step this call started from (0, or a checkpoint's step).
        loss: 0-d detached tensor on the device, the step's loss (mean over
            micro-batches); converting it to a float synchronises with the device.
        grad_norm: 0-d tensor, the gradient norm before clipping (``nan`` without
            clipping).
        lr: learning rate of this step.
        epoch: the data epoch of the step's last batch.
        elapsed: training wall time in seconds so far, summed over resumed calls.
        model: the model being trained (unwrapped).
        ema_model: its running average (``ema_model.module`` is the averaged network).
    """

    step: int
    start_step: int
    loss: Tensor
    grad_norm: Tensor
    lr: float
    epoch: int
    elapsed: float
    model: nn.Module
    ema_model: AveragedModel


@dataclass
class ImageTrainResult:
    """The outcome of :func:`train_images`.

    Attributes:
        model: the trained model (the object passed in).
        ema_model: the :class:`~torch.optim.swa_utils.AveragedModel`.
        step: the last step done.
        start_step: the step this call resumed from (0 for a fresh run).
        seconds: training wall time, summed over resumed calls.
        checkpoint: the last checkpoint written or resumed from, or ``None``.
    """

    model: nn.Module
    ema_model: AveragedModel
    step: int
    start_step: int
    seconds: float
    checkpoint: Path | None

    @property
    def ema(self) -> nn.Module:
        """The averaged network."""
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


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, list | tuple):
        return type(batch)(_to(b, device) for b in batch)
    return batch


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


def train_images(
    model: nn.Module,
    loss: ImageLoss,
    loader: DataLoader[Any],
    config: ImageTrainConfig,
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    checkpoint_dir: str | Path | None = None,
    callback: Callable[[ImageTrainState], None] | None = None,
    progress: bool = False,
    find_unused_parameters: bool = False,
    on_checkpoint_file: Callable[[Path], None] | None = None,
) -> ImageTrainResult:
    """Train ``model`` on ``loader`` for ``config.steps`` optimiser steps (module docstring).

    Args:
        model: the denoiser, already on ``device`` (its parameters are trained in place).
        loss: an :class:`ImageLoss`.
        loader: a ``DataLoader`` whose batches ``loss`` understands; iterated epoch after
            epoch.
        config: the :class:`ImageTrainConfig`.
        generator: source of the loss's randomness (on the device ``loss`` draws on);
            its state is part of every checkpoint.
        device: the training device (default: that of the model's first parameter).
        checkpoint_dir: where checkpoints go and where a run resumes from (the newest
            valid checkpoint there, falling back past damaged ones with a warning);
            ``None``: nothing is written.
        callback: called on every process after each optimiser step with an
            :class:`ImageTrainState` (after the EMA update, before the checkpoint).
        progress: progress on process 0 (a tqdm bar on a terminal, else a line every 5 %).
        find_unused_parameters: passed to ``DistributedDataParallel`` (needed when a step
            leaves parameters unused, e.g. a FlexiUNet below full resolution).
        on_checkpoint_file: passed to :func:`~scalemix.training.save_checkpoint` as
            ``on_file_written``.

    Returns:
        An :class:`ImageTrainResult`.

    Raises:
        TypeError: ``config`` is not an :class:`ImageTrainConfig`.
        ValueError: a checkpoint from another world size, or an empty ``loader``.
        CheckpointError: every checkpoint in ``checkpoint_dir`` is damaged.
    """
    if not isinstance(config, ImageTrainConfig):
        raise TypeError(f"config must be an ImageTrainConfig, got {type(config).__name__}")
    rank, world = _world()
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    schedule = LambdaLR(
        optimizer,
        lambda s: lr_factor(
            s,
            warmup_steps=config.warmup_steps,
            total_steps=config.steps,
            schedule=config.lr_schedule,
        ),
    )
    scaler = torch.amp.GradScaler(dev.type, enabled=config.precision == "fp16")
    ema = make_ema(model, decay=config.ema_decay, warmup=None)
    ema.eval()
    data = DataStream(loader)
    start, elapsed, last_ckpt = 0, 0.0, None
    found = find_latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if found is not None:
        ckpt = load_checkpoint(found, map_location=dev, verify=False)
        state = ckpt.state
        if int(state["world_size"]) != world:
            raise ValueError(
                f"checkpoint {found} was written by {state['world_size']} processes; "
                f"exact resume needs the same number, got {world}"
            )
        model.load_state_dict(ckpt.weights["model"])
        ema.module.load_state_dict(ckpt.weights["ema"])
        ema.n_averaged.fill_(int(state["ema_n_averaged"]))
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["lr_schedule"])
        scaler.load_state_dict(state["grad_scaler"])
        data.load_state_dict(state["processes"][rank]["data"])
        set_rng_state(state["processes"][rank]["rng"], dev, generator)
        start, elapsed, last_ckpt = ckpt.step, float(state["elapsed"]), found
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters,
        )
    amp = autocast_context(config.precision, dev)
    every = config.checkpoint_every
    steps = range(start + 1, config.steps + 1)
    t0 = time.perf_counter()
    for step in progress_bar(steps, enabled=progress and rank == 0, total=len(steps), desc="train"):
        model.train()
        total = torch.zeros((), device=dev)
        for micro in range(config.accumulation):
            batch = _to(next(data), dev)
            last = micro == config.accumulation - 1
            sync = nullcontext() if world == 1 or last else net.no_sync()  # type: ignore[operator]
            with sync:
                with amp:
                    value = loss(net, batch, generator)
                scaler.scale(value / config.accumulation).backward()  # type: ignore[no-untyped-call]
            total += value.detach().float()
        scaler.unscale_(optimizer)
        if config.grad_clip is not None:
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        else:
            grad_norm = torch.full((), math.nan, device=dev)
        lr = float(schedule.get_last_lr()[0])
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        if step % config.ema_every == 0:
            ema.update_parameters(model)
        if callback is not None:
            mean_loss = total / config.accumulation
            now = elapsed + time.perf_counter() - t0
            callback(
                ImageTrainState(step, start, mean_loss, grad_norm, lr, data.epoch, now, model, ema)
            )
        final = step == config.steps
        if checkpoint_dir is not None and (final or (every is not None and step % every == 0)):
            mine = {"data": data.state_dict(), "rng": rng_state(dev, generator)}
            processes = _gather(mine, world)
            if rank == 0:
                state = {
                    "step": step,
                    "world_size": world,
                    "elapsed": elapsed + time.perf_counter() - t0,
                    "optimizer": optimizer.state_dict(),
                    "lr_schedule": schedule.state_dict(),
                    "grad_scaler": scaler.state_dict(),
                    "ema_n_averaged": int(ema.n_averaged),
                    "processes": processes,
                }
                last_ckpt = save_checkpoint(
                    checkpoint_dir,
                    step,
                    weights={"model": model.state_dict(), "ema": ema.module.state_dict()},
                    state=state,
                    keep=config.keep_checkpoints,
                    on_file_written=on_checkpoint_file,
                )
    seconds = elapsed + time.perf_counter() - t0
    return ImageTrainResult(model, ema, max(start, config.steps), start, seconds, last_ckpt)
