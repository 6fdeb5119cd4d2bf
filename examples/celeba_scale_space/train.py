"""Train Scale Space Diffusion (or the full-resolution DDPM baseline) on CelebA.

Single process::

    python examples/celeba_scale_space/train.py --data /data/celeba --preset small --out runs/ssd64
    python examples/celeba_scale_space/train.py --data /data/celeba --preset small \\
        --model ddpm --out runs/ddpm64

Several GPUs (one process each, DistributedDataParallel)::

    torchrun --nproc_per_node 4 examples/celeba_scale_space/train.py --data /data/celeba \\
        --preset small --out runs/ssd64

Smoke run on the CPU with synthetic images::

    python examples/celeba_scale_space/train.py --synthetic --preset smoke --out runs/smoke

The training loop is the library's :func:`scalemix.training.train_images`; this script
chooses the model, the data and the loss, and writes the run directory: ``config.json``,
``log.jsonl`` (one JSON object per log step), ``samples/step_*.png`` (EMA samples) and
``checkpoints/step_*/`` (``model.safetensors``, ``ema.safetensors``,
``training_state.pt``, ``manifest.json``; written atomically, the newest
``keep_checkpoints`` kept) and, at the end, ``pretrained/`` (the final EMA model with its
degradation config, for ``scalemix.FlexiUNet.from_pretrained``). ``--resume`` continues
from the newest valid checkpoint (skipping damaged ones with a warning): weights, EMA,
optimiser, learning-rate schedule, data position and random streams, so on a CPU a
killed and resumed run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ssd_common import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOG_FILE,
    PRETRAINED_DIR,
    RunConfig,
    ScaleSpaceOptions,
    checkpoints,
    make_dataset,
    read_config,
    require_fid,
    sample_options,
    seeded_generator,
    setup_distributed,
    write_config,
)
from ssd_presets import PRESETS, ModelKind, build_degradation, build_model, levels_for
from ssd_run_log import RunLogger, final_fid

from scalemix.scale_space import scale_space_loss_terms
from scalemix.training import ImageTrainConfig, train_images

EPILOG = """presets (--preset):
  smoke   32 px, 3 levels, a tiny UNet, 400 steps: sized for CPUs (one thread);
          with --synthetic it tries the whole script without data or a GPU
  small   64 px, 4 levels, a 10M-parameter UNet, 20k steps: sized for one GPU (default)
  paper   the published 64 px settings: 128 channels, 1M steps, for several GPUs

--synthetic trains on procedurally generated images (no download, no --data), for
smoke tests and timing only: the samples and FID mean nothing.

