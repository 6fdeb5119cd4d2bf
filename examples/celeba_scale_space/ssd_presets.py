"""Training presets of the CelebA Scale Space Diffusion example, and the builders they feed.

A preset fixes the network, the optimiser and the bookkeeping of a run. The model kind
(``ssd`` or the full-resolution ``ddpm`` baseline) and the number of pyramid levels are
chosen separately, so the two models of a comparison share every other setting.

``paper``: the published 64 px settings (Mukhopadhyay et al., 2026): 128 base channels,
2 residual blocks per level, attention at 16 and 8 px, AdamW at 1e-4, batch 64, EMA
0.9999, 1M iterations. The channel multipliers are not stated there; (1, 2, 3, 4) is the
usual 64 px choice and FlexiUNet's default.

``small``: a 10M-parameter FlexiUNet (base 64, multipliers (1, 2, 2, 2)) for a 20k
iteration run on one GPU. It costs 11.3 GFLOPs per 64 px forward pass and 7.3 on average
over the 4-level schedule (``benchmarks/flops.py``), about 1.4 TFLOPs per training
iteration of 64 images, so 20k iterations are 28 PFLOPs: minutes of bf16 arithmetic on an
H100, leaving the wall time to memory traffic, kernel launches and data loading. The
learning rate is 2e-4 (short run) with a 500-step warm-up. The EMA decay is 0.999, not
0.9999: ``AveragedModel``'s EMA starts from the first weights without warm-up, and after
``N`` updates those keep the weight ``decay**N``; at 20k updates that is 13.5 % for
0.9999 (averaging over half the run, including the untrained start) but 2e-9 for 0.999,
whose averaging window of ~1,000 steps is 5 % of the run.

``smoke``: a tiny 32 px, 3-level network that trains, samples and checkpoints in well
under two minutes on two CPU cores.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Literal

from scalemix.degradation import ScaleSpaceDegradation
from scalemix.nn.flexi_unet import FlexiUNet

ModelKind = Literal["ssd", "ddpm"]


@dataclass(frozen=True)
class Preset:
    """Everything a training run needs besides the data, the model kind and the seed.

    Attributes:
        name: preset name.
        image_size: training resolution (power of two).
        num_levels: SSD pyramid levels (the DDPM baseline uses 1); at most the number of
            UNet levels, ``len(channel_mult)``.
        base_channels: FlexiUNet width of the finest level.
        channel_mult: width multipliers per UNet level, finest first.
        num_res_blocks: residual blocks per encoder level.
        attention_resolutions: resolutions (px) with self-attention.
        dropout: residual-block dropout.
        num_heads: attention heads.
        batch_size: global batch (split over the processes of a distributed run).
        lr: peak AdamW learning rate.
        warmup_steps: linear warm-up length.
        weight_decay: AdamW weight decay.
        grad_clip: gradient-norm clip.
        ema_decay: EMA decay per step.
        iterations: training steps.
        random_flip: flip half of each batch horizontally.
        min_snr_gamma: Min-SNR loss weight cap.
        log_every: steps between log lines.
        sample_every: steps between sample grids.
        checkpoint_every: steps between checkpoints.
        keep_checkpoints: checkpoints kept on disk (oldest removed first).
        num_sample_images: images per sample grid.
        sample_steps: sampling steps of the grids (``None``: all ``T``).
        synthetic_size: images in the synthetic dataset (``--synthetic``).
        cpu_threads: torch CPU threads (``None``: torch's default). One thread is
            fastest for the tiny smoke network and immune to oversubscription on busy
            machines.
    """

    name: str
    image_size: int
    num_levels: int
    base_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    dropout: float
    num_heads: int
    batch_size: int
    lr: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float
    ema_decay: float
    iterations: int
    random_flip: bool
    min_snr_gamma: float
    log_every: int
    sample_every: int
    checkpoint_every: int
    keep_checkpoints: int
    num_sample_images: int
    sample_steps: int | None
    synthetic_size: int
    cpu_threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        """Inverse of :meth:`to_dict`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown preset fields {sorted(unknown)}")
        values = dict(data)
        for key in ("channel_mult", "attention_resolutions"):
            values[key] = tuple(values[key])
        return cls(**values)


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        image_size=64,
        num_levels=4,
        base_channels=128,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=2,
        attention_resolutions=(16, 8),
        dropout=0.0,
        num_heads=4,
        batch_size=64,
        lr=1e-4,
        warmup_steps=1000,
        weight_decay=0.0,
        grad_clip=1.0,
        ema_decay=0.9999,
        iterations=1_000_000,
        random_flip=True,
        min_snr_gamma=5.0,
        log_every=100,
        sample_every=10_000,
        checkpoint_every=10_000,
        keep_checkpoints=3,
        num_sample_images=64,
        sample_steps=250,
        synthetic_size=50_000,
    ),
    "small": Preset(
        name="small",
        image_size=64,
        num_levels=4,
        base_channels=64,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(16, 8),
        dropout=0.0,
        num_heads=4,
        batch_size=64,
        lr=2e-4,
        warmup_steps=500,
        weight_decay=0.0,
        grad_clip=1.0,
        ema_decay=0.999,
        iterations=20_000,
        random_flip=True,
        min_snr_gamma=5.0,
        log_every=50,
        sample_every=2_000,
        checkpoint_every=2_000,
        keep_checkpoints=2,
        num_sample_images=64,
        sample_steps=250,
        synthetic_size=10_000,
    ),
    "smoke": Preset(
        name="smoke",
        image_size=32,
        num_levels=3,
        base_channels=16,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        dropout=0.0,
        num_heads=2,
        batch_size=16,
        lr=1e-3,
        warmup_steps=10,
        weight_decay=0.0,
        grad_clip=1.0,
        ema_decay=0.99,
        iterations=400,
        random_flip=True,
        min_snr_gamma=5.0,
        log_every=10,
        sample_every=200,
        checkpoint_every=200,
        keep_checkpoints=2,
        num_sample_images=16,
        sample_steps=20,
        synthetic_size=256,
        cpu_threads=1,
    ),
}


