"""Presets of the real-image Scale Space Diffusion study.

Every model of a study (SSD on a deeper pyramid, SSD on 2 levels, the full-resolution
DDPM baseline) shares the preset: the same FlexiUNet, initial weights, data order,
optimiser, EMA and sampling steps. Only the number of pyramid levels differs, and, with
``equal_flops``, how long each model trains.

``default``: Fashion-MNIST padded to 32 px (1 channel), a 0.4M-parameter FlexiUNet
(base 16, multipliers (1, 2, 2), one residual block per level, attention at 8 px),
batch 64, checkpoints every 500 iterations, 50 sampling steps, training precision
``"auto"``. DDPM trains 4,500 iterations (4.8 epochs); each SSD model trains on past
4,500 until it has spent DDPM's training FLOPs (rounded up to a checkpoint), so that
its curve covers every budget of DDPM's checkpoints. Every checkpoint is evaluated:
KID and FID of 500 samples, 2,000 at iteration 4,500 and at each model's last
checkpoint. The three trainings run side by side (one torch thread each), then the
evaluations; on a 2-core CPU with native bf16 the whole study takes 1-2 hours.

``short``: the study as first published: 1,500 iterations, checkpoints at 500 / 1,000 /
1,500, every model the same iterations (the conditional study builds on it).

``quick``: the same pipeline as ``default`` at toy size (a 0.1M-parameter network, 300
iterations, a 4,000-image subset, 128 evaluation samples); minutes on 2 cores.

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
        iterations: training steps of DDPM (and of every model without
            ``equal_flops``).
        num_checkpoints: evenly spaced checkpoints up to ``iterations``, all kept and
            all evaluated (SSD models trained longer keep the spacing).
        random_flip: flip half of each batch horizontally (not for Fashion-MNIST, whose
            shoes all point the same way).
        sample_steps: respaced sampling steps (every resolution change kept).
        eval_samples: samples per model at ``iterations`` and at the model's last
            checkpoint (and real images per split).
        curve_samples: samples per model at the other checkpoints.
        sample_batch: sampling batch.
        time_batch: batch of the side-by-side sampling-time measurement.
        time_repeats: timed repetitions per model.
        train_subset: use only the first ``train_subset`` training images (``None``: all).
        kid_subset: subset size of the customary KID subset statistics.
        equal_flops: train each SSD model past ``iterations`` until it has spent the
            training FLOPs of DDPM's ``iterations`` (rounded up to a checkpoint), so
            that its quality can be read at each of DDPM's budgets.
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
    equal_flops: bool = False

    @property
    def checkpoint_every(self) -> int:
        """Iterations between two checkpoints."""
        return max(1, self.iterations // self.num_checkpoints)

    def checkpoint_steps(self, iterations: int | None = None) -> list[int]:
        """The evaluated training steps of a model trained ``iterations`` steps (default
        ``self.iterations``): every ``checkpoint_every``, the last one ``iterations``."""
        last = self.iterations if iterations is None else iterations
        every = self.checkpoint_every
        return sorted({*range(every, last + 1, every), last})

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
}
# The 0.4M-parameter network and training of presets default and short.
_FASHION_SMALL = {
    **_FASHION,
    "base_channels": 16,
    "channel_mult": (1, 2, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (8,),
    "batch_size": 64,
    "lr": 5e-4,
    "warmup_steps": 200,
    "ema_decay": 0.995,
    "sample_steps": 50,
    "eval_samples": 2000,
    "curve_samples": 500,
    "sample_batch": 100,
    "time_batch": 64,
    "time_repeats": 3,
}

PRESETS: dict[str, StudyPreset] = {
    "default": StudyPreset(
        name="default",
        iterations=4500,
        num_checkpoints=9,
        equal_flops=True,
        **_FASHION_SMALL,  # type: ignore[arg-type]
    ),
    "short": StudyPreset(
        name="short",
        iterations=1500,
        num_checkpoints=3,
        **_FASHION_SMALL,  # type: ignore[arg-type]
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
        num_checkpoints=3,
        equal_flops=True,
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
        num_checkpoints=3,
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
