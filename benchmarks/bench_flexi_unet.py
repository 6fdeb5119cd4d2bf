"""Sampling and training time of a 4-level Flexi-UNet vs the same UNet at full resolution.

Sampling: a Scale Space Diffusion run (64 -> 32 -> 16 -> 8 px pyramid) with
``--steps`` reverse steps split over the input resolutions in the proportions
of the T = 1000 convex-decay schedule (438/312/187/63; 100 steps give
44/31/19/6), the three resolution-changing steps in the resolution-increasing
mode, against a DDPM run of the same UNet with the same number of steps, all at
64 px. Only the network forward passes and a trivial update
``x <- (clamp(x0_hat) + eps) / 2`` are timed, so the ratio reflects the UNet
(the SSD posterior is benchmarked separately). The two runs advance in
lockstep, one step of each in turn, so that load from other processes hits both
alike; the median over repeats is reported next to the FLOP bound of the same
schedule.

Training: one forward + backward per (input, output) resolution pair.

Usage::

    python benchmarks/bench_flexi_unet.py                 # base 32, (1, 2, 3, 4)
    python benchmarks/bench_flexi_unet.py --base 64 --mult 1 2 2 2
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from flops import forward_flops, meta_model, schedule_flops
from scalemix.nn.flexi_unet import FlexiUNet

FULL_T_COUNTS = {64: 438, 32: 312, 16: 187, 8: 63}  # steps per input resolution, T = 1000


def scaled_counts(steps: int) -> dict[int, int]:
    """Split ``steps`` over the resolutions in the T = 1000 proportions (largest remainder)."""
    total = sum(FULL_T_COUNTS.values())
    exact = {r: steps * n / total for r, n in FULL_T_COUNTS.items()}
    counts = {r: int(v) for r, v in exact.items()}
    for r in sorted(exact, key=lambda r: counts[r] - exact[r])[: steps - sum(counts.values())]:
        counts[r] += 1
    return counts


def step_resolutions(counts: dict[int, int]) -> list[int]:
    """Per-step input resolution r(t) for t = 0..n-1 (t = 0 is the final step)."""
    return [r for r in sorted(counts, reverse=True) for _ in range(counts[r])]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=32)
    parser.add_argument("--mult", type=int, nargs=4, default=[1, 2, 3, 4])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    config: dict[str, Any] = {
        "image_size": 64,
        "base_channels": args.base,
        "channel_mult": tuple(args.mult),
        "num_res_blocks": 2,
        "attention_resolutions": (16, 8),
    }
    gen = torch.Generator().manual_seed(0)
    model = FlexiUNet(**config)
    with torch.no_grad():  # give the zero-initialised layers non-trivial weights
        for param in model.parameters():
            if not param.any():
                param.copy_(0.02 * torch.randn(param.shape, generator=gen))
    model.eval()

    counts = scaled_counts(args.steps)
    resolutions = step_resolutions(counts)
    n, b = len(resolutions), args.batch
    eps = {r: torch.randn(b, 3, r, r, generator=gen) for r in counts}
    ts = [torch.full((b,), round(t * 999 / max(n - 1, 1)), dtype=torch.long) for t in range(n)]

    def sample_pair() -> tuple[float, float]:
        """Run SSD and DDPM in lockstep (alternating which goes first); return their times."""
        x_ssd, x_ddpm = eps[resolutions[-1]].clone(), eps[64].clone()
        t_ssd = t_ddpm = 0.0
        for t in range(n - 1, -1, -1):
            out = resolutions[max(t - 1, 0)]
            for which in (t % 2, 1 - t % 2):
                start = time.perf_counter()
                if which == 0:
                    x_ssd = (model(x_ssd, ts[t], out).clamp(-1.0, 1.0) + eps[out]) * 0.5
                    t_ssd += time.perf_counter() - start
                else:
                    x_ddpm = (model(x_ddpm, ts[t]).clamp(-1.0, 1.0) + eps[64]) * 0.5
                    t_ddpm += time.perf_counter() - start
        return t_ssd, t_ddpm

    cost = schedule_flops(meta_model(**config), resolutions)
    modes = ", ".join(f"{i}->{o}: {k}" for (i, o), k in sorted(cost.steps.items(), reverse=True))
    print(f"config: {config}, {torch.get_num_threads()} threads, batch {b}, {n} steps")
    print(f"steps (input -> output resolution): {modes}")
    runs = []
    with torch.inference_mode():
        for r, out in cost.steps:  # warm-up: one call per mode
            model(eps[r], ts[0], out)
        for i in range(args.repeats):
            runs.append(sample_pair())
            print(f"  run {i}: SSD {runs[-1][0]:.2f} s, DDPM {runs[-1][1]:.2f} s", flush=True)
    t_ssd = statistics.median(r[0] for r in runs)
    t_ddpm = statistics.median(r[1] for r in runs)
    measured = statistics.median(r[1] / r[0] for r in runs)
    print(
        f"sampling (network + update only; SSD and DDPM steps interleaved): SSD {t_ssd:.2f} s, "
        f"DDPM {t_ddpm:.2f} s (median of {args.repeats})"
    )
    bound = cost.speedup_bound
    print(
        f"speedup {measured:.3f}x (median of per-run ratios), FLOP bound {bound:.3f}x, "
        f"measured / bound = {measured / bound:.3f}"
    )

    print(f"\ntraining step (forward + backward), batch {args.train_batch}:")
    model.train()
    meta = meta_model(**config)
    full_flops = forward_flops(meta, 64)
    pairs = [(r, o) for r in (64, 32, 16, 8) for o in (r, 2 * r) if o <= 64]
    data = {
        r: (
            torch.randn(args.train_batch, 3, r, r, generator=gen),
            torch.randint(0, 1000, (args.train_batch,), generator=gen),
        )
        for r in (64, 32, 16, 8)
    }

    def train_step(r: int, o: int) -> None:
        model.zero_grad(set_to_none=True)
        x, t = data[r]
        model(x, t, o).square().mean().backward()

    times: dict[tuple[int, int], list[float]] = {p: [] for p in pairs}
    for p in pairs:
        train_step(*p)  # warm-up
    for _ in range(3):
        for p in pairs:
            times[p].append(timed(functools.partial(train_step, *p)))
    t_full = statistics.median(times[(64, 64)])
    print(f"  {'in -> out':>9} {'time':>9} {'/ full':>7} {'FLOPs / full':>13}")
    for (r, o), tt in times.items():
        med = statistics.median(tt)
        ratio = forward_flops(meta, r, o) / full_flops
        print(f"  {f'{r} -> {o}':>9} {med * 1e3:7.0f}ms {med / t_full:7.3f} {ratio:13.3f}")


if __name__ == "__main__":
    main()
