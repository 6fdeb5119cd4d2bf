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

``--vs-diffusers`` instead compares the FlexiUNet of the real-image study (32 px, one
channel, base 16, (1, 2, 2), one residual block, attention at 8 px, 2 heads) with a
diffusers ``UNet2DModel`` of the same widths, blocks, attention and scale-shift time
conditioning (16 GroupNorm groups everywhere, as one count must divide every width),
at full resolution: the forward pass (inference mode) and the training step (forward +
backward + AdamW) in fp32 and under bf16 autocast, all eight variants taking turns
within each round. Throughput per FLOP is the forward FLOPs (counted by
``FlopCounterMode`` as in ``flops.py``; three times as many for a training step)
divided by the median time. ``--profile`` adds a ``torch.profiler`` table of each
network's fp32 training step, the time per kind of operator.

Usage::

    python benchmarks/bench_flexi_unet.py                 # base 32, (1, 2, 3, 4)
    python benchmarks/bench_flexi_unet.py --base 64 --mult 1 2 2 2
    python benchmarks/bench_flexi_unet.py --vs-diffusers --threads 1 [--profile]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

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


STUDY_UNET: dict[str, Any] = {
    "in_channels": 1,
    "base_channels": 16,
    "channel_mult": (1, 2, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (8,),
    "image_size": 32,
    "num_heads": 2,
}


def study_diffusers_unet() -> nn.Module:
    """``UNet2DModel`` with the layout of ``STUDY_UNET`` (widths 16/32/32, attention at 8)."""
    from diffusers import UNet2DModel

    return UNet2DModel(  # type: ignore[no-any-return]
        sample_size=32,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=16,
        norm_num_groups=16,
        resnet_time_scale_shift="scale_shift",
    )


def _call(model: nn.Module, x: Tensor, t: Tensor) -> Tensor:
    out = model(x, t)
    return out if isinstance(out, Tensor) else out.sample  # diffusers returns an output


def compare_diffusers(args: argparse.Namespace) -> None:
    """FlexiUNet vs UNet2DModel per FLOP, fp32 and bf16, forward and training step."""
    torch.manual_seed(0)
    nets = {"FlexiUNet": FlexiUNet(**STUDY_UNET), "UNet2DModel": study_diffusers_unet()}
    b = args.train_batch
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, 1, 32, 32, generator=gen)
    t = torch.randint(0, 1000, (b,), generator=gen)
    flops = {}
    for name, net in nets.items():
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            _call(net, x[:1], t[:1])
        flops[name] = counter.get_total_flops() * b
    params = {k: sum(p.numel() for p in n.parameters()) for k, n in nets.items()}
    optims = {k: torch.optim.AdamW(n.parameters(), lr=1e-4) for k, n in nets.items()}

    def forward(name: str, dtype: torch.dtype) -> None:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, dtype != torch.float32):
            _call(nets[name], x, t)

    def train_step(name: str, dtype: torch.dtype) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=dtype != torch.float32):
            loss = _call(nets[name], x, t).float().square().mean()
        loss.backward()
        optims[name].step()
        optims[name].zero_grad(set_to_none=True)

    kinds = {"forward": forward, "train step": train_step}
    variants = [
        (kind, name, dtype)
        for kind in kinds
        for dtype in (torch.float32, torch.bfloat16)
        for name in nets
    ]
    load = os.getloadavg()
    print(f"{torch.get_num_threads()} thread(s), batch {b}, {args.repeats} rounds")
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name in nets:
        print(f"  {name}: {params[name]:,} parameters, {flops[name] / b / 1e6:.1f} MFLOP/image")
    for kind, name, dtype in variants:
        kinds[kind](name, dtype)  # warm-up
    times: dict[tuple[str, str, torch.dtype], list[float]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for v in variants[r % 2 :] + variants[: r % 2]:
            times[v].append(timed(functools.partial(kinds[v[0]], v[1], v[2])))
    print(
        f"  {'':10} {'network':<12} {'dtype':<9} {'time':>8} {'GFLOP/s':>8} {'Flexi/diffusers':>16}"
    )
    for kind, dtype in ((k, d) for k in kinds for d in (torch.float32, torch.bfloat16)):
        rate = {}
        for name in nets:
            med = statistics.median(times[(kind, name, dtype)])
            rate[name] = (3 if kind == "train step" else 1) * flops[name] / med / 1e9
            ratio = f"{rate['FlexiUNet'] / rate[name]:.2f}x per FLOP" if name != "FlexiUNet" else ""
            dt = str(dtype).replace("torch.", "")
            print(
                f"  {kind:<10} {name:<12} {dt:<9} {med * 1e3:6.0f}ms {rate[name]:8.1f} {ratio:>16}"
            )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name in nets:
            train_step(name, torch.float32)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(2):
                    train_step(name, torch.float32)
            print(f"\n{name}, fp32 training step x 2:")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=32)
    parser.add_argument("--mult", type=int, nargs=4, default=[1, 2, 3, 4])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vs-diffusers", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.vs_diffusers:
        compare_diffusers(args)
        return
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
