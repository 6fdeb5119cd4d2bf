"""Scale Space Diffusion against DDPM on real images: KID and FID against training FLOPs.

One command trains, side by side (one process and one torch thread each), three models
with the same FlexiUNet and settings: SSD on a 3-level pyramid (4 for CelebA) with the
paper's convex resolution schedule (gamma 0.5), SSD on 2 levels, and the full-resolution
DDPM baseline (a one-level pyramid, x0-parameterised). DDPM trains ``iterations``; with
the preset's ``equal_flops`` each SSD model trains on until it has spent DDPM's training
FLOPs. The study then samples every checkpoint (in the precision its model was trained
in), computes KID (with its standard error) and FID against held-out real images,
measures the real-vs-real floor, the training and sampling FLOPs and the sampling wall
time, compares the models at equal training FLOPs and at equal iterations
(``scale_space_report.py``), and writes the tables, a figure of quality against training compute
and the sample grids::

    python examples/scale_space_study/study.py --out runs/study            # 1-2 h, 2 cores
    python examples/scale_space_study/study.py --quick --out runs/quick    # minutes

    # CelebA 64 px on a GPU (the celeba_scale_space example's "small" settings)
    python examples/scale_space_study/study.py --preset celeba-small --data /data/celeba \\
        --device cuda --out runs/celeba

Every stage resumes: trainings continue from their newest checkpoint
(``scalemix.training.train_images``), evaluated checkpoints are not evaluated again. The
run directory holds ``study.json``, ``<model>/checkpoints/step_*/``, ``<model>/log.jsonl``,
``<model>/train.json`` (steps, seconds, precision), ``<model>/eval/step_*.npz`` (samples
and features), ``<model>/pretrained/`` (the final EMA model and its degradation, for
``FlexiUNet.from_pretrained``), ``real/features.npz``, ``timing.json``,
``results.json``, ``results.md``, ``quality_vs_compute.png`` and ``samples.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))

import scale_space_report as report  # noqa: E402
from presets import PRESETS, StudyPreset, model_levels  # noqa: E402

from scalemix.degradation import ScaleSpaceDegradation  # noqa: E402
from scalemix.nn.flexi_unet import FlexiUNet  # noqa: E402
from scalemix.scale_space import scale_space_loss_terms, scale_space_sample  # noqa: E402
from scalemix.training import ImageTrainConfig, train_images  # noqa: E402

STAGES = ("train", "eval", "time", "report")
FEATURES = ("inception", "pixels")


# ---------------------------------------------------------------------------- options
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="study directory")
    p.add_argument("--preset", choices=sorted(PRESETS), help="default: 'default'")
    p.add_argument("--quick", action="store_true", help="the 'quick' preset (minutes on 2 cores)")
    p.add_argument("--data", help="CelebA root (preset celeba-small)")
    p.add_argument(
        "--fashion-root",
        help="folder of the Fashion-MNIST IDX files (default: where Debian's "
        "dataset-fashion-mnist package puts them)",
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (1)")
    p.add_argument(
        "--jobs", type=int, help="processes side by side (default: every training at once)"
    )
    p.add_argument(
        "--features",
        choices=FEATURES,
        default="inception",
        help="inception (KID/FID, needs scalemix[fid]) or pixels (8x8 average-pooled "
        "pixels: for tests only, not a quality measure)",
    )
    p.add_argument(
        "--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES)
    )
    p.add_argument("--seed", type=int, default=0)
    for name in ("iterations", "eval-samples", "curve-samples", "sample-steps", "train-subset"):
        p.add_argument(f"--{name}", type=int, help="override the preset's value")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def resolve_preset(args: argparse.Namespace, default: str = "default") -> StudyPreset:
    """The preset the options name (``default`` when none), with their overrides."""
    name = "quick" if args.quick else (args.preset or default)
    if args.quick and args.preset not in (None, "quick"):
        raise SystemExit(f"--quick and --preset {args.preset} contradict each other")
    overrides = {
        k: getattr(args, k)
        for k in ("iterations", "eval_samples", "curve_samples", "sample_steps", "train_subset")
        if getattr(args, k) is not None
    }
    for key, value in overrides.items():
        if value < 1:
            raise SystemExit(f"--{key.replace('_', '-')} must be positive, got {value}")
    preset = dataclasses.replace(PRESETS[name], **overrides)
    if preset.iterations % preset.num_checkpoints:
        raise SystemExit(
            f"--iterations must be a multiple of {preset.num_checkpoints} (the evaluated "
            f"checkpoints), got {preset.iterations}"
        )
    if preset.dataset == "celeba" and args.data is None:
        raise SystemExit(f"preset {name!r} reads CelebA: pass --data /path/to/celeba")
    return preset


def study_config(args: argparse.Namespace, preset: StudyPreset) -> dict[str, Any]:
    """The study's identity (``study.json``); a resumed study must match it."""
    return {
        "preset": preset.to_dict(),
        "seed": args.seed,
        "features": args.features,
        "data": args.data,
        "fashion_root": args.fashion_root,
    }


