"""Class-conditional Scale Space Diffusion and DDPM on Fashion-MNIST, with classifier-free guidance.

The conditional counterpart of ``examples/scale_space_study``: the same FlexiUNet,
preset, data (Fashion-MNIST padded to 32 px), training budget, sampler and KID protocol,
with the class label as input (``FlexiUNet(num_classes=10)``, label dropout 0.1 to the
null class 10). One command trains, side by side (one process and one torch thread
each), SSD on the 3-level pyramid (32 / 16 / 8, convex schedule, gamma 0.5) and the
full-resolution DDPM baseline (one level), a small CNN classifier of the ten classes,
and the Inception features of held-out test images. Then it sweeps the guidance weight
``w`` of :class:`scalemix.guidance.ClassifierFreeGuidance` for each model, measuring KID
(+- se) against the held-out images and the classifier's accuracy on class-balanced
samples, and writes tables, a figure of KID against accuracy and a grid of samples::

    python examples/conditional_scale_space/study.py --out runs/cond              # hours on 2 cores
    python examples/conditional_scale_space/study.py --quick --out runs/cond-quick

Every stage resumes: trainings continue from their newest checkpoint
(``scalemix.training.train_images``), the classifier from its last epoch, the real
features are computed once, and each (model, w) evaluation is cached
(``<model>/eval/w_*.npz`` with its summary ``w_*.json``) and only extended when more
samples are asked for. The run directory holds ``study.json``,
``<model>/checkpoints/step_*/``, ``<model>/pretrained/``, ``<model>/log.jsonl``,
``classifier/``, ``real/features.npz``, ``stages.json`` (wall time of every worker),
``results.json``, ``results.md``, ``kid_vs_accuracy.png`` and ``samples.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BASE_DIR = REPO / "examples" / "scale_space_study"


def _load_base() -> ModuleType:
    """The real-image study's module (``examples/scale_space_study/study.py``)."""
    name = "scale_space_study"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BASE_DIR / "study.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


base = _load_base()
PRESETS: dict[str, Any] = base.PRESETS
StudyPreset = base.StudyPreset

from scalemix import sample  # noqa: E402
from scalemix.datasets import FashionMNIST  # noqa: E402
from scalemix.guidance import ClassifierFreeGuidance  # noqa: E402
from scalemix.nn.flexi_unet import FlexiUNet  # noqa: E402
from scalemix.scale_space import scale_space_loss  # noqa: E402
from scalemix.training import train_images  # noqa: E402

NUM_CLASSES = 10
STAGES = ("train", "eval", "report")
SCALES = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0)
UNCONDITIONAL = REPO / "docs" / "_static" / "results_scale_space" / "results.json"


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The guidance sweep and the classifier (the rest is the real-image study's preset).

    Attributes:
        scales: guidance weights ``w`` (0: the unconditional model, 1: the conditional).
        samples: class-balanced samples per ``w``.
        final_samples: samples at ``w = 1`` and at the best ``w``.
        label_dropout: probability of the null label in training.
        classifier_epochs: epochs of the classifier over the training images.
        classifier_width: channels of the classifier's three convolutions (w, 2w, 2w).
        classifier_test: test images the classifier's accuracy is measured on (the
            first ones of the split; ``None``: all 10,000).
    """

    scales: tuple[float, ...] = SCALES
    samples: int = 500
    final_samples: int = 2000
    label_dropout: float = 0.1
    classifier_epochs: int = 2
    classifier_width: int = 32
    classifier_test: int | None = None


SWEEPS = {
    "default": Sweep(),
    "quick": Sweep(samples=40, final_samples=80, classifier_epochs=1, classifier_test=1000),
}


# ---------------------------------------------------------------------------- options
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="study directory")
    p.add_argument(
        "--preset",
        choices=("short", "default", "gpu", "quick"),
        help="the real-image study's preset; default: 'short' (Fashion-MNIST, 1,500 iterations)",
    )
    p.add_argument("--quick", action="store_true", help="the 'quick' preset (minutes on 2 cores)")
    p.add_argument("--fashion-root", help="folder of the Fashion-MNIST IDX files")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (1)")
    p.add_argument("--jobs", type=int, help="processes side by side (default: 4)")
    p.add_argument(
        "--features",
        choices=base.FEATURES,
        default="inception",
        help="inception (KID, needs scalemix[fid]) or pixels (8x8 average-pooled pixels: "
        "for tests only, not a quality measure)",
    )
    p.add_argument(
        "--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES)
    )
    p.add_argument("--seed", type=int, default=0)
    for name in ("iterations", "eval-samples", "sample-steps", "train-subset"):
        p.add_argument(f"--{name}", type=int, help="override the preset's value")
    p.add_argument("--scales", help="comma-separated guidance weights (default 0,1,1.5,2,3,5)")
    for name in ("samples", "final-samples", "classifier-epochs"):
        p.add_argument(f"--{name}", type=int, help="override the sweep's value")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.data, args.curve_samples = None, None  # read by the real-image study's helpers
    return args


def resolve(args: argparse.Namespace) -> tuple[Any, Sweep]:
    """The real-image study's preset (with overrides) and the sweep settings."""
    preset = base.resolve_preset(args, default="short")
    sweep = SWEEPS["quick" if preset.name == "quick" else "default"]
    overrides: dict[str, Any] = {
        k: getattr(args, k)
        for k in ("samples", "final_samples", "classifier_epochs")
        if getattr(args, k) is not None
    }
    for key, value in overrides.items():
        if value < 1:
            raise SystemExit(f"--{key.replace('_', '-')} must be positive, got {value}")
    if args.scales is not None:
        try:
            overrides["scales"] = tuple(float(s) for s in args.scales.split(","))
        except ValueError as err:
            raise SystemExit(f"--scales must be comma-separated numbers: {err}") from err
    sweep = dataclasses.replace(sweep, **overrides)
    if 1.0 not in sweep.scales:
        raise SystemExit("--scales must include 1 (the conditional model)")
    if sweep.final_samples < sweep.samples:
        raise SystemExit("--final-samples must be at least --samples")
    return preset, sweep


