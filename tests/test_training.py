"""Tests of the denoising losses and the training loop."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from scalemix.nn.dual_denoiser import DualScaleDenoiser
from scalemix.nn.mlp import MLPDenoiser
from scalemix.scheduler import DDPMScheduler
from scalemix.training import (
    BaseTrainConfig,
    ImageTrainConfig,
    TrainConfig,
    TrainingResult,
    TrainState,
    train,
)
from scalemix.training.losses import (
    draw_noise_and_timesteps,
    eps_mse_loss,
    evaluate_eps_mse,
    hybrid_loss,
    vlb_term,
)

T = 100


@pytest.fixture(scope="module")
def scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=T)


def toy_data(n: int = 512, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    return centres[torch.randint(0, 2, (n,), generator=g)] + 0.2 * torch.randn(n, 2, generator=g)


class Oracle(nn.Module):
    """Returns a fixed tensor (the true noise) whatever the input."""

    def __init__(self, output: Tensor) -> None:
        super().__init__()
        self.output = output
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.output * self.scale


def small_model() -> MLPDenoiser:
    torch.manual_seed(0)
    return MLPDenoiser(embedding_dim=16, hidden_dim=64, num_blocks=1)


# ------------------------------------------------------------------------ losses
def test_vlb_term_is_zero_for_oracle_and_positive_otherwise(scheduler: DDPMScheduler) -> None:
    x0 = toy_data(64)
    noise, t = draw_noise_and_timesteps(scheduler, x0, torch.Generator().manual_seed(1))
    t[:4] = 0  # include the decoder term
    x_t = scheduler.add_noise(x0, noise, t)
    assert float(vlb_term(scheduler, noise, x0, x_t, t).abs().max()) < 1e-6
    wrong = vlb_term(scheduler, noise + 0.1, x0, x_t, t)
    assert bool((wrong > 0).all())
    oracle_loss = hybrid_loss(Oracle(noise), scheduler, x0, noise=noise, t=t)
    assert float(oracle_loss.detach()) < 1e-6
    off_loss = hybrid_loss(Oracle(noise + 0.1), scheduler, x0, noise=noise, t=t, kl_weight=0.0)
    torch.testing.assert_close(off_loss, torch.tensor(0.01))
    assert float(hybrid_loss(Oracle(noise + 0.1), scheduler, x0, noise=noise, t=t).detach()) > 0.01


def test_vlb_term_matches_closed_form_in_eps(scheduler: DDPMScheduler) -> None:
    """Ho et al. (2020) eq. 12: beta_t^2 / (2 s_t^2 alpha_t (1 - abar_t)) |eps - eps_hat|^2."""
    x0 = toy_data(200).double()
    noise, t = draw_noise_and_timesteps(scheduler, x0, torch.Generator().manual_seed(2))
    t[:10] = 0
    x_t = scheduler.add_noise(x0, noise, t)
    eps_hat = noise + 0.05 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    got = vlb_term(scheduler, eps_hat.double(), x0, x_t, t)
    betas = np.linspace(1e-4, 0.02, T)
    alphas = 1 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    sigma2 = np.where(np.arange(T) == 0, betas[0], betas * (1 - abar_prev) / (1 - abar))
    coef = betas**2 / (2 * sigma2 * alphas * (1 - abar))
    expected = torch.from_numpy(coef)[t].unsqueeze(1) * (noise - eps_hat).double() ** 2
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-12)


def test_vlb_term_equals_gaussian_kl(scheduler: DDPMScheduler) -> None:
    x0 = toy_data(32).double()
    noise, t = draw_noise_and_timesteps(scheduler, x0, torch.Generator().manual_seed(4))
    t = t.clamp(min=1)
    x_t = scheduler.add_noise(x0, noise, t)
    eps_hat = noise.double() + 0.3
    q = scheduler.posterior(x0, x_t, t)
    p_mean = scheduler.posterior(scheduler.predict_x0(eps_hat, x_t, t), x_t, t).mean
    std = q.variance.sqrt().expand_as(x_t)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(q.mean, std), torch.distributions.Normal(p_mean, std)
    )
    torch.testing.assert_close(vlb_term(scheduler, eps_hat, x0, x_t, t), kl)


def test_eps_mse_loss_matches_manual(scheduler: DDPMScheduler) -> None:
    model = small_model()
    x0 = toy_data(32)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    loss = eps_mse_loss(model, scheduler, x0, generator=g1)
    noise = torch.randn(x0.shape, generator=g2)  # noise first, then t
    t = torch.randint(0, T, (32,), generator=g2)
    expected = (model(scheduler.add_noise(x0, noise, t), t) - noise).square().mean()
    torch.testing.assert_close(loss, expected)


def test_evaluate_eps_mse(scheduler: DDPMScheduler) -> None:
    data = toy_data(300)
    zero = Oracle(torch.zeros(()))
    zero.train()
    got = evaluate_eps_mse(zero, scheduler, data, batch_size=128, generator=torch.Generator())
    g = torch.Generator()
    chunks = [data[i : i + 128] for i in range(0, 300, 128)]
    sq = [draw_noise_and_timesteps(scheduler, c, g)[0].square() for c in chunks]
    assert math.isclose(got, float(torch.cat(sq).mean()), rel_tol=1e-6)
    assert zero.training  # mode restored


def test_losses_reject_bad_input(scheduler: DDPMScheduler) -> None:
    model = small_model()
    x0 = toy_data(8)
    with pytest.raises(ValueError, match="both"):
        eps_mse_loss(model, scheduler, x0, noise=torch.zeros(8, 2))
    with pytest.raises(ValueError, match="noise must have shape"):
        eps_mse_loss(
            model, scheduler, x0, noise=torch.zeros(8, 3), t=torch.zeros(8, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="kl_weight"):
        hybrid_loss(model, scheduler, x0, kl_weight=-1.0)
    with pytest.raises(ValueError, match="x0 must have shape"):
        eps_mse_loss(model, scheduler, torch.zeros(8))
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_eps_mse(model, scheduler, x0, batch_size=0)


# ------------------------------------------------------------------------- loop
def test_training_reduces_the_loss(scheduler: DDPMScheduler) -> None:
    data = toy_data(1024)
    model = small_model()
    before = evaluate_eps_mse(model, scheduler, data, generator=torch.Generator().manual_seed(9))
    result = train(
        model, scheduler, data, steps=100, batch_size=128, lr=3e-3,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    after = evaluate_eps_mse(model, scheduler, data, generator=torch.Generator().manual_seed(9))
    assert result.losses.shape == (100,) and result.model is model
    assert after < 0.8 * before
    assert float(result.losses[-20:].mean()) < float(result.losses[:10].mean())
    assert result.seconds > 0


def test_training_is_deterministic(scheduler: DDPMScheduler) -> None:
    data, model = toy_data(256), small_model()
    runs = []
    for _ in range(2):
        m = copy.deepcopy(model)
        r = train(
            m, scheduler, data, steps=15, batch_size=32, generator=torch.Generator().manual_seed(3)
        )
        runs.append(r)
    torch.testing.assert_close(runs[0].losses, runs[1].losses, rtol=0, atol=0)
    for a, b in zip(runs[0].ema.parameters(), runs[1].ema.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    other = train(copy.deepcopy(model), scheduler, data, steps=15, batch_size=32,
                  generator=torch.Generator().manual_seed(4))  # fmt: skip
    assert not torch.equal(other.losses, runs[0].losses)


def test_ema_is_the_documented_average_and_lr_is_cosine(scheduler: DDPMScheduler) -> None:
    data, model = toy_data(256), small_model()
    snapshots: dict[int, list[Tensor]] = {}
    lrs: list[float] = []

    def record(state: TrainState) -> None:
        lrs.append(state.lr)
        if state.step % 4 == 0:
            snapshots[state.step] = [p.detach().clone() for p in state.model.parameters()]

    steps, decay = 22, 0.9
    result = train(
        model, scheduler, data, steps=steps, batch_size=32, lr=1e-3, ema_decay=decay,
        ema_every=4, ema_warmup=None, callback=record,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    expected = snapshots[4]  # the first update copies the weights
    for step in (8, 12, 16, 20):
        expected = [
            decay * e + (1 - decay) * p for e, p in zip(expected, snapshots[step], strict=True)
        ]
    for got, want, raw in zip(result.ema.parameters(), expected, model.parameters(), strict=True):
        torch.testing.assert_close(got, want)
        assert not torch.equal(got, raw)
    cosine = [0.5 * 1e-3 * (1 + math.cos(math.pi * s / steps)) for s in range(steps)]
    np.testing.assert_allclose(lrs, cosine, rtol=1e-6)


def test_progress_bar_and_explicit_device(scheduler: DDPMScheduler) -> None:
    pytest.importorskip("tqdm")
    model = small_model()
    result = train(
        model, scheduler, toy_data(64), steps=3, batch_size=16, progress=True, device="cpu",
        ema_every=2, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert result.losses.shape == (3,)
    assert next(result.ema.parameters()).device.type == "cpu"


@pytest.mark.parametrize("loss", ["mse", "hybrid"])
def test_dual_model_trains_with_both_losses(scheduler: DDPMScheduler, loss: str) -> None:
    torch.manual_seed(0)
    model = DualScaleDenoiser.from_preset("adaptive", embedding_dim=16, hidden_dim=32, num_blocks=1)
    result = train(
        model, scheduler, toy_data(128), steps=12, batch_size=32, loss=loss,  # type: ignore[arg-type]
        batching="replacement", generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert bool(torch.isfinite(result.losses).all())
    assert isinstance(result.ema, DualScaleDenoiser)


def test_training_rejects_bad_arguments(scheduler: DDPMScheduler) -> None:
    data, model = toy_data(16), small_model()
    bad: list[dict[str, Any]] = [
        {"steps": 0},
        {"steps": -3},
        {"steps": 2.5},
        {"batch_size": 0},
        {"lr": 0.0},
        {"ema_decay": 1.5},
        {"ema_every": 0},
        {"grad_clip": 0.0},
        {"weight_decay": -1.0},
        {"loss": "l1"},
        {"batching": "sequential"},
    ]
    for kwargs in bad:
        args = {"steps": 2, **kwargs}
        with pytest.raises(ValueError):
            train(model, scheduler, data, **args)
    with pytest.raises(ValueError, match="data must have shape"):
        train(model, scheduler, torch.zeros(5), steps=2)
    with pytest.raises(ValueError, match="NaN"):
        train(model, scheduler, torch.full((4, 2), float("nan")), steps=2)
    with pytest.raises(ValueError, match="trainable"):
        train(Oracle(torch.zeros(())).requires_grad_(False), scheduler, data, steps=2)
    with pytest.raises(ValueError, match="loss became"):
        train(Oracle(torch.full((4, 2), float("nan"))), scheduler, data, steps=2, batch_size=4,
              ema_every=1)  # fmt: skip


# ----------------------------------------------------------------------- config
def _weights(module: nn.Module) -> list[Tensor]:
    return [t.detach().clone() for t in [*module.parameters(), *module.buffers()]]


def test_keywords_and_config_give_bitwise_identical_runs(scheduler: DDPMScheduler) -> None:
    data, model = toy_data(200), small_model()
    kw: dict[str, Any] = {"steps": 9, "batch_size": 32, "lr": 1e-3, "ema_every": 2}
    by_keywords = train(
        copy.deepcopy(model), scheduler, data, generator=torch.Generator().manual_seed(3), **kw
    )
    by_config = train(
        copy.deepcopy(model), scheduler, data, config=TrainConfig(**kw),
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    overridden = train(
        copy.deepcopy(model), scheduler, data, TrainConfig(steps=9, batch_size=32, lr=5.0),
        lr=1e-3, ema_every=2, generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    assert torch.equal(by_keywords.losses, by_config.losses)
    assert torch.equal(by_keywords.losses, overridden.losses)
    for other in (by_config, overridden):
        for a, b in zip(_weights(by_keywords.model), _weights(other.model), strict=True):
            assert torch.equal(a, b)
        for a, b in zip(_weights(by_keywords.ema), _weights(other.ema), strict=True):
            assert torch.equal(a, b)


_BAD_SETTINGS: list[tuple[str, object]] = [
    ("steps", 0), ("steps", 2.5), ("steps", True), ("batch_size", 0), ("lr", 0.0),
    ("lr", float("nan")), ("lr", float("inf")), ("weight_decay", -1.0), ("grad_clip", 0.0),
    ("ema_decay", 1.5), ("ema_decay", -0.1), ("ema_every", 0), ("ema_warmup", -1),
    ("kl_weight", -0.5), ("checkpoint_every", 0), ("keep_checkpoints", 0),
    ("loss", "l1"), ("batching", "sequential"), ("precision", "fp8"),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value"), _BAD_SETTINGS)
def test_config_rejects_a_bad_field_by_name(field: str, value: object) -> None:
    kwargs: dict[str, Any] = {"steps": 2, field: value}
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}\b") as err:
        TrainConfig(**kwargs)
    assert repr(value) in str(err.value) or "accepted values" in str(err.value)


@given(
    lr=st.floats(min_value=1e-8, max_value=1.0),
    ema_decay=st.floats(min_value=0.0, max_value=1.0),
    steps=st.integers(1, 10**6),
    grad_clip=st.none() | st.floats(min_value=1e-6, max_value=1e3),
)
def test_config_accepts_every_valid_setting(
    lr: float, ema_decay: float, steps: int, grad_clip: float | None
) -> None:
    config = TrainConfig(steps, lr=lr, ema_decay=ema_decay, grad_clip=grad_clip)
    assert (config.steps, config.lr, config.ema_decay, config.grad_clip) == (
        steps, lr, ema_decay, grad_clip,
    )  # fmt: skip
    assert isinstance(config, BaseTrainConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]


def test_config_errors_of_the_call(scheduler: DDPMScheduler) -> None:
    data, model = toy_data(16), small_model()
    with pytest.raises(TypeError, match="steps"):
        train(model, scheduler, data)
    with pytest.raises(TypeError, match="TrainConfig"):
        train(model, scheduler, data, ImageTrainConfig(steps=2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword"):
        train(model, scheduler, data, steps=2, learning_rate=1e-3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        TrainConfig(2, 1e-3)  # type: ignore[call-arg]  # only steps is positional
    with pytest.raises(TypeError, match="compile must be a bool"):
        TrainConfig(steps=2, compile=3)  # type: ignore[arg-type]


# -------------------------------------------------------------------- callbacks
def test_callback_takes_one_function_or_a_sequence(scheduler: DDPMScheduler) -> None:
    data, model = toy_data(64), small_model()
    one: list[int] = []
    two: list[float] = []
    result = train(
        copy.deepcopy(model), scheduler, data, steps=4, batch_size=16,
        callback=lambda s: one.append(s.step), generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert one == [1, 2, 3, 4]
    train(
        copy.deepcopy(model), scheduler, data, steps=4, batch_size=16,
        callback=[lambda s: one.append(s.step), lambda s: two.append(s.loss)],
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert one == [1, 2, 3, 4] * 2
    assert torch.equal(torch.tensor(two), result.losses)
    with pytest.raises(TypeError, match="callable"):
        train(model, scheduler, data, steps=1, callback=[1])  # type: ignore[list-item]


def test_callbacks_keyword_is_a_deprecated_alias(scheduler: DDPMScheduler) -> None:
    seen: list[int] = []
    with pytest.warns(DeprecationWarning, match="callback="):
        train(
            small_model(), scheduler, toy_data(32), steps=3, batch_size=16,
            callbacks=[lambda s: seen.append(s.step)],
        )  # fmt: skip
    assert seen == [1, 2, 3]


# ---------------------------------------------------------------------- results
def test_result_has_the_shared_attributes(scheduler: DDPMScheduler) -> None:
    model = small_model()
    result = train(model, scheduler, toy_data(64), steps=5, batch_size=16, ema_every=1)
    assert isinstance(result, TrainingResult)
    assert result.ema is result.ema_model.module and result.ema is not model
    assert result.losses.dtype == torch.float32 and result.losses.device.type == "cpu"
    assert result.losses.shape == (5,) and bool(torch.isfinite(result.losses).all())
    assert result.seconds > 0


def test_export_pretrained_writes_the_ema(scheduler: DDPMScheduler, tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    pytest.importorskip("safetensors")
    result = train(small_model(), scheduler, toy_data(64), steps=3, batch_size=16, ema_every=1)
    folder = result.export_pretrained(tmp_path / "m", scheduler=scheduler)
    loaded = MLPDenoiser.from_pretrained(folder)
    for a, b in zip(_weights(loaded), _weights(result.ema), strict=True):
        assert torch.equal(a, b)
    assert (folder / "scheduler_config.json").is_file()