Reference settings (Mukhopadhyay et al.'s code): --upsample-top-level
--final-step reference --spacing even (and --factor, --resolution-schedule, --gamma as
its ds_factor and schedule).
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", help="CelebA root holding img_align_celeba/ and the partition file")
    p.add_argument("--synthetic", action="store_true", help="train on synthetic images (see below)")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), help="smoke, small or paper (default: small)"
    )
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--model", choices=("ssd", "ddpm"), help="default: ssd")
    p.add_argument("--levels", type=int, help="SSD pyramid levels (default: the preset's)")
    p.add_argument("--factor", type=float, help="downsampling factor between levels (default: 2)")
    p.add_argument(
        "--resolution-schedule",
        choices=("linear", "convex", "sigmoid", "tanh"),
        help="decay of the resolution over time (default: convex)",
    )
    p.add_argument("--gamma", type=float, help="the schedule's shape parameter (default: 0.5)")
    p.add_argument(
        "--upsample-top-level",
        action=argparse.BooleanOptionalAction,
        help="feed the model x_t upsampled at the change into full resolution "
        "(the reference does; default: off)",
    )
    p.add_argument(
        "--final-step",
        choices=("x0_prediction", "reference"),
        help="last sampling step: the clipped x0 prediction (default) or the reference's",
    )
    p.add_argument(
        "--spacing",
        choices=("trailing", "even"),
        help="respaced sampling steps (default: trailing; the reference: even)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--iterations", type=int, help="total training steps (overrides the preset)")
    p.add_argument("--batch-size", type=int, help="global batch size (overrides the preset)")
    p.add_argument("--log-every", type=int)
    p.add_argument("--sample-every", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        help="autocast precision (fp16 adds gradient scaling; default: bf16 on CUDA, else fp32)",
    )
    p.add_argument("--workers", type=int, help="data-loader workers per process")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: the preset's)")
    p.add_argument(
        "--fid", type=int, default=0, metavar="N", help="FID of N EMA samples at the end"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _scale_space_options(args: argparse.Namespace) -> dict[str, Any]:
    given = {
        "factor": args.factor,
        "resolution_schedule": args.resolution_schedule,
        "gamma": args.gamma,
        "upsample_top_level": args.upsample_top_level,
        "final_step": args.final_step,
        "spacing": args.spacing,
    }
    return {k: v for k, v in given.items() if v is not None}


def resolve_config(args: argparse.Namespace) -> tuple[RunConfig, bool]:
    """The run's configuration and whether it resumes from a checkpoint."""
    overrides = {
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "log_every": args.log_every,
        "sample_every": args.sample_every,
        "checkpoint_every": args.checkpoint_every,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key, value in overrides.items():
        if value < 1:
            raise SystemExit(f"--{key.replace('_', '-')} must be positive, got {value}")
    options = _scale_space_options(args)
    existing = checkpoints(args.out)
    if existing and not args.resume:
        raise SystemExit(f"{args.out} already holds checkpoints: pass --resume or another --out")
    if args.resume and (args.out / CONFIG_FILE).is_file():
        stored = read_config(args.out)
        asked = {"preset": args.preset, "model": args.model, "num_levels": args.levels}
        asked |= options
        have = {
            "preset": stored.preset.name,
            "model": stored.model,
            "num_levels": stored.num_levels,
        } | dataclasses.asdict(stored.scale_space)
        clash = {k: (v, have[k]) for k, v in asked.items() if v is not None and v != have[k]}
        if clash:
            raise SystemExit(f"--resume: options differ from {args.out}/config.json: {clash}")
        preset = dataclasses.replace(stored.preset, **overrides)
        return dataclasses.replace(stored, preset=preset), bool(existing)
    preset = dataclasses.replace(PRESETS[args.preset or "small"], **overrides)
    kind: ModelKind = "ddpm" if args.model == "ddpm" else "ssd"
    try:
        levels = levels_for(preset, kind, args.levels)
    except ValueError as err:
        raise SystemExit(str(err)) from err
    if not args.synthetic and args.data is None:
        raise SystemExit("--data /path/to/celeba is required (or pass --synthetic)")
    config = RunConfig(
        preset, kind, levels, args.seed, args.synthetic, ScaleSpaceOptions(**options)
    )
    return config, False


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train; return a summary (final step, paths of the last checkpoint and grid, FID)."""
    args = parse_args(argv)
    rank, world, device = setup_distributed(args.device)
    try:
        return train(args, rank, world, device)
    finally:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def train(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> dict[str, Any]:
    main_process = rank == 0
    config, _ = resolve_config(args)
    preset, out, opts = config.preset, args.out, config.scale_space
    threads = args.threads if args.threads is not None else preset.cpu_threads
    if threads is not None:
        torch.set_num_threads(threads)
    if preset.batch_size % world:
        raise SystemExit(f"batch size {preset.batch_size} is not divisible by {world} processes")
    if args.fid:
        require_fid()
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, config)

    dataset = make_dataset(config, args.data)
    sampler: DistributedSampler[Tensor] = DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=True
    )
    workers = args.workers if args.workers is not None else (0 if device.type == "cpu" else 8)
    loader = DataLoader(
        dataset,
        batch_size=preset.batch_size // world,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=seeded_generator(torch.device("cpu"), config.seed, rank, 7),
    )
    if len(loader) == 0:
        raise SystemExit(f"the dataset ({len(sampler)} images per process) is smaller than a batch")

    torch.manual_seed(config.seed)  # the same initial weights in every process
    model = build_model(preset).to(device)
    try:
        degradation = build_degradation(
            preset,
            config.num_levels,
            factor=opts.factor,
            resolution_schedule=opts.resolution_schedule,
            gamma=opts.gamma,
        )
    except ValueError as err:
        raise SystemExit(str(err)) from err
    sample_options(opts)  # fail now, not after training, on an unsupported convention
    logger = RunLogger(config, out, degradation, main_process)
    logger.precision, logger.device = precision, device

    def loss(net: nn.Module, x0: Tensor, gen: torch.Generator) -> Tensor:
        if preset.random_flip:
            flip = torch.rand(x0.shape[0], generator=gen, device=gen.device) < 0.5
            x0 = torch.where(flip.to(x0.device).view(-1, 1, 1, 1), x0.flip(-1), x0)
        terms = scale_space_loss_terms(
            net,
            degradation,
            x0,
            generator=gen,
            min_snr_gamma=preset.min_snr_gamma,
            upsample_top_level=opts.upsample_top_level,
        )
        logger.timesteps.append(terms.t[0])
        return terms.loss

    train_config = ImageTrainConfig(
        steps=preset.iterations,
        lr=preset.lr,
        weight_decay=preset.weight_decay,
        warmup_steps=preset.warmup_steps,
        grad_clip=preset.grad_clip,
        ema_decay=preset.ema_decay,
        precision=precision,
        checkpoint_every=preset.checkpoint_every,
        keep_checkpoints=preset.keep_checkpoints,
    )
    result = train_images(
        model,
        loss,
        loader,
        train_config,
        generator=seeded_generator(device, config.seed, rank),
        device=device,
        checkpoint_dir=out / CHECKPOINT_DIR,
        callback=logger,
        progress=main_process and not args.no_progress,
        # FlexiUNet leaves the levels above the input resolution unused (see its docstring).
        find_unused_parameters=True,
    )
    if main_process and result.start_step >= preset.iterations:
        print(f"nothing to do: the run is at step {result.start_step} >= {preset.iterations}")
    summary: dict[str, Any] = {
        "step": result.step,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "pretrained": None,
        "grid": str(logger.last_grid) if logger.last_grid else None,
        "log": str(out / LOG_FILE),
        "wall_time": round(result.seconds, 3),
        "fid": None,
    }
    if main_process:
        # The final EMA model with its degradation: FlexiUNet.from_pretrained(out / "pretrained").
        folder = result.export_pretrained(out / PRETRAINED_DIR, degradation=degradation)
        summary["pretrained"] = str(folder)
    if main_process and args.fid:
        summary["fid"] = final_fid(
            args.fid, result.ema, degradation, dataset, config, device, precision
        )
        with (out / LOG_FILE).open("a") as fh:
            fh.write(
                json.dumps({"step": summary["step"], "fid": summary["fid"], "fid_images": args.fid})
                + "\n"
            )
    if main_process:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
