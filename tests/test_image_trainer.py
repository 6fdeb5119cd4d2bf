"""The library image trainer: exact resume, EMA, accumulation, precision, validation."""

from __future__ import annotations

import inspect
import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from scalemix import DDPMScheduler
from scalemix.degradation import ScaleSpaceDegradation
from scalemix.nn import FlexiUNet
from scalemix.scale_space import scale_space_loss
from scalemix.training import (
    BaseTrainConfig,
    ImageTrainConfig,
    ImageTrainResult,
    ImageTrainState,
    TrainingResult,
    eps_mse_loss,
    list_checkpoints,
    lr_factor,
    train_images,
)

pytest.importorskip("safetensors")

HAS_FACTOR = {"factor", "resolutions"} <= set(inspect.signature(ScaleSpaceDegradation).parameters)


class _Crash(Exception):
    """Raised by a callback to stop a run as a crash would."""


def _images(n: int, size: int) -> Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.rand(n, 1, size, size, generator=g) * 2 - 1


def _loader(images: Tensor, batch: int = 4) -> DataLoader[Any]:
    dataset = TensorDataset(images)
    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(7))
    return DataLoader(dataset, batch_size=batch, sampler=sampler)


def _model() -> FlexiUNet:
    torch.manual_seed(0)
    return FlexiUNet(
        in_channels=1,
        base_channels=8,
        channel_mult=(1, 1),
        num_res_blocks=1,
        attention_resolutions=(),
        image_size=16,
        dropout=0.1,  # draws from torch's global generator: resume must restore it
    )


def _run(
    degradation: ScaleSpaceDegradation,
    out: Path | None,
    config: ImageTrainConfig,
    crash_at: int | None = None,
) -> tuple[nn.Module, nn.Module, Tensor]:
    """A fresh process's view: new model, loader and generator, then train (or resume)."""
    model = _model()
    torch.manual_seed(999)  # a different global state than the run had at the checkpoint

    def loss(net: nn.Module, batch: list[Tensor], gen: torch.Generator) -> Tensor:
        return scale_space_loss(net, degradation, batch[0], generator=gen)

    def callback(state: ImageTrainState) -> None:
        if state.step == crash_at:
            raise _Crash

    result = train_images(
        model,
        loss,
        _loader(_images(10, 16)),
        config,
        generator=torch.Generator().manual_seed(5),
        checkpoint_dir=out,
        callback=callback,
    )
    return result.model, result.ema, result.losses


def _assert_resume_is_exact(degradation: ScaleSpaceDegradation, tmp_path: Path) -> None:
    config = ImageTrainConfig(
        steps=5, lr=1e-3, warmup_steps=2, lr_schedule="cosine", accumulation=2,
        ema_decay=0.9, checkpoint_every=2, keep_checkpoints=2,
    )  # fmt: skip
    ref_model, ref_ema, ref_losses = _run(degradation, tmp_path / "ref", config)
    with pytest.raises(_Crash):  # dies in step 4; the newest checkpoint is step 2
        _run(degradation, tmp_path / "run", config, crash_at=4)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_00000002"]
    model, ema, losses = _run(degradation, tmp_path / "run", config)
    assert ref_losses.shape == (5,) and bool(torch.isfinite(ref_losses).all())
    assert torch.equal(losses, ref_losses)  # steps 1-2 from the checkpoint, 3-5 trained
    for a, b in ((ref_model, model), (ref_ema, ema)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # the run really trained: the weights moved away from the initialisation
    init = _model().parameters()
    assert any(not torch.equal(p, q) for p, q in zip(ref_model.parameters(), init, strict=True))
    ckpts = [p.name for p in list_checkpoints(tmp_path / "run")]
    assert ckpts == ["step_00000004", "step_00000005"]


def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path: Path) -> None:
    """Power-of-two pyramid 16 -> 8, one channel, dropout, accumulation, epochs wrapping."""
    _assert_resume_is_exact(ScaleSpaceDegradation(16, 2), tmp_path)


