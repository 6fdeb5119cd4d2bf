"""The class-conditional study (examples/conditional_scale_space) end to end at toy size.

Fashion-MNIST files written here (random pixels and labels) stand in for the Debian
package and pooled pixels for the Inception features; the conditional FlexiUNets,
label dropout in ``train_images``, classifier-free guidance, the classifier, KID, the
caches, resume and the report are the real ones.
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

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "conditional_scale_space"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("conditional_study", EXAMPLE / "study.py")
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
    "--sample-steps",
    "4",
    "--train-subset",
    "64",
    "--samples",
    "10",
    "--final-samples",
    "20",
]


@pytest.fixture
def fashion(tmp_path: Path, write_fashion_mnist: Callable[..., np.ndarray]) -> Path:
    root = tmp_path / "fashion"
    root.mkdir()
    write_fashion_mnist(root, "train", 64, seed=1)
    write_fashion_mnist(root, "test", 40, seed=2)
    return root


def test_quick_study_runs_resumes_and_reports(tmp_path: Path, fashion: Path) -> None:
    out = tmp_path / "study"
    argv = [*TOY, "--fashion-root", str(fashion), "--out", str(out)]
    results = study.main(argv)
    assert results is not None
    models = results["models"]
    assert {name: row["levels"] for name, row in models.items()} == {"ssd3": 3, "ddpm": 1}
    for name, row in models.items():
        train = json.loads((out / name / "train.json").read_text())
        assert train["step"] == 6 and train["label_dropout"] == 0.1
        assert study.FlexiUNet.from_pretrained(out / name / "pretrained").num_classes == 10
        assert [p["w"] for p in row["sweep"]] == [0, 1, 1.5, 2, 3, 5]
        assert row["best_w"] in {p["w"] for p in row["sweep"]}
        for point in row["sweep"]:
            final = point["w"] in (1.0, row["best_w"])
            assert point["n"] == (20 if final else 10)
            assert np.isfinite(point["kid"]) and point["kid_se"] > 0
            assert 0 <= point["accuracy"] <= 1
            assert (out / name / "eval" / f"{study.w_name(point['w'])}.json").is_file()
        assert all(p["n"] == 10 for p in row["selection"])
        # Class-balanced samples: sample i is class i % 10.
        cached = np.load(out / name / "eval" / "w_1.npz")
        assert cached["labels"].tolist() == [i % 10 for i in range(20)]
    classifier = results["classifier"]
    assert classifier["test_images"] == 40 and classifier["epochs"] == 1
    assert (out / "classifier" / "checkpoint.pt").is_file()
    assert results["unconditional"] is None  # the committed study used another preset
    for name in ("results.json", "results.md", "kid_vs_accuracy.png", "samples.png"):
        assert (out / name).is_file()
    stages = json.loads((out / "stages.json").read_text())
    assert set(stages) == {
        "train:ssd3",
        "train:ddpm",
        "classifier",
        "real",
        "eval:ssd3",
        "eval:ddpm",
    }
    assert "| 1 | 20 |" in (out / "results.md").read_text()

    # A second call resumes: no evaluation is sampled again and the results agree.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/eval/*")}
    again = study.main([*argv, "--stages", "eval,report"])
    assert again is not None
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/eval/*")} == stamps
    assert again["models"] == models

    # Other options for the same directory are refused.
    with pytest.raises(SystemExit, match="other options"):
        study.main([*argv, "--samples", "5"])


def test_more_samples_extend_the_cached_ones(tmp_path: Path, fashion: Path) -> None:
    """An evaluation asked for more samples keeps the cached ones and adds batches drawn
    from the same seeds as a fresh run of that size."""
    args = study.parse_args(
        [*TOY, "--fashion-root", str(fashion), "--out", str(tmp_path), "--sample-steps", "2"]
    )
    preset, _ = study.resolve(args)
    preset = study.dataclasses.replace(preset, sample_batch=4)
    torch.manual_seed(0)
    model = study.build_model(preset).eval()
    degradation = study.base.build_degradation(preset, 1)
    classifier = study.Classifier(1, 4).eval()
    reference = np.random.default_rng(0).normal(size=(12, 64))
    parts = (model, degradation, classifier, reference)
    study.evaluate(args, preset, "a", 1.5, 6, parts)
    grown = study.evaluate(args, preset, "a", 1.5, 10, parts)
    args.out = tmp_path / "fresh"
    fresh = study.evaluate(args, preset, "a", 1.5, 10, parts)
    assert grown["n"] == fresh["n"] == 10
    a = np.load(tmp_path / "a" / "eval" / "w_1.5.npz")
    b = np.load(tmp_path / "fresh" / "a" / "eval" / "w_1.5.npz")
    np.testing.assert_allclose(a["features"], b["features"], rtol=0, atol=1e-6)
    assert a["labels"].tolist() == b["labels"].tolist() == [i % 10 for i in range(10)]


def test_best_scale_is_the_most_accurate_within_one_se() -> None:
    points = [
        {"w": 0.0, "kid": 0.050, "kid_se": 0.002, "accuracy": 0.30},
        {"w": 1.0, "kid": 0.020, "kid_se": 0.002, "accuracy": 0.70},
        {"w": 2.0, "kid": 0.021, "kid_se": 0.002, "accuracy": 0.80},
        {"w": 3.0, "kid": 0.030, "kid_se": 0.002, "accuracy": 0.95},
    ]
    assert study.best_scale(points) == 2.0
    points[2]["kid"] = 0.0225  # more than one se above the lowest KID
    assert study.best_scale(points) == 1.0


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--scales", "0,2"], "include 1"),
        (["--scales", "0,x"], "comma-separated"),
        (["--samples", "30", "--final-samples", "20"], "at least"),
        (["--samples", "0"], "positive"),
    ],
)
def test_bad_options(tmp_path: Path, extra: list[str], match: str) -> None:
    with pytest.raises(SystemExit, match=match):
        study.main(["--quick", "--out", str(tmp_path), *extra])
