"""The training callback of ``train.py`` (log lines, sample grids) and its final FID."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ssd_common import (
    LOG_FILE,
    RunConfig,
    generate,
    inception_features_of,
    real_images,
    save_image_grid,
    seeded_generator,
    trim_log,
)
from torch import Tensor

from scalemix.training import ImageTrainState


class RunLogger:
    """The training callback: log lines, sample grids, the log trimmed on resume."""

    def __init__(self, config: RunConfig, out: Path, degradation: Any, main: bool) -> None:
        self.config, self.out, self.degradation, self.main = config, out, degradation, main
        self.precision: Any = "fp32"
        self.device = torch.device("cpu")
        self.losses: list[Tensor] = []
        self.timesteps: list[Tensor] = []
        self.last_grid: Path | None = None
        self.bar: Any = None

    def __call__(self, state: ImageTrainState) -> None:
        preset = self.config.preset
        final = state.step == preset.iterations
        if state.step == state.start_step + 1 and self.main:
            trim_log(self.out / LOG_FILE, state.start_step)
        self.losses.append(state.loss)
        if state.step % preset.log_every == 0 or final:
            self.log(state)
        if self.main and (state.step % preset.sample_every == 0 or final):
            images = generate(
                state.ema_model.module,
                self.degradation,
                preset.num_sample_images,
                batch_size=preset.num_sample_images,
                steps=preset.sample_steps,
                generator=seeded_generator(self.device, self.config.seed, 1_000_003),
                device=self.device,
                precision=self.precision,
                options=self.config.scale_space,
            )
            self.last_grid = self.out / "samples" / f"step_{state.step:08d}.png"
            save_image_grid(images, self.last_grid)

    def log(self, state: ImageTrainState) -> None:
        losses = torch.stack(self.losses)
        mean = losses.mean()
        if dist.is_initialized():
            dist.all_reduce(mean, op=dist.ReduceOp.AVG)
        by_res: dict[int, list[float]] = {}
        for loss, t in zip(losses.tolist(), torch.stack(self.timesteps).tolist(), strict=True):
            by_res.setdefault(self.degradation.resolution(int(t)), []).append(loss)
        record = {
            "step": state.step,
            "loss": float(mean),
            "lr": state.lr,
            "grad_norm": float(state.grad_norm),
            "time": round(state.elapsed, 3),
            "loss_by_resolution": {r: sum(v) / len(v) for r, v in by_res.items()},
        }
        self.losses.clear()
        self.timesteps.clear()
        if self.main:
            with (self.out / LOG_FILE).open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{record['loss']:.4f}")


def final_fid(
    n: int,
    model: torch.nn.Module,
    degradation: Any,
    dataset: Any,
    config: RunConfig,
    device: torch.device,
    precision: Any,
) -> float:
    """FID between ``n`` EMA samples and ``n`` training images (a quick indicator only)."""
    from scalemix.metrics.fid import fid_from_features, inception_features, load_inception

    inception = load_inception(device)
    batch = min(n, 64)
    gen = seeded_generator(device, config.seed, 2_000_003)
    fake = inception_features_of(
        lambda b: generate(
            model,
            degradation,
            b,
            batch_size=b,
            steps=config.preset.sample_steps,
            generator=gen,
            device=device,
            precision=precision,
            options=config.scale_space,
        ),
        n,
        batch,
        inception,
    )
    real = inception_features(real_images(dataset, n, config.seed), inception, batch_size=batch)
    return fid_from_features(fake, real)