def model_levels(preset: Any) -> dict[str, int]:
    """The conditional models: the deeper SSD pyramid and DDPM (one level)."""
    return {f"ssd{preset.ssd_levels}": preset.ssd_levels, "ddpm": 1}


def w_name(w: float) -> str:
    return f"w_{w:g}"


# ---------------------------------------------------------------------------- pieces
def build_model(preset: Any) -> FlexiUNet:
    """The real-image study's FlexiUNet with a class embedding (10 classes + null)."""
    return FlexiUNet(**base.build_kwargs(preset), num_classes=NUM_CLASSES)


def load_ema(preset: Any, path: Path, device: torch.device) -> FlexiUNet:
    from safetensors.torch import load_file

    model = build_model(preset)
    model.load_state_dict(load_file(str(path / "ema.safetensors")))
    return model.to(device).eval()


def labelled(args: argparse.Namespace, preset: Any, split: str) -> FashionMNIST:
    """``(image, label)`` pairs of a split, preprocessed as the real-image study's images."""
    indices = None
    if split == "train" and preset.train_subset is not None:
        indices = range(preset.train_subset)
    try:
        return FashionMNIST(
            args.fashion_root,
            split=split,  # type: ignore[arg-type]
            image_size=preset.image_size,
            indices=indices,
            labels=True,
        )
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from err


class Classifier(nn.Sequential):
    """Three 3x3 convolutions (w, 2w, 2w channels; ReLU, 2x2 max-pooling after the
    first two), 4 x 4 average pooling and a linear layer to the class logits."""

    def __init__(self, channels: int, width: int, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(32 * width, num_classes),
        )


@torch.no_grad()
def classify(classifier: nn.Module, images: Tensor, batch: int = 500) -> Tensor:
    """Predicted classes ``(n,)`` of images ``(n, c, s, s)`` in ``[-1, 1]``."""
    return torch.cat(
        [classifier(images[i : i + batch]).argmax(1) for i in range(0, len(images), batch)]
    )


def load_classifier(args: argparse.Namespace, preset: Any, sweep: Sweep) -> Classifier:
    state = torch.load(args.out / "classifier" / "checkpoint.pt", weights_only=True)
    model = Classifier(preset.channels, sweep.classifier_width)
    model.load_state_dict(state["model"])
    return model.eval()


def class_labels(start: int, stop: int) -> Tensor:
    """Class-balanced labels of samples ``start..stop-1``: sample ``i`` is class ``i % 10``."""
    return torch.arange(start, stop) % NUM_CLASSES