def device_of(args: argparse.Namespace) -> torch.device:
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


# ---------------------------------------------------------------------------- pieces
def build_model(preset: StudyPreset) -> FlexiUNet:
    return FlexiUNet(**build_kwargs(preset))


def build_degradation(preset: StudyPreset, levels: int) -> ScaleSpaceDegradation:
    """T = 1000, linear betas, convex resolution schedule with gamma 0.5 (the paper's)."""
    return ScaleSpaceDegradation(
        image_size=preset.image_size, num_levels=levels, resolution_schedule="convex", gamma=0.5
    )


def dataset(args: argparse.Namespace, preset: StudyPreset, split: str) -> Dataset[Tensor]:
    """Training images (``split="train"``) or the held-out test split."""
    if preset.dataset == "celeba":
        from scalemix.datasets.images import CelebAFolder

        return CelebAFolder(args.data, split=split, image_size=preset.image_size)  # type: ignore[arg-type]
    from scalemix.datasets import FashionMNIST

    indices = None
    if split == "train" and preset.train_subset is not None:
        indices = range(preset.train_subset)
    try:
        return FashionMNIST(
            args.fashion_root,
            split=split,
            image_size=preset.image_size,
            indices=indices,  # type: ignore[arg-type]
        )
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from err


def seeded(device: torch.device, *keys: int) -> torch.Generator:
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device).manual_seed(seed)


def checkpoint_dir(out: Path, name: str, step: int) -> Path:
    return out / name / "checkpoints" / f"step_{step:08d}"


def load_ema(preset: StudyPreset, path: Path, device: torch.device) -> FlexiUNet:
    from safetensors.torch import load_file

    model = build_model(preset)
    model.load_state_dict(load_file(str(path / "ema.safetensors")))
    return model.to(device).eval()


def sampler_call(
    model: nn.Module, device: torch.device, precision: str = "fp32"
) -> Callable[..., Tensor]:
    """The model in the precision it was trained in: under bf16 autocast for ``"bf16"``
    (on CUDA or the CPU; float32 out, the sampler's arithmetic stays in float32)."""
    bf16 = precision == "bf16"

    def call(x: Tensor, t: Tensor, /, out_size: int | None = None) -> Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x, t, out_size=out_size)
        return out.float()

    return call


@torch.no_grad()
def generate(
    model: nn.Module,
    degradation: ScaleSpaceDegradation,
    preset: StudyPreset,
    n: int,
    generator: torch.Generator,
    device: torch.device,
    batch: int | None = None,
    precision: str = "fp32",
) -> Tensor:
    """``n`` samples ``(n, c, s, s)`` in ``[-1, 1]`` on the CPU, ``batch`` at a time, the
    network in ``precision`` (:func:`sampler_call`)."""
    call = sampler_call(model, device, precision)
    size, out = batch or preset.sample_batch, []
    for start in range(0, n, size):
        x = scale_space_sample(
            call,
            degradation,
            min(size, n - start),
            channels=preset.channels,
            steps=preset.sample_steps,
            generator=generator,
            device=device,
        )
        out.append(x.float().clamp(-1, 1).cpu())
    return torch.cat(out)


