"""Checkpoint files: round trip, retention, and clear errors for damaged files."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from scalemix.training import (
    CheckpointError,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)

pytest.importorskip("safetensors")


def _save(root: Path, step: int, keep: int | None = 3) -> Path:
    g = torch.Generator().manual_seed(step)
    weights = {"model": {"w": torch.randn(3, 4, generator=g), "b": torch.arange(step + 1)}}
    state = {"step": step, "rng": g.get_state(), "nested": {"lr": [0.1, 0.2]}}
    return save_checkpoint(root, step, weights=weights, state=state, keep=keep)


def test_round_trip_is_exact(tmp_path: Path) -> None:
    w = {"w": torch.randn(5, 3).t(), "h": torch.ones(2, dtype=torch.float16)}  # non-contiguous
    g = torch.Generator().manual_seed(3)
    path = save_checkpoint(tmp_path, 7, weights={"model": w}, state={"rng": g.get_state()})
    assert path == tmp_path / "step_00000007"
    assert {p.name for p in path.iterdir()} == {
        "model.safetensors",
        "training_state.pt",
        "manifest.json",
    }
    ckpt = load_checkpoint(path)
    assert ckpt.step == 7
    assert all(torch.equal(ckpt.weights["model"][k], w[k]) for k in w)
    assert ckpt.weights["model"]["h"].dtype == torch.float16
    assert torch.equal(ckpt.state["rng"], g.get_state())


def test_keeps_the_newest_k_and_removes_stale_temporaries(tmp_path: Path) -> None:
    (tmp_path / ".tmp-step_00000099-1").mkdir()  # left by a killed writer
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000003", "step_00000004"]


def test_saving_a_step_again_replaces_it(tmp_path: Path) -> None:
    _save(tmp_path, 2)
    path = save_checkpoint(tmp_path, 2, weights={"model": {"x": torch.zeros(1)}}, state={})
    assert load_checkpoint(path).weights["model"].keys() == {"x"}


def test_a_directory_without_manifest_is_not_a_checkpoint(tmp_path: Path) -> None:
    _save(tmp_path, 1)
    half = tmp_path / "step_00000002"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001"]


def test_truncated_file_is_named(tmp_path: Path) -> None:
    path = _save(tmp_path, 1)
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=re.escape(str(file)) + ".*truncated"):
        load_checkpoint(path)


@pytest.mark.parametrize("name", ["model.safetensors", "training_state.pt"])
def test_flipped_byte_is_named(tmp_path: Path, name: str) -> None:
    path = _save(tmp_path, 1)
    file = path / name
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=re.escape(str(file)) + ".*corrupted"):
        verify_checkpoint(path)


def test_missing_file_and_bad_manifest_are_named(tmp_path: Path) -> None:
    path = _save(tmp_path, 1)
    (path / "training_state.pt").unlink()
    with pytest.raises(CheckpointError, match=r"training_state\.pt is missing"):
        verify_checkpoint(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"manifest\.json is unreadable"):
        verify_checkpoint(path)


def test_a_file_that_matches_its_hash_but_does_not_parse_is_named(tmp_path: Path) -> None:
    path = _save(tmp_path, 1)
    file = path / "model.safetensors"
    file.write_bytes(b"garbage")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["model.safetensors"] = {
        "size": 7,
        "sha256": hashlib.sha256(b"garbage").hexdigest(),
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=re.escape(f"{file} cannot be read")):
        load_checkpoint(path)


def test_latest_falls_back_past_damaged_checkpoints(tmp_path: Path) -> None:
    assert find_latest_checkpoint(tmp_path / "none") is None
    for step in (1, 2, 3):
        _save(tmp_path, step)
    newest = tmp_path / "step_00000003" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:5])
    with pytest.warns(UserWarning, match="step_00000003"):
        assert find_latest_checkpoint(tmp_path) == tmp_path / "step_00000002"
    for step in (1, 2):
        (tmp_path / f"step_{step:08d}" / "training_state.pt").write_bytes(b"")
    with (
        pytest.warns(UserWarning),
        pytest.raises(CheckpointError, match="no valid checkpoint"),
    ):
        find_latest_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"step": -1}, "step must be"),
        ({"keep": 0}, "keep must be"),
        ({"weights": {"../x": {}}}, "weights"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"step": 1, "weights": {"model": {}}, "state": {}} | kwargs
    with pytest.raises(ValueError, match=match):
        save_checkpoint(tmp_path, **args)  # type: ignore[arg-type]


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    ("batching", "precision", "labelled"),
    [
        ("epoch", "fp32", False),
        ("replacement", "fp32", False),
        ("epoch", "fp16", False),
        ("epoch", "fp32", True),
        ("replacement", "fp32", True),
    ],
)
def test_2d_loop_resumes_bit_for_bit(
    tmp_path: Path, batching: str, precision: str, labelled: bool
) -> None:
    """``train(checkpoint_dir=...)``: crash after step 11, resume from step 10, compare
    (with fp16 the gradient scaler's state is restored too; labelled: a conditional
    model on ``(x0, labels)`` with label dropout drawn from the same generator)."""
    from scalemix.nn.mlp import MLPDenoiser
    from scalemix.scheduler import DDPMScheduler
    from scalemix.training import TrainState, train
    from test_conditional_training import CondMLP

    x0 = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    data: Any = (x0, torch.arange(100) % 3) if labelled else x0
    dropout = 0.3 if labelled else 0.0
    scheduler = DDPMScheduler(num_train_timesteps=50)

    def run(out: Path | None, stop_at: int | None = None) -> object:
        torch.manual_seed(0)
        model = (
            CondMLP(3) if labelled else MLPDenoiser(embedding_dim=16, hidden_dim=32, num_blocks=1)
        )

        def stop(state: TrainState) -> None:
            if state.step == stop_at:
                raise _Stop

        return train(
            model, scheduler, data, steps=16, batch_size=32, ema_every=3, loss="hybrid",
            batching=batching, generator=torch.Generator().manual_seed(1), callback=stop,
            checkpoint_dir=out, checkpoint_every=5, precision=precision, label_dropout=dropout,
        )  # fmt: skip

    ref: Any = run(None)
    with pytest.raises(_Stop):
        run(tmp_path, stop_at=11)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000005", "step_00000010"]
    res: Any = run(tmp_path)
    assert torch.equal(res.losses, ref.losses)
    for a, b in ((ref.model, res.model), (ref.ema, res.ema)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [p.name for p in list_checkpoints(tmp_path)][-1] == "step_00000016"


def test_2d_loop_rejects_a_bad_checkpoint_every(tmp_path: Path) -> None:
    from scalemix.nn.mlp import MLPDenoiser
    from scalemix.scheduler import DDPMScheduler
    from scalemix.training import train

    with pytest.raises(ValueError, match="checkpoint_every"):
        train(MLPDenoiser(), DDPMScheduler(10), torch.zeros(4, 2), steps=1,
              checkpoint_dir=tmp_path, checkpoint_every=0)  # fmt: skip