@torch.no_grad()
def generate(
    model: FlexiUNet,
    degradation: Any,
    preset: Any,
    w: float,
    labels: Tensor,
    generator: torch.Generator,
    device: torch.device,
) -> Tensor:
    """Samples ``(n, c, s, s)`` in ``[-1, 1]`` (CPU) of classes ``labels``, guided with ``w``.

    ``ClassifierFreeGuidance`` runs both halves in one batched call (``w`` not 0 or 1);
    the sampler, steps and clipping are the real-image study's (``scale_space_sample``).
    """
    guided = ClassifierFreeGuidance(model, w)

    def call(x: Tensor, t: Tensor, /, out_size: int | None = None, **kwargs: Any) -> Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out: Tensor = guided(x, t, out_size, **kwargs)
        return out.float()

    size = preset.image_size
    x = sample(
        call,
        degradation,
        (len(labels), preset.channels, size, size),
        sampler="ddpm",
        steps=preset.sample_steps,
        clip_sample=1.0,
        model_kwargs={"class_labels": labels.to(device)},
        generator=generator,
        device=device,
    )
    return x.float().clamp(-1, 1).cpu()


# ---------------------------------------------------------------------------- workers
def work_train(args: argparse.Namespace, preset: Any, sweep: Sweep, name: str) -> None:
    """Train one conditional model through ``train_images`` (resuming if interrupted)."""
    levels = model_levels(preset)[name]
    device = base.device_of(args)
    loader = DataLoader(
        labelled(args, preset, "train"),
        batch_size=preset.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=0 if device.type == "cpu" else 4,
        generator=base.seeded(torch.device("cpu"), args.seed, 7),
    )
    torch.manual_seed(args.seed)  # the same initial weights for both models
    model = build_model(preset).to(device)
    degradation = base.build_degradation(preset, levels)

    def loss(
        model: nn.Module,
        images: Tensor,
        generator: torch.Generator,
        *,
        model_kwargs: dict[str, Tensor],
    ) -> Tensor:
        return scale_space_loss(
            model,
            degradation,
            images,
            generator=generator,
            min_snr_gamma=5.0,
            model_kwargs=model_kwargs,
        )

    result = train_images(
        model,
        loss,
        loader,
        base.train_config(preset, device, label_dropout=sweep.label_dropout),
        generator=base.seeded(device, args.seed, levels),
        device=device,
        checkpoint_dir=args.out / name / "checkpoints",
        callback=base.loss_logger(args.out / name / "log.jsonl", preset.iterations),
        progress=True,
        labels=True,
    )
    pretrained = result.export_pretrained(args.out / name / "pretrained", degradation=degradation)
    summary = {
        "step": result.step,
        "train_seconds": result.seconds,
        "levels": levels,
        "label_dropout": sweep.label_dropout,
        "pretrained": str(pretrained),
    }
    (args.out / name / "train.json").write_text(json.dumps(summary, indent=2) + "\n")


def work_classifier(args: argparse.Namespace, preset: Any, sweep: Sweep) -> None:
    """Train the CNN classifier (AdamW 2e-3, batch 128), one checkpoint per epoch;
    then its accuracy on the whole test split."""
    folder = args.out / "classifier"
    if (folder / "classifier.json").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "checkpoint.pt"
    train = labelled(args, preset, "train")
    images, labels = train.tensors(), train.labels
    torch.manual_seed(args.seed)
    model = Classifier(preset.channels, sweep.classifier_width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    epoch, seconds = 0, 0.0
    if path.is_file():
        state = torch.load(path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, seconds = int(state["epoch"]), float(state["seconds"])
    batch = min(128, len(images))
    while epoch < sweep.classifier_epochs:
        start = time.perf_counter()
        model.train()
        order = torch.randperm(
            len(images), generator=base.seeded(torch.device("cpu"), args.seed, 11, epoch)
        )
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i : i + batch]
            value = nn.functional.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            value.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        epoch += 1
        seconds += time.perf_counter() - start
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "seconds": seconds,
        }
        torch.save(state, folder / "checkpoint.tmp")
        os.replace(folder / "checkpoint.tmp", path)
        print(f"classifier epoch {epoch}: loss {float(value):.3f}, {seconds:.0f} s", flush=True)
    test = labelled(args, preset, "test")
    n = len(test) if sweep.classifier_test is None else min(len(test), sweep.classifier_test)
    predicted = classify(model.eval(), test.tensors(0, n))
    summary = {
        "test_accuracy": float((predicted == test.labels[:n]).float().mean()),
        "test_images": n,
        "train_images": len(images),
        "epochs": epoch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": seconds,
    }
    (folder / "classifier.json").write_text(json.dumps(summary, indent=2) + "\n")


