"""The 2D study example runs end to end (a few steps) and writes its table and plots."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dual_scale_2d"


def test_quick_study_writes_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    sys.modules.pop("run_study", None)
    import run_study

    out = tmp_path / "study"
    argv = [
        "--quick",
        "--steps",
        "20",
        "--datasets",
        "moons",
        "--models",
        "baseline",
        "adaptive",
        "--threads",
        "1",
        "--jobs",
        "1",
        "--out",
        str(out),
    ]
    summary = run_study.main(argv)
    printed = capsys.readouterr()
    assert "[2/2]" in printed.out and "ETA" in printed.out  # an overall ETA after every run
    assert "sampling 5,000 points" in printed.out  # every long stage says what it does
    assert "sampling: 100% (100/100)" in printed.err  # no terminal: progress as lines
    for name in (
        "results.md",
        "results.json",
        "runs.jsonl",
        "samples.png",
        "alpha.png",
        "losses.png",
    ):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "results.json").read_text())
    assert {r["model"] for r in data["runs"]} == {"baseline", "adaptive"}
    assert all(math.isfinite(r["kl"]) and len(r["losses"]) == 20 for r in data["runs"])
    assert len(data["runs"][1]["alpha"]) == 100  # the adaptive gate over T = 100
    assert set(summary["moons"]) == {"baseline", "adaptive"}
    assert "not comparable" in (out / "results.md").read_text()
    if importlib.util.find_spec("huggingface_hub") is not None:  # the final EMA models
        from scalemix import DualScaleDenoiser, MLPDenoiser
        from scalemix.hub import load_scheduler

        loaded = DualScaleDenoiser.from_pretrained(out / "models" / "moons_adaptive_seed0")
        assert loaded.alpha(torch.arange(100)).tolist() == pytest.approx(data["runs"][1]["alpha"])
        folder = out / "models" / "moons_baseline_seed0"
        assert isinstance(MLPDenoiser.from_pretrained(folder), MLPDenoiser)
        assert load_scheduler(folder).num_train_timesteps == 100
    assert run_study.parse_args([]).threads == 1  # one torch thread per run by default
    assert run_study.parse_args([]).jobs == run_study.default_jobs()
    # --resume keeps the finished runs and has nothing left to do
    again = run_study.main([*argv, "--resume"])
    assert again["moons"]["baseline"]["kl"] == summary["moons"]["baseline"]["kl"]
