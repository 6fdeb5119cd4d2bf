"""The real-image study's evaluation stage on a CPU, before and after, per image.

The stage draws samples from a checkpoint and extracts their Inception features
(``examples/scale_space_study``: the 32 px FlexiUNet of preset ``default``, 50
scale-space sampling steps on a ``--levels``-level pyramid, batches of 100, features in
batches of 100). ``old`` runs it as it was: the attention block with q, k, v strided
along the head dimension (the unfused attention kernel) and the TorchScript Inception
under ``torch.no_grad``; ``new`` runs the library as it is, the network in float32;
``new-bf16`` runs the network under bf16 autocast (the study samples a model in the
precision it was trained in, bf16 with ``precision="auto"`` on a CPU with native bf16;
the sampler's arithmetic and the Inception features stay float32). They take turns,
one round each at a time, on the same seeds; the median seconds per image of sampling,
of the features and of both are printed side by side. The network has random weights
(the cost does not depend on them). The attention's float rounding differs between the
two, so the samples differ slightly (amplified over the steps and by the 8-bit
quantisation before the features); ``bench_inception.py`` compares the features of
identical images.

Usage::

    python benchmarks/bench_eval_stage.py                    # 1 thread, 50 images, 3 levels
    python benchmarks/bench_eval_stage.py --levels 1         # the DDPM baseline's stage
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from bench_inception import old_features
from bench_precision import STUDY_UNET
from scalemix.degradation import ScaleSpaceDegradation
from scalemix.metrics.fid import inception_features, load_inception
from scalemix.nn.flexi_unet import FlexiUNet
from scalemix.nn.unet_blocks import AttentionBlock
from scalemix.scale_space import scale_space_sample


def _old_attention(self: AttentionBlock, x: Tensor) -> Tensor:
    """AttentionBlock.forward before q, k, v were laid out for the fused kernel."""
    height, width = x.shape[-2:]
    qkv = self.qkv(self.norm(x))
    q, k, v = rearrange(qkv, "b (three n d) h w -> three b n (h w) d", three=3, n=self.num_heads)
    a = F.scaled_dot_product_attention(q, k, v)
    a = rearrange(a, "b n (h w) d -> b (n d) h w", h=height, w=width)
    return x + self.proj(a)


@contextmanager
def old_attention() -> Iterator[None]:
    new = AttentionBlock.forward
    AttentionBlock.forward = _old_attention  # type: ignore[method-assign]
    try:
        yield
    finally:
        AttentionBlock.forward = new  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = FlexiUNet(**STUDY_UNET).eval()  # type: ignore[arg-type]
    with torch.no_grad():  # non-trivial weights for the zero-initialised layers
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    degradation = ScaleSpaceDegradation(
        image_size=32, num_levels=args.levels, resolution_schedule="convex", gamma=0.5
    )
    script, fused = load_inception(fused=False), load_inception()

    def bf16_model(x: Tensor, t: Tensor, /, out_size: int | None = None) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x, t, out_size=out_size).float()

    @torch.no_grad()
    def sample(bf16: bool = False) -> Tensor:
        x = scale_space_sample(
            bf16_model if bf16 else model,
            degradation,
            args.n,
            channels=1,
            steps=args.steps,
            generator=torch.Generator().manual_seed(1),
        )
        return x.float().clamp(-1, 1)

    def stage(which: str) -> tuple[float, float, np.ndarray]:
        t0 = time.perf_counter()
        if which == "old":
            with old_attention():
                images = sample()
        else:
            images = sample(bf16=which == "new-bf16")
        t1 = time.perf_counter()
        if which == "old":
            feats = old_features(images, script, 100)
        else:
            feats = inception_features(images, fused, batch_size=100)
        return t1 - t0, time.perf_counter() - t1, feats

    load = os.getloadavg()
    print(
        f"{torch.get_num_threads()} thread(s), {args.n} samples, {args.levels} levels, "
        f"{args.steps} steps; load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"({os.cpu_count()} CPUs)"
    )
    order: list[str] = ["old", "new", "new-bf16"]
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in order}
    feats: dict[str, np.ndarray] = {}
    run: Callable[[str], tuple[float, float, np.ndarray]] = stage
    for r in range(args.rounds):
        for which in order[r % 3 :] + order[: r % 3]:
            s, f, feats[which] = run(which)
            runs[which].append((s / args.n, f / args.n))
    med = {
        k: (
            statistics.median(s for s, _ in v),
            statistics.median(f for _, f in v),
            statistics.median(s + f for s, f in v),
        )
        for k, v in runs.items()
    }
    diff = float(np.abs(feats["new"] - feats["old"]).max())
    print("median seconds per image:  sampling  features  stage")
    for k, (s, f, total) in med.items():
        print(f"  {k:<9} {s:16.4f} {f:9.4f} {total:6.4f}")
    o = med["old"]
    for k in order[1:]:
        n = med[k]
        print(
            f"  {k} against old: sampling {o[0] / n[0]:.2f}x, features {o[1] / n[1]:.2f}x, "
            f"stage {o[2] / n[2]:.2f}x"
        )
    print(f"  max |feature new - old| {diff:.2e} (float32 network, same samples up to rounding)")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json is not None:
        record = {"args": {k: str(v) for k, v in vars(args).items()}, "median": med}
        record["max_abs_feature_diff"] = diff  # type: ignore[assignment]
        record["load_after"] = load  # type: ignore[assignment]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