def to_uint8(images: Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


@functools.cache
def inception(device: torch.device) -> Any:
    """The Inception network of ``scalemix[fid]``, loaded once per process."""
    from scalemix.metrics.fid import load_inception

    try:
        return load_inception(device)
    except ModuleNotFoundError as err:
        raise SystemExit(str(err)) from err


def features_of(images: Tensor, kind: str, device: torch.device) -> np.ndarray:
    """Inception pool features (``scalemix.metrics.fid``) or, for tests, pooled pixels."""
    if kind == "pixels":
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.float(), 8)
        return pooled.flatten(1).double().numpy()
    from scalemix.metrics.fid import inception_features

    # Quantised as a saved PNG would be, computed in batches of 100.
    return inception_features(images, inception(device), batch_size=100)


def train_config(
    preset: StudyPreset, device: torch.device, iterations: int | None = None, **extra: Any
) -> ImageTrainConfig:
    """The study's ``train_images`` settings for ``iterations`` steps (default the
    preset's); ``extra`` adds to them, e.g. label dropout. The precision is ``"auto"``:
    bf16 on a GPU that has it, and on a CPU whichever of fp32 and bf16 trains faster."""
    steps = preset.iterations if iterations is None else iterations
    return ImageTrainConfig(
        steps=steps,
        lr=preset.lr,
        warmup_steps=preset.warmup_steps,
        grad_clip=1.0,
        ema_decay=preset.ema_decay,
        precision="auto",
        checkpoint_every=preset.checkpoint_every,
        keep_checkpoints=len(preset.checkpoint_steps(steps)),
        **extra,
    )


def model_iterations(preset: StudyPreset, levels: int) -> int:
    """Training steps of the model with ``levels`` pyramid levels: ``preset.iterations``,
    or with ``equal_flops`` for SSD, enough checkpoints to spend DDPM's training FLOPs."""
    if not preset.equal_flops or levels == 1:
        return preset.iterations
    budget = preset.iterations * training_flops(preset, 1)
    every = preset.checkpoint_every
    return every * math.ceil(budget / training_flops(preset, levels) / every - 1e-9)


def trained_precision(out: Path, name: str) -> str:
    """The precision model ``name`` was trained in (its ``train.json``)."""
    return str(json.loads((out / name / "train.json").read_text()).get("precision", "fp32"))


