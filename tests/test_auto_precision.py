"""precision="auto": the choice per device, the CPU measurement on copies (the run equals
the explicit run of the chosen precision bit for bit), exact resume, bf16 CPU training."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from scalemix.degradation import ScaleSpaceDegradation
from scalemix.nn import FlexiUNet
from scalemix.scale_space import scale_space_loss
from scalemix.training import ImageTrainConfig, ImageTrainState, TrainConfig, train_images
from scalemix.training import precision as precision_module
from scalemix.training.precision import AUTO_MARGIN, Precision, PrecisionChoice, choose_precision

pytest.importorskip("safetensors")


class _Crash(Exception):
    pass


def _model() -> FlexiUNet:
    torch.manual_seed(0)
    return FlexiUNet(
        in_channels=1,
        base_channels=8,
        channel_mult=(1, 1),
        num_res_blocks=1,
        attention_resolutions=(8,),
        image_size=16,
        dropout=0.1,  # draws from torch's global generator
    )


def _images(n: int = 12) -> Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _run(
    precision: str,
    *,
    own_sampler: bool = True,
    out: Path | None = None,
    crash_at: int | None = None,
    steps: int = 4,
    **kw: Any,
) -> Any:
    """A fresh process's view: model, loader, generator, global RNG, then train."""
    degradation = ScaleSpaceDegradation(16, 2, num_train_timesteps=20)
    model = _model()
    dataset = TensorDataset(_images())
    if own_sampler:  # the order comes from the sampler's generator
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(7))
        loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    else:  # the order comes from torch's global generator
        loader = DataLoader(dataset, batch_size=4, shuffle=True)
    torch.manual_seed(999)

    def loss(net: nn.Module, batch: list[Tensor], gen: torch.Generator) -> Tensor:
        return scale_space_loss(net, degradation, batch[0], generator=gen)

    def crash(state: ImageTrainState) -> None:
        if state.step == crash_at:
            raise _Crash

    config = ImageTrainConfig(
        steps=steps, lr=1e-3, ema_decay=0.9, precision=precision, checkpoint_every=2
    )  # type: ignore[arg-type]
    return train_images(
        model,
        loss,
        loader,
        config,
        generator=torch.Generator().manual_seed(5),
        checkpoint_dir=out,
        callback=[crash, *kw.pop("callback", [])],
        **kw,
    )


def _assert_same_run(a: Any, b: Any) -> None:
    assert torch.equal(a.losses, b.losses)
    for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    for p, q in zip(a.ema.state_dict().values(), b.ema.state_dict().values(), strict=True):
        assert torch.equal(p, q)


def _force(monkeypatch: pytest.MonkeyPatch, winner: Precision) -> None:
    """Run the real measurement (every step on the copies), then report ``winner`` faster."""
    original = precision_module._mean_step_seconds

    def rigged(*args: Any) -> dict[str, float]:
        original(*args)
        return {"fp32": 1.0, "bf16": 0.5} if winner == "bf16" else {"fp32": 1.0, "bf16": 1.0}

    monkeypatch.setattr(precision_module, "_mean_step_seconds", rigged)


@pytest.mark.parametrize("winner", ["fp32", "bf16"])
@pytest.mark.parametrize("own_sampler", [True, False])
def test_auto_run_equals_the_explicit_run_of_its_choice(
    monkeypatch: pytest.MonkeyPatch, winner: Precision, own_sampler: bool
) -> None:
    _force(monkeypatch, winner)
    seen: list[str] = []
    auto = _run("auto", own_sampler=own_sampler, callback=[lambda s: seen.append(s.precision)])
    choice = auto.precision
    assert isinstance(choice, PrecisionChoice)
    assert (choice.setting, choice.precision) == ("auto", winner)
    assert set(choice.seconds) == {"fp32", "bf16"}
    assert seen == [winner] * 4
    explicit = _run(winner, own_sampler=own_sampler)
    assert explicit.precision.precision == winner and explicit.precision.seconds == {}
    _assert_same_run(auto, explicit)


def test_auto_measures_says_which_and_logs_with_progress(
    capsys: pytest.CaptureFixture[str],
) -> None:
    auto = _run("auto", steps=2, progress=True)
    choice = auto.precision
    assert choice.precision in ("fp32", "bf16")
    assert all(s > 0 for s in choice.seconds.values()) and len(choice.seconds) == 2
    assert f"precision auto -> {choice.precision} (fp32 " in capsys.readouterr().err
    _assert_same_run(auto, _run(choice.precision, steps=2))


