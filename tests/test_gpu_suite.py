"""The GPU benchmark suite runs end to end at toy size on the CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_tiny_cpu_run(tmp_path: Path) -> None:
    """Every part completes and writes figures; results.json and results.md agree."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import gpu_suite
    finally:
        sys.path.remove(str(BENCHMARKS))
    results = gpu_suite.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["parts"].keys() == set(gpu_suite.CAPS)
    for name, part in saved["parts"].items():
        assert part["status"] == "ok", (name, part.get("error"), part.get("notes"))
        assert part["rows"], name
        assert not any("failed" in note for note in part["notes"]), part["notes"]
        assert all(v > 0 for row in part["rows"] for v in row.values() if isinstance(v, float))
    assert saved["parts"] == json.loads(json.dumps(results["parts"]))
    study = saved["parts"]["study_2d"]
    assert sum(row["runs"] for row in study["rows"] if "compile" not in row["model"]) == 36
    markdown = (tmp_path / "results.md").read_text()
    assert all(f"## {name}: ok" in markdown for name in saved["parts"])
    # the GPU path: a part in its own process, its figures read back from parts/<name>.json
    argv = ["--device", "cpu", "--tiny", "--isolate", "yes", "--parts", "celeba_preset"]
    iso = gpu_suite.main([*argv, "--out", str(tmp_path / "isolated")])
    assert iso["parts"]["celeba_preset"]["status"] == "ok"
    assert iso["parts"]["celeba_preset"]["rows"][0]["preset"] == "smoke"