def loss_logger(path: Path, iterations: int) -> Callable[[Any], None]:
    """A ``train_images`` callback appending step, loss and elapsed seconds to ``path``
    (JSON lines), about 100 times a run and at the last step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    every = max(1, iterations // 100)

    def log(state: Any) -> None:
        if state.step % every == 0 or state.step == iterations:
            record = {"step": state.step, "loss": float(state.loss), "elapsed": state.elapsed}
            with path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    return log


# ---------------------------------------------------------------------------- workers
def work_train(args: argparse.Namespace, preset: StudyPreset, name: str) -> None:
    """Train one model through ``train_images`` (resuming from its newest checkpoint)."""
    levels = model_levels(preset)[name]
    device = device_of(args)
    data = dataset(args, preset, "train")
    loader = DataLoader(
        data,
        batch_size=preset.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=0 if device.type == "cpu" else 4,
        generator=seeded(torch.device("cpu"), args.seed, 7),
    )
    torch.manual_seed(args.seed)  # the same initial weights for every model
    model = build_model(preset).to(device)
    degradation = build_degradation(preset, levels)

    def loss(net: nn.Module, x0: Tensor, gen: torch.Generator) -> Tensor:
        x0 = x0.to(device, non_blocking=True)
        if preset.random_flip:
            flip = torch.rand(x0.shape[0], generator=gen, device=gen.device) < 0.5
            x0 = torch.where(flip.to(device).view(-1, 1, 1, 1), x0.flip(-1), x0)
        return scale_space_loss_terms(net, degradation, x0, generator=gen, min_snr_gamma=5.0).loss

    iterations = model_iterations(preset, levels)
    result = train_images(
        model,
        loss,
        loader,
        train_config(preset, device, iterations),
        generator=seeded(device, args.seed, levels),
        device=device,
        checkpoint_dir=args.out / name / "checkpoints",
        callback=loss_logger(args.out / name / "log.jsonl", iterations),
        progress=True,
    )
    # The final EMA model with its degradation: scalemix.FlexiUNet.from_pretrained(folder).
    pretrained = result.export_pretrained(args.out / name / "pretrained", degradation=degradation)
    summary = {
        "step": result.step,
        "train_seconds": result.seconds,
        "levels": levels,
        "precision": result.precision.precision,
        "precision_choice": result.precision.summary(),
        "pretrained": str(pretrained),
    }
    (args.out / name / "train.json").write_text(json.dumps(summary, indent=2) + "\n")


def work_real(args: argparse.Namespace, preset: StudyPreset) -> None:
    """Features of two disjoint held-out real splits: the reference and the floor."""
    path = args.out / "real" / "features.npz"
    if path.is_file():
        return
    device = device_of(args)
    test = dataset(args, preset, "test")
    n = preset.eval_samples
    if 2 * n > len(test):  # type: ignore[arg-type]
        raise SystemExit(f"the test split has {len(test)} images; 2 x {n} are needed")  # type: ignore[arg-type]
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))  # type: ignore[arg-type]
    images = torch.stack([test[int(i)] for i in order[: 2 * n]])
    feats = features_of(images, args.features, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")  # whole or absent after a kill
    np.savez(tmp, reference=feats[:n], floor=feats[n:], images=to_uint8(images[:64]))
    os.replace(tmp, path)


def work_eval(args: argparse.Namespace, preset: StudyPreset, name: str) -> None:
    """Sample every checkpoint of a model and store the samples' features."""
    device = device_of(args)
    levels = model_levels(preset)[name]
    degradation = build_degradation(preset, levels)
    precision = trained_precision(args.out, name)
    steps = preset.checkpoint_steps(model_iterations(preset, levels))
    for step in steps:
        path = args.out / name / "eval" / f"step_{step:08d}.npz"
        if path.is_file():
            continue
        model = load_ema(preset, checkpoint_dir(args.out, name, step), device)
        n = eval_count(preset, step, steps[-1])
        start = time.perf_counter()
        gen = seeded(device, args.seed, 99, step)
        images = generate(model, degradation, preset, n, gen, device, precision=precision)
        seconds = time.perf_counter() - start
        feats = features_of(images, args.features, device)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, features=feats, images=to_uint8(images[:64]), sample_seconds=seconds)
        os.replace(tmp, path)
        print(f"{name} step {step}: {n} samples ({precision}) in {seconds:.0f} s", flush=True)


def eval_count(preset: StudyPreset, step: int, last: int) -> int:
    """Samples drawn at checkpoint ``step`` of a model whose last checkpoint is ``last``:
    ``eval_samples`` at the equal-iterations step and at the last, ``curve_samples``
    elsewhere."""
    return preset.eval_samples if step in (preset.iterations, last) else preset.curve_samples


# ---------------------------------------------------------------------------- costs
@functools.cache
def training_flops(preset: StudyPreset, levels: int) -> float:
    """FLOPs of one training iteration: 3 x forward (forward + backward) x batch,
    averaged over t ~ U{0..T-1} with each step's resolution pair (benchmarks/flops.py)."""
    from flops import meta_model, schedule_flops

    model = meta_model(**build_kwargs(preset))
    degradation = build_degradation(preset, levels)
    resolutions = [degradation.resolution(t) for t in range(degradation.num_train_timesteps)]
    cost = schedule_flops(model, resolutions)
    return 3.0 * preset.batch_size * cost.flops / len(resolutions)


def build_kwargs(preset: StudyPreset) -> dict[str, Any]:
    return {
        "in_channels": preset.channels,
        "base_channels": preset.base_channels,
        "channel_mult": preset.channel_mult,
        "num_res_blocks": preset.num_res_blocks,
        "attention_resolutions": preset.attention_resolutions,
        "image_size": preset.image_size,
        "num_heads": preset.num_heads,
    }


