"""Cost of the dual-scale denoiser relative to the baseline MLP, measured side by side.

Three measurements, each interleaved round by round so that load on a shared machine
hits every variant alike; ratios are medians of per-round ratios:

1. one batch-256 training step (forward + backward + AdamW step) of the baseline
   ``MLPDenoiser``, the batched ``DualScaleDenoiser`` ("adaptive" preset) and a naive
   dual model (``DualScaleBlock`` of two separate ``MLPDenoiser``: embeddings computed
   per branch and again for the gate);
2. the full ``scalemix.training.train`` loop (data sampling, noise, clipping, LR
   schedule, EMA) against the bare step, for the baseline and the dual model;
3. drawing 10,000 samples with 100 ancestral steps (``scalemix.sampling.sample``).

Run: ``python benchmarks/bench_dual_scale.py`` (``--quick`` for a shorter run).
OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless the variable is
already set): on a machine shared with other jobs, spinning threads that lose their
core make timings erratic.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from scalemix.nn import (
    DualScaleBlock,
    DualScaleDenoiser,
    LearnedAffineUpscale,
    MLPDenoiser,
    TimestepGate,
)
from scalemix.sampling import sample
from scalemix.scheduler import DDPMScheduler
from scalemix.training import train

T = 100
BATCH = 256


def build_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    naive = DualScaleBlock(
        MLPDenoiser(), MLPDenoiser(), TimestepGate("mlp"), LearnedAffineUpscale(2)
    )
    return {
        "baseline": MLPDenoiser(),
        "dual (batched)": DualScaleDenoiser.from_preset("adaptive"),
        "dual (naive)": naive,
    }


def bare_step(model: nn.Module) -> Callable[[], None]:
    """One optimiser step on a fixed batch, with the optimiser the training loop uses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 2, generator=g)
    t = torch.randint(0, T, (BATCH,), generator=g)
    eps = torch.randn(BATCH, 2, generator=g)

    def step() -> None:
        loss = F.mse_loss(model(x, t), eps)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()

    return step


def interleaved(
    fns: dict[str, Callable[[], float]], rounds: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Run every function once per round; return medians and all per-round values."""
    values: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            values[name].append(fn())
    return {k: statistics.median(v) for k, v in values.items()}, values


def ratio(values: dict[str, list[float]], num: str, den: str) -> float:
    return statistics.median(a / b for a, b in zip(values[num], values[den], strict=True))


def timed_steps(step: Callable[[], None], n: int) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        for _ in range(n):
            step()
        return (time.perf_counter() - start) / n * 1e3

    return run


def bench_steps(models: dict[str, nn.Module], rounds: int, per_round: int) -> None:
    fns = {name: timed_steps(bare_step(m), per_round) for name, m in models.items()}
    for fn in fns.values():  # warm-up
        fn()
    med, values = interleaved(fns, rounds)
    print(f"\n1. training step, batch {BATCH} (ms/step; median of {rounds} rounds)")
    for name in fns:
        r = ratio(values, name, "baseline")
        print(f"   {name:16s} {med[name]:8.2f} ms   {r:5.2f}x baseline")


def bench_loop(models: dict[str, nn.Module], rounds: int, steps: int) -> None:
    data = torch.randn(100_000, 2)
    scheduler = DDPMScheduler(num_train_timesteps=T)
    fns: dict[str, Callable[[], float]] = {}
    for name in ("baseline", "dual (batched)"):
        model = models[name]
        fns[f"{name} bare"] = timed_steps(bare_step(model), steps)

        def loop(model: nn.Module = model) -> float:
            g = torch.Generator().manual_seed(0)
            result = train(model, scheduler, data, steps=steps, batch_size=BATCH, generator=g)
            return result.seconds / steps * 1e3

        fns[f"{name} loop"] = loop
    for fn in fns.values():
        fn()
    med, values = interleaved(fns, rounds)
    print(f"\n2. train() loop vs bare step ({steps} steps per run, median of {rounds} rounds)")
    for name in ("baseline", "dual (batched)"):
        r = ratio(values, f"{name} loop", f"{name} bare")
        loop_ms = med[f"{name} loop"]
        print(
            f"   {name:16s} bare {med[f'{name} bare']:7.2f} ms  loop {loop_ms:7.2f} ms "
            f"({1e3 / loop_ms:6.1f} steps/s)  loop/bare {r:5.2f}"
        )
    in_loop = ratio(values, "dual (batched) loop", "baseline loop")
    print(f"   dual/baseline in the loop: {in_loop:.2f}x")


def bench_sampling(models: dict[str, nn.Module], rounds: int, n: int, steps: int) -> None:
    scheduler = DDPMScheduler(num_train_timesteps=T)

    def sampler(model: nn.Module) -> Callable[[], float]:
        def run() -> float:
            g = torch.Generator().manual_seed(0)
            start = time.perf_counter()
            with torch.inference_mode():
                sample(model, scheduler, (n, 2), steps=steps, generator=g)
            return time.perf_counter() - start

        return run

    fns = {name: sampler(models[name]) for name in ("baseline", "dual (batched)", "dual (naive)")}
    med, values = interleaved(fns, rounds)
    print(f"\n3. sampling {n} points, {steps} steps (s; median of {rounds} rounds)")
    for name in fns:
        print(
            f"   {name:16s} {med[name]:8.2f} s    {ratio(values, name, 'baseline'):5.2f}x baseline"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = build_models()
    wait = os.environ["OMP_WAIT_POLICY"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY={wait}")
    for name, m in models.items():
        print(f"   {name:16s} {sum(p.numel() for p in m.parameters()):8d} parameters")
    quick = args.quick
    bench_steps(models, rounds=8 if quick else 30, per_round=5 if quick else 10)
    bench_loop(models, rounds=3 if quick else 7, steps=50 if quick else 200)
    bench_sampling(models, rounds=1 if quick else 2, n=10_000, steps=100)


if __name__ == "__main__":
    main()
