"""Resumable pieces of the image trainer :func:`scalemix.training.train_images`: the data
stream and the RNG snapshots.

A ``DataLoader`` draws its order from up to three sources when an epoch starts: the
sampler's own generator (``RandomSampler(generator=...)``), the loader's ``generator``
(worker seeds; the sampler's seed when the sampler has none) and otherwise torch's
global generator. :class:`DataStream` snapshots all three when an epoch starts and
counts the batches it hands out; restoring the snapshot, re-creating the epoch's
iterator and skipping the counted batches gives exactly the batches an uninterrupted
run would see next. A sampler with ``set_epoch`` (``DistributedSampler``) is told the
epoch number first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader


def _generators(loader: DataLoader[Any]) -> dict[str, torch.Generator]:
    found: dict[str, torch.Generator] = {}
    if isinstance(loader.generator, torch.Generator):
        found["loader"] = loader.generator
    samplers = {"sampler": loader.sampler, "batch_sampler": loader.batch_sampler}
    for name, sampler in samplers.items():
        inner = getattr(sampler, "sampler", None)
        for key, obj in ((name, sampler), (f"{name}.sampler", inner)):
            gen = getattr(obj, "generator", None)
            if isinstance(gen, torch.Generator) and all(gen is not g for g in found.values()):
                found[key] = gen
    return found


def _set_epoch(loader: DataLoader[Any], epoch: int) -> None:
    for obj in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
        set_epoch = getattr(obj, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)


class DataStream:
    """Endless batches of a ``DataLoader``, epoch after epoch, with a resumable position.

    Attributes:
        epoch: the current epoch (0-based).
        index: batches handed out in the current epoch.
    """

    def __init__(self, loader: DataLoader[Any]) -> None:
        self.loader = loader
        self.epoch = 0
        self.index = 0
        self._snapshot: dict[str, Tensor] = {}
        self._it: Iterator[Any] | None = None

    def _start(self, snapshot: dict[str, Tensor] | None) -> Iterator[Any]:
        _set_epoch(self.loader, self.epoch)
        gens = _generators(self.loader)
        if snapshot is None:
            snapshot = {k: g.get_state() for k, g in gens.items()}
            snapshot["global"] = torch.get_rng_state()
        else:
            for key, gen in gens.items():
                if key in snapshot:
                    gen.set_state(snapshot[key])
            torch.set_rng_state(snapshot["global"])
        self._snapshot = snapshot
        self._it = iter(self.loader)
        return self._it

    def __next__(self) -> Any:
        it = self._it if self._it is not None else self._start(None)
        try:
            batch = next(it)
        except StopIteration:
            if self.index == 0:
                raise ValueError("the DataLoader yields no batch in an epoch") from None
            self.epoch, self.index = self.epoch + 1, 0
            batch = next(self._start(None))
        self.index += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The position and the epoch's RNG snapshot (tensors, torch-loadable)."""
        return {"epoch": self.epoch, "index": self.index, "rng": dict(self._snapshot)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``'s position: replay the epoch's start and skip its batches.

        Skipping loads the skipped batches (at most one epoch). Torch's global generator
        is left in the epoch's replayed state; the caller restores it afterwards.
        """
        self.epoch, self.index = int(state["epoch"]), 0
        self._it = None
        if not state["rng"]:
            return
        it = self._start(dict(state["rng"]))
        for _ in range(int(state["index"])):
            next(it)
            self.index += 1


def rng_state(device: torch.device, generator: torch.Generator) -> dict[str, Tensor]:
    """Snapshot of ``generator``, torch's global CPU generator and the device's CUDA one."""
    state = {"generator": generator.get_state(), "global": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Tensor], device: torch.device, gen: torch.Generator) -> None:
    """Inverse of :func:`rng_state`."""
    gen.set_state(state["generator"])
    torch.set_rng_state(state["global"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