@pytest.mark.skipif(not HAS_FACTOR, reason="needs non-halving pyramids (resolutions=...)")
def test_resume_is_exact_for_a_non_halving_pyramid(tmp_path: Path) -> None:
    """The pyramid 16 -> 12 -> 8 through the same trainer."""
    degradation = ScaleSpaceDegradation(  # type: ignore[call-arg,unused-ignore]
        image_size=16, num_levels=3, resolutions=(16, 12, 8)
    )
    assert sorted(degradation.resolutions) == [8, 12, 16]
    _assert_resume_is_exact(degradation, tmp_path)


class _Affine(nn.Module):
    """``x -> w * x + b`` per channel: a model whose loss is deterministic."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1, 1, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.w * x + self.b


def _mse(net: nn.Module, batch: list[Tensor], gen: torch.Generator) -> Tensor:
    x = batch[0]
    return (net(x) - (0.5 * x + 0.25)).pow(2).mean()


def _affine_run(config: ImageTrainConfig, batch: int, **kw: Any) -> Any:
    data = DataLoader(TensorDataset(_images(8, 4)), batch_size=batch)  # fixed order
    return train_images(_Affine(), _mse, data, config, generator=torch.Generator(), **kw)


def test_accumulation_equals_the_larger_batch() -> None:
    """Mean over two micro-batches of 2 has the gradient of one batch of 4."""
    kw: dict[str, Any] = {"steps": 6, "lr": 1e-2, "grad_clip": None}
    one = _affine_run(ImageTrainConfig(**kw), batch=4)
    two = _affine_run(ImageTrainConfig(accumulation=2, **kw), batch=2)
    for p, q in zip(one.model.parameters(), two.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert not torch.equal(one.model.w, torch.ones_like(one.model.w))


def test_ema_limits_and_lr_values_seen_by_the_callback() -> None:
    seen: list[ImageTrainState] = []
    cfg = ImageTrainConfig(steps=4, lr=0.1, warmup_steps=2, ema_decay=0.0, grad_clip=None)
    res = _affine_run(cfg, batch=4, callback=seen.append)
    assert torch.equal(res.ema.w, res.model.w)  # decay 0: the average is the last weights
    assert [s.step for s in seen] == [1, 2, 3, 4]
    assert [s.lr for s in seen] == pytest.approx([0.05, 0.1, 0.1, 0.1])
    assert all(math.isnan(float(s.grad_norm)) for s in seen)  # no clipping asked
    first: list[Tensor] = []
    cfg1 = ImageTrainConfig(steps=3, lr=0.1, ema_decay=1.0, grad_clip=None)

    def keep_first(state: ImageTrainState) -> None:
        if state.step == 1:
            first.append(state.model.w.detach().clone())

    res1 = _affine_run(cfg1, batch=4, callback=keep_first)
    assert torch.equal(res1.ema.w, first[0])  # decay 1: the first update's copy stays


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_close_to_fp32(precision: str) -> None:
    kw: dict[str, Any] = {"steps": 5, "lr": 1e-2, "grad_clip": 1.0}
    ref = _affine_run(ImageTrainConfig(**kw), batch=4)
    low = _affine_run(ImageTrainConfig(precision=precision, **kw), batch=4)  # type: ignore[arg-type]
    for p, q in zip(ref.model.parameters(), low.model.parameters(), strict=True):
        assert torch.isfinite(q).all()
        torch.testing.assert_close(q, p, rtol=0, atol=2e-2)


def test_writes_nothing_without_a_checkpoint_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    res = _affine_run(ImageTrainConfig(steps=2), batch=4)
    assert res.checkpoint is None and list(tmp_path.iterdir()) == []


@given(
    warmup=st.integers(0, 20),
    total=st.integers(1, 60),
    schedule=st.sampled_from(["constant", "cosine", "linear"]),
)
def test_lr_factor_warms_up_linearly_then_decays_monotonically(
    warmup: int, total: int, schedule: Any
) -> None:
    f = [
        lr_factor(s, warmup_steps=warmup, total_steps=total, schedule=schedule)
        for s in range(total)
    ]
    for s in range(min(warmup, total)):
        assert f[s] == pytest.approx((s + 1) / warmup)
    tail = f[warmup:]
    assert all(0.0 <= b <= a <= 1.0 for a, b in itertools.pairwise(tail))
    if tail:
        assert tail[0] == 1.0
    if schedule == "cosine" and total - warmup >= 2:  # halfway: cos(pi/2) = 0 -> 1/2
        u_half = warmup + (total - warmup) / 2
        if u_half.is_integer():
            assert f[int(u_half)] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps must be an int >= 1, got 0"),
        ({"steps": 2, "accumulation": 0}, "accumulation"),
        ({"steps": 2, "lr": -1.0}, "lr must be"),
        ({"steps": 2, "ema_decay": 1.5}, "ema_decay"),
        ({"steps": 2, "precision": "fp8"}, "precision"),
        ({"steps": 2, "lr_schedule": "step"}, "lr_schedule"),
        ({"steps": 2, "checkpoint_every": 0}, "checkpoint_every"),
        ({"steps": 2, "betas": (0.9, 1.0)}, r"ImageTrainConfig\.betas must be a tuple"),
        ({"steps": 2, "grad_clip": 0.0}, r"ImageTrainConfig\.grad_clip must be a finite"),
        ({"steps": 2, "weight_decay": float("nan")}, "weight_decay"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ImageTrainConfig(**kwargs)


def test_config_must_be_an_image_train_config() -> None:
    with pytest.raises(TypeError, match="ImageTrainConfig"):
        train_images(_Affine(), _mse, DataLoader(TensorDataset(_images(2, 4))), {"steps": 1},  # type: ignore[arg-type]
                     generator=torch.Generator())  # fmt: skip


def test_the_docs_page_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import re

    page = Path(__file__).resolve().parents[1] / "docs" / "training.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL)
    assert blocks
    namespace: dict[str, object] = {"__name__": "training_docs"}
    for code in blocks:
        exec(compile(code, str(page), "exec"), namespace)
    assert capsys.readouterr().out.strip() == "4 FlexiUNet"


def test_losses_hold_every_step_and_match_the_callback() -> None:
    """``result.losses``: one float per optimiser step, the mean over micro-batches,
    the same numbers as the callbacks' ``state.loss`` (given as a sequence)."""
    seen: list[float] = []
    steps: list[int] = []
    cfg = ImageTrainConfig(steps=5, lr=1e-2, accumulation=2)
    res = _affine_run(
        cfg,
        batch=2,
        callback=[lambda s: seen.append(float(s.loss)), lambda s: steps.append(s.step)],
    )
    assert isinstance(res, ImageTrainResult) and isinstance(res, TrainingResult)
    assert isinstance(cfg, BaseTrainConfig)
    assert res.losses.shape == (5,) and res.losses.dtype == torch.float32
    assert res.losses.tolist() == seen and steps == [1, 2, 3, 4, 5]
    assert res.losses[-1] < res.losses[0]  # the affine model fits its target
    assert res.ema is res.ema_model.module


