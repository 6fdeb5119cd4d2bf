"""Kill training with SIGKILL at several points (one inside a checkpoint write), resume,
and compare with an uninterrupted run bit for bit (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from scalemix.training import list_checkpoints, load_checkpoint, verify_checkpoint

pytest.importorskip("safetensors")

# The training run, as a script: ``python run.py CKPT_DIR [slow]``. It prints a line per
# step and per checkpoint file written; ``slow`` sleeps after each file, so that a kill
# can land inside a checkpoint write.
SCRIPT = """
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from scalemix.degradation import ScaleSpaceDegradation
from scalemix.nn import FlexiUNet
from scalemix.scale_space import scale_space_loss
from scalemix.training import ImageTrainConfig, train_images

STEPS = 10


def run(ckpt_dir, slow=False):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = FlexiUNet(
        in_channels=1, base_channels=8, channel_mult=(1, 1), num_res_blocks=1,
        attention_resolutions=(), image_size=16, dropout=0.1,
    )
    degradation = ScaleSpaceDegradation(16, 2)
    images = torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    data = TensorDataset(images)
    sampler = RandomSampler(data, generator=torch.Generator().manual_seed(2))
    loader = DataLoader(data, batch_size=4, sampler=sampler)

    def loss(net, batch, gen):
        return scale_space_loss(net, degradation, batch[0], generator=gen)

    def on_step(state):
        print(f"step {state.step}", flush=True)

    def on_file(path):
        print(f"wrote {path.name}", flush=True)
        if slow:
            time.sleep(0.05)

    config = ImageTrainConfig(
        steps=STEPS, lr=1e-3, warmup_steps=2, lr_schedule="cosine", ema_decay=0.9,
        checkpoint_every=1, keep_checkpoints=2,
    )
    return train_images(
        model, loss, loader, config, generator=torch.Generator().manual_seed(3),
        checkpoint_dir=ckpt_dir, callback=on_step, on_checkpoint_file=on_file,
    )


if __name__ == "__main__":
    run(Path(sys.argv[1]), slow=len(sys.argv) > 2)
    print("done", flush=True)
"""


def _start(script: Path, ckpt: Path, slow: bool) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(script), str(ckpt), *(["slow"] if slow else [])]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _kill_at(script: Path, ckpt: Path, trigger: str, nth: int) -> list[str]:
    """Run until the ``nth`` output line equal to ``trigger`` (counted from the start of
    this process), SIGKILL the process there, and return the lines it printed."""
    proc = _start(script, ckpt, slow=True)
    assert proc.stdout is not None
    seen: list[str] = []
    count = 0
    try:
        for line in proc.stdout:
            seen.append(line.strip())
            count += line.strip() == trigger
            if count == nth:
                proc.send_signal(signal.SIGKILL)
                break
        else:
            pytest.fail(f"never saw {trigger!r} x{nth}: {seen} {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return seen


def _first_step(lines: list[str]) -> int:
    return next(int(s.split()[1]) for s in lines if s.startswith("step"))


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    namespace: dict[str, Any] = {"__name__": "fault_run"}
    exec(compile(SCRIPT, str(script), "exec"), namespace)
    ref = namespace["run"](tmp_path / "reference")

    ckpt = tmp_path / "killed"
    rng = np.random.default_rng(0)
    # 1: inside the write of a checkpoint: the model file of step 3 is written, not the rest
    lines = _kill_at(script, ckpt, "wrote model.safetensors", nth=3)
    assert lines[-2:] == ["step 3", "wrote model.safetensors"]
    assert [p.name for p in list_checkpoints(ckpt)] == ["step_00000001", "step_00000002"]
    assert any(p.name.startswith(".tmp-") for p in ckpt.iterdir())  # the torn write
    # 2: after a step chosen at random (the checkpoint of that step is starting)
    lines = _kill_at(script, ckpt, f"step {int(rng.integers(4, 8))}", nth=1)
    assert _first_step(lines) == 3  # resumed after step 2
    # 3: with every file of a checkpoint written, just before the rename into place
    _kill_at(script, ckpt, "wrote manifest.json", nth=2)
    for path in list_checkpoints(ckpt):
        verify_checkpoint(path)
    # 4: the newest checkpoint damaged on disk: resume warns and uses the one before
    newest = list_checkpoints(ckpt)[-1]
    with (newest / "ema.safetensors").open("r+b") as fh:
        fh.truncate(100)
    done = subprocess.run(
        [sys.executable, str(script), str(ckpt)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipping a damaged checkpoint" in done.stderr and str(newest) in done.stderr
    assert done.stdout.splitlines()[-1] == "done"

    final = load_checkpoint(list_checkpoints(ckpt)[-1])
    assert final.step == 10
    for name, module in (("model", ref.model), ("ema", ref.ema)):
        expected = module.state_dict()
        got = final.weights[name]
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), name