def evaluate(
    args: argparse.Namespace,
    preset: Any,
    name: str,
    w: float,
    n: int,
    parts: tuple[FlexiUNet, Any, Classifier, np.ndarray],
    batch: int | None = None,
) -> dict[str, Any]:
    """``n`` class-balanced samples of ``name`` at guidance ``w``: KID and accuracy.

    Cached in ``<model>/eval/w_*.npz`` (features, labels, predictions, the first 8
    samples of every class) and ``w_*.json``; a larger ``n`` extends the cached samples
    (batch ``k`` of ``batch`` samples always comes from the seed ``(seed, 99, k)``,
    whatever ``n`` and ``w``, so the cached samples are those of a fresh run).
    """
    from scalemix.metrics import kid_from_features

    folder = args.out / name / "eval"
    npz, summary = folder / f"{w_name(w)}.npz", folder / f"{w_name(w)}.json"
    if summary.is_file():
        cached: dict[str, Any] = json.loads(summary.read_text())
        if cached["n"] >= n:
            return cached
    model, degradation, classifier, reference = parts
    device = base.device_of(args)
    feats, labels, predicted, seconds = np.zeros((0, reference.shape[1])), [], [], 0.0
    keep = np.zeros((0, preset.channels, preset.image_size, preset.image_size), np.uint8)
    size = batch or preset.sample_batch
    done = 0
    if npz.is_file():
        old = np.load(npz)
        done = len(old["labels"]) // size * size  # whole batches only
        feats, keep = old["features"][:done], old["images"][:done]
        labels, predicted = (
            [torch.from_numpy(old["labels"][:done])],
            [torch.from_numpy(old["predicted"][:done])],
        )
        seconds = float(old["sample_seconds"]) * done / max(1, len(old["labels"]))
    new_feats = [feats]
    for start in range(done, n, size):
        y = class_labels(start, min(start + size, n))
        tic = time.perf_counter()
        images = generate(
            model,
            degradation,
            preset,
            w,
            y,
            base.seeded(device, args.seed, 99, start // size),
            device,
        )
        seconds += time.perf_counter() - tic
        new_feats.append(base.features_of(images, args.features, device))
        labels.append(y)
        predicted.append(classify(classifier, images))
        if len(keep) < 8 * NUM_CLASSES:
            keep = np.concatenate([keep, base.to_uint8(images[: 8 * NUM_CLASSES - len(keep)])])
    feats = np.concatenate(new_feats)
    y_all, p_all = torch.cat(labels).numpy(), torch.cat(predicted).numpy()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{w_name(w)}.tmp.npz"
    np.savez(
        tmp, features=feats, labels=y_all, predicted=p_all, images=keep, sample_seconds=seconds
    )
    os.replace(tmp, npz)
    kid = kid_from_features(feats, reference, num_subsets=100, subset_size=preset.kid_subset)
    result = {
        "w": w,
        "n": len(feats),
        "kid": kid.value,
        "kid_se": kid.se,
        "accuracy": float((y_all == p_all).mean()),
        "per_class_accuracy": [
            float((p_all[y_all == k] == k).mean()) for k in range(NUM_CLASSES) if (y_all == k).any()
        ],
        "sample_seconds": seconds,
    }
    summary.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{name} w={w:g}: n={result['n']}, KID {1e3 * kid.value:.2f} +- {1e3 * kid.se:.2f}, "
        f"accuracy {result['accuracy']:.3f}, {seconds:.0f} s of sampling",
        flush=True,
    )
    return result


def selection_point(
    args: argparse.Namespace, preset: Any, name: str, w: float, n: int
) -> dict[str, Any]:
    """KID and accuracy of the first ``n`` cached samples at ``w`` (the selection's)."""
    from scalemix.metrics import kid_from_features

    data = np.load(args.out / name / "eval" / f"{w_name(w)}.npz")
    reference = np.load(args.out / "real" / "features.npz")["reference"]
    kid = kid_from_features(
        data["features"][:n], reference, num_subsets=100, subset_size=preset.kid_subset
    )
    y, p = data["labels"][:n], data["predicted"][:n]
    return {"w": w, "n": n, "kid": kid.value, "kid_se": kid.se, "accuracy": float((y == p).mean())}


