"""One class-conditional adaptive dual-scale model for the four 2D datasets of the study.

Can one ``DualScaleDenoiser(num_classes=4)`` (the study's adaptive preset), trained on
circle, dino, line and moons together with the dataset as the class, match the four
separate adaptive models of ``run_study.py``? It trains on a labelled mixture of the
datasets (100,000 points each, label = the dataset's index), with the study's settings
but 4 x its steps (40,000), so that each dataset gets as many steps (in expectation, as
many training points) as one separate model. Labels are never dropped
(``label_dropout=0``): the question needs no guidance. Each dataset is evaluated as in
the study: 10,000 ancestral samples from the EMA model with ``class_labels = k`` and
the k-NN KL (k = 5, max-norm, bits) against that dataset's points, mean +- std over
seeds; the eval loss over its points with its label, from the non-EMA model.

The separate adaptive models' KLs are read from the committed study results
(``docs/_static/results_2d/results.json``) when their settings are those of this run;
otherwise (``--quick``, ``--steps``, ...) the separate models are trained here too.

    python examples/dual_scale_2d/conditional.py --out outputs/cond2d --jobs 2  # full
    python examples/dual_scale_2d/conditional.py --quick --out outputs/cond2d_quick

Runs (one per seed, and one per dataset and seed for separate models trained here) go
to ``--jobs`` processes with ``--threads`` torch threads each (default 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper import DATASETS
from run_study import FULL, QUICK, StudyConfig, default_jobs, run_one, train_settings

from scalemix import DDPMScheduler, DualScaleDenoiser, sample
from scalemix.datasets import make_dataset
from scalemix.metrics import knn_kl
from scalemix.training import evaluate_eps_mse, train

ROOT = Path(__file__).resolve().parents[2]
#: The committed results of the full study (the separate models).
STUDY_RESULTS = ROOT / "docs" / "_static" / "results_2d" / "results.json"
#: Settings that must agree for the committed separate results to be reused.
MATCHED = tuple(field.name for field in dataclasses.fields(StudyConfig))


def labelled_mixture(datasets: Sequence[str], cfg: StudyConfig) -> tuple[torch.Tensor, ...]:
    """The datasets stacked, ``cfg.n_data`` points each, and their labels (the index).

    Each dataset's points are the study's (``make_dataset(name, n_data, seed=data_seed)``),
    so that every class trains on, and is evaluated against, the very points of its
    separate model (``scalemix.datasets.make_labelled_mixture`` draws all datasets from
    one generator: other points of the same distributions).
    """
    parts = [make_dataset(name, cfg.n_data, seed=cfg.data_seed) for name in datasets]  # type: ignore[arg-type]
    labels = torch.arange(len(parts)).repeat_interleave(cfg.n_data)
    return torch.cat(parts), labels


def run_conditional(
    datasets: Sequence[str], seed: int, cfg: StudyConfig, threads: int, progress: bool
) -> dict[str, Any]:
    """Train one conditional model for ``len(datasets) * cfg.steps`` steps; evaluate it
    on every dataset as ``run_study.run_one`` evaluates a separate model."""
    torch.set_num_threads(threads)
    steps = len(datasets) * cfg.steps
    x0, labels = labelled_mixture(datasets, cfg)
    scheduler = DDPMScheduler(cfg.num_timesteps, beta_schedule=cfg.beta_schedule)  # type: ignore[arg-type]
    torch.manual_seed(seed)  # parameter initialisation, as in run_study.run_one
    model = DualScaleDenoiser.from_preset("adaptive", num_classes=len(datasets))
    settings = {**train_settings(cfg), "steps": steps, "label_dropout": 0.0}
    if progress:
        print(f"  conditional / seed {seed}: training {steps} steps", flush=True)
    result = train(
        model,
        scheduler,
        (x0, labels),
        generator=torch.Generator().manual_seed(seed),
        progress=progress,
        **settings,
    )
    ema = result.ema.eval()
    per_dataset: dict[str, dict[str, float]] = {}
    for k, name in enumerate(datasets):
        data = x0[k * cfg.n_data : (k + 1) * cfg.n_data]
        eval_loss = evaluate_eps_mse(
            result.model,
            scheduler,
            data,
            generator=torch.Generator().manual_seed(10_000 + seed),
            model_kwargs={"class_labels": torch.full((cfg.n_data,), k)},
        )
        start = time.perf_counter()
        samples = sample(
            ema,
            scheduler,
            (cfg.n_samples, 2),
            model_kwargs={"class_labels": torch.full((cfg.n_samples,), k)},
            generator=torch.Generator().manual_seed(20_000 + seed),  # the study's noise
        )
        sample_s = time.perf_counter() - start
        kl = knn_kl(data, samples, k=cfg.k, workers=threads)
        per_dataset[name] = {"kl": kl, "eval_loss": eval_loss, "sample_s": sample_s}
        if progress:
            print(f"  {name}: KL {kl:.3f} bits, eval loss {eval_loss:.3f}", flush=True)
    return {
        "kind": "conditional",
        "seed": seed,
        "steps": steps,
        "train_s": result.seconds,
        "datasets": per_dataset,
        "losses": result.losses[:: max(1, steps // 500)].tolist(),
    }


def _separate(dataset: str, seed: int, cfg: StudyConfig, threads: int) -> dict[str, Any]:
    """One separate adaptive model, exactly as in the study (``run_study.run_one``)."""
    r = run_one(dataset, "adaptive", seed, cfg, threads, False)
    keep = ("dataset", "seed", "kl", "eval_loss", "train_s", "sample_s")
    return {"kind": "separate", **{key: r[key] for key in keep}}


def _mean_std(values: list[float]) -> list[float]:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return [statistics.fmean(values), sd, float(len(values))]


def committed_separate(
    path: Path, cfg: StudyConfig, datasets: Sequence[str], seeds: int
) -> dict[str, dict[str, list[float]]] | None:
    """The committed study's adaptive KL and eval loss per dataset (mean, std, n), if
    its settings are ``cfg``'s and it has ``seeds`` seeds of every dataset; else None."""
    if not path.exists():
        return None
    study = json.loads(path.read_text())
    config = study["meta"]["config"]
    if study["meta"]["seeds"] != seeds or any(
        config.get(key) != getattr(cfg, key) for key in MATCHED
    ):
        return None
    out = {}
    for name in datasets:
        cell = study["summary"].get(name, {}).get("adaptive")
        if cell is None or cell["kl"][2] != seeds:
            return None
        out[name] = {"kl": cell["kl"], "eval_loss": cell["eval_loss"]}
    return out


