"""Few-step sampling of the 2D study models: k-NN KL against the number of network calls.

Trains the study's baseline ``MLPDenoiser`` on moons and dino (T = 1000 linear betas
1e-4 .. 0.02, otherwise the study's optimiser settings, EMA every step) or loads it from
``--cache``, then draws ``--samples`` points with each sampler at 5, 10, 20, 50 and 100
network calls and prints KL(data || samples) in bits (``scalemix.metrics.knn_kl``, k = 5,
max-norm; the study's definition) beside the 1000-step ancestral sampler as reference:

* ``ddpm``: ancestral, strided (trailing spacing);
* ``ddim``: DDIM, eta = 0 (trailing);
* ``dpmpp_2m``: scalemix's DPM-Solver++ (2M), trailing spacing;
* ``dpmpp_2m logsnr``: the same, timesteps evenly spaced in log-SNR;
* ``dpmpp_2m_sde`` (and ``logsnr``): the SDE-DPM-Solver++ (2M), second-order ancestral;
* ``diffusers``: diffusers' ``DPMSolverMultistepScheduler`` (dpmsolver++, order 2) with
  its default timestep spacing, on the same model, betas and initial noise;
* ``diffusers lu``: the same with ``use_lu_lambdas=True`` (its steps uniform in log-SNR).

Two references: 1000-step ancestral sampling (``ddpm``) and 1000-step DDIM, the limit
the deterministic samplers converge to (the probability-flow ODE of the same model,
whose samples differ from the SDE's where the model is imperfect). All samplers start
from the same x_T. One torch thread.

    nice -n 15 python benchmarks/bench_few_step_2d.py --plot docs/_static/few_step_kl.png

About 15 minutes on one busy core with the defaults (2,000 training steps, 5,000
samples); ``--cache DIR`` keeps the trained models for a rerun.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scalemix import DDPMScheduler, MLPDenoiser, sample
from scalemix.datasets import make_dataset
from scalemix.metrics import knn_kl
from scalemix.training import train

CALLS = (5, 10, 20, 50, 100)
SAMPLERS = (
    "ddpm",
    "ddim",
    "dpmpp_2m",
    "dpmpp_2m logsnr",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde logsnr",
    "diffusers",
    "diffusers lu",
)


def train_model(
    dataset: str, data: Tensor, scheduler: DDPMScheduler, steps: int, cache: Path | None
) -> torch.nn.Module:
    """The EMA of a baseline MLPDenoiser trained on ``data`` (or loaded from ``cache``)."""
    path = None if cache is None else cache / f"{dataset}_{steps}.pt"
    model = MLPDenoiser()
    if path is not None and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    torch.manual_seed(0)
    result = train(
        MLPDenoiser(),
        scheduler,
        data,
        steps=steps,
        ema_every=1,
        generator=torch.Generator().manual_seed(0),
    )
    model.load_state_dict(result.ema.state_dict())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval()


def diffusers_dpmpp(
    model: Callable[[Tensor, Tensor], Tensor],
    scheduler: DDPMScheduler,
    x_T: Tensor,
    calls: int,
    lu_lambdas: bool,
) -> Tensor:
    """diffusers' DPMSolverMultistepScheduler with its defaults on our betas."""
    from diffusers import DPMSolverMultistepScheduler

    d = DPMSolverMultistepScheduler(
        num_train_timesteps=scheduler.num_train_timesteps,
        trained_betas=scheduler.betas.numpy(),
        algorithm_type="dpmsolver++",
        solver_order=2,
        use_lu_lambdas=lu_lambdas,
    )
    d.set_timesteps(calls)
    x = x_T.clone()
    with torch.no_grad():
        for t in d.timesteps:
            out = model(x, torch.full((x.shape[0],), int(t), dtype=torch.long))
            x = d.step(out, t, x).prev_sample
    return x


def run_sampler(
    name: str, model: Any, scheduler: DDPMScheduler, x_T: Tensor, calls: int, seed: int
) -> Tensor:
    if name.startswith("diffusers"):
        return diffusers_dpmpp(model, scheduler, x_T, calls, lu_lambdas=name.endswith("lu"))
    sampler, _, spacing = name.partition(" ")
    return sample(
        model,
        scheduler,
        tuple(x_T.shape),
        steps=calls,
        sampler=sampler,  # type: ignore[arg-type]
        spacing=(spacing or "trailing"),  # type: ignore[arg-type]
        x_T=x_T,
        generator=torch.Generator().manual_seed(seed),
    )


