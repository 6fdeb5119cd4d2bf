"""The 2D study's runs trained as batched ensembles (``run_study.py --batched``).

The runs of one model (every dataset and seed) are trained together by
:func:`scalemix.training.train_ensemble`: one stacked model, each copy with its own
data set, seed, optimiser state and EMA, equal to the separate runs of
``run_study.run_one`` on the CPU (on a GPU the copies draw their noise from CUDA
generators, so their numbers differ from a CPU run's by the randomness only). The trained
models are then evaluated and sampled on the CPU exactly as ``run_one`` does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from scalemix import DDPMScheduler, DualScaleDenoiser, sample
from scalemix.datasets import make_dataset
from scalemix.metrics import knn_kl
from scalemix.training import evaluate_eps_mse, train_ensemble


def run_batched(
    jobs: Sequence[tuple[str, str, int]],
    cfg: Any,
    threads: int,
    device: str = "cpu",
    *,
    compile: bool = False,
) -> Iterator[dict[str, Any]]:
    """Train ``jobs`` (dataset, model, seed) grouped by model; yield one record per run.

    ``cfg`` is a ``run_study.StudyConfig``; records have ``run_study.run_one``'s keys.
    ``compile`` runs each ensemble through :func:`torch.compile` (``train_ensemble``).
    """
    from run_study import build_model, train_settings

    torch.set_num_threads(threads)
    scheduler = DDPMScheduler(cfg.num_timesteps, beta_schedule=cfg.beta_schedule)
    data = {d: make_dataset(d, cfg.n_data, seed=cfg.data_seed) for d in {j[0] for j in jobs}}
    for model_name in dict.fromkeys(j[1] for j in jobs):
        group = [j for j in jobs if j[1] == model_name]
        models = []
        for _, _, seed in group:
            torch.manual_seed(seed)  # the parameter initialisation of run_one
            models.append(build_model(model_name))
        result = train_ensemble(
            models,
            scheduler,
            [data[d] for d, _, _ in group],
            generators=[torch.Generator(device).manual_seed(s) for _, _, s in group],
            device=device,
            compile=compile,
            progress=True,
            **train_settings(cfg),
        )
        per_run_s = result.seconds / len(group)
        for k, (dataset, _, seed) in enumerate(group):
            yield _evaluate(dataset, model_name, seed, cfg, result, k, data[dataset], per_run_s)


def _evaluate(
    dataset: str,
    model_name: str,
    seed: int,
    cfg: Any,
    result: Any,
    k: int,
    data: torch.Tensor,
    train_s: float,
) -> dict[str, Any]:
    """``run_one``'s evaluation of copy ``k`` (eval loss, samples, KL, alpha) on the CPU."""
    scheduler = DDPMScheduler(cfg.num_timesteps, beta_schedule=cfg.beta_schedule)
    model, ema = result.models[k].cpu(), result.ema_models[k].cpu().eval()
    eval_loss = evaluate_eps_mse(
        model, scheduler, data, generator=torch.Generator().manual_seed(10_000 + seed)
    )
    start = time.perf_counter()
    samples = sample(
        ema, scheduler, (cfg.n_samples, 2), generator=torch.Generator().manual_seed(20_000 + seed)
    )
    out: dict[str, Any] = {
        "dataset": dataset,
        "model": model_name,
        "seed": seed,
        "kl": knn_kl(data, samples, k=cfg.k),
        "eval_loss": eval_loss,
        "train_s": train_s,
        "sample_s": time.perf_counter() - start,
        "losses": result.losses[k, :: max(1, cfg.steps // 500)].tolist(),
        "samples": samples[:2_000].tolist(),
        "batched": True,
    }
    if isinstance(ema, DualScaleDenoiser):
        with torch.no_grad():
            out["alpha"] = ema.alpha(torch.arange(cfg.num_timesteps)).tolist()
    return out