def best_scale(points: list[dict[str, Any]]) -> float:
    """The highest accuracy among the ``w`` whose KID is within one standard error (of the
    lowest KID's) of the lowest KID; ties go to the smaller ``w``."""
    lowest = min(points, key=lambda p: p["kid"])
    near = [p for p in points if p["kid"] <= lowest["kid"] + lowest["kid_se"]]
    return float(max(near, key=lambda p: (p["accuracy"], -p["w"]))["w"])


def eval_batch(preset: Any, sweep: Sweep) -> int:
    """The largest sampling batch (at most the preset's) that divides both sample counts:
    the extended samples then equal a fresh run's (100 for 500 and 2,000)."""
    common = math.gcd(sweep.samples, sweep.final_samples)
    return max(d for d in range(1, min(common, preset.sample_batch) + 1) if common % d == 0)


def work_eval(args: argparse.Namespace, preset: Any, sweep: Sweep, name: str) -> None:
    """The guidance sweep of one model at its last checkpoint, then ``w = 1`` and the
    best ``w`` extended to ``final_samples``."""
    device = base.device_of(args)
    model = load_ema(preset, base.checkpoint_dir(args.out, name, preset.iterations), device)
    degradation = base.build_degradation(preset, model_levels(preset)[name])
    reference = np.load(args.out / "real" / "features.npz")["reference"]
    parts = (model, degradation, load_classifier(args, preset, sweep), reference)
    batch = eval_batch(preset, sweep)
    for w in sweep.scales:
        evaluate(args, preset, name, w, sweep.samples, parts, batch)
    points = [selection_point(args, preset, name, w, sweep.samples) for w in sweep.scales]
    best = best_scale(points)
    for w in dict.fromkeys((1.0, best)):
        evaluate(args, preset, name, w, sweep.final_samples, parts, batch)
    selection = {"best_w": best, "points": points}
    (args.out / name / "selection.json").write_text(json.dumps(selection, indent=2) + "\n")


# ---------------------------------------------------------------------------- report
def unconditional(preset: Any, features: str) -> dict[str, Any] | None:
    """The real-image study's unconditional models at the same iterations, from its
    committed results (same preset and features only)."""
    if not UNCONDITIONAL.is_file():
        return None
    data = json.loads(UNCONDITIONAL.read_text())
    if data.get("features") != features or data["preset"] != json.loads(
        json.dumps(preset.to_dict())
    ):
        return None
    out = {}
    for name in model_levels(preset):
        row = data["models"].get(name)
        point = [p for p in (row or {}).get("curve", []) if p["step"] == preset.iterations]
        if point:
            out[name] = {k: point[0][k] for k in ("step", "n", "kid", "kid_se", "fid")}
    return {"source": str(UNCONDITIONAL.relative_to(REPO)), "models": out} if out else None


def stage_report(args: argparse.Namespace, preset: Any, sweep: Sweep) -> dict[str, Any]:
    from scalemix.metrics import kid_from_features

    real = np.load(args.out / "real" / "features.npz")
    floor = kid_from_features(
        real["floor"], real["reference"], num_subsets=100, subset_size=preset.kid_subset
    )
    rows: dict[str, Any] = {}
    for name, levels in model_levels(preset).items():
        selection = json.loads((args.out / name / "selection.json").read_text())
        train = json.loads((args.out / name / "train.json").read_text())
        sweep_rows = [
            json.loads((args.out / name / "eval" / f"{w_name(w)}.json").read_text())
            for w in sweep.scales
        ]
        rows[name] = {
            "levels": levels,
            "train_seconds": train["train_seconds"],
            "best_w": selection["best_w"],
            "sweep": sweep_rows,
            "selection": selection["points"],
        }
    results = {
        "preset": preset.to_dict(),
        "sweep": dataclasses.asdict(sweep),
        "features": args.features,
        "seed": args.seed,
        "threads": args.threads,
        "classifier": json.loads((args.out / "classifier" / "classifier.json").read_text()),
        "floor": {"n": len(real["floor"]), "kid": floor.value, "kid_se": floor.se},
        "models": rows,
        "unconditional": unconditional(preset, args.features),
    }
    stages = args.out / "stages.json"
    if stages.is_file():
        results["stages"] = json.loads(stages.read_text())
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = results_table(results)
    (args.out / "results.md").write_text(table + "\n")
    print(table)
    plot(results, args.out / "kid_vs_accuracy.png")
    grid(args, results, args.out / "samples.png")
    return results


