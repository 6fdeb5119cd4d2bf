"""Training: denoising losses, three trainers sharing one kind of config and result.

* :func:`train` (vector data in memory) and :func:`train_ensemble` (``N`` copies at
  once) take a :class:`TrainConfig`; :func:`train_images` (a ``DataLoader``, any loss)
  takes an :class:`ImageTrainConfig`. Both configs derive from :class:`BaseTrainConfig`.
* Their results derive from :class:`TrainingResult`: ``ema``, ``losses``, ``seconds``
  and ``export_pretrained``.
* Each takes ``callback=``, a function or a sequence of functions of its per-step state.
* Each takes labelled data; the labels reach the model as
  ``model_kwargs={"class_labels": labels}``, after :func:`drop_labels` with the
  config's ``label_dropout``.
"""

from __future__ import annotations

from .checkpoint import Checkpoint as Checkpoint
from .checkpoint import CheckpointError as CheckpointError
from .checkpoint import find_latest_checkpoint as find_latest_checkpoint
from .checkpoint import list_checkpoints as list_checkpoints
from .checkpoint import load_checkpoint as load_checkpoint
from .checkpoint import save_checkpoint as save_checkpoint
from .checkpoint import verify_checkpoint as verify_checkpoint
from .conditioning import drop_labels as drop_labels
from .config import BaseTrainConfig as BaseTrainConfig
from .config import Batching as Batching
from .config import ImageTrainConfig as ImageTrainConfig
from .config import LossName as LossName
from .config import LRScheduleName as LRScheduleName
from .config import TrainConfig as TrainConfig
from .config import TrainSettings as TrainSettings
from .config import lr_factor as lr_factor
from .ema import MultiAvgFn as MultiAvgFn
from .ema import ema_warmup_decay as ema_warmup_decay
from .ema import make_ema as make_ema
from .ema import warmup_ema_multi_avg_fn as warmup_ema_multi_avg_fn
from .ensemble_trainer import EmaSchedule as EmaSchedule
from .ensemble_trainer import periodic_ema as periodic_ema
from .ensemble_trainer import train_ensemble as train_ensemble
from .ensemble_trainer import warmup_ema as warmup_ema
from .image_trainer import ConditionalImageLoss as ConditionalImageLoss
from .image_trainer import ImageLoss as ImageLoss
from .image_trainer import train_images as train_images
from .losses import LossFn as LossFn
from .losses import draw_noise_and_timesteps as draw_noise_and_timesteps
from .losses import eps_mse_loss as eps_mse_loss
from .losses import evaluate_eps_mse as evaluate_eps_mse
from .losses import hybrid_loss as hybrid_loss
from .losses import vlb_term as vlb_term
from .precision import Precision as Precision
from .precision import PrecisionChoice as PrecisionChoice
from .precision import autocast_context as autocast_context
from .precision import choose_precision as choose_precision
from .precision import compile_model as compile_model
from .precision import grad_scaler as grad_scaler
from .results import Callback as Callback
from .results import EnsembleResult as EnsembleResult
from .results import EnsembleState as EnsembleState
from .results import ExportOptions as ExportOptions
from .results import ImageTrainResult as ImageTrainResult
from .results import ImageTrainState as ImageTrainState
from .results import TrainingResult as TrainingResult
from .results import TrainResult as TrainResult
from .results import TrainState as TrainState
from .vector_trainer import train as train

__all__ = [
    "BaseTrainConfig",
    "Batching",
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "ConditionalImageLoss",
    "EmaSchedule",
    "EnsembleResult",
    "EnsembleState",
    "ExportOptions",
    "ImageLoss",
    "ImageTrainConfig",
    "ImageTrainResult",
    "ImageTrainState",
    "LRScheduleName",
    "LossFn",
    "LossName",
    "MultiAvgFn",
    "Precision",
    "PrecisionChoice",
    "TrainConfig",
    "TrainResult",
    "TrainSettings",
    "TrainState",
    "TrainingResult",
    "autocast_context",
    "choose_precision",
    "compile_model",
    "draw_noise_and_timesteps",
    "drop_labels",
    "ema_warmup_decay",
    "eps_mse_loss",
    "evaluate_eps_mse",
    "find_latest_checkpoint",
    "grad_scaler",
    "hybrid_loss",
    "list_checkpoints",
    "load_checkpoint",
    "lr_factor",
    "make_ema",
    "periodic_ema",
    "save_checkpoint",
    "train",
    "train_ensemble",
    "train_images",
    "verify_checkpoint",
    "vlb_term",
    "warmup_ema",
    "warmup_ema_multi_avg_fn",
]
