"""Training-step time of Scale Space Diffusion at every level of a 64 px, 4-level pyramid.

One step is the full training update on a batch: ``scale_space_loss`` (forward
through the FlexiUNet at the input resolution r(t), predicting x0 at r(t - 1)),
backward, and an AdamW step. Each (input -> output) resolution pair of the
T = 1000 convex schedule is timed at a fixed timestep inside it: the
resolution-preserving steps in the middle of each level, the three
resolution-increasing steps at the change timesteps. The pairs take turns, one
step each per round, so that load from other processes hits all alike; the
median over rounds is reported in ms and as a ratio to the full-resolution
step (which is also the step of the DDPM baseline with the same UNet).

The last line weights the pairs by how often uniform timestep sampling draws
them: the expected cost of an SSD training iteration relative to DDPM.

Usage::

    python benchmarks/bench_ssd_training.py                      # base 32, (1, 2, 2, 2)
    python benchmarks/bench_ssd_training.py --base 64 --batch 16 --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

import torch

from scalemix.degradation import ScaleSpaceDegradation
from scalemix.nn.flexi_unet import FlexiUNet
from scalemix.scale_space import scale_space_loss


def representative_steps(degradation: ScaleSpaceDegradation) -> dict[tuple[int, int], int]:
    """One timestep per ``(r(t), r(t-1))`` pair: the middle of each run, or the change step."""
    pairs: dict[tuple[int, int], list[int]] = {}
    for t in range(degradation.num_train_timesteps):
        pair = (degradation.resolution(t), degradation.resolution(t - 1))
        pairs.setdefault(pair, []).append(t)
    return {pair: ts[len(ts) // 2] for pair, ts in pairs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=32, help="base channels")
    parser.add_argument("--mult", type=int, nargs="+", default=[1, 2, 2, 2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    size, levels = 64, 4
    model = FlexiUNet(
        base_channels=args.base,
        channel_mult=tuple(args.mult),
        num_res_blocks=2,
        attention_resolutions=(16, 8),
        image_size=size,
    )
    degradation = ScaleSpaceDegradation(size, levels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(args.batch, 3, size, size, generator=gen) * 2 - 1
    steps = representative_steps(degradation)

    def train_step(t: int) -> None:
        loss = scale_space_loss(model, degradation, x0, t=t, generator=gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()

    times: dict[tuple[int, int], list[float]] = {pair: [] for pair in steps}
    for rnd in range(args.warmup + args.rounds):
        for pair, t in steps.items():
            start = time.perf_counter()
            train_step(t)
            if rnd >= args.warmup:
                times[pair].append(time.perf_counter() - start)
    median = {pair: statistics.median(v) for pair, v in times.items()}
    full = median[(size, size)]

    params = sum(p.numel() for p in model.parameters())
    print(
        f"FlexiUNet base {args.base}, mult {tuple(args.mult)}, {params / 1e6:.2f}M params; "
        f"batch {args.batch} at {size} px, {levels} levels; {args.threads} thread(s); "
        f"median of {args.rounds} rounds"
    )
    print(f"{'r(t) -> r(t-1)':>16} {'t':>5} {'ms/step':>9} {'vs 64->64':>10}")
    for pair, t in sorted(steps.items(), key=lambda kv: kv[1]):
        label = f"{pair[0]} -> {pair[1]}"
        print(f"{label:>16} {t:>5} {median[pair] * 1e3:>9.1f} {median[pair] / full:>10.3f}")
    counts = Counter(
        (degradation.resolution(t), degradation.resolution(t - 1))
        for t in range(degradation.num_train_timesteps)
    )
    expected = sum(median[p] * n for p, n in counts.items()) / degradation.num_train_timesteps
    print(
        f"uniform-t training iteration: {expected * 1e3:.1f} ms expected vs {full * 1e3:.1f} ms "
        f"for DDPM at {size} px (ratio {expected / full:.3f})"
    )


if __name__ == "__main__":
    main()
