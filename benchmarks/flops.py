"""FLOPs of a FlexiUNet forward at every pyramid level, and the speedup bound of a schedule.

Scale Space Diffusion runs each reverse step t at resolution r(t) and predicts at
r(t - 1); the steps where the resolution changes use the Flexi-UNet's
resolution-increasing mode. Since a call costs (almost exactly) its FLOPs, the
ratio of the FLOPs of T full-resolution steps to those of the schedule bounds the
speedup of SSD sampling over DDPM with the same UNet and the same T.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on the meta
device (no memory, no compute): convolutions, matrix products and attention,
two FLOPs per multiply-add; normalisations and pointwise ops are not counted.

The last block reports the bound of the factor-1.5 pyramid 64/40/28/20, whose sizes
run at UNet levels 64/64/32/32 (so 40 px costs a level-64 pass on fewer pixels).

Usage::

    python benchmarks/flops.py
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from scalemix.degradation import ResolutionScheduleName, pyramid_sizes, resolution_schedule
from scalemix.nn.flexi_unet import FlexiUNet


def meta_model(**config: Any) -> FlexiUNet:
    """A FlexiUNet with ``config`` built on the meta device (no parameter memory)."""
    with torch.device("meta"):
        return FlexiUNet(**config)


def forward_flops(
    model: FlexiUNet, resolution: int, out_size: int | None = None, batch: int = 1
) -> int:
    """FLOPs of one forward call ``(batch, c, r, r) -> (batch, c, out, out)``.

    The inputs are created on the model's device; use :func:`meta_model` so that
    attention is counted on every backend and nothing is computed.
    """
    device = next(model.parameters()).device
    x = torch.zeros(batch, model.in_channels, resolution, resolution, device=device)
    t = torch.zeros(batch, dtype=torch.long, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t, out_size)
    return int(counter.get_total_flops())


def ssd_resolution_schedule(
    image_size: int,
    num_levels: int,
    num_timesteps: int = 1000,
    gamma: float = 0.5,
    factor: float = 2.0,
    schedule: ResolutionScheduleName = "convex",
) -> list[int]:
    """Per-step resolution r(t), t = 0..T-1, of a schedule on the pyramid of ``factor``.

    The pyramid follows the reference's rounding rule for a UNet with ``num_levels``
    levels (:func:`scalemix.degradation.pyramid_sizes`).
    """
    table = resolution_schedule(
        image_size, num_levels, num_timesteps, schedule, gamma, factor=factor
    )
    return [int(r) for r in table.tolist()]


def step_modes(resolutions: Sequence[int]) -> Counter[tuple[int, int]]:
    """Count the ``(input, output)`` resolution pairs of the reverse steps.

    Step ``t`` maps ``r(t)`` to ``r(t - 1)`` (step 0 keeps ``r(0)``).
    """
    return Counter((r, resolutions[max(t - 1, 0)]) for t, r in enumerate(resolutions))


@dataclass(frozen=True)
class ScheduleCost:
    """FLOPs of a sampling run under a resolution schedule vs the same UNet at full size."""

    flops: int
    full_resolution_flops: int
    steps: dict[tuple[int, int], int]

    @property
    def speedup_bound(self) -> float:
        """Ideal speedup: full-resolution FLOPs divided by schedule FLOPs."""
        return self.full_resolution_flops / self.flops


def schedule_flops(model: FlexiUNet, resolutions: Sequence[int], batch: int = 1) -> ScheduleCost:
    """Total FLOPs of running one step per entry of ``resolutions`` (r(t), t = 0..T-1)."""
    steps = dict(step_modes(resolutions))
    cost = {pair: forward_flops(model, pair[0], pair[1], batch) for pair in steps}
    total = sum(n * cost[pair] for pair, n in steps.items())
    full = len(resolutions) * forward_flops(model, model.image_size, None, batch)
    return ScheduleCost(total, full, steps)


def main() -> None:
    """Print per-level FLOPs and the SSD speedup bound for three channel multipliers."""
    base = {"base_channels": 128, "num_res_blocks": 2, "attention_resolutions": (16, 8)}
    schedule = ssd_resolution_schedule(image_size=64, num_levels=4)
    print("64 px, 128 base channels, 2 res blocks, attention at 16 and 8, T = 1000")
    counts = Counter(schedule)
    print("steps per input resolution:", dict(sorted(counts.items(), reverse=True)))
    for mult in [(1, 2, 3, 4), (1, 2, 2, 2), (1, 1, 1, 1)]:
        model = meta_model(image_size=64, channel_mult=mult, **base)
        full = forward_flops(model, 64)
        print(f"\nchannel_mult={mult}")
        print(f"  {'in -> out':>10} {'GFLOPs':>8} {'/ full':>7}")
        for r in model.resolutions:
            for out in [r] + ([2 * r] if r < 64 else []):
                f = forward_flops(model, r, out)
                print(f"  {f'{r} -> {out}':>10} {f / 1e9:8.2f} {f / full:7.3f}")
        cost = schedule_flops(model, schedule)
        print(
            f"  schedule: {cost.flops / 1e12:.2f} TFLOPs vs DDPM "
            f"{cost.full_resolution_flops / 1e12:.2f} TFLOPs -> bound {cost.speedup_bound:.3f}x"
        )
    two = ssd_resolution_schedule(image_size=64, num_levels=2)
    model = meta_model(image_size=64, channel_mult=(1, 2, 3, 4), **base)
    cost2 = schedule_flops(model, two)
    print(
        f"\n2-level schedule (64/32), channel_mult=(1, 2, 3, 4): bound {cost2.speedup_bound:.3f}x"
    )
    sizes = pyramid_sizes(64, 4, 1.5).sizes
    print(f"\nfactor-1.5 pyramid {sizes} (4-level UNet, levels 64/64/32/32):")
    schedules: tuple[ResolutionScheduleName, ...] = ("convex", "linear")
    for sched in schedules:
        steps15 = ssd_resolution_schedule(64, 4, factor=1.5, schedule=sched)
        for mult in [(1, 2, 3, 4), (1, 2, 2, 2)]:
            m = meta_model(image_size=64, channel_mult=mult, **base)
            c = schedule_flops(m, steps15)
            print(
                f"  {sched:>6} schedule, channel_mult={mult}: {c.flops / 1e12:.2f} TFLOPs vs "
                f"DDPM {c.full_resolution_flops / 1e12:.2f} TFLOPs -> bound "
                f"{c.speedup_bound:.3f}x"
            )


if __name__ == "__main__":
    main()
