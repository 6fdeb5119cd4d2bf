"""Training: denoising losses and a small reusable training loop."""

from __future__ import annotations

from .ensemble import EmaSchedule as EmaSchedule
from .ensemble import EnsembleResult as EnsembleResult
from .ensemble import periodic_ema as periodic_ema
from .ensemble import train_ensemble as train_ensemble
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
    "EmaSchedule",
    "EnsembleResult",
    "LossFn",
    "LossName",
    "Precision",
    "TrainResult",
    "TrainState",
    "autocast_context",
    "compile_model",
    "draw_noise_and_timesteps",
    "eps_mse_loss",
    "evaluate_eps_mse",
    "grad_scaler",
    "hybrid_loss",
    "periodic_ema",
    "train",
    "train_ensemble",
    "vlb_term",
]
