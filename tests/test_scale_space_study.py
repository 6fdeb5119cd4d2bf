"""The real-image study (examples/scale_space_study) end to end at toy size.

Fake Fashion-MNIST files written here stand in for the Debian package, and the pooled
pixel features stand in for Inception (which costs 0.25 s per image on one core); the
pipeline, checkpoints, resume, FLOP counts and report are the real ones.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

pytest.importorskip("safetensors")
pytest.importorskip("matplotlib")
pytest.importorskip("huggingface_hub")

from scalemix import FlexiUNet
from scalemix.hub import load_degradation
from scalemix.training.checkpoint import load_checkpoint

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "scale_space_study"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scale_space_study", EXAMPLE / "study.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


study = _load()
TOY = [
    "--quick",
    "--features",
    "pixels",
    "--iterations",
    "6",
    "--eval-samples",
    "12",
    "--curve-samples",
    "6",
    "--sample-steps",
    "4",
    "--train-subset",
    "64",
]


@pytest.fixture
def fashion(tmp_path: Path, write_fashion_mnist: Callable[..., np.ndarray]) -> Path:
    root = tmp_path / "fashion"
    root.mkdir()
    write_fashion_mnist(root, "train", 64, seed=1)
    write_fashion_mnist(root, "test", 40, seed=2)
    return root


@pytest.mark.slow
def test_quick_study_runs_resumes_and_reports(tmp_path: Path, fashion: Path) -> None:
    out = tmp_path / "study"
    argv = [*TOY, "--fashion-root", str(fashion), "--out", str(out)]
    results = study.main(argv)
    assert results is not None
    models = results["models"]
    assert list(models) == ["ssd3", "ssd2", "ddpm"]
    assert [m["levels"] for m in models.values()] == [3, 2, 1]
    m_levels = {name: m["levels"] for name, m in models.items()}
    for name, row in models.items():
        assert [p["step"] for p in row["curve"]] == [2, 4, 6]
        assert [p["n"] for p in row["curve"]] == [6, 6, 12]
        assert all(np.isfinite(p["kid"]) and p["kid_se"] > 0 for p in row["curve"])
        assert (out / name / "checkpoints" / "step_00000006" / "ema.safetensors").is_file()
        assert json.loads((out / name / "train.json").read_text())["step"] == 6
        # The final EMA model and its degradation, in save_pretrained's format.
        folder = out / name / "pretrained"
        loaded = FlexiUNet.from_pretrained(folder)
        assert len(load_degradation(folder).resolutions) == m_levels[name]
        ema = load_checkpoint(out / name / "checkpoints" / "step_00000006").weights["ema"]
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, ema[key]), key
    # Coarser pyramids cost fewer training FLOPs than full resolution, in this order.
    flops = [m["train_flops_per_iteration"] for m in models.values()]
    assert flops[0] < flops[1] < flops[2]
    assert results["floor"]["n"] == 12
    for name in ("results.json", "results.md", "quality_vs_compute.png", "samples.png"):
        assert (out / name).is_file()
    table = (out / "results.md").read_text()
    assert "| real vs real |" in table and "| ddpm | 1 |" in table

    # A second call resumes: nothing is trained or sampled again, the results agree.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/eval/*.npz")}
    again = study.main(argv)
    assert again is not None
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/eval/*.npz")} == stamps
    for name in models:
        assert again["models"][name]["curve"] == models[name]["curve"]

    # Other options for the same directory are refused.
    with pytest.raises(SystemExit, match="other options"):
        study.main([*argv, "--seed", "1"])


def test_training_flops_follow_the_resolution_schedule() -> None:
    from flops import meta_model, schedule_flops

    preset = study.PRESETS["default"]
    per_level = {lv: study.training_flops(preset, lv) for lv in (1, 2, 3)}
    model = meta_model(**study.build_kwargs(preset))
    full = schedule_flops(model, [32] * 1000).flops / 1000
    assert per_level[1] == pytest.approx(3 * preset.batch_size * full)
    assert per_level[3] < per_level[2] < per_level[1]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--iterations", "7"], "multiple of 3"),
        (["--preset", "celeba-small"], "--data"),
        (["--quick", "--preset", "default"], "contradict"),
    ],
)
def test_bad_options(tmp_path: Path, extra: list[str], match: str) -> None:
    with pytest.raises(SystemExit, match=match):
        study.main(["--out", str(tmp_path), *extra])


def test_missing_data_names_the_package(tmp_path: Path) -> None:
    preset = study.PRESETS["quick"]
    args = study.parse_args(["--out", str(tmp_path), "--fashion-root", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match="apt-get install dataset-fashion-mnist"):
        study.dataset(args, preset, "train")
