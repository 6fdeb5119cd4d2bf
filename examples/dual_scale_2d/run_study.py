"""Reproduce the 2D adaptive dual-scale study: baseline vs fixed-0.5 vs adaptive models.

Trains each model on circle, dino, line and moons with the published settings (10,000
steps, batch 256, T = 100, AdamW 3e-4 with cosine annealing, clipping 0.5, EMA 0.995
every 10 steps with the reference's warm-up), over several seeds, and writes a results
table (markdown and JSON) next to the paper's numbers, plus plots of samples, alpha(t)
and training losses, and each run's final EMA model in ``models/`` (``save_pretrained``;
``MLPDenoiser.from_pretrained`` / ``DualScaleDenoiser.from_pretrained`` and
``scalemix.hub.load_scheduler`` load it; not with ``--batched``).

    python examples/dual_scale_2d/run_study.py --out outputs/study          # full study
    python examples/dual_scale_2d/run_study.py --quick --out outputs/quick  # a few minutes
    python examples/dual_scale_2d/run_study.py --batched --device cuda        # one GPU
    python examples/dual_scale_2d/run_study.py --batched --compile --device cuda

Runs go to as many parallel processes as there are cores (``--jobs``), one torch thread
each (``--threads``): on a shared machine this is several times faster than one run
with many threads fighting other processes for the cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper import DATASETS, MODELS
from report import summarise, write_markdown, write_plots

from scalemix import DDPMScheduler, DualScaleDenoiser, MLPDenoiser, sample
from scalemix.datasets import make_dataset
from scalemix.metrics import knn_kl
from scalemix.training import evaluate_eps_mse, train


@dataclass(frozen=True)
class StudyConfig:
    """Settings of one study run (defaults: the published code's settings)."""

    steps: int = 10_000
    batch_size: int = 256
    lr: float = 3e-4
    grad_clip: float = 0.5
    ema_decay: float = 0.995
    ema_every: int = 10
    num_timesteps: int = 100
    beta_schedule: str = "linear"
    loss: str = "mse"
    kl_weight: float = 0.1
    n_data: int = 100_000
    n_samples: int = 10_000
    k: int = 5
    data_seed: int = 42


FULL = StudyConfig()
#: A short run: with 1,000 steps the EMA is updated every step (with the published
#: every-10-steps warm-up, 1,000 steps leave a tenth of the average on the weights of
#: the first 200 steps).
QUICK = StudyConfig(steps=1_000, n_samples=5_000, ema_every=1)


def train_settings(cfg: StudyConfig) -> dict[str, Any]:
    """The optimisation settings of ``train`` (and ``train_ensemble``) for ``cfg``."""
    return {
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "grad_clip": cfg.grad_clip,
        "ema_decay": cfg.ema_decay,
        "ema_every": cfg.ema_every,
        "loss": cfg.loss,
        "kl_weight": cfg.kl_weight,
    }


def build_model(name: str) -> torch.nn.Module:
    """The study's three models: the baseline MLP and the two dual-scale variants."""
    if name == "baseline":
        return MLPDenoiser()
    if name in ("fixed", "adaptive"):
        return DualScaleDenoiser.from_preset(name)
    raise ValueError(f"unknown model {name!r}; accepted: {', '.join(MODELS)}")


def _stage(progress: bool, message: str) -> None:
    if progress:
        print(f"  {message}", flush=True)


def run_one(
    dataset: str,
    model_name: str,
    seed: int,
    cfg: StudyConfig,
    threads: int,
    progress: bool,
    models_dir: Path | None = None,
) -> dict[str, Any]:
    """Train, evaluate and sample one (dataset, model, seed); return what was measured.

    With ``models_dir``, the final EMA model and its scheduler are written to
    ``models_dir / f"{dataset}_{model_name}_seed{seed}"`` with ``save_pretrained``.
    """
    torch.set_num_threads(threads)
    _stage(progress, f"{dataset} / {model_name} / seed {seed}: training {cfg.steps} steps")
    data = make_dataset(dataset, cfg.n_data, seed=cfg.data_seed)  # type: ignore[arg-type]
    scheduler = DDPMScheduler(cfg.num_timesteps, beta_schedule=cfg.beta_schedule)  # type: ignore[arg-type]
    torch.manual_seed(seed)  # parameter initialisation of the example's models
    model = build_model(model_name)
    result = train(
        model,
        scheduler,
        data,
        generator=torch.Generator().manual_seed(seed),
        progress=progress,
        **train_settings(cfg),
    )
    _stage(progress, f"evaluating the loss on {cfg.n_data:,} points")
    eval_loss = evaluate_eps_mse(
        result.model, scheduler, data, generator=torch.Generator().manual_seed(10_000 + seed)
    )
    ema = result.ema.eval()
    if models_dir is not None:
        folder = models_dir / f"{dataset}_{model_name}_seed{seed}"
        result.export_pretrained(folder, scheduler=scheduler)
    _stage(progress, f"sampling {cfg.n_samples:,} points")
    start = time.perf_counter()
    samples = sample(
        ema,
        scheduler,
        (cfg.n_samples, 2),
        generator=torch.Generator().manual_seed(20_000 + seed),
        progress=progress,
    )
    sample_s = time.perf_counter() - start
    _stage(progress, "k-NN KL against the training data")
    kl = knn_kl(data, samples, k=cfg.k, workers=threads)
    out: dict[str, Any] = {
        "dataset": dataset,
        "model": model_name,
        "seed": seed,
        "kl": kl,
        "eval_loss": eval_loss,
        "train_s": result.seconds,
        "sample_s": sample_s,
        "losses": result.losses[:: max(1, cfg.steps // 500)].tolist(),
        "samples": samples[:2_000].tolist(),
    }
    if isinstance(ema, DualScaleDenoiser):
        with torch.no_grad():
            out["alpha"] = ema.alpha(torch.arange(cfg.num_timesteps)).tolist()
    return out


def default_jobs() -> int:
    """The number of cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("outputs/dual_scale_2d"))
    p.add_argument(
        "--quick", action="store_true", help="1,000 steps, EMA every step, one seed, 5,000 samples"
    )
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; quick 1)")
    p.add_argument("--steps", type=int, default=None, help="override the training steps")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument(
        "--loss",
        choices=("mse", "hybrid"),
        default="mse",
        help="'mse' (the published code) or 'hybrid' = MSE + 0.1 KL (the text)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=default_jobs(),
        help="runs in parallel processes (default: the number of cores, %(default)s here)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--resume", action="store_true", help="keep the finished runs in runs.jsonl")
    p.add_argument("--batched", action="store_true", help="train each model's runs as one ensemble")
    p.add_argument("--device", default="cpu", help="training device of --batched (e.g. cuda)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="with --batched: torch.compile each ensemble (faster on a GPU after compiling)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    cfg = dataclasses.replace(cfg, loss=args.loss)
    if args.steps is not None:
        cfg = dataclasses.replace(cfg, steps=args.steps)
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    threads = args.threads
    jobs = [(d, m, s) for s in range(seeds) for d in args.datasets for m in args.models]
    n_jobs = max(1, min(args.jobs, len(jobs)))
    print(f"{len(jobs)} runs, {n_jobs} at a time, {threads} torch thread(s) each: {cfg}")
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs.jsonl"  # one line per finished run; --resume skips those
    runs: list[dict[str, Any]] = []
    if args.resume and log.exists():
        runs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        done = {(r["dataset"], r["model"], r["seed"]) for r in runs}
        jobs = [j for j in jobs if j not in done]
        print(f"resuming: {len(runs)} runs done, {len(jobs)} to go", flush=True)
    elif log.exists():
        log.unlink()

    # The final EMA models, in save_pretrained's format (MLPDenoiser / DualScaleDenoiser).
    models_dir = args.out / "models"
    start = time.perf_counter()

    def record(r: dict[str, Any], i: int) -> None:
        runs.append(r)
        with log.open("a") as f:
            f.write(json.dumps(r) + "\n")
        elapsed = time.perf_counter() - start
        eta = elapsed / (i + 1) * (len(jobs) - i - 1)
        print(
            f"[{i + 1}/{len(jobs)}] {r['dataset']:7s} {r['model']:9s} seed {r['seed']}: "
            f"KL {r['kl']:.3f} bits, eval {r['eval_loss']:.3f}, train {r['train_s']:.1f} s, "
            f"sample {r['sample_s']:.1f} s | {elapsed / 60:.1f} min so far, "
            f"ETA {eta / 60:.1f} min",
            flush=True,
        )

    if args.batched:  # train_ensemble per model, see batched.py
        from batched import run_batched

        for i, r in enumerate(run_batched(jobs, cfg, threads, args.device, compile=args.compile)):
            record(r, i)
    elif n_jobs == 1:
        for i, (d, m, s) in enumerate(jobs):
            record(run_one(d, m, s, cfg, threads, True, models_dir), i)
    else:
        with ProcessPoolExecutor(n_jobs, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(run_one, d, m, s, cfg, threads, False, models_dir) for d, m, s in jobs
            ]
            for i, f in enumerate(as_completed(futures)):
                record(f.result(), i)
    every_job = [(d, m, s) for s in range(seeds) for d in args.datasets for m in args.models]
    order = {job: i for i, job in enumerate(every_job)}
    runs.sort(key=lambda r: order.get((r["dataset"], r["model"], r["seed"]), -1))
    summary = summarise(runs)
    meta = {
        "config": dataclasses.asdict(cfg),
        "seeds": seeds,
        "threads_per_run": threads,
        "jobs": n_jobs,
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
    }
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "summary": summary,
                "runs": [{k: v for k, v in r.items() if k != "samples"} for r in runs],
            },
            indent=1,
        )
    )
    table = write_markdown(summary, meta, args.out / "results.md")
    write_plots(runs, args.out, steps=cfg.steps, data_seed=cfg.data_seed)
    print(table)
    print(f"wrote {args.out}/results.md, results.json, samples.png, alpha.png, losses.png")
    return summary


if __name__ == "__main__":
    main()