def test_image_config_defaults_and_only_steps_positional() -> None:
    config = ImageTrainConfig(7)
    assert (config.lr, config.weight_decay, config.grad_clip) == (1e-4, 0.0, 1.0)
    assert (config.ema_decay, config.ema_every, config.keep_checkpoints) == (0.9999, 1, 3)
    with pytest.raises(TypeError):
        ImageTrainConfig(7, 1e-3)  # type: ignore[call-arg]


# ---------------------------------------------------------------- labelled data
K, T = 3, 50  # classes (index K: the null class) and timesteps of the labelled runs


class CondConv(nn.Module):
    """A conditional 1-channel image denoiser: a conv plus a per-class bias."""

    def __init__(self) -> None:
        super().__init__()
        self.num_classes = K
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.bias = nn.Embedding(K + 1, 1)
        self.drop = nn.Dropout(0.2)  # draws from torch's global generator

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor) -> Tensor:
        shift = self.bias(class_labels).view(-1, 1, 1, 1) + t.view(-1, 1, 1, 1) / T
        return self.drop(self.conv(x)) + shift


def _image_run(
    out: Path | None, config: ImageTrainConfig, seen: list[Tensor], crash_at: int | None = None
) -> Any:
    torch.manual_seed(0)
    model = CondConv()
    torch.manual_seed(999)
    scheduler = DDPMScheduler(T)
    images = torch.rand(10, 1, 6, 6, generator=torch.Generator().manual_seed(1)) * 2 - 1
    images[:, 0, 0, 0] = torch.arange(10) / 10  # a pixel that encodes the index
    data = TensorDataset(images, torch.arange(10) % K)
    loader = DataLoader(
        data, batch_size=4, sampler=RandomSampler(data, generator=torch.Generator().manual_seed(7))
    )

    def loss(
        net: nn.Module, x: Tensor, gen: torch.Generator, *, model_kwargs: dict[str, Tensor]
    ) -> Tensor:
        index = (x[:, 0, 0, 0] * 10).round().long()
        labels = model_kwargs["class_labels"]
        seen.append(torch.where(labels == K, labels, index % K) - labels)  # 0: consistent
        return eps_mse_loss(net, scheduler, x, generator=gen, model_kwargs=model_kwargs)

    def callback(state: ImageTrainState) -> None:
        if state.step == crash_at:
            raise _Crash

    return train_images(
        model, loss, loader, config, generator=torch.Generator().manual_seed(5),
        checkpoint_dir=out, callback=callback, labels=True,
    )  # fmt: skip


