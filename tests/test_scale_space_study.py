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
import scale_space_report as report  # noqa: E402  (on the path once study is loaded)

at_step = report.at_step
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
    preset = study.resolve_preset(study.parse_args(argv))
    ddpm_flops = 6 * models["ddpm"]["train_flops_per_iteration"]
    for name, row in models.items():
        # Every 2 iterations; SSD trains on until it has spent DDPM's 6 iterations' FLOPs.
        last = study.model_iterations(preset, row["levels"])
        assert [p["step"] for p in row["curve"]] == list(range(2, last + 1, 2))
        assert last >= 6 and last * row["train_flops_per_iteration"] >= ddpm_flops
        assert (last - 2) * row["train_flops_per_iteration"] < ddpm_flops or last == 6
        # 12 samples at the equal-iterations step 6 and at the last, 6 elsewhere.
        assert [p["n"] for p in row["curve"]] == [
            12 if p["step"] in (6, last) else 6 for p in row["curve"]
        ]
        assert all(np.isfinite(p["kid"]) and p["kid_se"] > 0 for p in row["curve"])
        assert (out / name / "checkpoints" / f"step_{last:08d}" / "ema.safetensors").is_file()
        train = json.loads((out / name / "train.json").read_text())
        assert train["step"] == last and train["precision"] in ("fp32", "bf16")
        assert row["precision"] == train["precision"]
    assert models["ssd3"]["curve"][-1]["step"] > 6  # the toy SSD costs less per iteration
    # Equal FLOPs: at each of DDPM's budgets, DDPM's own KID and SSD's interpolated one.
    assert [r["step"] for r in results["equal_flops"]] == [2, 4, 6]
    for r in results["equal_flops"]:
        assert r["ddpm"]["kid"] == at_step(models["ddpm"]["curve"], r["step"])["kid"]
    last_budget = results["equal_flops"][-1]["ssd3"]
    assert last_budget is not None and np.isfinite(last_budget["z"])
    # The x0 error table: 10 bands and the 3 resolution changes, every model, 16 images.
    error = results["x0_error"]
    assert error["images"] == 16 and len(error["rows"]) == 10 + 3
    for name, entries in error["models"].items():
        for entry in entries:
            # Errors at the model's own prediction size and every pyramid size below it.
            sizes = sorted(int(s) for s in entry["errors"])
            assert sizes[-1] == entry["size"] and sizes[0] == 8
            assert all(v["mse"] > 0 and v["se"] >= 0 for v in entry["errors"].values())
        # DDPM predicts at full size everywhere; SSD at 8 px in the last band.
        assert entries[-4]["size"] == (32 if name == "ddpm" else (8 if name == "ssd3" else 16))
        # The final EMA model and its degradation, in save_pretrained's format.
        folder = out / name / "pretrained"
        loaded = FlexiUNet.from_pretrained(folder)
        assert len(load_degradation(folder).resolutions) == m_levels[name]
        final = study.model_iterations(preset, m_levels[name])
        ema = load_checkpoint(out / name / "checkpoints" / f"step_{final:08d}").weights["ema"]
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
    assert table.index("At equal training FLOPs") < table.index("At equal iterations")

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


def _curve(flops: list[float], kid: list[float], se: list[float]) -> list[dict[str, float]]:
    return [
        {"train_flops": f, "kid": k, "kid_se": s, "fid": 100 * k}
        for f, k, s in zip(flops, kid, se, strict=True)
    ]


def test_interpolation_is_linear_in_log_flops_and_never_extrapolates() -> None:
    curve = _curve([1e12, 4e12, 16e12], [0.3, 0.1, 0.05], [0.02, 0.01, 0.01])
    # At a checkpoint: its own values.
    at = report.interpolate(curve, 4e12)
    assert at is not None and at["kid"] == pytest.approx(0.1) and at["kid_se"] == 0.01
    # Half-way in log FLOPs (2e12 between 1e12 and 4e12): the mean, se / sqrt 2 combined.
    mid = report.interpolate(curve, 2e12)
    assert mid is not None and mid["weight"] == pytest.approx(0.5)
    assert mid["kid"] == pytest.approx(0.2)
    assert mid["kid_se"] == pytest.approx(np.hypot(0.01, 0.005))
    assert report.interpolate(curve, 0.5e12) is None and report.interpolate(curve, 17e12) is None


def test_equal_flops_compares_at_every_ddpm_budget() -> None:
    ddpm = {"curve": _curve([2.0, 4.0], [0.2, 0.1], [0.01, 0.01]), "train_flops_per_iteration": 2}
    ssd = {"curve": _curve([1.0, 2.0, 3.0], [0.3, 0.15, 0.12], [0.01, 0.01, 0.01])}
    ssd["train_flops_per_iteration"] = 1
    for row in ddpm["curve"] + ssd["curve"]:
        row["step"] = 0
    rows = report.equal_flops({"ssd": ssd, "ddpm": ddpm})
    assert rows[0]["ssd"]["kid"] == pytest.approx(0.15)
    # Better than DDPM at 2 FLOPs: a negative difference, in se of the difference.
    assert rows[0]["ssd"]["z"] == pytest.approx((0.15 - 0.2) / np.hypot(0.01, 0.01))
    assert rows[0]["ssd"]["iterations"] == pytest.approx(2.0)
    assert rows[1]["ssd"] is None  # SSD's curve ends at 3 FLOPs, DDPM's budget is 4


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
        (["--iterations", "7"], "multiple of 9"),
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
