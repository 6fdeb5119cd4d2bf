"""Parts 3-5 of ``gpu_suite.py``: the FlexiUNet measurements (sampling, training, presets).

Every figure is measured on the device given; projected run times are labelled.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from scalemix.degradation import ScaleSpaceDegradation, respaced_timesteps
from scalemix.nn.flexi_unet import FlexiUNet
from scalemix.scale_space import scale_space_loss, scale_space_sample

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples" / "celeba_scale_space"))

from ssd_presets import PRESETS  # noqa: E402

from flops import forward_flops, meta_model, schedule_flops, ssd_resolution_schedule  # noqa: E402
from gpu_suite_parts import Context, time_calls  # noqa: E402


def _unet_configs(tiny: bool) -> dict[str, dict[str, Any]]:
    if tiny:
        small = {"base_channels": 16, "num_res_blocks": 1, "attention_resolutions": (8,)}
        return {"tiny (1, 2, 2)": {"channel_mult": (1, 2, 2), "image_size": 16, **small}}
    base = {"base_channels": 128, "num_res_blocks": 2, "attention_resolutions": (16, 8)}
    return {
        "paper (1, 2, 3, 4)": {"channel_mult": (1, 2, 3, 4), "image_size": 64, **base},
        "(1, 2, 2, 2)": {"channel_mult": (1, 2, 2, 2), "image_size": 64, **base},
    }


def _unet(config: dict[str, Any], ctx: Context) -> FlexiUNet:
    return FlexiUNet(**config).to(ctx.device, memory_format=torch.channels_last)


def ssd_sampling(ctx: Context) -> None:
    """Sampling time of SSD vs DDPM (same UNet, bf16) against the FLOP bound."""
    batch = 4 if ctx.tiny else 64
    steps = 10 if ctx.tiny else 100
    ctx.note(
        f"bf16 weights, channels_last, batch {batch}; end-to-end rows use {steps} base "
        "inference steps (SSD adds its change steps), one timed run after a warm-up run; "
        "'projected T=1000' rows sum measured "
        "per-step forward times over the full schedule"
    )
    for name, config in _unet_configs(ctx.tiny).items():
        ctx.attempt(name, partial(_sampling_rows, ctx, name, config, batch, steps))


def _sampling_rows(ctx: Context, name: str, config: dict[str, Any], batch: int, steps: int) -> None:
    """Per-step projection and end-to-end sampling times of one UNet configuration."""
    size, levels = config["image_size"], len(config["channel_mult"])
    model = _unet(config, ctx).to(torch.bfloat16).eval()
    meta = meta_model(**config)
    t = torch.zeros(batch, dtype=torch.long, device=ctx.device)
    schedule = ssd_resolution_schedule(size, levels)
    cost = schedule_flops(meta, schedule)
    reps = 2 if ctx.tiny else 20

    def forward_time(r_in: int, out: int | None) -> float:
        x = torch.randn(batch, 3, r_in, r_in, device=ctx.device)
        x = x.to(torch.bfloat16, memory_format=torch.channels_last)

        def fwd() -> None:
            with torch.no_grad():
                model(x, t, out)

        return time_calls(fwd, ctx, warmup=1 if ctx.tiny else 2, reps=reps, budget=1.0)

    per_pair = {pair: forward_time(*pair) for pair in sorted(cost.steps)}
    full = per_pair.get((size, size)) or forward_time(size, None)
    ssd_s = sum(n * per_pair[p] for p, n in cost.steps.items())
    ddpm_s = len(schedule) * full
    ctx.row(
        unet=name,
        run="projected T=1000",
        ssd_s=ssd_s,
        ddpm_s=ddpm_s,
        speedup=ddpm_s / ssd_s,
        flop_bound=cost.speedup_bound,
        fraction_of_bound=ddpm_s / ssd_s / cost.speedup_bound,
        full_res_tflops=forward_flops(meta, size, None, batch) / full / 1e12,
    )
    seconds: dict[str, float] = {}
    flop: dict[str, int] = {}
    for kind, n_levels in (("ssd", levels), ("ddpm", 1)):
        deg = ScaleSpaceDegradation(size, n_levels)
        ts = [int(v) for v in respaced_timesteps(deg, steps).tolist()]
        targets = [*ts[1:], -1]
        flop[kind] = sum(
            forward_flops(meta, deg.resolution(a), deg.resolution(b), batch)
            for a, b in zip(ts, targets, strict=True)
        )
        seconds[kind] = time_calls(
            partial(
                scale_space_sample, model, deg, batch, steps=steps, generator=ctx.generator(0),
                device=ctx.device, dtype=torch.bfloat16,
            ),
            ctx, warmup=1, reps=1, budget=0.0,
        )  # fmt: skip
    bound = flop["ddpm"] / flop["ssd"]
    speedup = seconds["ddpm"] / seconds["ssd"]
    ctx.row(
        unet=name,
        run=f"end-to-end, {steps} steps",
        ssd_s=seconds["ssd"],
        ddpm_s=seconds["ddpm"],
        speedup=speedup,
        flop_bound=bound,
        fraction_of_bound=speedup / bound,
    )


def unet_training(ctx: Context) -> None:
    """Training images/s per level and for uniform-t SSD vs DDPM iterations."""
    batch = 4 if ctx.tiny else 64
    config = next(iter(_unet_configs(ctx.tiny).values()))
    size, levels = config["image_size"], len(config["channel_mult"])
    ctx.note(f"UNet {config}; bf16 autocast, channels_last, batch {batch}, fused AdamW")
    model = _unet(config, ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    dtype = torch.bfloat16
    t = torch.randint(0, 1000, (batch,), device=ctx.device)
    per_pair: dict[tuple[int, int], float] = {}
    for r in model.resolutions:
        for out in [r] + ([2 * r] if r < size else []):
            x = torch.randn(batch, 3, r, r, device=ctx.device).to(memory_format=torch.channels_last)
            y = torch.randn(batch, 3, out, out, device=ctx.device)

            def step(x: torch.Tensor = x, y: torch.Tensor = y, out: int = out) -> None:
                with torch.autocast(ctx.device.type, dtype=dtype):
                    loss = F.mse_loss(model(x, t, out).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            sec = time_calls(step, ctx, warmup=1, reps=2 if ctx.tiny else 20, budget=1.0)
            per_pair[(r, out)] = sec
            ctx.row(step=f"{r} -> {out}", images_per_s=batch / sec, ms=sec * 1e3)
    x0 = (torch.rand(batch, 3, size, size, device=ctx.device) * 2 - 1).contiguous(
        memory_format=torch.channels_last
    )
    rates: dict[str, float] = {}
    for kind, n_levels in (("ssd", levels), ("ddpm", 1)):
        deg = ScaleSpaceDegradation(size, n_levels)
        g = ctx.generator(0)

        def iteration(deg: ScaleSpaceDegradation = deg, g: torch.Generator = g) -> None:
            with torch.autocast(ctx.device.type, dtype=dtype):
                loss = scale_space_loss(model, deg, x0, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        sec = time_calls(
            iteration, ctx, warmup=1 if ctx.tiny else 3, reps=4 if ctx.tiny else 200, budget=4.0
        )
        rates[kind] = batch / sec
        ctx.row(step=f"uniform-t {kind} iteration", images_per_s=rates[kind], ms=sec * 1e3)
    schedule = ssd_resolution_schedule(size, levels)
    bound = schedule_flops(meta_model(**config), schedule)
    weighted = sum(n * per_pair[pair] for pair, n in bound.steps.items()) / len(schedule)
    ctx.summary(
        ssd_over_ddpm_throughput=rates["ssd"] / rates["ddpm"],
        ssd_over_ddpm_from_per_level_steps=per_pair[(size, size)] / weighted,
        flop_bound=bound.speedup_bound,
    )


def celeba_preset(ctx: Context) -> None:
    """Iterations/s of the CelebA presets on synthetic images, and projected run times."""
    names = ["smoke"] if ctx.tiny else ["small", "paper"]
    ctx.note("synthetic uniform images; bf16 autocast, channels_last; EMA, clip, warm-up LR")
    for name in names:
        ctx.attempt(name, partial(_preset_row, ctx, name))


def _preset_row(ctx: Context, name: str) -> None:
    """Time training iterations of one preset (model, loss, AdamW, clip, LR, EMA)."""
    p = PRESETS[name]
    model = FlexiUNet(
        3, p.base_channels, p.channel_mult, p.num_res_blocks, p.attention_resolutions,
        p.image_size, p.dropout, p.num_heads,
    ).to(ctx.device, memory_format=torch.channels_last)  # fmt: skip
    deg = ScaleSpaceDegradation(p.image_size, p.num_levels)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay, fused=True)
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / p.warmup_steps))
    ema_fn = torch.optim.swa_utils.get_ema_multi_avg_fn(p.ema_decay)
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_fn, use_buffers=True)
    g = ctx.generator(0)
    images = torch.rand(256, 3, p.image_size, p.image_size, device=ctx.device, generator=g)
    images = (images * 2 - 1).contiguous(memory_format=torch.channels_last)
    batch = min(p.batch_size, 8) if ctx.tiny else p.batch_size

    def iteration() -> None:
        idx = torch.randint(0, images.shape[0], (batch,), device=ctx.device, generator=g)
        x0 = images[idx]
        flip = torch.rand(batch, 1, 1, 1, device=ctx.device, generator=g) < 0.5
        x0 = torch.where(flip, x0.flip(-1), x0)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
            loss = scale_space_loss(model, deg, x0, generator=g, min_snr_gamma=p.min_snr_gamma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
        opt.step()
        warm.step()
        ema.update_parameters(model)

    reps = 3 if ctx.tiny else 300
    sec = time_calls(iteration, ctx, warmup=3, reps=reps, budget=max(2.0, ctx.left() / 3))
    ctx.row(
        preset=name,
        batch=batch,
        iterations_per_s=1 / sec,
        images_per_s=batch / sec,
        iterations=p.iterations,
        projected_hours=p.iterations * sec / 3600,
    )