def test_image_trainer_labelled_resume_is_exact(tmp_path: Path) -> None:
    config = ImageTrainConfig(steps=5, lr=1e-2, accumulation=2, checkpoint_every=2,
                              label_dropout=0.5, ema_decay=0.9)  # fmt: skip
    seen: list[Tensor] = []
    ref = _image_run(tmp_path / "ref", config, seen)
    assert all(bool((s == 0).all()) for s in seen) and len(seen) == 10
    with pytest.raises(_Crash):
        _image_run(tmp_path / "run", config, [], crash_at=4)
    res = _image_run(tmp_path / "run", config, [])
    assert [p.name for p in list_checkpoints(tmp_path / "run")][-1] == "step_00000005"
    assert torch.equal(res.losses, ref.losses) and bool(torch.isfinite(ref.losses).all())
    assert all(torch.equal(a, b) for a, b in zip(_states(res), _states(ref), strict=True))


def test_image_trainer_labels_without_dropout_and_bad_batches() -> None:
    config = ImageTrainConfig(steps=3, lr=1e-2)
    seen: list[Tensor] = []
    _image_run(None, config, seen)
    assert len(seen) == 3 and all(bool((s == 0).all()) for s in seen)
    model = CondConv()
    loader = DataLoader(TensorDataset(torch.zeros(4, 1, 6, 6)), batch_size=2)
    with pytest.raises(ValueError, match=r"\(images, labels\)"):
        train_images(model, lambda *a, **k: torch.zeros(()), loader, config,
                     generator=torch.Generator(), labels=True)  # fmt: skip
    plain = CondConv()
    del plain.num_classes
    with pytest.raises(ValueError, match="num_classes"):
        train_images(plain, lambda *a, **k: torch.zeros(()), loader,
                     ImageTrainConfig(steps=1, label_dropout=0.1),
                     generator=torch.Generator(), labels=True)  # fmt: skip


def _states(result: Any) -> list[Tensor]:
    return [*result.model.state_dict().values(), *result.ema.state_dict().values()]
