"""Pieces every trainer uses: batches, callbacks, the optimiser step, the run's state.

:class:`RunState` bundles what a checkpoint of any trainer holds (model, EMA, AdamW,
learning-rate schedule, gradient scaler, losses so far) and writes and restores it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import Batching
from .results import Callback

_S = TypeVar("_S")


def index_batches(
    n: int, batch_size: int, batching: Batching, generator: torch.Generator | None
) -> Iterator[Tensor]:
    """Endless index batches into ``n`` points: epochs of fresh permutations sliced into
    ``batch_size`` chunks (``"epoch"``), or ``batch_size`` draws with replacement."""
    device = generator.device if generator is not None else torch.device("cpu")
    while True:
        if batching == "replacement":
            yield torch.randint(0, n, (batch_size,), generator=generator, device=device)
        else:
            perm = torch.randperm(n, generator=generator, device=device)
            for begin in range(0, n, batch_size):
                yield perm[begin : begin + batch_size]


def select_batch(data: Tensor, index: Tensor) -> Tensor:
    """The batch ``data[index]`` of in-memory data ``(N, ...)``, with ``index`` ``(b,)``."""
    return data.index_select(0, index.to(data.device))  # = data[index], faster


def batch_to(batch: Any, device: torch.device) -> Any:
    """A ``DataLoader`` batch (a tensor, or a tuple/list of them) moved to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, list | tuple):
        return type(batch)(batch_to(b, device) for b in batch)
    return batch


def as_callbacks(
    callback: Callback[_S], deprecated: Sequence[Callable[[_S], None]] | None = None
) -> tuple[Callable[[_S], None], ...]:
    """``callback`` (one function, a sequence, or ``None``) as a tuple; ``deprecated`` is
    the old ``callbacks=`` argument, appended with a ``DeprecationWarning``."""
    found: list[Callable[[_S], None]] = []
    if callable(callback):
        found.append(callback)
    elif callback is not None:
        found.extend(callback)
    if deprecated is not None:
        warnings.warn(
            "callbacks= is deprecated; pass callback= (a function or a sequence of them)",
            DeprecationWarning,
            stacklevel=3,
        )
        found.extend(deprecated)
    for fn in found:
        if not callable(fn):
            raise TypeError(f"callback must be callable or a sequence of callables, got {fn!r}")
    return tuple(found)


def backward(loss: Tensor, scaler: torch.amp.GradScaler | None) -> None:
    """Back-propagate ``loss``, scaled by ``scaler`` if there is one."""
    torch.autograd.backward(loss if scaler is None else scaler.scale(loss))


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    clip: Callable[[], Tensor | None] | None,
) -> Tensor | None:
    """Unscale the gradients, clip them with ``clip``, step; return what ``clip`` returned."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = clip() if clip is not None else None
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return norm


@dataclass
class RunState:
    """The state of a run that a checkpoint holds, and its saving and restoring.

    Attributes:
        model: the network being trained.
        ema: its average.
        optimizer: the AdamW optimiser.
        lr_schedule: the learning-rate scheduler.
        scaler: the fp16 gradient scaler, or ``None``.
        losses: the loss of every step, ``(steps,)`` on the training device.
    """

    model: nn.Module
    ema: AveragedModel
    optimizer: torch.optim.Optimizer
    lr_schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    losses: Tensor

    def save(
        self,
        root: str | Path,
        step: int,
        extra: Mapping[str, Any],
        *,
        keep: int,
        on_file_written: Callable[[Path], None] | None = None,
    ) -> Path:
        """Write a checkpoint of step ``step`` with ``extra`` in its training state."""
        state = {
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "grad_scaler": None if self.scaler is None else self.scaler.state_dict(),
            "ema_n_averaged": int(self.ema.n_averaged),
            "losses": self.losses[:step].cpu(),
            **extra,
        }
        weights = {"model": self.model.state_dict(), "ema": self.ema.module.state_dict()}
        return save_checkpoint(
            root, step, weights=weights, state=state, keep=keep, on_file_written=on_file_written
        )

    def read(self, path: Path) -> Checkpoint:
        """Load the checkpoint at ``path`` onto the training device (nothing restored yet)."""
        return load_checkpoint(path, map_location=self.losses.device, verify=False)

    def restore(self, ckpt: Checkpoint) -> None:
        """Set every part to ``ckpt``'s (losses of a checkpoint without them: ``nan``)."""
        state = ckpt.state
        self.model.load_state_dict(ckpt.weights["model"])
        self.ema.module.load_state_dict(ckpt.weights["ema"])
        self.ema.n_averaged.fill_(int(state["ema_n_averaged"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        if self.scaler is not None and state.get("grad_scaler") is not None:
            self.scaler.load_state_dict(state["grad_scaler"])
        losses = state.get("losses")
        self.losses[: ckpt.step] = float("nan") if losses is None else losses.to(self.losses)
