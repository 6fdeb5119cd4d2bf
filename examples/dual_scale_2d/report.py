"""Tables and plots of the 2D study (matplotlib; part of the ``examples`` extra)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from paper import MODEL_TITLES, PAPER_EVAL_LOSS, PAPER_INFER_S, PAPER_KL, PAPER_TRAIN_S

METRICS = ("kl", "eval_loss", "train_s", "sample_s")


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Mean and standard deviation over seeds: ``summary[dataset][model][metric] = [m, s, n]``."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in runs:
        cell = out.setdefault(r["dataset"], {}).setdefault(r["model"], {})
        for key in METRICS:
            cell.setdefault(key, []).append(float(r[key]))
    for models in out.values():
        for cell in models.values():
            for key in METRICS:
                values = cell[key]
                cell[key] = [*_mean_std(values), float(len(values))]
    return out


def write_markdown(summary: dict[str, Any], meta: dict[str, Any], path: Path) -> str:
    """Write the results table next to the paper's numbers; return its text."""
    n = meta["seeds"]
    lines = [
        f"KL(real || generated) in bits (NPEET kldiv, k = 5), mean +- std over {n} seed(s); "
        f"{meta['config']['steps']} training steps, {meta['config']['n_samples']} samples, "
        f"{meta['threads_per_run']} torch thread(s) per run, torch {meta['torch']}.",
        "",
        "| dataset | model | KL (ours) | KL (paper) | eval loss (ours) | eval loss (paper, "
        "baseline) | train s (ours) | train s (paper) | sample s (ours) | infer s (paper) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset, models in summary.items():
        for model, cell in models.items():
            kl, ev, tr, sa = (cell[k] for k in METRICS)
            paper_kl = PAPER_KL.get(model, {}).get(dataset)
            lines.append(
                f"| {dataset} | {MODEL_TITLES.get(model, model)} | {kl[0]:.3f} +- {kl[1]:.3f} | "
                f"{'-' if paper_kl is None else f'{paper_kl:.3f}'} | "
                f"{ev[0]:.3f} +- {ev[1]:.3f} | {PAPER_EVAL_LOSS.get(dataset, float('nan')):.3f} | "
                f"{tr[0]:.1f} | ~{PAPER_TRAIN_S.get(model, float('nan')):.0f} | "
                f"{sa[0]:.2f} | ~{PAPER_INFER_S.get(model, float('nan')):.2f} |"
            )
    if meta["config"]["steps"] < 10_000:
        lines += [
            "",
            f"Only {meta['config']['steps']} training steps (the paper: 10,000): a smoke test "
            "of the pipeline, not comparable with the paper's numbers.",
        ]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def write_plots(runs: list[dict[str, Any]], out: Path) -> None:
    """Samples (models x datasets, first seed), alpha(t) curves and training losses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    models = list(dict.fromkeys(r["model"] for r in runs))
    first = {
        (r["dataset"], r["model"]): r for r in runs if r["seed"] == min(x["seed"] for x in runs)
    }

    fig, axes = plt.subplots(
        len(models), len(datasets), figsize=(3 * len(datasets), 3 * len(models)), squeeze=False
    )
    for i, m in enumerate(models):
        for j, d in enumerate(datasets):
            ax = axes[i][j]
            pts = first[(d, m)]["samples"]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=1, alpha=0.5)
            ax.set_title(f"{d} / {m}: KL {first[(d, m)]['kl']:.3f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for d in datasets:
        curves = [
            r["alpha"]
            for r in runs
            if r["dataset"] == d and r["model"] == "adaptive" and "alpha" in r
        ]
        if curves:
            mean = [sum(c[t] for c in curves) / len(curves) for t in range(len(curves[0]))]
            ax.plot(mean, label=d)
    ax.set_xlabel("timestep t")
    ax.set_ylabel("alpha(t) (weight of the global branch)")
    ax.set_title("adaptive gate, mean over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "alpha.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3.2), squeeze=False)
    for j, d in enumerate(datasets):
        for m in models:
            r = first[(d, m)]
            window = max(1, len(r["losses"]) // 25)
            ls = r["losses"]
            smooth = [
                sum(ls[max(0, i - window) : i + 1]) / len(ls[max(0, i - window) : i + 1])
                for i in range(len(ls))
            ]
            axes[0][j].plot(smooth, label=m)
        axes[0][j].set_title(d)
        axes[0][j].set_xlabel("step (subsampled)")
        axes[0][j].set_ylabel("training loss")
        axes[0][j].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "losses.png", dpi=110)
    plt.close(fig)
