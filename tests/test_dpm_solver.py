"""DPM-Solver++ (2M), Euler and Heun: parity with diffusers, convergence order on the
exact probability-flow ODE of Gaussian data, first-order identities, log-SNR spacing."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from scalemix import DDPMScheduler, sample
from scalemix.sampling import SamplingState
from scalemix.solvers import DynamicThreshold, logsnr_timesteps

MU, S2 = 0.5, 0.09  # data N(MU, S2 I)
PRED = ["epsilon", "sample", "v_prediction"]
# diffusers' own numpy-2 deprecation, raised inside its set_timesteps
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


class GaussianDenoiser:
    """The exact denoiser of data N(MU, S2 I): E[x0 | x_t] by Gaussian conditioning,
    returned as eps, x0 or v for the scheduler's prediction type."""

    def __init__(self, scheduler: DDPMScheduler) -> None:
        self.abar = scheduler.alphas_cumprod
        self.prediction_type = scheduler.prediction_type

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        a = self.abar[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        ra, rs = a.sqrt(), (1 - a).sqrt()
        x0 = MU + ra * S2 / (a * S2 + 1 - a) * (x - ra * MU)
        eps = (x - ra * x0) / rs
        if self.prediction_type == "epsilon":
            return eps
        if self.prediction_type == "sample":
            return x0
        return ra * eps - rs * x0


def _float32_linear_betas() -> Tensor:
    """Linear betas as diffusers stores them (float32), so both sides share one table."""
    return torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32).double()


def _diffusers_dpmpp(
    model: GaussianDenoiser,
    x_T: Tensor,
    timesteps: list[int],
    pred: str,
    noises: list[Tensor] | None = None,
    **kwargs: Any,
) -> Tensor:
    """diffusers' 2M solver; with ``noises`` (one per step) its SDE form."""
    diffusers = pytest.importorskip("diffusers")
    d = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        trained_betas=_float32_linear_betas().numpy(),
        prediction_type=pred,
        algorithm_type="dpmsolver++" if noises is None else "sde-dpmsolver++",
        solver_order=2,
        **kwargs,
    )
    d.set_timesteps(timesteps=timesteps)
    x = x_T.clone()
    steps = [None] * len(d.timesteps) if noises is None else noises
    for t, z in zip(d.timesteps, steps, strict=True):
        out = model(x, torch.full((x.shape[0],), int(t)))
        x = d.step(out, t, x, variance_noise=z).prev_sample
    return x  # type: ignore[no-any-return]


@pytest.mark.parametrize("pred", PRED)
@pytest.mark.parametrize("steps", [5, 20])
def test_dpmpp_2m_equals_diffusers(pred: str, steps: int) -> None:
    s = DDPMScheduler(betas=_float32_linear_betas(), prediction_type=pred)  # type: ignore[arg-type]
    model = GaussianDenoiser(s)
    x_T = torch.randn(256, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = sample(model, s, x_T.shape, steps=steps, sampler="dpmpp_2m", x_T=x_T, dtype=x_T.dtype)
    theirs = _diffusers_dpmpp(model, x_T, s.timesteps(steps).tolist(), pred)
    # diffusers keeps its sigmas in float32: agreement to float32 rounding of the schedule
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)


