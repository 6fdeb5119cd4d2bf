"""The measurements of ``gpu_suite.py``: one function per part, writing into a Context.

Every figure is measured on the device given; projections (study and preset wall
times) are labelled as such and say from how many measured steps they come.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scalemix import DDPMScheduler, DualScaleDenoiser, MLPDenoiser
from scalemix.datasets import make_dataset
from scalemix.degradation import ScaleSpaceDegradation, respaced_timesteps
from scalemix.nn.flexi_unet import FlexiUNet
from scalemix.scale_space import scale_space_loss, scale_space_sample
from scalemix.training import train, train_ensemble

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples" / "celeba_scale_space"))

from ssd_presets import PRESETS  # noqa: E402

from flops import forward_flops, meta_model, schedule_flops, ssd_resolution_schedule  # noqa: E402


@dataclass
class Context:
    """Where a part runs, how long it may take, and where its figures go."""

    device: torch.device
    tiny: bool
    cap: float
    path: Path
    start: float = field(default_factory=time.perf_counter)
    result: dict[str, Any] = field(
        default_factory=lambda: {"status": "running", "rows": [], "summary": {}, "notes": []}
    )

    def __post_init__(self) -> None:
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def left(self) -> float:
        """Seconds left of the cap, less a margin for start-up and teardown."""
        return self.cap - 8.0 - (time.perf_counter() - self.start)

    def row(self, **values: Any) -> None:
        self.result["rows"].append(values)
        self.save()

    def note(self, text: str) -> None:
        self.result["notes"].append(text)
        self.save()

    def summary(self, **values: Any) -> None:
        self.result["summary"].update(values)
        self.save()

    def attempt(self, label: str, fn: Callable[[], None]) -> None:
        """Run one measurement; an exception becomes a note and the part goes on."""
        try:
            fn()
        except Exception as err:  # keep the other measurements of the part
            self.note(f"{label}: failed with {type(err).__name__}: {str(err)[:300]}")
            if self.cuda:
                torch.cuda.empty_cache()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.result, indent=1))

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[], object], ctx: Context, *, warmup: int, reps: int, budget: float
) -> float:
    """Mean seconds per call after ``warmup`` calls: CUDA events on a GPU, else a clock.

    Stops after ``budget`` seconds of timed calls (at least ``min(reps, 2)`` are timed).
    """
    for _ in range(warmup):
        fn()
    sync(ctx.device)
    if ctx.cuda:
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
    wall = time.perf_counter()
    n = 0
    while n < reps and (n < min(reps, 2) or time.perf_counter() - wall < budget):
        fn()
        n += 1
    if ctx.cuda:
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3 / n
    return (time.perf_counter() - wall) / n


# ----------------------------------------------------------------------- part 1
def _two_models(tiny: bool) -> dict[str, Callable[[], nn.Module]]:
    size = {"embedding_dim": 16, "hidden_dim": 32, "num_blocks": 2} if tiny else {}
    return {
        "baseline": lambda: MLPDenoiser(**size),
        "dual": lambda: DualScaleDenoiser.from_preset("adaptive", **size),
    }


def _step_time(
    ctx: Context,
    build: Callable[[], nn.Module],
    mode: str,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    reps: int,
) -> float:
    """Seconds per bare training step (forward, MSE, backward, fused AdamW) in ``mode``."""
    torch.manual_seed(0)
    model = build().to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    graphs = mode == "CUDA graphs"
    if mode == "eager":
        fwd: Callable[..., torch.Tensor] = model
    elif graphs:
        fwd = torch.compile(model, mode="reduce-overhead")
    else:
        fwd = torch.compile(model, backend=mode)
    x, t, eps = batch

    def step() -> None:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        loss = F.mse_loss(fwd(x, t), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return time_calls(step, ctx, warmup=3, reps=reps, budget=3.0)


def _loop_time(ctx: Context, build: Callable[[], nn.Module], compile_arg: bool | str) -> float:
    """Seconds per step of ``train`` (batch 256, replacement batching: one batch shape)."""
    torch.manual_seed(0)
    model = build().to(ctx.device)
    data = torch.randn(20_000, 2, generator=ctx.generator(2), device=ctx.device)
    scheduler = DDPMScheduler(100)
    kwargs: dict[str, Any] = {"batch_size": 256, "compile": compile_arg, "batching": "replacement"}
    train(model, scheduler, data, steps=3, generator=ctx.generator(1), **kwargs)
    steps = 4 if ctx.tiny else 300
    result = train(model, scheduler, data, steps=steps, generator=ctx.generator(1), **kwargs)
    return result.seconds / steps


def step_ratio(ctx: Context) -> None:
    """Dual-scale / baseline time of one batch-256 training step, in several modes.

    Cheap modes first, so that a cap reached while compiling keeps them.
    """
    backend = "eager" if ctx.tiny else "inductor"
    if not ctx.cuda:
        ctx.note("CUDA graphs: skipped (needs a CUDA device)")
    if ctx.tiny:
        ctx.note(
            "tiny: 2D models of width 32; compiled rows use the eager backend (dynamo tracing only)"
        )
    g = ctx.generator(0)
    x = torch.randn(256, 2, generator=g, device=ctx.device)
    t = torch.randint(0, 100, (256,), generator=g, device=ctx.device)
    eps = torch.randn(256, 2, generator=g, device=ctx.device)
    reps = 3 if ctx.tiny else 200
    modes: list[tuple[str, str]] = [("bare", "eager"), ("loop", "eager"), ("bare", backend)]
    modes += [("bare", "CUDA graphs"), ("loop", backend)] if ctx.cuda else [("loop", backend)]
    for kind, mode in modes:
        label = "bare step" if kind == "bare" else "train() loop"
        label += f", {mode if mode in ('eager', 'CUDA graphs') else 'compiled ' + mode}"

        def measure(kind: str = kind, mode: str = mode, label: str = label) -> None:
            times: dict[str, float] = {}
            for name, build in _two_models(ctx.tiny).items():
                if kind == "bare":
                    times[name] = _step_time(ctx, build, mode, (x, t, eps), reps)
                else:
                    times[name] = _loop_time(ctx, build, False if mode == "eager" else mode)
            ctx.row(
                mode=label,
                baseline_ms=times["baseline"] * 1e3,
                dual_ms=times["dual"] * 1e3,
                dual_over_baseline=times["dual"] / times["baseline"],
            )

        ctx.attempt(label, measure)


# ----------------------------------------------------------------------- part 2
STUDY_DATASETS = ("circle", "dino", "line", "moons")
STUDY_MODELS = ("baseline", "fixed", "adaptive")
STUDY_STEPS = 10_000


def _study_model(name: str, tiny: bool) -> nn.Module:
    size = {"embedding_dim": 16, "hidden_dim": 32, "num_blocks": 2} if tiny else {}
    if name == "baseline":
        return MLPDenoiser(**size)
    return DualScaleDenoiser.from_preset(name, **size)  # type: ignore[arg-type]


def study_2d(ctx: Context) -> None:
    """36 runs: batched (one ensemble of 12 per model) vs 36 separate runs, projected."""
    n_data = 2_000 if ctx.tiny else 100_000
    measured = 3 if ctx.tiny else 200
    seeds = range(3)
    scheduler = DDPMScheduler(100)
    data: dict[str, torch.Tensor] = {}
    for name in STUDY_DATASETS:
        try:
            data[name] = make_dataset(name, n_data, seed=42).to(ctx.device)  # type: ignore[arg-type]
        except ModuleNotFoundError as err:
            data[name] = make_dataset("moons", n_data, seed=43).to(ctx.device)
            ctx.note(f"{name}: substituted by a moons draw of the same size ({err})")
    ctx.note(
        f"wall times are projected to {STUDY_STEPS} steps per run from {measured} measured "
        "steps (after a warm-up); training only (no sampling or KL evaluation)"
    )
    jobs = [(d, s) for d in STUDY_DATASETS for s in seeds]
    total_batched = total_separate = 0.0
    for model_name in STUDY_MODELS:
        per_step, vectorized = _ensemble_step(ctx, model_name, jobs, data, measured, False)
        batched = per_step * STUDY_STEPS
        kwargs: dict[str, Any] = {"batch_size": 256, "device": ctx.device}
        torch.manual_seed(0)
        single = _study_model(model_name, ctx.tiny).to(ctx.device)
        one = data[STUDY_DATASETS[0]]
        train(single, scheduler, one, steps=2, generator=ctx.generator(0), **kwargs)
        sep = train(single, scheduler, one, steps=measured, generator=ctx.generator(0), **kwargs)
        separate = sep.seconds / measured * STUDY_STEPS
        total_batched += batched
        total_separate += separate * len(jobs)
        ctx.row(
            model=model_name,
            runs=len(jobs),
            vectorized=vectorized,
            batched_s_projected=batched,
            one_run_s_projected=separate,
            separate_runs_s_projected=separate * len(jobs),
        )
    ctx.summary(
        study_36_runs_batched_s=total_batched,
        study_36_runs_separate_s=total_separate,
        speedup=total_separate / total_batched,
    )
    backend = "eager" if ctx.tiny else "inductor"

    def compiled() -> None:
        per_step, vectorized = _ensemble_step(ctx, "baseline", jobs, data, measured, backend)
        ctx.row(
            model=f"baseline, compile={backend!r}",
            runs=len(jobs),
            vectorized=vectorized,
            batched_s_projected=per_step * STUDY_STEPS,
        )

    ctx.attempt("compiled ensemble", compiled)


def _ensemble_step(
    ctx: Context,
    model_name: str,
    jobs: list[tuple[str, int]],
    data: dict[str, torch.Tensor],
    measured: int,
    compile_arg: bool | str,
) -> tuple[float, bool]:
    """Seconds per step of one ensemble of the ``jobs`` (dataset, seed) of a model."""
    models = []
    for _, seed in jobs:
        torch.manual_seed(seed)
        models.append(_study_model(model_name, ctx.tiny))
    sets = [data[d] for d, _ in jobs]
    kwargs: dict[str, Any] = {"batch_size": 256, "device": ctx.device, "compile": compile_arg}
    scheduler = DDPMScheduler(100)
    for steps in (3, measured):  # warm-up (and compilation), then the timed run
        gens = [ctx.generator(seed) for _, seed in jobs]
        result = train_ensemble(models, scheduler, sets, generators=gens, steps=steps, **kwargs)
    return result.seconds / measured, result.vectorized


# ----------------------------------------------------------------------- parts 3-5
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


PARTS: dict[str, Callable[[Context], None]] = {
    "step_ratio": step_ratio,
    "study_2d": study_2d,
    "ssd_sampling": ssd_sampling,
    "unet_training": unet_training,
    "celeba_preset": celeba_preset,
}