SPREAD: dict[str, dict[str, Any]] = {  # --spread: the target comparisons, over seeds
    "dpmpp_2m logsnr, 20 calls": {"sampler": "dpmpp_2m", "spacing": "logsnr", "steps": 20},
    "dpmpp_2m_sde logsnr, 20 calls": {"sampler": "dpmpp_2m_sde", "spacing": "logsnr", "steps": 20},
    "ddim, 10 calls": {"sampler": "ddim", "steps": 10},
    "dpmpp_2m, 10 calls": {"sampler": "dpmpp_2m", "steps": 10},
    "ddpm, 1000 steps": {"sampler": "ddpm"},
}


def spread(
    model: Any, scheduler: DDPMScheduler, data: Tensor, n: int, seeds: int
) -> dict[str, list[float]]:
    """KL of the SPREAD samplers for seeds 3 .. 3 + seeds - 1 (x_T and noise)."""
    out: dict[str, list[float]] = {}
    reference_seeds = max(2, (seeds + 1) // 2)  # the slow 1000-step reference on fewer
    for i, seed in enumerate(range(3, 3 + seeds)):
        x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
        for name, kw in SPREAD.items():
            if name == "ddpm, 1000 steps" and i >= reference_seeds:
                continue
            gen = torch.Generator().manual_seed(seed + 100)
            x = sample(model, scheduler, (n, 2), x_T=x_T, generator=gen, **kw)
            out.setdefault(name, []).append(knn_kl(data, x, k=5, workers=1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["moons", "dino"])
    p.add_argument("--train-steps", type=int, default=2_000)
    p.add_argument("--samples", type=int, default=5_000)
    p.add_argument("--calls", type=int, nargs="+", default=list(CALLS))
    p.add_argument("--cache", type=Path, default=None, help="directory for the trained models")
    p.add_argument("--plot", type=Path, default=None, help="write a KL-vs-calls plot here")
    p.add_argument("--json", type=Path, default=None, help="write the tables here")
    p.add_argument(
        "--spread", type=int, default=0, help="also run the 20/10-call comparisons on N seeds"
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    scheduler = DDPMScheduler(1000)
    results: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for dataset in args.datasets:
        data = make_dataset(dataset, 100_000, seed=42)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        model = train_model(dataset, data, scheduler, args.train_steps, args.cache)
        train_s = time.perf_counter() - t0
        x_T = torch.randn(args.samples, 2, generator=torch.Generator().manual_seed(1))
        t0 = time.perf_counter()
        ref = sample(
            model, scheduler, (args.samples, 2), x_T=x_T, generator=torch.Generator().manual_seed(2)
        )
        ref_kl = knn_kl(data, ref, k=5, workers=1)
        ref_s = time.perf_counter() - t0
        ode = sample(model, scheduler, (args.samples, 2), sampler="ddim", x_T=x_T)
        ode_kl = knn_kl(data, ode, k=5, workers=1)
        table: dict[str, list[float]] = {}
        for name in SAMPLERS:
            table[name] = [
                knn_kl(data, run_sampler(name, model, scheduler, x_T, c, 2), k=5, workers=1)
                for c in args.calls
            ]
        results[dataset] = {"ref": ref_kl, "ode": ode_kl, "table": table}
        if args.spread:
            results[dataset]["spread"] = spread(model, scheduler, data, args.samples, args.spread)
        print(
            f"\n{dataset}: k-NN KL (bits), {args.samples} samples; train {train_s:.0f} s, ", end=""
        )
        print(f"1000-step ancestral {ref_s:.0f} s")
        print("| sampler | " + " | ".join(f"{c} calls" for c in args.calls) + " |")
        print("|---|" + "---|" * len(args.calls))
        for name, row in table.items():
            print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
        print(f"| ddpm, 1000 steps (reference) | {ref_kl:.3f} |" + " |" * (len(args.calls) - 1))
        print(f"| ddim, 1000 steps (ODE limit) | {ode_kl:.3f} |" + " |" * (len(args.calls) - 1))
        for name, vals in results[dataset].get("spread", {}).items():
            sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
            print(f"{name}: {statistics.mean(vals):.3f} +- {sd:.3f} (sd over {len(vals)} seeds)")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({"calls": args.calls, **results}, indent=1) + "\n")
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
        for ax, (dataset, res) in zip(axes[0], results.items(), strict=True):
            for name, row in res["table"].items():
                style = "--" if name.startswith("diffusers") else "-"
                ax.plot(args.calls, row, style, marker="o", ms=4, label=name)
            ax.axhline(res["ref"], color="k", ls="--", lw=1, label="ddpm, 1000 steps")
            ax.axhline(res["ode"], color="grey", ls=":", lw=1, label="ddim, 1000 steps")
            ax.set_xscale("log")
            ax.set_xticks(args.calls, [str(c) for c in args.calls])
            ax.set_xlabel("network calls")
            ax.set_ylabel("k-NN KL (bits)")
            ax.set_title(dataset)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
