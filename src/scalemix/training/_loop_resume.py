"""Checkpoints of the 2D loop :func:`scalemix.training.train` (its exact-resume state).

The loop's batches come from ``generator``: with ``batching="epoch"`` a permutation is
drawn when an epoch starts and then sliced, with ``"replacement"`` every batch is
drawn. A checkpoint stores the generator's state now and at the start of the current
epoch; a resume replays the epoch's permutation from the latter, skips the batches
already used, and then sets the generator to the former.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from .checkpoint import find_latest_checkpoint, load_checkpoint, save_checkpoint


class LoopCheckpoints:
    """Saves and restores the state of :func:`~scalemix.training.train` in ``root``."""

    def __init__(self, root: str | Path, every: int | None, keep: int | None) -> None:
        if every is not None and (isinstance(every, bool) or not isinstance(every, int)):
            raise ValueError(f"checkpoint_every must be None or a positive int, got {every!r}")
        if every is not None and every < 1:
            raise ValueError(f"checkpoint_every must be None or a positive int, got {every!r}")
        self.root, self.every, self.keep = Path(root), every, keep
        self.epoch_start: Tensor | None = None

    def before_batch(self, step: int, per_epoch: int, generator: torch.Generator | None) -> None:
        """Remember the generator when an epoch is about to begin."""
        if generator is not None and (step - 1) % per_epoch == 0:
            self.epoch_start = generator.get_state()

    def restore(
        self,
        model: nn.Module,
        ema: AveragedModel,
        optimizer: torch.optim.Optimizer,
        lr_schedule: Any,
        losses: Tensor,
        generator: torch.Generator | None,
        batches: Iterator[Tensor],
        epoch_batching: bool,
        scaler: torch.amp.GradScaler | None = None,
    ) -> int:
        """Load the newest valid checkpoint, if any; return its step (0 if none)."""
        found = find_latest_checkpoint(self.root)
        if found is None:
            return 0
        device = losses.device
        ckpt = load_checkpoint(found, map_location=device, verify=False)
        state = ckpt.state
        model.load_state_dict(ckpt.weights["model"])
        ema.module.load_state_dict(ckpt.weights["ema"])
        ema.n_averaged.fill_(int(state["ema_n_averaged"]))
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        if scaler is not None and state.get("grad_scaler") is not None:
            scaler.load_state_dict(state["grad_scaler"])
        losses[: ckpt.step] = state["losses"].to(device)
        if generator is not None:
            self.epoch_start = state["epoch_start"]
            if epoch_batching and self.epoch_start is not None:
                generator.set_state(self.epoch_start)
                for _ in range(int(state["into_epoch"])):
                    next(batches)
            generator.set_state(state["generator"])
        return ckpt.step

    def maybe_save(
        self,
        step: int,
        steps: int,
        per_epoch: int,
        model: nn.Module,
        ema: AveragedModel,
        optimizer: torch.optim.Optimizer,
        lr_schedule: Any,
        losses: Tensor,
        generator: torch.Generator | None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        """Write a checkpoint after ``step`` if it is due (every ``every`` and the last)."""
        if step != steps and (self.every is None or step % self.every):
            return
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "lr_schedule": lr_schedule.state_dict(),
            "grad_scaler": None if scaler is None else scaler.state_dict(),
            "ema_n_averaged": int(ema.n_averaged),
            "losses": losses[:step].cpu(),
            "generator": None if generator is None else generator.get_state(),
            "epoch_start": self.epoch_start,
            "into_epoch": (step - 1) % per_epoch + 1,
        }
        save_checkpoint(
            self.root,
            step,
            weights={"model": model.state_dict(), "ema": ema.module.state_dict()},
            state=state,
            keep=self.keep,
        )
