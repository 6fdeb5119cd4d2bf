"""The real-image study's analysis: quality at equal training FLOPs, the tables, the
figure, and the x0 error per timestep band that explains a gap.

Everything here reads what ``study.py`` measured (``results.json``'s dictionaries) or is
handed the trained models; nothing is trained or sampled here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scalemix.degradation import ScaleSpaceDegradation
from scalemix.degradation.resize import resize

__all__ = [
    "equal_flops",
    "error_timesteps",
    "interpolate",
    "plot",
    "results_markdown",
    "summary_lines",
    "x0_error",
    "z_score",
]

# Timestep bands of the error table: [0, 100), [100, 200), ... of T = 1000.
BAND_WIDTH = 100
POINTS_PER_BAND = 4


# ---------------------------------------------------------------------------- equal FLOPs
def interpolate(curve: Sequence[Mapping[str, float]], flops: float) -> dict[str, float] | None:
    r"""A model's KID (with its standard error) and FID at ``flops`` training FLOPs.

    Linear in :math:`\log` FLOPs between the two checkpoints around ``flops``:
    :math:`k = (1 - w) k_i + w k_{i+1}` with
    :math:`w = (\log f - \log f_i) / (\log f_{i+1} - \log f_i)`. The two checkpoints'
    samples are independent, so :math:`se = \sqrt{(1-w)^2 se_i^2 + w^2 se_{i+1}^2}`
    (the sampling error only; the curve's bend between checkpoints is not in it).
    ``None`` outside the checkpoints' range: a curve is never extrapolated.
    """
    points = sorted(curve, key=lambda p: p["train_flops"])
    for lo, hi in itertools.pairwise(points):
        if not lo["train_flops"] <= flops <= hi["train_flops"]:
            continue
        span = math.log(hi["train_flops"]) - math.log(lo["train_flops"])
        w = (math.log(flops) - math.log(lo["train_flops"])) / span
        return {
            "kid": (1 - w) * lo["kid"] + w * hi["kid"],
            "kid_se": math.hypot((1 - w) * lo["kid_se"], w * hi["kid_se"]),
            "fid": (1 - w) * lo["fid"] + w * hi["fid"],
            "weight": w,
        }
    exact = [p for p in points if p["train_flops"] == flops]
    if exact:
        p = exact[0]
        return {"kid": p["kid"], "kid_se": p["kid_se"], "fid": p["fid"], "weight": 0.0}
    return None


def z_score(kid: float, se: float, ref_kid: float, ref_se: float) -> float:
    """``(kid - ref_kid)`` in standard errors of the difference (negative: better)."""
    return (kid - ref_kid) / math.hypot(se, ref_se)


def equal_flops(models: Mapping[str, Any], reference: str = "ddpm") -> list[dict[str, Any]]:
    """At every checkpoint budget of ``reference``, its KID and each other model's KID
    interpolated at the same training FLOPs (:func:`interpolate`), with the difference
    in standard errors (``None`` where a model's curve does not reach the budget)."""
    rows = []
    for point in models[reference]["curve"]:
        row: dict[str, Any] = {
            "step": point["step"],
            "train_flops": point["train_flops"],
            reference: {k: point[k] for k in ("kid", "kid_se", "fid")},
        }
        for name, model in models.items():
            if name == reference:
                continue
            at = interpolate(model["curve"], point["train_flops"])
            if at is not None:
                at["z"] = z_score(at["kid"], at["kid_se"], point["kid"], point["kid_se"])
                at["iterations"] = point["train_flops"] / model["train_flops_per_iteration"]
            row[name] = at
        rows.append(row)
    return rows


def at_step(curve: Sequence[Mapping[str, Any]], step: int) -> Mapping[str, Any]:
    """The checkpoint ``step`` of a curve."""
    return next(p for p in curve if p["step"] == step)


# ---------------------------------------------------------------------------- tables
def _kid(point: Mapping[str, float]) -> str:
    return f"{1e3 * point['kid']:.2f} +- {1e3 * point['kid_se']:.2f}"


def table_equal_flops(results: Mapping[str, Any]) -> str:
    models = results["models"]
    others = [n for n in models if n != "ddpm"]
    head = "| DDPM step | train PFLOPs | DDPM KID x 1e3 | " + " | ".join(
        f"{n} KID x 1e3 (its) | {n} - DDPM (se)" for n in others
    )
    lines = [head + " |", "|" + "---|" * (3 + 2 * len(others))]
    for row in results["equal_flops"]:
        cells = [str(row["step"]), f"{row['train_flops'] / 1e15:.3f}", _kid(row["ddpm"])]
        for name in others:
            at = row[name]
            if at is None:
                cells += ["(not reached)", ""]
            else:
                cells += [f"{_kid(at)} ({at['iterations']:.0f})", f"{at['z']:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_equal_iterations(results: Mapping[str, Any]) -> str:
    models, floor, step = results["models"], results["floor"], results["preset"]["iterations"]
    ddpm = models["ddpm"]
    base = at_step(ddpm["curve"], step)
    lines = [
        "| model | levels | FID | KID x 1e3 (+- se) | KID - DDPM's (in se) | "
        "train GFLOPs / it | vs DDPM | sample GFLOPs / image | vs DDPM | sample s / image | "
        "vs DDPM |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in models.items():
        point = at_step(row["curve"], step)
        z = z_score(point["kid"], point["kid_se"], base["kid"], base["kid_se"])
        lines.append(
            f"| {name} | {row['levels']} | {point['fid']:.2f} | {_kid(point)} | "
            f"{'' if name == 'ddpm' else f'{z:+.2f}'} | "
            f"{row['train_flops_per_iteration'] / 1e9:.1f} | "
            f"{ddpm['train_flops_per_iteration'] / row['train_flops_per_iteration']:.2f}x | "
            f"{row['sample_flops_per_image'] / 1e9:.2f} | "
            f"{ddpm['sample_flops_per_image'] / row['sample_flops_per_image']:.2f}x | "
            f"{row['sample_seconds_per_image']:.4f} | "
            f"{ddpm['sample_seconds_per_image'] / row['sample_seconds_per_image']:.2f}x |"
        )
    lines.append(f"| real vs real | | {floor['fid']:.2f} | {_kid(floor)} | | | | | | | |")
    return "\n".join(lines)


def table_checkpoints(results: Mapping[str, Any]) -> str:
    lines = [
        "| model | step | n | FID | KID x 1e3 (+- se) | train PFLOPs |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["models"].items():
        for p in row["curve"]:
            lines.append(
                f"| {name} | {p['step']} | {p['n']} | {p['fid']:.2f} | {_kid(p)} | "
                f"{p['train_flops'] / 1e15:.3f} |"
            )
    return "\n".join(lines)


def table_error(results: Mapping[str, Any], reference: str = "ddpm") -> str:
    """Per timestep band, every model's x0 error at its own prediction size and the
    reference's error at that size (:func:`x0_error`), and their ratio."""
    error = results["x0_error"]
    others = [n for n in error["models"] if n != reference]
    ref = error["models"][reference]
    lines = [
        f"| t | {reference}, full size (x 1e3) | "
        + " | ".join(f"{n}: px | {n} (x 1e3) | {reference} at that px | ratio" for n in others)
        + " |",
        "|" + "---|" * (2 + 4 * len(others)),
    ]
    for i, row in enumerate(error["rows"]):
        top = ref[i]["errors"][max(ref[i]["errors"], key=int)]
        cells = [row["label"], f"{1e3 * top['mse']:.2f} +- {1e3 * top['se']:.2f}"]
        for name in others:
            entry = error["models"][name][i]
            size = entry["size"]
            own, base = entry["errors"][str(size)], ref[i]["errors"][str(size)]
            cells += [
                str(size),
                f"{1e3 * own['mse']:.2f} +- {1e3 * own['se']:.2f}",
                f"{1e3 * base['mse']:.2f}",
                f"{own['mse'] / base['mse']:.2f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(results: Mapping[str, Any]) -> str:
    """Every table of ``results.md``, the equal-FLOPs answer first."""
    step = results["preset"]["iterations"]
    parts = [
        "### At equal training FLOPs\n\n" + table_equal_flops(results),
        f"### At equal iterations ({step:,})\n\n" + table_equal_iterations(results),
        "### Every checkpoint\n\n" + table_checkpoints(results),
    ]
    if "x0_error" in results:
        parts.append("### x0 error per timestep band\n\n" + table_error(results))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------- figure
def plot(results: Mapping[str, Any], path: Path) -> None:
    """KID (+- se) and FID of every checkpoint against training PFLOPs (log axes; log
    FLOPs is the interpolation's), one colour per model, the real-vs-real FID dashed
    (KID's, about 0, named in the legend). KID is
    unbiased, so one line joins all its checkpoints; FID is biased by the sample count,
    so its line joins the checkpoints of the smaller count and the larger-count points
    stand apart (open markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4), constrained_layout=True)
    smallest = min(p["n"] for row in results["models"].values() for p in row["curve"])
    for name, row in results["models"].items():
        x = [p["train_flops"] / 1e15 for p in row["curve"]]
        kid = [1e3 * p["kid"] for p in row["curve"]]
        se = [1e3 * p["kid_se"] for p in row["curve"]]
        label = f"{name} ({row['levels']} level{'s' if row['levels'] > 1 else ''})"
        line = axes[0].errorbar(x, kid, yerr=se, marker="o", ms=3, capsize=2, label=label)
        colour = line[0].get_color()
        few = [p for p in row["curve"] if p["n"] == smallest]
        many = [p for p in row["curve"] if p["n"] != smallest]
        axes[1].plot(
            [p["train_flops"] / 1e15 for p in few],
            [p["fid"] for p in few],
            marker="o",
            ms=3,
            color=colour,
            label=f"{label}, {smallest} samples",
        )
        axes[1].plot(
            [p["train_flops"] / 1e15 for p in many],
            [p["fid"] for p in many],
            ls="none",
            marker="o",
            mfc="none",
            color=colour,
            label=f"{name}, {many[0]['n'] if many else ''} samples",
        )
    floor = results["floor"]
    axes[1].axhline(floor["fid"], color="gray", ls="--", lw=1, label=f"real vs real ({floor['n']})")
    for ax, label in zip(axes, ("KID x 1e3 (+- se)", "FID"), strict=True):
        ax.set_xlabel("training PFLOPs")
        ax.set_ylabel(label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    # KID's floor is about 0 (it is unbiased), off a log axis: it is named in the legend.
    axes[0].legend(
        fontsize=8,
        title=f"real vs real: {1e3 * floor['kid']:.2f} +- {1e3 * floor['kid_se']:.2f}",
        title_fontsize=8,
    )
    axes[1].legend(fontsize=6, ncol=2)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------- x0 error
def error_timesteps(degradations: Mapping[str, ScaleSpaceDegradation]) -> list[dict[str, Any]]:
    """The timesteps of the error table: ``POINTS_PER_BAND`` evenly spaced in every band
    of ``BAND_WIDTH`` steps, then every model's resolution-change steps on their own."""
    T = next(iter(degradations.values())).num_train_timesteps
    rows: list[dict[str, Any]] = []
    for lo in range(0, T, BAND_WIDTH):
        hi = min(T, lo + BAND_WIDTH)
        ts = sorted(
            {lo + (hi - lo) * (2 * i + 1) // (2 * POINTS_PER_BAND) for i in range(POINTS_PER_BAND)}
        )
        rows.append({"label": f"{lo}-{hi - 1}", "t": ts})
    for name, degradation in degradations.items():
        for t in degradation.change_steps:
            r_in, r_out = degradation.resolution(t), degradation.resolution(t - 1)
            rows.append({"label": f"{t} ({name}: {r_in} -> {r_out} px)", "t": [t]})
    return rows


def _next_size(degradation: ScaleSpaceDegradation, t: int) -> int:
    """:math:`r(t-1)`, the size of the x0 prediction at step ``t`` (full size at 0)."""
    return degradation.image_size if t == 0 else degradation.resolution(t - 1)


def _down(x: Tensor, size: int) -> Tensor:
    """Halve ``x`` down the pyramid until it is ``size`` px (the degradations' resize)."""
    while x.shape[-1] > size:
        x = resize(x, x.shape[-1] // 2)
    return x


@torch.no_grad()
def x0_error(
    models: Mapping[str, tuple[Callable[..., Tensor], ScaleSpaceDegradation]],
    images: Tensor,
    seed: int,
) -> dict[str, Any]:
    r"""Every model's x0 error on held-out ``images`` at the timesteps of
    :func:`error_timesteps`, at every pyramid size up to its own prediction's.

    ``models`` maps a name to ``(call, degradation)``: ``call(x_t, t, out_size=...)`` is
    the model in the precision it was trained in (``study.sampler_call``). At step ``t``
    a model predicts :math:`\hat x_0` at its own next resolution :math:`r(t-1)` from its
    own :math:`x_t`. The
    prediction and :math:`x_0` are resized down the pyramid to each size ``s`` up to the
    smallest :math:`r(t-1)` of the band, and the error is the mean squared difference
    per pixel: mean and standard error over the images, averaged over the band's
    timesteps. A full-resolution model's error at ``s`` compares with an SSD model whose
    prediction is ``s`` px (sizes halve down to the smallest pyramid level). The noise
    of every model and timestep is drawn from ``seed`` and ``t``.

    Returns:
        ``{"rows": [{"label", "t"}], "models": {name: [{"size": s, "errors": {s': {"mse",
        "se"}}}]}, "images": n}``, one entry per row, ``s`` the model's smallest
        prediction size over the row's timesteps.
    """
    degradations = {name: m[1] for name, m in models.items()}
    rows = error_timesteps(degradations)
    smallest = min(min(d.resolutions) for d in degradations.values())
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in models}
    for row in rows:
        for name, (call, degradation) in models.items():
            size = min(_next_size(degradation, t) for t in row["t"])
            sizes = sorted({*_pyramid_below(size, smallest), size})
            per_image = {s: torch.zeros(len(images), dtype=torch.float64) for s in sizes}
            for t in row["t"]:
                r_t = degradation.resolution(t)
                gen = torch.Generator().manual_seed(seed * 100_003 + t)
                noise = torch.randn(len(images), images.shape[1], r_t, r_t, generator=gen)
                x_t = degradation.add_noise(images, noise, t)
                tt = torch.full((len(images),), t, dtype=torch.long)
                pred = call(x_t, tt, out_size=_next_size(degradation, t))
                for s in sizes:
                    err = (_down(pred, s) - _down(images, s)).pow(2).flatten(1).mean(1)
                    per_image[s] += err.double() / len(row["t"])
            errors = {  # str keys, as JSON has them
                str(s): {"mse": float(v.mean()), "se": float(v.std() / math.sqrt(len(images)))}
                for s, v in per_image.items()
            }
            out[name].append({"size": size, "errors": errors})
    return {
        "rows": [{"label": r["label"], "t": r["t"]} for r in rows],
        "models": out,
        "images": len(images),
    }


def _pyramid_below(size: int, smallest: int) -> list[int]:
    """``size / 2, size / 4, ...`` down to ``smallest``."""
    out = []
    while size // 2 >= smallest and size % 2 == 0:
        size //= 2
        out.append(size)
    return out


def summary_lines(results: Mapping[str, Any], last: int = 5) -> list[str]:
    """One line per SSD model: its KID difference from DDPM at DDPM's last ``last``
    budgets, and whether it is within 1 se or better at each."""
    rows = results["equal_flops"][-last:]
    lines = []
    for name in results["models"]:
        if name == "ddpm":
            continue
        zs = [r[name]["z"] if r[name] is not None else None for r in rows]
        shown = ", ".join("n/a" if z is None else f"{z:+.2f}" for z in zs)
        ok = all(z is not None and z <= 1.0 for z in zs)
        lines.append(
            f"{name}: KID - DDPM's at DDPM's last {len(rows)} budgets (se): {shown}; "
            f"{'within 1 se or better at each' if ok else 'not within 1 se at each'}"
        )
    return lines
