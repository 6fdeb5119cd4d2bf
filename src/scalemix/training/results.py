"""What the trainers hand out: the per-step states their callbacks receive, and results.

Every result derives from :class:`TrainingResult` and so has

* ``ema``: the averaged network(s), ready to sample with;
* ``losses``: a float32 CPU tensor with the training loss of every optimiser step of
  the run, shape ``(steps,)`` (``(N, steps)`` for an ensemble); after a resume the
  steps before it come from the checkpoint;
* ``seconds``: the wall-clock duration of the training loop;
* ``export_pretrained(save_directory, scheduler=..., degradation=...)``:
  :func:`scalemix.hub.export_pretrained` of ``ema``.

A trainer's ``callback`` is one function or a sequence of functions, each called with
the trainer's state after every optimiser step.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from typing_extensions import TypedDict, Unpack

from .. import hub
from .precision import Precision, PrecisionChoice

if TYPE_CHECKING:
    from ..degradation import BlurDegradation, ScaleSpaceDegradation
    from ..scheduler import DDPMScheduler

__all__ = [
    "Callback",
    "EnsembleResult",
    "EnsembleState",
    "ExportOptions",
    "ImageTrainResult",
    "ImageTrainState",
    "TrainResult",
    "TrainState",
    "TrainingResult",
]

_S = TypeVar("_S")

#: A trainer's ``callback=``: one function of the step's state, or a sequence of them
#: (called in order), or ``None``.
Callback = Callable[[_S], None] | Sequence[Callable[[_S], None]] | None


class ExportOptions(TypedDict, total=False):
    """The keyword arguments of :meth:`TrainingResult.export_pretrained`.

    Attributes:
        scheduler: the diffusion process the model was trained with, written as
            ``scheduler_config.json``.
        degradation: the scale-space or blur degradation it was trained with, written
            as ``degradation_config.json``.
    """

    scheduler: DDPMScheduler | None
    degradation: ScaleSpaceDegradation | BlurDegradation | None


class TrainingResult(abc.ABC):
    """What every result of a trainer has (module docstring).

    Attributes:
        losses: float32 CPU tensor, the loss of every optimiser step, ``(steps,)``
            (``(N, steps)`` for an ensemble).
        seconds: wall-clock duration of the training loop.
    """

    losses: Tensor
    seconds: float

    @property
    @abc.abstractmethod
    def ema(self) -> nn.Module:
        """The averaged network, ready to sample with."""

    def export_pretrained(
        self, save_directory: str | os.PathLike[str], **options: Unpack[ExportOptions]
    ) -> Path:
        """Write the final EMA model as a pretrained folder (``config.json`` + weights).

        :func:`scalemix.hub.export_pretrained` of :attr:`ema`: its ``save_pretrained``,
        with the ``scheduler`` and ``degradation`` configs if given (see
        :class:`ExportOptions`). Needs the extra ``scalemix[hub]``.

        Returns:
            ``save_directory`` as a :class:`~pathlib.Path`.
        """
        return hub.export_pretrained(self.ema, save_directory, **options)


class _AveragedResult(TrainingResult):
    """A result of one model and its :class:`~torch.optim.swa_utils.AveragedModel`."""

    ema_model: AveragedModel

    @property
    def ema(self) -> nn.Module:
        """The averaged network (``ema_model.module``), ready to sample with."""
        return self.ema_model.module


@dataclass(frozen=True)
class TrainState:
    """What the callback of :func:`~scalemix.training.train` receives after each step.

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
class TrainResult(_AveragedResult):
    """The outcome of :func:`~scalemix.training.train`.

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


@dataclass(frozen=True)
class ImageTrainState:
    """What the callback of :func:`~scalemix.training.train_images` receives after each step.

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
        precision: the precision the run trains in (``"auto"`` resolved).
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
    precision: Precision = "fp32"


@dataclass
class ImageTrainResult(_AveragedResult):
    """The outcome of :func:`~scalemix.training.train_images`.

    Attributes:
        model: the trained model (the object passed in).
        ema_model: the :class:`~torch.optim.swa_utils.AveragedModel`.
        step: the last step done.
        start_step: the step this call resumed from (0 for a fresh run).
        seconds: training wall time, summed over resumed calls.
        checkpoint: the last checkpoint written or resumed from, or ``None``.
        losses: float32 CPU tensor ``(steps,)``: entry ``s - 1`` is the loss of optimiser
            step ``s`` on this process (the mean over its micro-batches, not averaged
            over processes); the steps before ``start_step`` come from the checkpoint
            (``nan`` where it holds none).
        precision: the :class:`~scalemix.training.precision.PrecisionChoice` of the run: the
            precision it trained in (``precision.precision``) and, for ``"auto"`` on a
            CPU, the measured seconds per step of each candidate (``precision.seconds``).
    """

    model: nn.Module
    ema_model: AveragedModel
    step: int
    start_step: int
    seconds: float
    checkpoint: Path | None
    losses: Tensor
    precision: PrecisionChoice = field(default_factory=lambda: PrecisionChoice("fp32", "fp32"))


@dataclass(frozen=True)
class EnsembleState:
    """What the callback of :func:`~scalemix.training.train_ensemble` receives after each step.

    Attributes:
        step: optimiser steps done (1 .. ``steps``).
        losses: detached tensor ``(N,)`` on the device, every copy's loss of this step
            (reading it synchronises with the device).
        lr: the learning rate used by this step.
    """

    step: int
    losses: Tensor
    lr: float


@dataclass
class EnsembleResult(TrainingResult):
    """The outcome of :func:`~scalemix.training.train_ensemble`.

    Attributes:
        models: the ``N`` trained models (the objects that were passed in).
        ema_models: ``N`` copies holding the EMA weights, ready to sample with.
        losses: float32 CPU tensor ``(N, steps)``, every copy's loss at every step.
        seconds: wall-clock duration of the loop.
        vectorized: whether the forward ran under ``vmap`` (else one copy at a time).
    """

    models: list[nn.Module]
    ema_models: list[nn.Module]
    losses: Tensor
    seconds: float
    vectorized: bool

    @property
    def ema(self) -> nn.ModuleList:
        """The ``N`` averaged networks as one :class:`~torch.nn.ModuleList` (``ema[k]``)."""
        return nn.ModuleList(self.ema_models)

    def export_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        index: int | None = None,
        **options: Unpack[ExportOptions],
    ) -> Path:
        """Write EMA model ``index`` as a pretrained folder, or every one into a subfolder.

        Args:
            save_directory: the folder to write.
            index: the copy to export; ``None``: copy ``k`` goes to
                ``save_directory / f"copy_{k}"`` for every ``k``.
            **options: ``scheduler`` and ``degradation``, see :class:`ExportOptions`.

        Returns:
            ``save_directory`` as a :class:`~pathlib.Path`.
        """
        if index is not None:
            return hub.export_pretrained(self.ema_models[index], save_directory, **options)
        for k, model in enumerate(self.ema_models):
            hub.export_pretrained(model, Path(save_directory) / f"copy_{k}", **options)
        return Path(save_directory)