def levels_for(preset: Preset, kind: ModelKind, levels: int | None) -> int:
    """Pyramid levels of a run: 1 for ``ddpm``, else ``levels`` or the preset's.

    Raises:
        ValueError: an unknown kind, or more levels than the UNet has.
    """
    if kind == "ddpm":
        return 1
    if kind != "ssd":
        raise ValueError(f"unknown model kind {kind!r}; accepted values are 'ssd', 'ddpm'")
    n = preset.num_levels if levels is None else levels
    if not 1 <= n <= len(preset.channel_mult):
        raise ValueError(
            f"--levels must lie in [1, {len(preset.channel_mult)}] for preset {preset.name!r} "
            f"(its UNet has {len(preset.channel_mult)} levels), got {n}"
        )
    return n


def build_model(preset: Preset) -> FlexiUNet:
    """The preset's FlexiUNet (random initialisation from torch's default generator)."""
    return FlexiUNet(
        in_channels=3,
        base_channels=preset.base_channels,
        channel_mult=preset.channel_mult,
        num_res_blocks=preset.num_res_blocks,
        attention_resolutions=preset.attention_resolutions,
        image_size=preset.image_size,
        dropout=preset.dropout,
        num_heads=preset.num_heads,
    )


def build_degradation(
    preset: Preset,
    num_levels: int,
    *,
    factor: float = 2.0,
    resolution_schedule: str = "convex",
    gamma: float = 0.5,
) -> ScaleSpaceDegradation:
    """The forward process: ``num_levels`` pyramid levels, T = 1000, linear betas.

    ``factor`` is the downsampling factor between levels (the reference's ``ds_factor``),
    ``resolution_schedule`` and ``gamma`` the decay of the resolution over time (the
    paper's default: convex, gamma 0.5). With ``num_levels = 1`` this is
    x0-parameterised DDPM at full resolution.

    Raises:
        ValueError: a factor other than 2 where this scalemix only halves, or options
            the degradation rejects.
    """
    kwargs: dict[str, Any] = {"resolution_schedule": resolution_schedule, "gamma": gamma}
    if "factor" in inspect.signature(ScaleSpaceDegradation).parameters:
        kwargs["factor"] = factor
    elif factor != 2.0:
        raise ValueError(f"--factor {factor} needs a scalemix whose pyramids need not halve")
    return ScaleSpaceDegradation(image_size=preset.image_size, num_levels=num_levels, **kwargs)