def test_auto_resume_keeps_the_choice_and_is_exact(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _force(monkeypatch, "bf16")
    with pytest.raises(_Crash):
        _run("auto", out=tmp_path / "a", crash_at=3)
    _force(monkeypatch, "fp32")  # a new measurement would now pick fp32
    resumed = _run("auto", out=tmp_path / "a")
    assert resumed.start_step == 2 and resumed.precision.precision == "bf16"
    assert resumed.precision.seconds == {}  # read from the checkpoint, not measured
    _assert_same_run(resumed, _run("bf16"))


def test_bf16_cpu_training_learns_with_float32_master_weights_and_ema() -> None:
    degradation = ScaleSpaceDegradation(16, 2, num_train_timesteps=20)
    model = _model()
    x = _images(8)
    loader = DataLoader(TensorDataset(x), batch_size=8)  # the same batch every step

    def loss(net: nn.Module, batch: list[Tensor], gen: torch.Generator) -> Tensor:
        gen.manual_seed(0)  # the same timesteps and noise every step: a fixed objective
        value = scale_space_loss(net, degradation, batch[0], generator=gen)
        assert value.dtype == torch.float32  # the loss is reduced in float32
        return value

    config = ImageTrainConfig(steps=30, lr=3e-3, ema_decay=0.9, precision="bf16")
    result = train_images(model, loss, loader, config, generator=torch.Generator())
    losses = result.losses
    assert torch.isfinite(losses).all()
    assert float(losses[-5:].mean()) < 0.8 * float(losses[:5].mean())
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    ema_state = result.ema.state_dict().values()
    assert all(s.dtype == torch.float32 for s in ema_state if s.is_floating_point())


def test_choose_precision_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_precision("fp16", cpu) == PrecisionChoice("fp16", "fp16", {}, "given explicitly")
    for supported, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        got = choose_precision("auto", cuda)
        assert (got.precision, got.seconds) == (expected, {})
    assert choose_precision("auto", torch.device("meta")).precision == "fp32"
    with pytest.raises(ValueError, match="training step"):
        choose_precision("auto", cpu)
    with pytest.raises(ValueError, match="precision"):
        choose_precision("fp8", cpu)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fp32", "bf16", "expected"), [(0.02, 0.004, "bf16"), (0.01, 0.015, "fp32")]
)
def test_auto_keeps_the_faster_beyond_the_margin(fp32: float, bf16: float, expected: str) -> None:
    calls: list[str] = []

    def step(precision: Precision) -> None:
        calls.append(precision)
        time.sleep(fp32 if precision == "fp32" else bf16)

    got = choose_precision("auto", torch.device("cpu"), step, repeats=3)
    assert got.precision == expected
    assert calls == ["fp32", "bf16"] * 4  # a warm-up each, then alternating rounds
    assert got.seconds["fp32"] >= 0.01 and "x the speed" in got.reason
    assert AUTO_MARGIN > 0


def test_only_the_image_config_takes_auto() -> None:
    assert ImageTrainConfig(steps=1, precision="auto").precision == "auto"
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(steps=1, precision="auto")  # type: ignore[arg-type]


def test_timed_steps_of_both_precisions_draw_the_same() -> None:
    """The k-th step of every candidate replays one generator state: a loss whose cost
    depends on its draws (one pyramid level per batch) gives both the same work."""
    model = nn.Linear(3, 1)
    drawn: list[tuple[str, int]] = []

    def loss(net: nn.Module, gen: torch.Generator) -> Tensor:
        level = int(torch.randint(0, 10**9, (1,), generator=gen))
        drawn.append((str(torch.is_autocast_enabled("cpu")), level))
        return net(torch.ones(2, 3)).square().mean()

    step = precision_module.step_on_copies(
        model,
        lambda net: torch.optim.SGD(net.parameters(), lr=0.1),
        loss,
        torch.Generator().manual_seed(0),
        grad_clip=None,
    )
    for _ in range(3):
        step("fp32")
        step("bf16")
    fp32 = [level for flag, level in drawn if flag == "False"]
    bf16 = [level for flag, level in drawn if flag == "True"]
    assert fp32 == bf16 and len(set(fp32)) == 3  # the same draws per round, new each round
