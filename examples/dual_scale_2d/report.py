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


def _smooth(values: list[float], window: int) -> list[float]:
    """Centred moving average (shorter windows at the ends)."""
    half = max(1, window) // 2
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - half) : i + half + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def write_plots(
    runs: list[dict[str, Any]], out: Path, *, steps: int, data_seed: int = 42
) -> list[str]:
    """Samples beside the data, alpha(t) curves and training losses; return the files.

    Sized for a documentation column (about 8 inches wide at 100 dpi). ``samples.png``
    needs the runs' ``samples`` (present in ``runs.jsonl``, not in ``results.json``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scalemix.datasets import make_dataset

    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    models = list(dict.fromkeys(r["model"] for r in runs))
    seed0 = min(r["seed"] for r in runs)
    first = {(r["dataset"], r["model"]): r for r in runs if r["seed"] == seed0}
    written = []

    if all("samples" in r for r in first.values()):
        fig, axes = plt.subplots(
            len(datasets),
            len(models) + 1,
            figsize=(2.0 * (len(models) + 1), 2.0 * len(datasets)),
            squeeze=False,
        )
        for i, d in enumerate(datasets):
            ref = make_dataset(d, 2_000, seed=data_seed)  # type: ignore[arg-type]
            lo, hi = ref.min(0).values, ref.max(0).values
            pad = 0.15 * (hi - lo).max()
            panels = [("data", ref.tolist(), None)] + [
                (m, first[(d, m)]["samples"][:2_000], first[(d, m)]["kl"]) for m in models
            ]
            for j, (title, pts, kl) in enumerate(panels):
                ax = axes[i][j]
                if j > 0:  # the reference data in grey under every model's samples
                    ax.scatter(ref[:, 0], ref[:, 1], s=0.5, c="0.8", rasterized=True)
                color = "0.25" if j == 0 else f"C{j - 1}"
                ax.scatter(
                    [q[0] for q in pts], [q[1] for q in pts], s=0.5, c=color, rasterized=True
                )
                ax.set_xlim(float(lo[0] - pad), float(hi[0] + pad))
                ax.set_ylim(float(lo[1] - pad), float(hi[1] + pad))
                ax.set_aspect("equal", adjustable="box")
                ax.tick_params(labelsize=6, length=2, pad=1)
                label = f"{d}: data" if j == 0 else f"{title}\nKL {kl:.3f} bits"
                ax.set_title(label, fontsize=7)
        fig.suptitle(
            f"Samples (colour) over the training data (grey), seed {seed0}, "
            f"{steps:,} training steps; KL(data || samples)",
            fontsize=8,
        )
        fig.tight_layout()
        fig.savefig(out / "samples.png", dpi=100)
        plt.close(fig)
        written.append("samples.png")

    adaptive = [r for r in runs if r["model"] == "adaptive" and "alpha" in r]
    curves_by_dataset = {d: [r["alpha"] for r in adaptive if r["dataset"] == d] for d in datasets}
    n_seeds = len({r["seed"] for r in runs})
    if any(curves_by_dataset.values()):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for d, curves in curves_by_dataset.items():
            if curves:
                mean = [sum(c[t] for c in curves) / len(curves) for t in range(len(curves[0]))]
                ax.plot(mean, label=d)
        ax.axhline(0.5, color="0.6", lw=0.8, ls="--", label="fixed 0.5")
        ax.set_xlabel("timestep t (0 = clean data)")
        ax.set_ylabel("alpha(t), weight of the global branch")
        ax.set_title(f"Learned gate of the adaptive model, mean over {n_seeds} seed(s)", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "alpha.png", dpi=100)
        plt.close(fig)
        written.append("alpha.png")

    cols = 2 if len(datasets) > 1 else 1
    rows = -(-len(datasets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(8, 2.6 * rows), squeeze=False)
    for k, d in enumerate(datasets):
        ax = axes[k // cols][k % cols]
        for j, m in enumerate(models):
            losses = first[(d, m)]["losses"]
            stride = max(1, steps // max(1, len(losses)))
            x = [1 + i * stride for i in range(len(losses))]
            if j == 0:
                ax.plot(x, losses, color="0.75", lw=0.5, label=f"{m}, raw ({stride}-step grid)")
            smooth = _smooth(losses, max(1, len(losses) // 25))
            ax.plot(x, smooth, color=f"C{j}", lw=1.6 - 0.4 * j, ls=("-", "--", ":")[j % 3], label=m)
        ax.set_yscale("log")
        ax.set_title(d, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel("noise MSE (log)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    for k in range(len(datasets), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(
        f"Training loss, seed {seed0}, smoothed (the models share batches, timesteps and "
        "noise, so their curves nearly coincide)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(out / "losses.png", dpi=100)
    plt.close(fig)
    written.append("losses.png")
    return written


def main(argv: list[str] | None = None) -> None:
    """Redraw the plots of a finished study from its ``results.json`` (and ``runs.jsonl``).

    python examples/dual_scale_2d/report.py outputs/quick
    python examples/dual_scale_2d/report.py docs/_static/results_2d
    """
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("out", type=Path, help="the study's output folder")
    args = p.parse_args(argv)
    results = json.loads((args.out / "results.json").read_text())
    log = args.out / "runs.jsonl"
    if log.exists():
        runs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    else:
        runs = results["runs"]
    cfg = results["meta"]["config"]
    files = write_plots(runs, args.out, steps=cfg["steps"], data_seed=cfg["data_seed"])
    print(f"wrote {', '.join(files)} in {args.out}")


if __name__ == "__main__":
    main()
