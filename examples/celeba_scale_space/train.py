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

The run directory holds ``config.json``, ``log.jsonl`` (one JSON object per log step),
``samples/step_*.png`` (EMA samples) and ``checkpoints/step_*/`` (``model.safetensors``,
``ema.safetensors``, ``training_state.pt``). ``--resume`` continues from the newest
checkpoint: weights, EMA, optimiser, learning-rate schedule and step count. The random
stream is re-seeded from ``(seed, rank, step)`` and the data order restarts at the
epoch of that step, so a resumed run is reproducible but not bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ssd_common import (
    CONFIG_FILE,
    EMA_FILE,
    LOG_FILE,
    MODEL_FILE,
    STATE_FILE,
    RunConfig,
    autocast_model,
    batches,
    checkpoints,
    generate,
    inception_features_of,
    load_weights,
    make_dataset,
    read_config,
    real_images,
    require_fid,
    save_checkpoint,
    save_image_grid,
    seeded_generator,
    setup_distributed,
    trim_log,
    write_config,
)
from ssd_presets import PRESETS, ModelKind, build_degradation, build_model, levels_for

from scalemix.scale_space import scale_space_loss_terms


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="CelebA root holding img_align_celeba/ and the partition file")
    p.add_argument("--synthetic", action="store_true", help="train on synthetic images")
    p.add_argument("--preset", choices=sorted(PRESETS), help="default: small")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--model", choices=("ssd", "ddpm"), help="default: ssd")
    p.add_argument("--levels", type=int, help="SSD pyramid levels (default: the preset's)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--iterations", type=int, help="total training steps (overrides the preset)")
    p.add_argument("--batch-size", type=int, help="global batch size (overrides the preset)")
    p.add_argument("--log-every", type=int)
    p.add_argument("--sample-every", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, help="bf16 autocast (default: on CUDA)"
    )
    p.add_argument("--workers", type=int, help="data-loader workers per process")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: the preset's)")
    p.add_argument(
        "--fid", type=int, default=0, metavar="N", help="FID of N EMA samples at the end"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


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
    existing = checkpoints(args.out)
    if existing and not args.resume:
        raise SystemExit(f"{args.out} already holds checkpoints: pass --resume or another --out")
    if args.resume and (args.out / CONFIG_FILE).is_file():
        stored = read_config(args.out)
        asked = {"preset": args.preset, "model": args.model, "num_levels": args.levels}
        have = {
            "preset": stored.preset.name,
            "model": stored.model,
            "num_levels": stored.num_levels,
        }
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
    return RunConfig(preset, kind, levels, args.seed, args.synthetic), False


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
    config, resuming = resolve_config(args)
    preset, out = config.preset, args.out
    threads = args.threads if args.threads is not None else preset.cpu_threads
    if threads is not None:
        torch.set_num_threads(threads)
    if preset.batch_size % world:
        raise SystemExit(f"batch size {preset.batch_size} is not divisible by {world} processes")
    if args.fid:
        require_fid()
    bf16 = device.type == "cuda" if args.bf16 is None else bool(args.bf16)
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
    )
    if len(loader) == 0:
        raise SystemExit(f"the dataset ({len(sampler)} images per process) is smaller than a batch")

    torch.manual_seed(config.seed)  # the same initial weights in every process
    model = build_model(preset).to(device)
    degradation = build_degradation(preset, config.num_levels)
    ema_fn = get_ema_multi_avg_fn(preset.ema_decay)  # type: ignore[no-untyped-call]
    ema = AveragedModel(model, multi_avg_fn=ema_fn, use_buffers=True)
    ema.eval()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=preset.lr, weight_decay=preset.weight_decay
    )
    warmup = max(preset.warmup_steps, 1)
    lr_schedule = LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    start, elapsed = 0, 0.0
    if resuming:
        last = checkpoints(out)[-1]
        load_weights(model, last / MODEL_FILE, device)
        load_weights(ema.module, last / EMA_FILE, device)
        state = torch.load(last / STATE_FILE, map_location=device, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        ema.n_averaged.fill_(int(state["ema_n_averaged"]))
        start, elapsed = int(state["step"]), float(state["elapsed"])
    log_path = out / LOG_FILE
    if main_process:
        trim_log(log_path, start)
    net: torch.nn.Module = model
    if world > 1:
        # FlexiUNet leaves the levels above the input resolution unused (see its docstring).
        net = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    denoiser = autocast_model(net, device, bf16)
    gen = seeded_generator(device, config.seed, rank, start)
    data = batches(loader, sampler, start // len(loader))

    from tqdm.auto import tqdm

    bar = tqdm(
        total=preset.iterations,
        initial=start,
        disable=not main_process or args.no_progress,
        desc=f"{config.model}-{config.num_levels}",
    )
    window: list[Tensor] = []
    by_res: dict[int, list[Tensor]] = defaultdict(list)
    t0 = time.perf_counter()
    last_ckpt, last_grid = None, None
    if main_process and start >= preset.iterations:
        print(f"nothing to do: the run is at step {start} >= --iterations {preset.iterations}")
    for step in range(start + 1, preset.iterations + 1):
        model.train()
        x0 = next(data).to(device, non_blocking=True)
        if preset.random_flip:
            flip = torch.rand(x0.shape[0], generator=gen, device=gen.device) < 0.5
            x0 = torch.where(flip.to(device).view(-1, 1, 1, 1), x0.flip(-1), x0)
        terms = scale_space_loss_terms(
            denoiser, degradation, x0, generator=gen, min_snr_gamma=preset.min_snr_gamma
        )
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()  # type: ignore[no-untyped-call]
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), preset.grad_clip)
        optimizer.step()
        lr_schedule.step()
        ema.update_parameters(model)
        loss = terms.loss.detach()
        window.append(loss)
        by_res[degradation.resolution(int(terms.t[0]))].append(loss)
        bar.update(1)
        final = step == preset.iterations
        if step % preset.log_every == 0 or final:
            mean = torch.stack(window).mean()
            if world > 1:
                dist.all_reduce(mean, op=dist.ReduceOp.AVG)
            now = elapsed + time.perf_counter() - t0
            record = {
                "step": step,
                "loss": float(mean),
                "lr": lr_schedule.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "time": round(now, 3),
                "loss_by_resolution": {r: float(torch.stack(v).mean()) for r, v in by_res.items()},
            }
            if main_process:
                with log_path.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{record['loss']:.4f}")
            window.clear()
            by_res.clear()
        if main_process and (step % preset.sample_every == 0 or final):
            images = generate(
                ema.module,
                degradation,
                preset.num_sample_images,
                batch_size=preset.num_sample_images,
                steps=preset.sample_steps,
                generator=seeded_generator(device, config.seed, 1_000_003),
                device=device,
                bf16=bf16,
            )
            last_grid = out / "samples" / f"step_{step:08d}.png"
            save_image_grid(images, last_grid)
        if main_process and (step % preset.checkpoint_every == 0 or final):
            state = {
                "step": step,
                "elapsed": elapsed + time.perf_counter() - t0,
                "optimizer": optimizer.state_dict(),
                "lr_schedule": lr_schedule.state_dict(),
                "ema_n_averaged": int(ema.n_averaged),
            }
            last_ckpt = save_checkpoint(
                out, step, model, ema.module, state, preset.keep_checkpoints
            )
    bar.close()
    summary: dict[str, Any] = {
        "step": max(start, preset.iterations),
        "checkpoint": str(last_ckpt) if last_ckpt else None,
        "grid": str(last_grid) if last_grid else None,
        "log": str(log_path),
        "wall_time": round(time.perf_counter() - t0, 3),
        "fid": None,
    }
    if main_process and args.fid:
        summary["fid"] = final_fid(args.fid, ema.module, degradation, dataset, config, device, bf16)
        with log_path.open("a") as fh:
            fh.write(
                json.dumps({"step": summary["step"], "fid": summary["fid"], "fid_images": args.fid})
                + "\n"
            )
    if main_process:
        print(json.dumps(summary))
    return summary


def final_fid(
    n: int,
    model: torch.nn.Module,
    degradation: Any,
    dataset: Any,
    config: RunConfig,
    device: torch.device,
    bf16: bool,
) -> float:
    """FID between ``n`` EMA samples and ``n`` training images (a quick indicator only)."""
    from scalemix.metrics.fid import fid_from_features, inception_features, load_inception

    inception = load_inception(device)
    batch = min(n, 64)
    gen = seeded_generator(device, config.seed, 2_000_003)
    fake = inception_features_of(
        lambda b: generate(
            model,
            degradation,
            b,
            batch_size=b,
            steps=config.preset.sample_steps,
            generator=gen,
            device=device,
            bf16=bf16,
        ),
        n,
        batch,
        inception,
    )
    real = inception_features(real_images(dataset, n, config.seed), inception, batch_size=batch)
    return fid_from_features(fake, real)


if __name__ == "__main__":
    main()
