"""Training: denoising losses and a small reusable training loop."""

from __future__ import annotations

from .ema import MultiAvgFn as MultiAvgFn
from .ema import ema_warmup_decay as ema_warmup_decay
from .ema import make_ema as make_ema
from .ema import warmup_ema_multi_avg_fn as warmup_ema_multi_avg_fn
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

__all__ = [
    "Batching",
    "LossFn",
    "LossName",
    "MultiAvgFn",
    "TrainResult",
    "TrainState",
    "draw_noise_and_timesteps",
    "ema_warmup_decay",
    "eps_mse_loss",
    "evaluate_eps_mse",
    "hybrid_loss",
    "make_ema",
    "train",
    "vlb_term",
    "warmup_ema_multi_avg_fn",
]
