"""DDPMScheduler: forward process, conversions, posterior and reverse steps."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scalemix.debug import check_values
from scalemix.scheduler import DDPMScheduler

PRED = ["epsilon", "sample", "v_prediction"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_add_noise_keeps_unit_variance() -> None:
    s = DDPMScheduler(1000)
    g = _gen()
    x0 = torch.randn(200_000, generator=g, dtype=torch.float64)
    noise = torch.randn(200_000, generator=g, dtype=torch.float64)
    for t in (0, 250, 999):
        xt = s.add_noise(x0, noise, t)
        # var of a sum of 200k iid unit-variance draws: sd of the estimate ~ sqrt(2/n) = 0.003
        assert xt.var().item() == pytest.approx(1.0, abs=0.015)


@given(rank=st.integers(1, 4), t=st.integers(0, 99), pred=st.sampled_from(PRED))
def test_conversions_round_trip(rank: int, t: int, pred: str) -> None:
    s = DDPMScheduler(100, prediction_type=pred)  # type: ignore[arg-type]
    g = _gen(t)
    shape = (3,) + (2,) * (rank - 1)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    xt = s.add_noise(x0, eps, t)
    out = s.target(x0, eps, t)
    assert torch.allclose(s.predict_x0(out, xt, t), x0, atol=1e-9)
    assert torch.allclose(s.predict_eps(out, xt, t), eps, atol=1e-9)
    v = s.velocity(x0, eps, t)
    # independent identity: x0 = sqrt(abar) x_t - sqrt(1 - abar) v
    abar = s.alphas_cumprod[t].item()
    assert torch.allclose(abar**0.5 * xt - (1 - abar) ** 0.5 * v, x0, atol=1e-9)


@given(t=st.integers(1, 199), seed=st.integers(0, 2**16))
def test_posterior_matches_independent_gaussian_conditioning(t: int, seed: int) -> None:
    """q(x_{t-1} | x_t, x0) by conditioning the joint Gaussian of (x_{t-1}, x_t) given x0."""
    s = DDPMScheduler(200, beta_schedule="cosine")
    betas = s.betas
    abar = torch.cumprod(1 - betas, 0)
    a_prev, a_t, alpha = abar[t - 1], abar[t], 1 - betas[t]
    g = _gen(seed)
    x0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    xt = torch.randn(4, 3, generator=g, dtype=torch.float64)
    # x_{t-1} = sqrt(a_prev) x0 + sqrt(1-a_prev) e1 ; x_t = sqrt(alpha) x_{t-1} + sqrt(beta) e2
    var_prev = 1 - a_prev
    cov = alpha.sqrt() * var_prev  # Cov(x_{t-1}, x_t | x0)
    var_t = 1 - a_t
    mean = a_prev.sqrt() * x0 + cov / var_t * (xt - a_t.sqrt() * x0)
    var = var_prev - cov**2 / var_t
    post = s.posterior(x0, xt, t)
    assert torch.allclose(post.mean, mean, atol=1e-10)
    assert torch.allclose(post.variance.squeeze(), var.expand(4), atol=1e-12)
    assert torch.allclose(s.posterior_variance[t], var, atol=1e-12)


def test_strided_posterior_matches_conditioning() -> None:
    s = DDPMScheduler(100)
    abar = s.alphas_cumprod
    t, p = 80, 55
    x0, xt = torch.ones(2, 2, dtype=torch.float64), torch.full((2, 2), 0.3, dtype=torch.float64)
    a_s, a_t = abar[p], abar[t]
    cov = (a_t / a_s).sqrt() * (1 - a_s)
    mean = a_s.sqrt() * x0 + cov / (1 - a_t) * (xt - a_t.sqrt() * x0)
    post = s.posterior(x0, xt, t, prev_t=p)
    assert torch.allclose(post.mean, mean, atol=1e-12)
    assert post.variance.flatten()[0].item() == pytest.approx(
        ((1 - a_s) - cov**2 / (1 - a_t)).item(), rel=1e-10
    )


@pytest.mark.parametrize("pred", PRED)
def test_oracle_model_step_returns_true_posterior_mean(pred: str) -> None:
    s = DDPMScheduler(50, prediction_type=pred)  # type: ignore[arg-type]
    g = _gen(1)
    x0 = torch.randn(8, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(8, 2, generator=g, dtype=torch.float64)
    t = torch.randint(1, 50, (8,), generator=g)
    xt = s.add_noise(x0, eps, t)
    oracle = s.target(x0, eps, t)
    out = s.step(oracle, t, xt, noise=torch.zeros_like(xt))
    assert torch.allclose(out.prev_sample, s.posterior(x0, xt, t).mean, atol=1e-9)
    assert torch.allclose(out.pred_original_sample, x0, atol=1e-9)


def test_no_noise_at_t0_and_noise_otherwise() -> None:
    s = DDPMScheduler(10)
    x = torch.randn(4, 3, generator=_gen(2))
    out = torch.zeros_like(x)
    big = torch.full_like(x, 1e3)
    a = s.step(out, 0, x, noise=big).prev_sample
    b = s.step(out, 0, x, noise=-big).prev_sample
    assert torch.equal(a, b)  # the final step ignores the noise
    c = s.step(out, 5, x, noise=big).prev_sample
    d = s.step(out, 5, x, noise=-big).prev_sample
    assert not torch.allclose(c, d)


def test_ddim_eta1_equals_ancestral_and_eta0_is_deterministic() -> None:
    s = DDPMScheduler(100)
    g = _gen(3)
    x = torch.randn(5, 2, generator=g, dtype=torch.float64)
    out = torch.randn(5, 2, generator=g, dtype=torch.float64)
    z = torch.randn(5, 2, generator=g, dtype=torch.float64)
    for t, p in ((99, 98), (99, 49), (30, -1)):
        ddpm = s.step(out, t, x, prev_t=p, noise=z).prev_sample
        ddim = s.ddim_step(out, t, x, prev_t=p, eta=1.0, noise=z).prev_sample
        assert torch.allclose(ddpm, ddim, atol=1e-10)
    a = s.ddim_step(out, 60, x, prev_t=20, generator=_gen(7)).prev_sample
    b = s.ddim_step(out, 60, x, prev_t=20, generator=_gen(8)).prev_sample
    assert torch.equal(a, b)


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
@given(n=st.integers(1, 1000))
def test_timesteps_strictly_decreasing_in_range(spacing: str, n: int) -> None:
    s = DDPMScheduler(1000)
    ts = s.timesteps(n, spacing)  # type: ignore[arg-type]
    assert ts.dtype == torch.long and ts.shape == (n,)
    assert bool((torch.diff(ts) < 0).all()) and ts.min() >= 0 and ts.max() <= 999
    if spacing in ("trailing", "linspace"):
        assert ts[0].item() == 999
    if spacing == "leading" or (spacing == "linspace" and n > 1):
        assert ts[-1].item() == 0


def test_trailing_known_values() -> None:
    s = DDPMScheduler(1000)
    assert s.timesteps(10).tolist() == list(range(999, 0, -100))
    assert s.timesteps().tolist() == list(range(999, -1, -1))


@pytest.mark.parametrize("pred", PRED)
def test_min_snr_weight_equals_x0_weighting(pred: str) -> None:
    s = DDPMScheduler(1000, prediction_type=pred)  # type: ignore[arg-type]
    t = torch.arange(0, 1000, 37)
    snr = s.alphas_cumprod[t] / (1 - s.alphas_cumprod[t])
    w = s.min_snr_weight(t, 5.0)
    # ||target error||^2 scales to ||x0 error||^2 by 1/snr (eps) or 1/(snr+1) (v)
    to_x0 = {"sample": 1.0, "epsilon": snr, "v_prediction": snr + 1.0}[pred]
    assert torch.allclose(w * to_x0, snr.clamp(max=5.0), rtol=1e-10)


def test_min_snr_weight_survives_zero_snr() -> None:
    s = DDPMScheduler(100, prediction_type="v_prediction", rescale_betas_zero_snr=True)
    w = s.min_snr_weight(torch.tensor([99]))
    assert s.snr(99).item() == 0.0 and torch.isfinite(w).all() and w.item() == 0.0
    eps = DDPMScheduler(100)
    assert torch.isfinite(eps.min_snr_weight(torch.arange(100))).all()


def test_zero_terminal_snr_v_prediction_step_is_finite() -> None:
    s = DDPMScheduler(100, prediction_type="v_prediction", rescale_betas_zero_snr=True)
    x = torch.randn(3, 2, generator=_gen(4))
    out = s.step(torch.randn(3, 2, generator=_gen(5)), 99, x, generator=_gen(6))
    assert torch.isfinite(out.prev_sample).all()
    ddim = s.ddim_step(torch.randn(3, 2, generator=_gen(5)), 99, x, prev_t=50)
    assert torch.isfinite(ddim.prev_sample).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pred", PRED)
def test_low_precision_finite_same_dtype(dtype: torch.dtype, pred: str) -> None:
    s = DDPMScheduler(1000, prediction_type=pred, clip_sample=1.0)  # type: ignore[arg-type]
    x = torch.randn(4, 3, 8, 8, generator=_gen(0)).to(dtype)
    out = torch.randn(4, 3, 8, 8, generator=_gen(1)).to(dtype)
    for t in (999, 500, 0):
        for res in (s.step(out, t, x, generator=_gen(2)), s.ddim_step(out, t, x, prev_t=t - 1)):
            assert res.prev_sample.dtype == dtype
            assert torch.isfinite(res.prev_sample).all()
        assert s.add_noise(x, out, t).dtype == dtype
        post = s.posterior(x, x, t)
        assert post.mean.dtype == dtype and torch.isfinite(post.log_variance).all()


def test_clip_sample_bounds_x0() -> None:
    s = DDPMScheduler(100, clip_sample=1.0)
    x = torch.full((2, 2), 50.0)
    res = s.step(torch.zeros(2, 2), 10, x, generator=_gen(0))
    assert res.pred_original_sample.abs().max().item() <= 1.0


def test_buffers_stay_float64_on_cpu() -> None:
    s = DDPMScheduler(10)
    s.add_noise(torch.zeros(2, 2, dtype=torch.float16), torch.zeros(2, 2, dtype=torch.float16), 3)
    for buf in (s.betas, s.alphas_cumprod, s.alphas_cumprod_prev, s.posterior_variance):
        assert buf.dtype == torch.float64 and buf.device.type == "cpu"


x = torch.zeros(2, 3)


def _checked(call: Callable[[], object]) -> object:
    """Run ``call`` with the value checks on (hot paths check NaN only then)."""
    with check_values():
        return call()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: DDPMScheduler(prediction_type="x0"), "prediction_type"),  # type: ignore[arg-type]
        (lambda: DDPMScheduler(variance_type="learned"), "variance_type"),  # type: ignore[arg-type]
        (lambda: DDPMScheduler(beta_schedule="exp"), "beta_schedule"),  # type: ignore[arg-type]
        (lambda: DDPMScheduler(beta_start=0.0), "beta_start"),
        (lambda: DDPMScheduler(beta_end=1.5), "beta_end"),
        (lambda: DDPMScheduler(betas=torch.tensor([0.5, 1.0])), "open interval"),
        (lambda: DDPMScheduler(rescale_betas_zero_snr=True), "zero terminal SNR"),
        (lambda: DDPMScheduler(clip_sample=-1.0), "clip_sample"),
        (lambda: DDPMScheduler(10).add_noise(x, x, 10), r"\[0, 10\)"),
        (lambda: DDPMScheduler(10).add_noise(x, x, -1), r"\[0, 10\)"),
        (lambda: DDPMScheduler(10).add_noise(x, x, torch.tensor([1, 2, 3])), "shape"),
        (lambda: DDPMScheduler(10).add_noise(x, torch.zeros(2, 4), 1), "shape"),
        (lambda: _checked(lambda: DDPMScheduler(10).add_noise(x * float("nan"), x, 1)), "NaN"),
        (lambda: _checked(lambda: DDPMScheduler(10).step(x, 3, x + float("nan"))), "NaN"),
        (lambda: _checked(lambda: DDPMScheduler(10).step(x * float("nan"), 3, x)), "NaN"),
        (lambda: DDPMScheduler(10).step(x, 3, x, prev_t=3), "prev_t"),
        (lambda: DDPMScheduler(10).step(x, 3, x, prev_t=-2), "prev_t"),
        (lambda: DDPMScheduler(10).ddim_step(x, 3, x, eta=-0.5), "eta"),
        (lambda: DDPMScheduler(10).timesteps(0), "num_inference_steps"),
        (lambda: DDPMScheduler(10).timesteps(11), "num_inference_steps"),
        (lambda: DDPMScheduler(10).timesteps(5, "uniform"), "spacing"),  # type: ignore[arg-type]
        (lambda: DDPMScheduler(10).min_snr_weight(1, gamma=0.0), "gamma"),
    ],
)
def test_bad_input_raises_value_error(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


def test_float_timesteps_raise_type_error() -> None:
    with pytest.raises(TypeError, match="integer"):
        DDPMScheduler(10).add_noise(x, x, torch.tensor([1.0, 2.0]))