def _kid(point: dict[str, Any]) -> str:
    return f"{1e3 * point['kid']:.2f} +- {1e3 * point['kid_se']:.2f}"


def results_table(results: dict[str, Any]) -> str:
    clf, sweep = results["classifier"], results["sweep"]
    lines = [
        f"Classifier: {100 * clf['test_accuracy']:.2f} % on the {clf['test_images']:,} test "
        f"images ({clf['parameters']:,} parameters, {clf['epochs']} epochs, "
        f"{clf['train_seconds']:.0f} s). Real vs real: KID x 1e3 {_kid(results['floor'])} "
        f"({results['floor']['n']:,} against {results['floor']['n']:,} images).",
    ]
    for name, row in results["models"].items():
        lines += [
            "",
            f"**{name}** ({row['levels']} level{'s' if row['levels'] > 1 else ''}; "
            f"best w = {row['best_w']:g})",
            "",
            f"| w | n | KID x 1e3 (+- se) | accuracy | KID x 1e3, first {sweep['samples']} "
            "| accuracy, first " + f"{sweep['samples']} | sampling s |",
            "|---|---|---|---|---|---|---|",
        ]
        for point, first in zip(row["sweep"], row["selection"], strict=True):
            best = " (best)" if point["w"] == row["best_w"] else ""
            lines.append(
                f"| {point['w']:g}{best} | {point['n']} | {_kid(point)} | "
                f"{100 * point['accuracy']:.1f} % | {_kid(first)} | "
                f"{100 * first['accuracy']:.1f} % | {point['sample_seconds']:.0f} |"
            )
    uncond = results.get("unconditional")
    if uncond:
        lines += [
            "",
            "Unconditional models of the real-image study at the same iterations "
            f"({uncond['source']}):",
            "",
            "| model | step | n | KID x 1e3 (+- se) | FID |",
            "|---|---|---|---|---|",
        ]
        for name, point in uncond["models"].items():
            lines.append(
                f"| {name} (unconditional) | {point['step']} | {point['n']} | {_kid(point)} | "
                f"{point['fid']:.2f} |"
            )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.6), constrained_layout=True)
    for name, row in results["models"].items():
        acc = [100 * p["accuracy"] for p in row["sweep"]]
        kid = [1e3 * p["kid"] for p in row["sweep"]]
        se = [1e3 * p["kid_se"] for p in row["sweep"]]
        line = ax.errorbar(acc, kid, yerr=se, marker="o", capsize=3, label=name)
        for point, x, y in zip(row["sweep"], acc, kid, strict=True):
            ax.annotate(
                f"{point['w']:g}",
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=line[0].get_color(),
            )
    ax.axhline(1e3 * results["floor"]["kid"], color="gray", ls="--", lw=1, label="real vs real")
    ax.set_xlabel("classifier accuracy on the samples (%)")
    ax.set_ylabel("KID x 1e3 (+- se)")
    ax.set_ylim(bottom=min(0.0, 1e3 * results["floor"]["kid"]) - 1.0)
    ax.set_title("labels: the guidance weight w", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def grid(args: argparse.Namespace, results: dict[str, Any], path: Path) -> None:
    """One row per class (8 samples each) for every model at its best ``w``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scalemix.datasets.fashion_mnist import FASHION_MNIST_CLASSES

    names = list(results["models"])
    fig, axes = plt.subplots(
        1, len(names), figsize=(2.6 * len(names), 2.9), constrained_layout=True
    )
    for ax, name in zip(np.atleast_1d(axes), names, strict=True):
        w = results["models"][name]["best_w"]
        data = np.load(args.out / name / "eval" / f"{w_name(w)}.npz")
        images, labels = data["images"], data["labels"][: len(data["images"])]
        classes = [k for k in range(NUM_CLASSES) if (labels == k).any()]
        mosaic = class_rows([images[labels == k][:8] for k in classes])
        ax.imshow(mosaic, cmap="gray" if images.shape[1] == 1 else None, vmin=0, vmax=255)
        ax.set_title(f"{name}, w = {w:g}", fontsize=9)
        ax.set_yticks(
            [1 + (i + 0.5) * (images.shape[-2] + 1) for i in range(len(classes))],
            [FASHION_MNIST_CLASSES[k] for k in classes],
            fontsize=6,
        )
        ax.set_xticks([])
    fig.savefig(path, dpi=150)
    plt.close(fig)


def class_rows(rows: list[np.ndarray], pad: int = 1) -> np.ndarray:
    """Lists of ``(n_i, c, h, w)`` uint8 images -> one mosaic with a row each."""
    c, h, w = rows[0].shape[1:]
    cols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y : y + h, x : x + w] = image.transpose(1, 2, 0)
    return out[..., 0] if c == 1 else out


# ---------------------------------------------------------------------------- driver
def run_workers(args: argparse.Namespace, argv: Sequence[str], after: dict[str, list[str]]) -> None:
    """Run the workers ``after`` names as subprocesses, ``--jobs`` at a time (one torch
    thread each), each once the workers it lists have finished; their wall times go to
    ``stages.json``."""
    jobs = args.jobs or 4
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    stages_path = args.out / "stages.json"
    stages = json.loads(stages_path.read_text()) if stages_path.is_file() else {}
    pending, done = list(after), set()
    running: list[tuple[str, subprocess.Popen[bytes], Any, float]] = []
    while pending or running:
        for name in [n for n in pending if all(d in done for d in after[n] if d in after)]:
            if len(running) >= jobs:
                break
            pending.remove(name)
            log = (args.out / "logs" / f"{name.replace(':', '_')}.log").open("a")
            cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", name]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((name, proc, log, time.time()))
            print(f"  started {name}", flush=True)
        time.sleep(0.2)
        for item in list(running):
            name, proc, log, start = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            if proc.returncode:
                for _, other, _, _ in running:
                    other.terminate()
                tail = (args.out / "logs" / f"{name.replace(':', '_')}.log").read_text()[-3000:]
                raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{tail}")
            done.add(name)
            seconds = time.time() - start
            stages.setdefault(name, []).append(
                {
                    "start": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
                    "seconds": round(seconds, 1),
                }
            )
            stages_path.write_text(json.dumps(stages, indent=2) + "\n")
            print(f"  {name} done after {seconds:.0f} s", flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    preset, sweep = resolve(args)
    if args.threads < 1:
        raise SystemExit(f"--threads must be positive, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.worker:
        kind, _, name = args.worker.partition(":")
        if kind == "train":
            work_train(args, preset, sweep, name)
        elif kind == "classifier":
            work_classifier(args, preset, sweep)
        elif kind == "real":
            base.work_real(args, preset)
        else:
            work_eval(args, preset, sweep, name)
        return None
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)}; accepted: {', '.join(STAGES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    config = {
        "preset": preset.to_dict(),
        "sweep": dataclasses.asdict(sweep),
        "seed": args.seed,
        "features": args.features,
        "fashion_root": args.fashion_root,
    }
    config = json.loads(json.dumps(config))  # tuples as JSON lists, as read back
    config_path = args.out / "study.json"
    if config_path.is_file() and json.loads(config_path.read_text()) != config:
        raise SystemExit(f"{config_path} was written with other options; use another --out")
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    names = list(model_levels(preset))
    print(
        f"conditional study {preset.name}: models {', '.join(names)}; {preset.iterations} "
        f"iterations; w in {', '.join(f'{w:g}' for w in sweep.scales)}; "
        f"{args.threads} torch thread(s) per process",
        flush=True,
    )
    start = time.perf_counter()
    after: dict[str, list[str]] = {}
    if "train" in stages:
        after.update({f"train:{n}": [] for n in names})
        after.update({"classifier": [], "real": []})
    if "eval" in stages:
        after.update({f"eval:{n}": [f"train:{n}", "classifier", "real"] for n in names})
    if after:
        run_workers(args, argv, after)
    results = None
    if "report" in stages:
        results = stage_report(args, preset, sweep)
    print(f"study done in {time.perf_counter() - start:.0f} s", flush=True)
    return results


if __name__ == "__main__":
    main()
