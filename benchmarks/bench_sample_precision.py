"""Sampling a trained study model in float32 and under bf16 autocast: speed and KID.

The real-image study (``examples/scale_space_study``) samples every checkpoint in the
precision its model was trained in, so with ``precision="auto"`` on a CPU with native
bf16 the network runs under bf16 autocast (the sampler's arithmetic and the Inception
features stay float32). This script checks on a finished study run that this changes
the measured quality by less than its standard error: it draws the same ``--n``
samples (same seeds) from one checkpoint in both precisions, batch by batch in turns,
and prints the median seconds per image of each, their ratio, each sample set's KID
against the study's reference features, and the KID between the two sample sets.

Usage::

    python benchmarks/bench_sample_precision.py --run runs/study --model ddpm --step 4500
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "scale_space_study"))
import study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished study directory")
    parser.add_argument("--model", default="ddpm")
    parser.add_argument("--step", type=int, required=True)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from scalemix.metrics import kid_from_features

    config = json.loads((args.run / "study.json").read_text())
    preset = study.StudyPreset.from_dict(config["preset"])
    levels = study.model_levels(preset)[args.model]
    device = torch.device("cpu")
    model = study.load_ema(preset, study.checkpoint_dir(args.run, args.model, args.step), device)
    degradation = study.build_degradation(preset, levels)
    reference = np.load(args.run / "real" / "features.npz")["reference"]
    load = os.getloadavg()
    print(
        f"{args.run} {args.model} step {args.step}: {args.n} samples per precision in batches "
        f"of {preset.sample_batch}, {preset.sample_steps} steps, {args.threads} thread(s); "
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)"
    )
    precisions = ("fp32", "bf16")
    images: dict[str, list[torch.Tensor]] = {p: [] for p in precisions}
    seconds: dict[str, list[float]] = {p: [] for p in precisions}
    for i, start in enumerate(range(0, args.n, preset.sample_batch)):
        size = min(preset.sample_batch, args.n - start)
        for p in precisions[i % 2 :] + precisions[: i % 2]:
            gen = study.seeded(device, args.seed, 31, start)  # the same seed in both
            t0 = time.perf_counter()
            images[p].append(study.generate(model, degradation, preset, size, gen, device, size, p))
            seconds[p].append((time.perf_counter() - t0) / size)
    kind = config["features"]  # inception, or pixels in a test run
    feats = {p: study.features_of(torch.cat(images[p]), kind, device) for p in precisions}
    kid_args = {"num_subsets": 100, "subset_size": min(preset.kid_subset, args.n)}
    record: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}}
    for p in precisions:
        kid = kid_from_features(feats[p], reference, **kid_args)
        med = statistics.median(seconds[p])
        record[p] = {"seconds_per_image": med, "kid": kid.value, "kid_se": kid.se}
        print(f"  {p}: {med:.4f} s/image, KID x 1e3 {1e3 * kid.value:.2f} +- {1e3 * kid.se:.2f}")
    between = kid_from_features(feats["bf16"], feats["fp32"], **kid_args)
    pixels = (torch.cat(images["bf16"]) - torch.cat(images["fp32"])).abs()
    speed = statistics.median(seconds["fp32"]) / statistics.median(seconds["bf16"])
    a, b = record["fp32"], record["bf16"]
    z = (b["kid"] - a["kid"]) / float(np.hypot(a["kid_se"], b["kid_se"]))  # type: ignore[index]
    print(
        f"  bf16 sampling {speed:.2f}x the speed of fp32; KID(bf16) - KID(fp32) = {z:+.2f} se; "
        f"KID between the two sets x 1e3 {1e3 * between.value:.2f} +- {1e3 * between.se:.2f}; "
        f"mean |pixel difference| {float(pixels.mean()):.4f} (of 2)"
    )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    record.update(
        speed_ratio=speed,
        kid_difference_in_se=z,
        kid_between=[between.value, between.se],
        mean_abs_pixel_difference=float(pixels.mean()),
        load_after=load,
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