@pytest.mark.parametrize("pred", PRED)
@pytest.mark.parametrize("steps", [5, 20])
def test_dpmpp_2m_sde_equals_diffusers_with_the_same_noise(pred: str, steps: int) -> None:
    s = DDPMScheduler(betas=_float32_linear_betas(), prediction_type=pred)  # type: ignore[arg-type]
    model = GaussianDenoiser(s)
    x_T = torch.randn(256, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw: dict[str, Any] = {"steps": steps, "x_T": x_T, "dtype": x_T.dtype}
    ours = sample(model, s, x_T.shape, sampler="dpmpp_2m_sde", **kw,
                  generator=torch.Generator().manual_seed(3))  # fmt: skip
    # sample() draws one float32 noise tensor per step from the generator, in order
    g = torch.Generator().manual_seed(3)
    noises = [torch.randn(x_T.shape, generator=g).double() for _ in range(steps)]
    x = _diffusers_dpmpp(model, x_T, s.timesteps(steps).tolist(), pred, noises)
    torch.testing.assert_close(ours, x, rtol=0, atol=2e-5)
    # and it is not the ODE solver: the noise enters
    ode = sample(model, s, x_T.shape, sampler="dpmpp_2m", **kw)
    assert (ours - ode).abs().max() > 1e-2


@pytest.mark.parametrize("pred", PRED)
def test_dpmpp_2m_sde_first_order_step_is_the_ancestral_step(pred: str) -> None:
    """Its first-order step has the posterior q(x_s | x_t, x0_hat)'s mean and variance."""
    s = DDPMScheduler(100, prediction_type=pred)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(4)
    out, x, z = (torch.randn(6, 3, generator=g, dtype=torch.float64) for _ in range(3))
    for t, prev in ((60, 30), (60, 59), (5, 0)):
        sde = s.dpmpp_2m_step(out, t, x, prev_t=prev, sde=True, noise=z)
        ancestral = s.step(out, t, x, prev_t=prev, noise=z)
        torch.testing.assert_close(sde.prev_sample, ancestral.prev_sample, rtol=1e-10, atol=1e-12)
    # into clean data it returns x0_hat, whatever the noise
    final = s.dpmpp_2m_step(out, 10, x, prev_t=-1, sde=True, noise=z, last_x0=x, last_t=40)
    torch.testing.assert_close(final.prev_sample, s.predict_x0(out, x, 10))


def test_dpmpp_2m_sde_converges_faster_than_ancestral_sampling() -> None:
    """On Gaussian data N(MU, S2) with its exact denoiser, 50 steps of the second-order
    SDE solver give the data's variance; 50 ancestral steps still miss it by far."""
    s = DDPMScheduler(1000)
    model = GaussianDenoiser(s)

    def variance_error(sampler: str) -> float:
        x = sample(model, s, (20_000, 1), steps=50, sampler=sampler,  # type: ignore[arg-type]
                   generator=torch.Generator().manual_seed(5), dtype=torch.float64)  # fmt: skip
        return abs(float(x.var()) / S2 - 1)

    # 20,000 samples: the sampling error of var / S2 is about 0.01
    sde, ancestral = variance_error("dpmpp_2m_sde"), variance_error("ddpm")
    assert sde < 0.05 and sde < ancestral / 4, (sde, ancestral)


def test_dpmpp_2m_dynamic_threshold_equals_diffusers() -> None:
    s = DDPMScheduler(betas=_float32_linear_betas(), prediction_type="epsilon")
    model = GaussianDenoiser(s)
    x_T = 2 * torch.randn(8, 4, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    threshold = DynamicThreshold(ratio=0.9, max_value=1.2)
    ours = sample(
        model, s, x_T.shape, steps=10, sampler="dpmpp_2m", x_T=x_T, dtype=x_T.dtype,
        threshold=threshold,
    )  # fmt: skip
    plain = sample(model, s, x_T.shape, steps=10, sampler="dpmpp_2m", x_T=x_T, dtype=x_T.dtype)
    theirs = _diffusers_dpmpp(
        model, x_T, s.timesteps(10).tolist(), "epsilon",
        thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.2,
    )  # fmt: skip
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)
    assert (ours - plain).abs().max() > 1e-2  # the threshold did act
    assert ours.abs().max() <= 1.0 + 1e-12  # the last step returns the thresholded x0


def test_dynamic_threshold_values() -> None:
    x0 = torch.tensor([[0.5, -3.0, 2.0, 0.1], [0.2, -0.3, 0.4, 0.9]], dtype=torch.float64)
    out = DynamicThreshold(ratio=1.0, max_value=2.0)(x0)
    # row 0: s = min(max(3, 1), 2) = 2 -> clamp to [-2, 2], / 2; row 1: s = 1 -> unchanged
    expected = torch.tensor([[0.25, -1.0, 1.0, 0.05], [0.2, -0.3, 0.4, 0.9]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)
    for bad in ({"ratio": 0.0}, {"ratio": 1.5}, {"max_value": 0.5}):
        with pytest.raises(ValueError):
            DynamicThreshold(**bad)  # type: ignore[arg-type]


def _exact_flow(s: DDPMScheduler, x_T: Tensor, t: int) -> Tensor:
    """The probability-flow ODE of Gaussian data keeps the standardised value
    z = (x - sqrt(abar) MU) / sqrt(abar S2 + 1 - abar) fixed (the marginals are Gaussian and
    the flow is an increasing affine map), so x_t follows from x_T in closed form."""
    abar = s.alphas_cumprod
    a_T, a = abar[-1].item(), abar[t].item()
    z = (x_T - a_T**0.5 * MU) / (a_T * S2 + 1 - a_T) ** 0.5
    return a**0.5 * MU + (a * S2 + 1 - a) ** 0.5 * z


def _ode_error(sampler: str, steps: int) -> float:
    """Max error at the last timestep before the final jump to x0_hat (which is exact
    given x_t): the ODE discretisation error alone."""
    s = DDPMScheduler(1000)
    x_T = torch.linspace(-3, 3, 61, dtype=torch.float64)[:, None]
    seen: list[SamplingState] = []
    sample(
        GaussianDenoiser(s), s, x_T.shape, steps=steps, sampler=sampler,  # type: ignore[arg-type]
        spacing="logsnr", x_T=x_T, dtype=x_T.dtype, callback=seen.append,
    )  # fmt: skip
    x_last, t_last = seen[-2].prev_sample, seen[-1].t
    return (x_last - _exact_flow(s, x_T, t_last)).abs().max().item()


@pytest.mark.parametrize(("sampler", "order"), [("dpmpp_2m", 2), ("heun", 2), ("ddim", 1)])
def test_convergence_order_on_the_exact_ode(sampler: str, order: int) -> None:
    errors = [_ode_error(sampler, n) for n in (20, 40, 80)]
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    # halving the step divides the global error by 2**order (asymptotically)
    for r in ratios:
        assert r == pytest.approx(2**order, rel=0.15), (errors, ratios)


def test_dpmpp_2m_beats_ddim_at_equal_calls() -> None:
    assert _ode_error("dpmpp_2m", 10) < 0.5 * _ode_error("ddim", 10)


@pytest.mark.parametrize("pred", PRED)
def test_first_order_rules_coincide(pred: str) -> None:
    s = DDPMScheduler(100, prediction_type=pred)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(2)
    out = torch.randn(5, 2, generator=g, dtype=torch.float64)
    x = torch.randn(5, 2, generator=g, dtype=torch.float64)
    dpm = s.dpmpp_2m_step(out, 60, x, prev_t=30)
    ddim = s.ddim_step(out, 60, x, prev_t=30)
    torch.testing.assert_close(dpm.prev_sample, ddim.prev_sample, rtol=1e-12, atol=1e-12)
    # a step into clean data returns x0_hat, also with a previous x0_hat given
    last = torch.randn(5, 2, generator=g, dtype=torch.float64)
    final = s.dpmpp_2m_step(out, 10, x, prev_t=-1, last_x0=last, last_t=40)
    torch.testing.assert_close(final.prev_sample, s.predict_x0(out, x, 10))
    model = GaussianDenoiser(s)
    x_T = torch.randn(9, 2, generator=g, dtype=torch.float64)
    kw: dict[str, Any] = {"steps": 7, "x_T": x_T, "dtype": x_T.dtype}
    euler = sample(model, s, x_T.shape, sampler="euler", **kw)
    torch.testing.assert_close(euler, sample(model, s, x_T.shape, sampler="ddim", **kw))


def test_dpmpp_2m_second_order_uses_the_previous_prediction() -> None:
    """With x0_hat constant in time D = x0_hat, so the second-order step equals the first."""
    s = DDPMScheduler(100)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(4, 2, generator=g, dtype=torch.float64)
    x = torch.randn(4, 2, generator=g, dtype=torch.float64)
    s0 = DDPMScheduler(100, prediction_type="sample")
    one = s0.dpmpp_2m_step(x0, 50, x, prev_t=20)
    two = s0.dpmpp_2m_step(x0, 50, x, prev_t=20, last_x0=x0, last_t=80)
    torch.testing.assert_close(one.prev_sample, two.prev_sample)
    other = s0.dpmpp_2m_step(x0, 50, x, prev_t=20, last_x0=x0 + 1, last_t=80)
    assert (other.prev_sample - one.prev_sample).abs().min() > 1e-3
    with pytest.raises(ValueError, match="last_x0 and last_t"):
        s.dpmpp_2m_step(x0, 50, x, last_x0=x0)
    with pytest.raises(ValueError, match="last_t must be larger"):
        s.dpmpp_2m_step(x0, 50, x, last_x0=x0, last_t=50)


@given(n=st.integers(1, 200), zero_snr=st.booleans())
def test_logsnr_timesteps_are_strictly_decreasing_and_cover_the_range(
    n: int, zero_snr: bool
) -> None:
    s = (
        DDPMScheduler(200, prediction_type="v_prediction", rescale_betas_zero_snr=True)
        if zero_snr
        else DDPMScheduler(200)
    )
    ts = logsnr_timesteps(s.alphas_cumprod, n)
    assert ts.dtype == torch.long and ts.shape == (n,)
    assert ts[0] == 199 and ts.min() >= 0
    assert bool((ts[1:] < ts[:-1]).all())
    if n > 1:
        assert ts[-1] == 0


def test_logsnr_timesteps_are_even_in_logsnr() -> None:
    s = DDPMScheduler(1000)
    ts = logsnr_timesteps(s.alphas_cumprod, 20)
    abar = s.alphas_cumprod[ts]
    gaps = torch.diff(torch.log(abar / (1 - abar)))
    # integer rounding moves each point by at most the log-SNR gap of one timestep
    assert gaps.min() > 0.5 * gaps.mean() and gaps.max() < 1.5 * gaps.mean()
    with pytest.raises(ValueError, match="num_inference_steps"):
        logsnr_timesteps(s.alphas_cumprod, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampler": "ddpm", "threshold": DynamicThreshold()},
        {"sampler": "dpmpp_2m", "threshold": 0.995},
        {"sampler": "dpmpp_2m", "eta": 0.5},
        {"sampler": "dpmpp_2m_sde", "eta": 0.5},
        {"sampler": "heun", "spacing": "karras"},
    ],
)
def test_bad_solver_arguments(kwargs: dict[str, Any]) -> None:
    s = DDPMScheduler(10)
    with pytest.raises(ValueError):
        sample(GaussianDenoiser(s), s, (2, 2), **kwargs)


def test_heun_calls_the_model_twice_per_step_but_the_last() -> None:
    s = DDPMScheduler(100)
    calls: list[int] = []
    model = GaussianDenoiser(s)

    def counting(x: Tensor, t: Tensor) -> Tensor:
        calls.append(int(t[0]))
        return model(x, t)

    sample(counting, s, (3, 2), steps=5, sampler="heun", generator=torch.Generator())
    ts = s.timesteps(5).tolist()
    expected = [t for pair in itertools.pairwise(ts) for t in pair] + [ts[-1]]
    assert calls == expected
