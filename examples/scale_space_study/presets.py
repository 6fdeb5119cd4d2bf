"""Presets of the real-image Scale Space Diffusion study.

Every model of a study (SSD on a deeper pyramid, SSD on 2 levels, the full-resolution
DDPM baseline) shares the preset: the same FlexiUNet, initial weights, data order,
optimiser, EMA and sampling steps. Only the number of pyramid levels differs.

``default``: Fashion-MNIST padded to 32 px (1 channel), a 0.4M-parameter FlexiUNet
(base 16, multipliers (1, 2, 2), one residual block per level, attention at 8 px),
1,500 iterations of batch 64 (1.6 epochs) with checkpoints at 500 / 1,000 / 1,500, KID
and FID of 2,000 samples at the last checkpoint and 500 at the earlier ones, 50 sampling
steps. It is sized so that the three trainings, run side by side with one torch thread
each, and the evaluation (Inception features of 9,000 images, about 0.25 s each on one
core, are the largest part) finish on a 2-core CPU in about an hour.

``quick``: the same pipeline at toy size (a 0.1M-parameter network, 300 iterations,
a 4,000-image subset, 128 evaluation samples); minutes on 2 cores.

``gpu``: Fashion-MNIST at 32 px (the largest size it has) with a 4.5M-parameter
network for a fixed budget on one GPU (``benchmarks/gpu_suite.py --parts ssd_real``).

``celeba-small``: the CelebA 64 px ``small`` preset of ``examples/celeba_scale_space``
(base 64, (1, 2, 2, 2), 2 residual blocks, attention at 16 and 8, 20k iterations,
4-level SSD), read from ``--data``; for a GPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

DatasetName = Literal["fashion-mnist", "celeba"]


@dataclass(frozen=True)
class StudyPreset:
    """Everything the models of a study share.

    Attributes:
        name: preset name.
        dataset: ``fashion-mnist`` or ``celeba``.
        image_size: training resolution.
        channels: image channels (1 for Fashion-MNIST, 3 for CelebA).
        ssd_levels: pyramid levels of the deeper SSD model (the other has 2).
        base_channels, channel_mult, num_res_blocks, attention_resolutions, num_heads:
            the FlexiUNet.
        batch_size: training batch.
        lr: AdamW learning rate (constant after ``warmup_steps``).
        warmup_steps: linear warm-up.
        ema_decay: EMA decay per step.
        iterations: training steps.
        num_checkpoints: evenly spaced checkpoints, all kept and all evaluated.
        random_flip: flip half of each batch horizontally (not for Fashion-MNIST, whose
            shoes all point the same way).
        sample_steps: respaced sampling steps (every resolution change kept).
        eval_samples: samples per model at the last checkpoint (and real images per
            split).
        curve_samples: samples per model at the earlier checkpoints.
        sample_batch: sampling batch.
        time_batch: batch of the side-by-side sampling-time measurement.
        time_repeats: timed repetitions per model.
        train_subset: use only the first ``train_subset`` training images (``None``: all).
        kid_subset: subset size of the customary KID subset statistics.
    """

    name: str
    dataset: DatasetName
    image_size: int
    channels: int
    ssd_levels: int
    base_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    num_heads: int
    batch_size: int
    lr: float
    warmup_steps: int
    ema_decay: float
    iterations: int
    num_checkpoints: int
    random_flip: bool
    sample_steps: int
    eval_samples: int
    curve_samples: int
    sample_batch: int
    time_batch: int
    time_repeats: int
    train_subset: int | None = None
    kid_subset: int = 1000

    def checkpoint_steps(self) -> list[int]:
        """The evaluated training steps (the last one is ``iterations``)."""
        n = self.num_checkpoints
        return sorted({max(1, round(self.iterations * (i + 1) / n)) for i in range(n)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyPreset:
        values = dict(data)
        for key in ("channel_mult", "attention_resolutions"):
            values[key] = tuple(values[key])
        return cls(**values)


_FASHION = {
    "dataset": "fashion-mnist",
    "image_size": 32,
    "channels": 1,
    "ssd_levels": 3,
    "num_heads": 2,
    "random_flip": False,
    "num_checkpoints": 3,
}

PRESETS: dict[str, StudyPreset] = {
    "default": StudyPreset(
        name="default",
        base_channels=16,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        batch_size=64,
        lr=5e-4,
        warmup_steps=200,
        ema_decay=0.995,
        iterations=1500,
        sample_steps=50,
        eval_samples=2000,
        curve_samples=500,
        sample_batch=100,
        time_batch=64,
        time_repeats=3,
        **_FASHION,  # type: ignore[arg-type]
    ),
    "quick": StudyPreset(
        name="quick",
        base_channels=8,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        batch_size=32,
        lr=1e-3,
        warmup_steps=20,
        ema_decay=0.98,
        iterations=300,
        sample_steps=20,
        eval_samples=128,
        curve_samples=64,
        sample_batch=64,
        time_batch=16,
        time_repeats=2,
        train_subset=4000,
        kid_subset=100,
        **_FASHION,  # type: ignore[arg-type]
    ),
    "gpu": StudyPreset(
        name="gpu",
        base_channels=64,
        channel_mult=(1, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(8,),
        batch_size=128,
        lr=5e-4,
        warmup_steps=200,
        ema_decay=0.999,
        iterations=6000,
        sample_steps=100,
        eval_samples=2000,
        curve_samples=1000,
        sample_batch=1000,
        time_batch=256,
        time_repeats=3,
        **_FASHION,  # type: ignore[arg-type]
    ),
    "celeba-small": StudyPreset(
        name="celeba-small",
        dataset="celeba",
        image_size=64,
        channels=3,
        ssd_levels=4,
        base_channels=64,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(16, 8),
        num_heads=4,
        batch_size=64,
        lr=2e-4,
        warmup_steps=500,
        ema_decay=0.999,
        iterations=20_000,
        num_checkpoints=4,
        random_flip=True,
        sample_steps=250,
        eval_samples=5000,
        curve_samples=2000,
        sample_batch=500,
        time_batch=64,
        time_repeats=3,
    ),
}


def model_levels(preset: StudyPreset) -> dict[str, int]:
    """The study's models and their pyramid levels: deeper SSD, 2-level SSD, DDPM."""
    return {f"ssd{preset.ssd_levels}": preset.ssd_levels, "ssd2": 2, "ddpm": 1}
