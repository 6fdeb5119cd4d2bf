"""Train a small blurring-diffusion model on synthetic images and sample from it (CPU).

Heat-dissipation blur plus noise (:class:`scalemix.degradation.BlurDegradation`) as the
forward process, a :class:`scalemix.nn.flexi_unet.FlexiUNet` that predicts the clean
image blurred to the next step, :func:`scalemix.scale_space.scale_space_loss` and the
exact ancestral sampler :func:`scalemix.scale_space.scale_space_sample`::

    python examples/blur_diffusion/train.py --out runs/blur

The run directory receives ``samples.png`` (a grid of EMA samples), ``forward.png``
(one training image through the forward process) and ``results.json`` (the settings
and what was measured: losses, timings, sample statistics).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from scalemix.datasets import SyntheticImages
from scalemix.degradation import BlurDegradation
from scalemix.hub import export_pretrained
from scalemix.nn.flexi_unet import FlexiUNet
from scalemix.scale_space import scale_space_loss, scale_space_sample


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--timesteps", type=int, default=200, help="T of the forward process")
    p.add_argument("--steps", type=int, default=800, help="training iterations")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema-decay", type=float, default=0.99)
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--dataset-size", type=int, default=2048)
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument(
        "--sample-steps",
        type=int,
        default=None,
        help="sampling steps (default: all T; fewer steps reuse the model's prediction "
        "of the next step's blur for a longer stride, an approximation)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return p.parse_args(argv)


def save_grid(images: Tensor, path: Path) -> None:
    """Tile ``(n, c, h, w)`` images in ``[-1, 1]`` into a near-square grid PNG."""
    n, c, h, w = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).numpy()
    grid = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, c), 255, dtype=np.uint8)
    for i in range(n):
        top, left = 1 + (i // cols) * (h + 1), 1 + (i % cols) * (w + 1)
        grid[top : top + h, left : left + w] = pixels[i]
    Image.fromarray(grid.squeeze(-1) if c == 1 else grid).save(path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)  # parameter initialisation
    gen = torch.Generator().manual_seed(args.seed)
    data = SyntheticImages(args.dataset_size, args.image_size, seed=args.seed)
    loader = DataLoader(
        data,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    deg = BlurDegradation(args.image_size, args.timesteps)
    model = FlexiUNet(
        in_channels=3,
        base_channels=args.base_channels,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        image_size=args.image_size,
    )
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps)

    losses: list[float] = []
    start = time.perf_counter()
    step = 0
    while step < args.steps:
        for x0 in loader:
            loss = scale_space_loss(model, deg, x0, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            ema.update_parameters(model)
            losses.append(float(loss.detach()))  # one host sync per step: a CPU example
            step += 1
            if step == args.steps:
                break
    train_s = time.perf_counter() - start

    ema.eval()
    start = time.perf_counter()
    samples = scale_space_sample(
        ema.module,
        deg,
        args.num_samples,
        channels=3,
        steps=args.sample_steps,
        generator=torch.Generator().manual_seed(args.seed + 1),
    )
    sample_s = time.perf_counter() - start
    save_grid(samples, args.out / "samples.png")
    x0 = data[0][None]
    ts = torch.linspace(0, args.timesteps - 1, 8).round().long()
    noise = torch.randn((8, *x0.shape[1:]), generator=gen)
    save_grid(deg.add_noise(x0.expand(8, -1, -1, -1), noise, ts), args.out / "forward.png")

    real = torch.stack([data[i] for i in range(min(len(data), 256))])
    k = max(1, len(losses) // 10)
    results: dict[str, Any] = {
        "settings": {key: str(v) if isinstance(v, Path) else v for key, v in vars(args).items()},
        "degradation": repr(deg),
        "parameters": sum(p.numel() for p in model.parameters()),
        "loss_first_10pct": float(np.mean(losses[:k])),
        "loss_last_10pct": float(np.mean(losses[-k:])),
        "train_seconds": train_s,
        "train_steps_per_second": args.steps / train_s,
        "sample_seconds": sample_s,
        "sample_mean": float(samples.mean()),
        "sample_std": float(samples.std()),
        "data_mean": float(real.mean()),
        "data_std": float(real.std()),
        "sample_fraction_outside_unit_range": float((samples.abs() > 1).float().mean()),
    }
    # The final EMA model with its degradation: FlexiUNet.from_pretrained(out / "pretrained").
    results["pretrained"] = str(export_pretrained(ema, args.out / "pretrained", degradation=deg))
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