def compare(
    separate: dict[str, dict[str, list[float]]], conditional: dict[str, dict[str, list[float]]]
) -> list[dict[str, Any]]:
    """Per dataset: both KLs, their difference in separate-model standard deviations."""
    rows = []
    for name, sep in separate.items():
        (sm, ss, _), (cm, cs, _) = sep["kl"], conditional[name]["kl"]
        diff = cm - sm
        rows.append(
            {
                "dataset": name,
                "separate_kl": [sm, ss],
                "conditional_kl": [cm, cs],
                "difference": diff,
                "difference_in_std": diff / ss if ss > 0 else float("nan"),
                "within_1_std": abs(diff) <= ss,
                "separate_eval_loss": sep["eval_loss"][:2],
                "conditional_eval_loss": conditional[name]["eval_loss"][:2],
            }
        )
    return rows


def write_markdown(rows: list[dict[str, Any]], meta: dict[str, Any], path: Path) -> str:
    """The comparison table; return its text."""
    cfg = meta["config"]
    lines = [
        f"KL(real || generated) in bits (NPEET kldiv, k = {cfg['k']}), mean +- std over "
        f"{meta['seeds']} seed(s), {cfg['n_samples']} samples per dataset. Separate: one "
        f"adaptive model per dataset, {cfg['steps']} steps ({meta['separate_source']}). "
        f"Conditional: one adaptive model with num_classes = {len(rows)}, "
        f"{meta['conditional_steps']} steps on the labelled mixture, label dropout 0. "
        f"{meta['threads_per_run']} torch thread(s) per run, {meta['jobs']} run(s) at a "
        f"time, {meta['seconds'] / 60:.1f} min wall time, torch {meta['torch']}.",
        "",
        "| dataset | KL separate | KL conditional | difference / std (separate) | "
        "within 1 std | eval loss separate | eval loss conditional |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        (sm, ss), (cm, cs) = r["separate_kl"], r["conditional_kl"]
        (se, ses), (ce, ces) = r["separate_eval_loss"], r["conditional_eval_loss"]
        lines.append(
            f"| {r['dataset']} | {sm:.3f} +- {ss:.3f} | {cm:.3f} +- {cs:.3f} | "
            f"{_units(r['difference_in_std'])} | {'yes' if r['within_1_std'] else 'no'} | "
            f"{se:.3f} +- {ses:.3f} | {ce:.3f} +- {ces:.3f} |"
        )
    if cfg["steps"] < FULL.steps:
        lines += ["", f"Only {cfg['steps']} steps per dataset: a smoke test of the pipeline."]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def _units(value: float) -> str:
    return f"{value:+.1f}" if math.isfinite(value) else "-"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("outputs/cond2d"))
    p.add_argument("--quick", action="store_true", help="the study's --quick settings, 1 seed")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; quick 1)")
    p.add_argument("--steps", type=int, default=None, help="steps per dataset (study: 10,000)")
    p.add_argument("--n-data", type=int, default=None, help="points per dataset (100,000)")
    p.add_argument("--samples", type=int, default=None, help="samples per dataset (10,000)")
    p.add_argument(
        "--separate",
        choices=("auto", "run"),
        default="auto",
        help="'auto': reuse the committed study's adaptive results when the settings match,\n"
        "else train the separate models here; 'run': always train them here",
    )
    p.add_argument("--study-results", type=Path, default=STUDY_RESULTS)
    p.add_argument("--jobs", type=int, default=default_jobs(), help="parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--resume", action="store_true", help="keep the finished runs in runs.jsonl")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    for field, value in (("steps", args.steps), ("n_data", args.n_data)):
        if value is not None:
            cfg = dataclasses.replace(cfg, **{field: value})
    if args.samples is not None:
        cfg = dataclasses.replace(cfg, n_samples=args.samples)
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    datasets = list(DATASETS)
    separate = None
    if args.separate == "auto":
        separate = committed_separate(args.study_results, cfg, datasets, seeds)
    source = "the committed study results" if separate else "trained here"
    jobs: list[tuple[Any, ...]] = [("conditional", s) for s in range(seeds)]
    if separate is None:
        jobs += [("separate", d, s) for s in range(seeds) for d in datasets]
    every_job = list(jobs)
    n_jobs = max(1, min(args.jobs, len(jobs)))
    print(
        f"{len(jobs)} runs, {n_jobs} at a time, {args.threads} torch thread(s) each; separate "
        f"models: {source}; conditional: {len(datasets) * cfg.steps} steps; {cfg}",
        flush=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs.jsonl"  # one line per finished run; --resume skips those
    runs: list[dict[str, Any]] = []
    if args.resume and log.exists():
        runs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        done = {_key(r) for r in runs}
        jobs = [j for j in jobs if j not in done]
        print(f"resuming: {len(runs)} runs done, {len(jobs)} to go", flush=True)
    elif log.exists():
        log.unlink()
    start = time.perf_counter()

    def record(r: dict[str, Any], i: int) -> None:
        runs.append(r)
        with log.open("a") as f:
            f.write(json.dumps(r) + "\n")
        elapsed = time.perf_counter() - start
        kls = r["datasets"] if r["kind"] == "conditional" else {r["dataset"]: r}
        text = ", ".join(f"{d} {v['kl']:.3f}" for d, v in kls.items())
        print(
            f"[{i + 1}/{len(jobs)}] {r['kind']} seed {r['seed']}: KL {text} bits, train "
            f"{r['train_s']:.0f} s | {elapsed / 60:.1f} min so far",
            flush=True,
        )

    def call(job: tuple[Any, ...], progress: bool) -> Any:
        if job[0] == "conditional":
            return run_conditional, (datasets, job[1], cfg, args.threads, progress)
        return _separate, (job[1], job[2], cfg, args.threads)

    if n_jobs == 1:
        for i, job in enumerate(jobs):
            fn, fargs = call(job, True)
            record(fn(*fargs), i)
    else:
        with ProcessPoolExecutor(n_jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(fn, *fargs) for fn, fargs in (call(j, False) for j in jobs)]
            for i, f in enumerate(as_completed(futures)):
                record(f.result(), i)
    order = {job: i for i, job in enumerate(every_job)}
    runs = sorted((r for r in runs if _key(r) in order), key=lambda r: order[_key(r)])
    cond_runs = [r for r in runs if r["kind"] == "conditional"]
    conditional = {
        d: {m: _mean_std([r["datasets"][d][m] for r in cond_runs]) for m in ("kl", "eval_loss")}
        for d in datasets
    }
    if separate is None:
        sep_runs = [r for r in runs if r["kind"] == "separate"]
        separate = {
            d: {
                m: _mean_std([r[m] for r in sep_runs if r["dataset"] == d])
                for m in ("kl", "eval_loss")
            }
            for d in datasets
        }
    rows = compare(separate, conditional)
    meta = {
        "config": dataclasses.asdict(cfg),
        "conditional_steps": len(datasets) * cfg.steps,
        "label_dropout": 0.0,
        "seeds": seeds,
        "separate_source": source,
        "threads_per_run": args.threads,
        "jobs": n_jobs,
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
    }
    results = {"meta": meta, "comparison": rows, "conditional": conditional, "runs": runs}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    table = write_markdown(rows, meta, args.out / "results.md")
    print(table)
    print(f"wrote {args.out}/results.md, results.json")
    return rows


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    if r["kind"] == "conditional":
        return ("conditional", r["seed"])
    return ("separate", r["dataset"], r["seed"])


if __name__ == "__main__":
    main()
