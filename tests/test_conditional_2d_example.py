"""The class-conditional 2D example runs end to end at toy size and compares its model
with separate ones, trained alongside or read from a study's results."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")  # run_study's report module

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dual_scale_2d"
DATASETS = ("circle", "dino", "line", "moons")
TOY = ["--quick", "--steps", "4", "--n-data", "400", "--samples", "200", "--threads", "1"]


@pytest.fixture()
def conditional(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(EXAMPLE))
    for name in ("conditional", "run_study"):
        sys.modules.pop(name, None)
    import conditional

    return conditional


def test_conditional_against_separate_models(
    conditional, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cond"
    rows = conditional.main([*TOY, "--jobs", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "[5/5]" in printed  # one conditional run and four separate ones
    assert "separate models: trained here" in printed
    assert "conditional: 16 steps" in printed  # 4 x the steps of a separate model
    assert [r["dataset"] for r in rows] == list(DATASETS)
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["conditional_steps"] == 16 and data["meta"]["label_dropout"] == 0.0
    assert data["meta"]["threads_per_run"] == 1
    (cond,) = [r for r in data["runs"] if r["kind"] == "conditional"]
    assert cond["steps"] == 16 and set(cond["datasets"]) == set(DATASETS)
    assert all(math.isfinite(v["kl"]) for v in cond["datasets"].values())
    table = (out / "results.md").read_text()
    assert "| moons |" in table and "smoke test" in table
    assert conditional.parse_args([]).threads == 1
    # --resume keeps the finished runs and has nothing left to do
    again = conditional.main([*TOY, "--jobs", "1", "--out", str(out), "--resume"])
    assert "5 runs done, 0 to go" in capsys.readouterr().out
    assert [r["conditional_kl"] for r in again] == [r["conditional_kl"] for r in rows]


def test_reuses_matching_study_results(conditional, tmp_path: Path) -> None:
    cfg = conditional.parse_args([])
    assert cfg.separate == "auto"
    toy = conditional.dataclasses.replace(conditional.QUICK, steps=4, n_data=400, n_samples=200)
    summary = {
        d: {"adaptive": {"kl": [0.5, 0.1, 1.0], "eval_loss": [0.9, 0.0, 1.0]}} for d in DATASETS
    }
    study = tmp_path / "study.json"
    meta = {"config": conditional.dataclasses.asdict(toy), "seeds": 1}
    study.write_text(json.dumps({"meta": meta, "summary": summary}))
    out = tmp_path / "cond"
    argv = [*TOY, "--jobs", "2", "--out", str(out), "--study-results", str(study)]
    rows = conditional.main(argv)
    assert [r["separate_kl"] for r in rows] == [[0.5, 0.1]] * 4
    assert all(r["within_1_std"] == (abs(r["difference"]) <= 0.1) for r in rows)
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["kind"] for r in runs] == ["conditional"]  # nothing separate trained
    # other settings (here: 2 seeds) are not reused
    assert conditional.committed_separate(study, toy, DATASETS, 2) is None
