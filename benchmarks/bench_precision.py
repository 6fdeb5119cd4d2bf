"""Training step of the real-image study's FlexiUNet in fp32, bf16 and ``precision="auto"``.

The network and loss are the study's (``examples/scale_space_study``, preset
``default``): a 32 px FlexiUNet (1 channel, base 16, multipliers (1, 2, 2), one residual
block per level, attention at 8 px, 2 heads), the 3-level scale-space loss with the
min-SNR weighting, batch 64, AdamW with clipping at 1.0. One step is forward + backward
+ clipping + AdamW step; every step draws the same timesteps and noise, so every
variant does the same work.

First ``choose_precision("auto", ...)`` runs exactly as ``train_images`` does
(``step_on_copies``), and its choice, its timings and its own cost are printed. Then
fp32, bf16 and the auto choice take turns, one step each per round, for ``--rounds``
rounds after a warm-up step each (load from other processes hits all alike); the
medians and the ratios to fp32 are printed. ``auto`` is just the chosen precision, so
its row re-measures that precision as a check of the noise.

Usage::

    python benchmarks/bench_precision.py                  # one thread, batch 64
    python benchmarks/bench_precision.py --rounds 9 --json benchmarks/results/precision.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from scalemix.degradation import ScaleSpaceDegradation
from scalemix.nn.flexi_unet import FlexiUNet
from scalemix.scale_space import scale_space_loss_terms
from scalemix.training.precision import (
    Precision,
    autocast_context,
    choose_precision,
    step_on_copies,
)

STUDY_UNET = {
    "in_channels": 1,
    "base_channels": 16,
    "channel_mult": (1, 2, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (8,),
    "image_size": 32,
    "num_heads": 2,
}


def cpu_flags() -> str:
    """The bf16-relevant CPU features torch and /proc/cpuinfo report."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            line = next((ln for ln in fh if ln.startswith("flags")), "")
        flags = " ".join(f for f in ("avx512_bf16", "amx_bf16") if f in line.split())
    except OSError:
        pass
    return f"capability {torch.backends.cpu.get_cpu_capability()}, flags: {flags or 'none'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = FlexiUNet(**STUDY_UNET)  # type: ignore[arg-type]
    degradation = ScaleSpaceDegradation(
        image_size=32, num_levels=3, resolution_schedule="convex", gamma=0.5
    )
    x0 = torch.rand(args.batch, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def loss(net: nn.Module, gen: torch.Generator) -> Tensor:
        gen.manual_seed(0)  # the same timesteps and noise in every step
        return scale_space_loss_terms(net, degradation, x0, generator=gen, min_snr_gamma=5.0).loss

    def adamw(net: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(net.parameters(), lr=5e-4, weight_decay=0.0)

    cpu = torch.device("cpu")
    load = os.getloadavg()
    print(f"{platform.processor() or platform.machine()}, {cpu_flags()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch}")
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")

    start = time.perf_counter()
    step = step_on_copies(model, adamw, loss, torch.Generator(), grad_clip=1.0)
    choice = choose_precision("auto", cpu, step)
    auto_cost = time.perf_counter() - start
    print(f"auto: {choice.summary()}; the measurement took {auto_cost:.1f} s")

    net = model.train()
    optimizer = adamw(net)
    gen = torch.Generator()

    def train_step(precision: Precision) -> None:
        with autocast_context(precision, cpu):
            value = loss(net, gen)
        torch.autograd.backward(value)
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    variants: dict[str, Precision] = {"fp32": "fp32", "bf16": "bf16", "auto": choice.precision}
    for p in variants.values():
        train_step(p)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        order = list(variants.items())
        order = order[r % 3 :] + order[: r % 3]  # rotate who goes first
        for name, p in order:
            t0 = time.perf_counter()
            train_step(p)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    load = os.getloadavg()
    print(f"training step, median of {args.rounds} alternating rounds:")
    for name in variants:
        label = name if name != "auto" else f"auto ({choice.precision})"
        print(f"  {label:<12} {med[name]:7.3f} s   {med['fp32'] / med[name]:5.2f}x fp32")
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json is not None:
        record = {
            "cpu": cpu_flags(),
            "threads": torch.get_num_threads(),
            "batch": args.batch,
            "rounds": args.rounds,
            "auto_choice": choice.precision,
            "auto_seconds": choice.seconds,
            "auto_measurement_s": auto_cost,
            "median_s": med,
            "speedup_vs_fp32": {k: med["fp32"] / v for k, v in med.items()},
            "load_after": load,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
