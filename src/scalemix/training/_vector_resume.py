"""Checkpoints of the vector trainer :func:`scalemix.training.train` (its exact-resume state).

The loop's batches come from ``generator``: with ``batching="epoch"`` a permutation is
drawn when an epoch starts and then sliced, with ``"replacement"`` every batch is
drawn. A checkpoint stores the generator's state now and at the start of the current
epoch; a resume replays the epoch's permutation from the latter, skips the batches
already used, and then sets the generator to the former.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from ._common import RunState
from .checkpoint import find_latest_checkpoint


class VectorCheckpoints:
    """Saves and restores the state of :func:`~scalemix.training.train` in ``root``.

    Args:
        root: the checkpoint directory.
        every: steps between checkpoints (``None``: only after the last step).
        keep: complete checkpoints kept.
        run: the run's model, EMA, optimiser, schedule, scaler and losses.
        generator: the run's only source of randomness (``None``: torch's global one,
            which is not saved).
        per_epoch: batches per epoch (1 with ``batching="replacement"``).
    """

    def __init__(
        self,
        root: str | Path,
        every: int | None,
        keep: int,
        run: RunState,
        generator: torch.Generator | None,
        per_epoch: int,
    ) -> None:
        self.root, self.every, self.keep = Path(root), every, keep
        self.run, self.generator, self.per_epoch = run, generator, per_epoch
        self.epoch_start: Tensor | None = None

    def before_batch(self, step: int) -> None:
        """Remember the generator when an epoch is about to begin."""
        if self.generator is not None and (step - 1) % self.per_epoch == 0:
            self.epoch_start = self.generator.get_state()

    def restore(self, batches: Iterator[Tensor], epoch_batching: bool) -> int:
        """Load the newest valid checkpoint, if any; return its step (0 if none)."""
        found = find_latest_checkpoint(self.root)
        if found is None:
            return 0
        ckpt = self.run.read(found)
        self.run.restore(ckpt)
        state, generator = ckpt.state, self.generator
        if generator is not None:
            self.epoch_start = state["epoch_start"]
            if epoch_batching and self.epoch_start is not None:
                generator.set_state(self.epoch_start)
                for _ in range(int(state["into_epoch"])):
                    next(batches)
            generator.set_state(state["generator"])
        return ckpt.step

    def maybe_save(self, step: int, steps: int) -> None:
        """Write a checkpoint after ``step`` if it is due (every ``every`` and the last)."""
        if step != steps and (self.every is None or step % self.every):
            return
        extra = {
            "generator": None if self.generator is None else self.generator.get_state(),
            "epoch_start": self.epoch_start,
            "into_epoch": (step - 1) % self.per_epoch + 1,
        }
        self.run.save(self.root, step, extra, keep=self.keep)
