"""Training: denoising losses and a small reusable training loop."""

from __future__ import annotations

from .checkpoint import Checkpoint as Checkpoint
from .checkpoint import CheckpointError as CheckpointError
from .checkpoint import find_latest_checkpoint as find_latest_checkpoint
from .checkpoint import list_checkpoints as list_checkpoints
from .checkpoint import load_checkpoint as load_checkpoint
from .checkpoint import save_checkpoint as save_checkpoint
from .checkpoint import verify_checkpoint as verify_checkpoint
from .ema import MultiAvgFn as MultiAvgFn
from .ema import ema_warmup_decay as ema_warmup_decay
from .ema import make_ema as make_ema
from .ema import warmup_ema_multi_avg_fn as warmup_ema_multi_avg_fn
from .ensemble import EmaSchedule as EmaSchedule
from .ensemble import EnsembleResult as EnsembleResult
from .ensemble import periodic_ema as periodic_ema
from .ensemble import train_ensemble as train_ensemble
from .ensemble import warmup_ema as warmup_ema
from .image_config import ImageTrainConfig as ImageTrainConfig
from .image_config import LRScheduleName as LRScheduleName
from .image_config import lr_factor as lr_factor
from .image_trainer import ImageLoss as ImageLoss
from .image_trainer import ImageTrainResult as ImageTrainResult
from .image_trainer import ImageTrainState as ImageTrainState
from .image_trainer import train_images as train_images
from .loop import Batching as Batching
from .loop import LossName as LossName
from .loop import TrainResult as TrainResult
from .loop import TrainState as TrainState
from .loop import train as train
from .losses import LossFn as LossFn
from .losses import draw_noise_and_timesteps as draw_noise_and_timesteps
from .losses import eps_mse_loss as eps_mse_loss
from .losses import evaluate_eps_mse as evaluate_eps_mse
from .losses import hybrid_loss as hybrid_loss
from .losses import vlb_term as vlb_term
from .precision import Precision as Precision
from .precision import autocast_context as autocast_context
from .precision import compile_model as compile_model
from .precision import grad_scaler as grad_scaler

__all__ = [
    "Batching",
    "Checkpoint",
    "CheckpointError",
    "EmaSchedule",
    "EnsembleResult",
    "ImageLoss",
    "ImageTrainConfig",
    "ImageTrainResult",
    "ImageTrainState",
    "LRScheduleName",
    "LossFn",
    "LossName",
    "MultiAvgFn",
    "Precision",
    "TrainResult",
    "TrainState",
    "autocast_context",
    "compile_model",
    "draw_noise_and_timesteps",
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
