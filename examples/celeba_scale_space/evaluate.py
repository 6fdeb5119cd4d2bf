"""Evaluate trained runs: FID of EMA samples, and SSD vs DDPM sampling time.

::

    python examples/celeba_scale_space/evaluate.py --run runs/ssd64 --baseline runs/ddpm64 \\
        --data /data/celeba --num-samples 10000 --steps 250

FID: ``--num-samples`` images sampled from each run (``--steps`` respaced steps) against
as many training images drawn without replacement, through the Inception network of the
``fid`` extra (``pip install 'scalemix[fid]'``); ``--num-samples 0`` skips it.

Timing: a batch of ``--timing-batch`` samples from the run's model with its own
pyramid, against the same number of full-resolution DDPM steps (the SSD schedule's
respaced steps plus its resolution changes, so both make the same number of network
calls). The DDPM side uses the ``--baseline`` run's network when given, else the run's
own network on a one-level pyramid: same architecture, same cost, meaningless images.
The two alternate ``--timing-repeats`` times after a warm-up; medians are reported.

Results are written as JSON (``--out``, default ``<run>/eval.json``) and printed as a
table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ssd_common import (
    CHECKPOINT_DIR,
    EMA_FILE,
    MODEL_FILE,
    RunConfig,
    generate,
    inception_features_of,
    load_weights,
    make_dataset,
    read_config,
    real_images,
    require_fid,
    save_image_grid,
)
from ssd_presets import build_degradation, build_model

from scalemix.degradation import ScaleSpaceDegradation
from scalemix.training import find_latest_checkpoint


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True, help="training run directory")
    p.add_argument("--baseline", type=Path, help="a second run (e.g. the DDPM baseline)")
    p.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: newest)")
    p.add_argument("--weights", choices=("ema", "model"), default="ema")
    p.add_argument("--data", help="CelebA root (not needed for --synthetic runs)")
    p.add_argument("--split", choices=("train", "valid", "test", "all"), default="train")
    p.add_argument("--num-samples", type=int, default=10_000, help="FID sample count (0: skip)")
    p.add_argument("--batch-size", type=int, default=256, help="sampling batch for FID")
    p.add_argument("--steps", type=int, default=250, help="respaced sampling steps (0: all T)")
    p.add_argument("--timing-batch", type=int, default=64, help="timing batch (0: skip)")
    p.add_argument("--timing-repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        help="autocast precision of the network (default: bf16 on CUDA, else fp32)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (default 1, for a shared machine; raise it on a dedicated one)",
    )
    p.add_argument("--grid", type=int, default=64, help="images in a sample grid PNG (0: none)")
    p.add_argument("--out", type=Path, help="results JSON (default: <run>/eval.json)")
    p.add_argument("--progress", action="store_true", help="progress bars while sampling")
    return p.parse_args(argv)


def load_run(
    run: Path, checkpoint: Path | None, weights: str, device: torch.device
) -> tuple[RunConfig, nn.Module, ScaleSpaceDegradation, Path]:
    """Config, network (eval mode) and degradation of a run's checkpoint."""
    config = read_config(run)
    if checkpoint is None:
        checkpoint = find_latest_checkpoint(run / CHECKPOINT_DIR)
        if checkpoint is None:
            raise SystemExit(f"{run} has no checkpoint: train it first")
    model = build_model(config.preset).to(device)
    load_weights(model, checkpoint / (EMA_FILE if weights == "ema" else MODEL_FILE), device)
    model.eval()
    opts = config.scale_space
    degradation = build_degradation(
        config.preset,
        config.num_levels,
        factor=opts.factor,
        resolution_schedule=opts.resolution_schedule,
        gamma=opts.gamma,
    )
    return config, model, degradation, checkpoint


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_sampling(
    runs: dict[str, tuple[nn.Module, ScaleSpaceDegradation, int | None]],
    batch: int,
    repeats: int,
    device: torch.device,
    precision: Any,
) -> dict[str, list[float]]:
    """Seconds per batch of each ``label: (model, degradation, steps)``, alternating."""
    times: dict[str, list[float]] = {label: [] for label in runs}
    for rep in range(repeats + 1):  # the first round is the warm-up
        for label, (model, degradation, steps) in runs.items():
            gen = torch.Generator(device).manual_seed(rep)
            _sync(device)
            start = time.perf_counter()
            generate(
                model,
                degradation,
                batch,
                batch_size=batch,
                steps=steps if rep else 1,
                generator=gen,
                device=device,
                precision=precision,
            )
            _sync(device)
            if rep:
                times[label].append(time.perf_counter() - start)
    return times


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Evaluate; return (and write) the results dictionary."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.num_samples > 0:
        require_fid()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    steps = args.steps or None
    config, model, degradation, ckpt = load_run(args.run, args.checkpoint, args.weights, device)
    label = f"{config.model}-{config.num_levels}"
    models = {label: (args.run, config, model, degradation, ckpt)}
    if args.baseline is not None:
        b_config, b_model, b_deg, b_ckpt = load_run(args.baseline, None, args.weights, device)
        b_label = f"{b_config.model}-{b_config.num_levels}"
        b_label = b_label if b_label != label else f"{b_label}-baseline"
        models[b_label] = (args.baseline, b_config, b_model, b_deg, b_ckpt)
    results: dict[str, Any] = {
        "device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
        "precision": precision,
        "steps": args.steps,
        "weights": args.weights,
        "models": {
            k: {"run": str(r), "checkpoint": str(c), "step": int(c.name.split("_")[1])}
            for k, (r, _, _, _, c) in models.items()
        },
    }

    if args.grid > 0:
        for k, (_, cfg, net, deg, _) in models.items():
            gen = torch.Generator(device).manual_seed(args.seed)
            images = generate(
                net,
                deg,
                args.grid,
                batch_size=args.grid,
                steps=steps,
                generator=gen,
                device=device,
                precision=precision,
                options=cfg.scale_space,
            )
            path = args.run / f"eval_samples_{k}.png"
            save_image_grid(images, path)
            results["models"][k]["grid"] = str(path)

    if args.num_samples > 0:
        from scalemix.metrics.fid import fid_from_features, inception_features, load_inception

        inception = load_inception(device)
        dataset = make_dataset(config, args.data, split=args.split)
        real = real_images(dataset, args.num_samples, args.seed)
        real_feats = inception_features(real, inception, batch_size=args.batch_size)
        for k, (_, cfg, net, deg, _) in models.items():
            gen = torch.Generator(device).manual_seed(args.seed + 1)

            def make_batch(
                b: int,
                net: nn.Module = net,
                deg: Any = deg,
                gen: torch.Generator = gen,
                cfg: RunConfig = cfg,
            ) -> torch.Tensor:
                return generate(
                    net,
                    deg,
                    b,
                    batch_size=b,
                    steps=steps,
                    generator=gen,
                    device=device,
                    precision=precision,
                    options=cfg.scale_space,
                    progress=args.progress,
                )

            fake = inception_features_of(make_batch, args.num_samples, args.batch_size, inception)
            results["models"][k]["fid"] = fid_from_features(fake, real_feats)
            results["models"][k]["fid_samples"] = args.num_samples
        results["fid_reference"] = f"{args.num_samples} images of split {args.split!r}"

    if args.timing_batch > 0:
        calls = len(degradation.timesteps(steps))
        if args.baseline is not None and config.model == "ssd":
            b_net, b_cfg = models[b_label][2], models[b_label][1]
            ddpm_net, source = b_net, "baseline run"
            full = build_degradation(b_cfg.preset, 1)
        else:
            ddpm_net, source = model, "same network, one-level pyramid"
            full = ScaleSpaceDegradation(config.preset.image_size, 1)
        times = time_sampling(
            {label: (model, degradation, steps), "ddpm": (ddpm_net, full, calls)},
            args.timing_batch,
            args.timing_repeats,
            device,
            precision,
        )
        median = {k: statistics.median(v) for k, v in times.items()}
        results["timing"] = {
            "batch": args.timing_batch,
            "network_calls": calls,
            "ddpm_network": source,
            "seconds": median,
            "all_seconds": times,
            "speedup_vs_ddpm": median["ddpm"] / median[label],
        }

    out = args.out or args.run / "eval.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(results_table(results))
    print(f"(all results: {out})")
    return results


def results_table(results: dict[str, Any]) -> str:
    """The results as a plain-text table: one row per model, then the timing."""
    rows = [("model", "step", "FID", "samples")]
    for label, r in results["models"].items():
        fid = f"{r['fid']:.2f}" if "fid" in r else "-"
        rows.append((label, str(r["step"]), fid, str(r.get("fid_samples", "-"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = f"device {results['device']}, {results['precision']}, {results['steps']} steps"
    lines.insert(0, head)
    timing = results.get("timing")
    if timing:
        lines.append("")
        lines.append(
            f"sampling time, batch {timing['batch']}, {timing['network_calls']} network calls "
            f"(ddpm: {timing['ddpm_network']})"
        )
        for label, sec in timing["seconds"].items():
            lines.append(f"  {label:<12} {sec:9.3f} s")
        lines.append(f"  speed-up vs ddpm: {timing['speedup_vs_ddpm']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