def sampling_flops(preset: StudyPreset, levels: int) -> float:
    """Network FLOPs of sampling one image, counted on the sampler's actual calls."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = build_model(preset).eval()
    degradation = build_degradation(preset, levels)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        generate(
            model, degradation, preset, 1, torch.Generator().manual_seed(0), torch.device("cpu")
        )
    return float(counter.get_total_flops())


def stage_time(args: argparse.Namespace, preset: StudyPreset) -> None:
    """Sampling wall time, the same batch for every model (at ``preset.iterations``, in
    its training precision), one thread, alternating."""
    device = device_of(args)
    torch.set_num_threads(args.threads)
    step = preset.iterations
    models = {
        name: (
            load_ema(preset, checkpoint_dir(args.out, name, step), device),
            build_degradation(preset, lv),
            trained_precision(args.out, name),
        )
        for name, lv in model_levels(preset).items()
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(preset.time_repeats + 1):  # the first round warms up
        for name, (model, degradation, precision) in models.items():
            gen = seeded(device, args.seed, 5, repeat)
            start = time.perf_counter()
            batch = preset.time_batch
            generate(model, degradation, preset, batch, gen, device, batch, precision)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if repeat:
                times[name].append(time.perf_counter() - start)
    out = {
        name: {
            "seconds_per_image": float(np.median(ts)) / preset.time_batch,
            "runs": ts,
            "batch": preset.time_batch,
            "threads": args.threads,
            "precision": models[name][2],
        }
        for name, ts in times.items()
    }
    (args.out / "timing.json").write_text(json.dumps(out, indent=2) + "\n")


# ---------------------------------------------------------------------------- report
def stage_report(args: argparse.Namespace, preset: StudyPreset) -> dict[str, Any]:
    """KID and FID of every checkpoint, the equal-FLOPs and equal-iterations comparisons,
    the x0 error per timestep band, the tables, the figure and the sample grid."""
    from scalemix.metrics import kid_from_features
    from scalemix.metrics.fid import fid_from_features

    real = np.load(args.out / "real" / "features.npz")
    reference = real["reference"]
    timing = json.loads((args.out / "timing.json").read_text())
    kid_args = {"num_subsets": 100, "subset_size": preset.kid_subset}
    floor_kid = kid_from_features(real["floor"], reference, **kid_args)
    rows: dict[str, Any] = {}
    for name, levels in model_levels(preset).items():
        per_iter = training_flops(preset, levels)
        train = json.loads((args.out / name / "train.json").read_text())
        curve = []
        for step in preset.checkpoint_steps(model_iterations(preset, levels)):
            data = np.load(args.out / name / "eval" / f"step_{step:08d}.npz")
            kid = kid_from_features(data["features"], reference, **kid_args)
            curve.append(
                {
                    "step": step,
                    "train_flops": per_iter * step,
                    "n": len(data["features"]),
                    "kid": kid.value,
                    "kid_se": kid.se,
                    "kid_subset_mean": kid.subset_mean,
                    "kid_subset_std": kid.subset_std,
                    "fid": fid_from_features(data["features"], reference),
                }
            )
        rows[name] = {
            "levels": levels,
            "curve": curve,
            "precision": train.get("precision", "fp32"),
            "train_flops_per_iteration": per_iter,
            "train_seconds": train["train_seconds"],
            "sample_flops_per_image": sampling_flops(preset, levels),
            "sample_seconds_per_image": timing[name]["seconds_per_image"],
        }
    results: dict[str, Any] = {
        "preset": preset.to_dict(),
        "features": args.features,
        "floor": {
            "n": len(real["floor"]),
            "kid": floor_kid.value,
            "kid_se": floor_kid.se,
            "fid": fid_from_features(real["floor"], reference),
        },
        "models": rows,
    }
    results["equal_flops"] = report.equal_flops(rows)
    results["x0_error"] = stage_error(args, preset)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = report.results_markdown(results)
    (args.out / "results.md").write_text(table + "\n")
    print(table)
    for line in report.summary_lines(results):
        print(line)
    report.plot(results, args.out / "quality_vs_compute.png")
    grid(args, preset, args.out / "samples.png")
    return results


def stage_error(args: argparse.Namespace, preset: StudyPreset) -> dict[str, Any]:
    """:func:`report.x0_error` of every model at ``preset.iterations`` (equal
    iterations), on up to 256 held-out test images that neither real split uses."""
    device = torch.device("cpu")
    test = dataset(args, preset, "test")
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))  # type: ignore[arg-type]
    held = order[2 * preset.eval_samples : 2 * preset.eval_samples + 256]
    if len(held) == 0:
        raise SystemExit(f"the test split has no images left beyond 2 x {preset.eval_samples}")
    images = torch.stack([test[int(i)] for i in held])
    models = {
        name: (
            sampler_call(
                load_ema(preset, checkpoint_dir(args.out, name, preset.iterations), device),
                device,
                trained_precision(args.out, name),
            ),
            build_degradation(preset, levels),
        )
        for name, levels in model_levels(preset).items()
    }
    return report.x0_error(models, images, args.seed)


def grid(args: argparse.Namespace, preset: StudyPreset, path: Path) -> None:
    """Real images beside 64 samples of every model (last checkpoint)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = preset.iterations
    panels = {"real (held out)": np.load(args.out / "real" / "features.npz")["images"]}
    for name in model_levels(preset):
        panels[name] = np.load(args.out / name / "eval" / f"step_{last:08d}.npz")["images"]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.0 * len(panels), 3.2), constrained_layout=True
    )
    for ax, (title, images) in zip(axes, panels.items(), strict=True):
        ax.imshow(tile(images), cmap="gray" if images.shape[1] == 1 else None, vmin=0, vmax=255)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def tile(images: np.ndarray, pad: int = 1) -> np.ndarray:
    """``(n, c, h, w)`` uint8 -> one near-square ``(H, W)`` or ``(H, W, c)`` mosaic."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        out[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + q * (w + pad) : pad + q * (w + pad) + w,
        ] = images[i].transpose(1, 2, 0)
    return out[..., 0] if c == 1 else out


# ---------------------------------------------------------------------------- driver
def run_workers(
    args: argparse.Namespace,
    workers: list[str],
    argv: Sequence[str],
    then: dict[str, str] | None = None,
) -> None:
    """Run ``workers`` as subprocesses, ``--jobs`` at a time, one torch thread each.

    ``then[name]`` is queued as soon as worker ``name`` has finished (a model's
    evaluation starts when its training ends, not when the slowest one does).
    """
    then = dict(then or {})
    jobs = args.jobs or len(workers)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    pending, running = list(workers), []
    start = time.perf_counter()
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            log = (args.out / "logs" / f"{name.replace(':', '_')}.log").open("a")
            cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", name]
            running.append(
                (name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
            )
            print(f"  started {name}", flush=True)
        time.sleep(0.5)
        for item in list(running):
            name, proc, log = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            if proc.returncode:
                for _, other, _ in running:
                    other.terminate()
                tail = (args.out / "logs" / f"{name.replace(':', '_')}.log").read_text()[-3000:]
                raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{tail}")
            print(f"  {name} done after {time.perf_counter() - start:.0f} s", flush=True)
            if name in then:
                pending.append(then.pop(name))


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    preset = resolve_preset(args)
    if args.threads < 1:
        raise SystemExit(f"--threads must be positive, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.worker:
        kind, _, name = args.worker.partition(":")
        {
            "train": lambda: work_train(args, preset, name),
            "eval": lambda: work_eval(args, preset, name),
            "real": lambda: work_real(args, preset),
        }[kind]()
        return None
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)}; accepted: {', '.join(STAGES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    config = study_config(args, preset)
    config_path = args.out / "study.json"
    config = json.loads(json.dumps(config))  # tuples as JSON lists, as read back
    if config_path.is_file() and json.loads(config_path.read_text()) != config:
        raise SystemExit(f"{config_path} was written with other options; use another --out")
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    names = list(model_levels(preset))
    print(
        f"study {preset.name}: models {', '.join(names)}; {preset.iterations} iterations",
        flush=True,
    )
    start = time.perf_counter()
    evals = {f"train:{n}": f"eval:{n}" for n in names} if "eval" in stages else {}
    if "train" in stages:
        print("training (side by side), features of the real images, evaluations", flush=True)
        run_workers(args, [f"train:{n}" for n in names] + ["real"], argv, then=evals)
    elif "eval" in stages:
        print("sampling every checkpoint and computing features", flush=True)
        run_workers(args, [*evals.values(), "real"], argv)
    if "time" in stages:
        print("sampling time, side by side in one process", flush=True)
        stage_time(args, preset)
    results = None
    if "report" in stages:
        results = stage_report(args, preset)
        results["wall_seconds"] = time.perf_counter() - start
    print(f"study done in {time.perf_counter() - start:.0f} s", flush=True)
    return results


if __name__ == "__main__":
    main()
