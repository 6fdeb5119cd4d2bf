"""The blurring-diffusion example runs end to end at toy size."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    path = ROOT / "examples" / "blur_diffusion" / "train.py"
    spec = importlib.util.spec_from_file_location("blur_diffusion_train", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toy_run_writes_grid_and_results(tmp_path: Path) -> None:
    train = _load()
    args = [
        "--out", str(tmp_path), "--image-size", "8", "--timesteps", "10", "--steps", "3",
        "--batch-size", "4", "--base-channels", "8", "--num-samples", "4",
        "--dataset-size", "16",
    ]  # fmt: skip
    results = train.main(args)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == results
    assert saved["settings"]["steps"] == 3 and saved["settings"]["image_size"] == 8
    for key in ("loss_first_10pct", "loss_last_10pct", "sample_mean", "sample_std"):
        assert math.isfinite(saved[key])
    assert saved["sample_fraction_outside_unit_range"] == 0.0  # the sampler clips x0 to [-1, 1]
    # 4 samples of 8 px in a 2 x 2 grid with 1 px borders
    assert Image.open(tmp_path / "samples.png").size == (19, 19)
    assert Image.open(tmp_path / "forward.png").size == (28, 28)  # 8 images, 3 columns
    # the final EMA model and its blur degradation, one folder enough to sample
    if importlib.util.find_spec("huggingface_hub") is not None:
        from scalemix.degradation import BlurDegradation
        from scalemix.hub import load_degradation
        from scalemix.nn.flexi_unet import FlexiUNet

        model = FlexiUNet.from_pretrained(tmp_path / "pretrained")
        assert model.image_size == 8
        deg = load_degradation(tmp_path / "pretrained")
        assert isinstance(deg, BlurDegradation) and deg.num_train_timesteps == 10
