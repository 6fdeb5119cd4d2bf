"""Properties of the pure beta-schedule functions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scalemix.schedules import (
    alphas_cumprod_from_betas,
    check_betas,
    cosine_beta_schedule,
    linear_beta_schedule,
    make_beta_schedule,
    quadratic_beta_schedule,
    rescale_zero_terminal_snr,
    sigmoid_beta_schedule,
)

NAMES = ["linear", "quadratic", "cosine", "sigmoid"]


@given(
    name=st.sampled_from(NAMES),
    T=st.integers(2, 2000),
    start=st.floats(1e-5, 1e-2),
    span=st.floats(0.0, 0.05),
)
def test_schedules_valid_and_abar_strictly_decreasing(
    name: str, T: int, start: float, span: float
) -> None:
    betas = make_beta_schedule(name, T, start, min(start + span, 0.9))  # type: ignore[arg-type]
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    assert bool(((betas > 0) & (betas < 1)).all())
    abar = alphas_cumprod_from_betas(betas)
    assert bool(((abar > 0) & (abar < 1)).all())
    assert bool((abar[1:] < abar[:-1]).all())


def test_linear_and_quadratic_endpoints() -> None:
    b = linear_beta_schedule(100, 1e-4, 0.02)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    q = quadratic_beta_schedule(100, 1e-4, 0.02)
    assert q[0].item() == pytest.approx(1e-4) and q[-1].item() == pytest.approx(0.02)
    # square roots are equally spaced
    d = torch.diff(q.sqrt())
    assert torch.allclose(d, d[0].expand_as(d), rtol=1e-9)


def test_cosine_matches_closed_form_abar() -> None:
    T, s = 1000, 0.008
    betas = cosine_beta_schedule(T)
    abar = alphas_cumprod_from_betas(betas)
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    expected = torch.tensor([f[t + 1] / f[0] for t in range(T)], dtype=torch.float64)
    # identical until the 0.999 cap bites at the very end
    assert torch.allclose(abar[:-1], expected[:-1], rtol=1e-9)
    assert betas.max().item() <= 0.999 and not torch.isnan(betas).any()


def test_sigmoid_is_monotone_between_endpoints() -> None:
    b = sigmoid_beta_schedule(500, 1e-4, 0.02)
    assert bool((torch.diff(b) > 0).all())
    assert 1e-4 < b[0].item() < b[-1].item() < 0.02


@given(name=st.sampled_from(NAMES), T=st.integers(2, 1000))
def test_zero_terminal_snr_rescale(name: str, T: int) -> None:
    betas = make_beta_schedule(name, T)  # type: ignore[arg-type]
    r = rescale_zero_terminal_snr(betas)
    abar, abar_r = alphas_cumprod_from_betas(betas), alphas_cumprod_from_betas(r)
    assert r[-1].item() == pytest.approx(1.0)
    assert abar_r[-1].item() == pytest.approx(0.0, abs=1e-12)
    assert abar_r[0].item() == pytest.approx(abar[0].item(), rel=1e-9)
    # sqrt(abar) is an affine function of the original sqrt(abar)
    a, ar = abar.sqrt(), abar_r.clamp(min=0).sqrt()
    slope = (ar[0] - ar[-1]) / (a[0] - a[-1])
    assert torch.allclose(ar, (a - a[-1]) * slope, atol=1e-9)


@pytest.mark.parametrize(
    "call",
    [
        lambda: linear_beta_schedule(0),
        lambda: linear_beta_schedule(10, 0.0, 0.02),
        lambda: linear_beta_schedule(10, 1e-4, 1.0),
        lambda: linear_beta_schedule(10, 0.02, 1e-4),
        lambda: make_beta_schedule("exponential", 10),  # type: ignore[arg-type]
        lambda: cosine_beta_schedule(10, max_beta=1.0),
        lambda: check_betas(torch.tensor([0.1, 0.0])),
        lambda: check_betas(torch.tensor([0.1, float("nan")])),
        lambda: check_betas(torch.tensor([[0.1]])),
        lambda: rescale_zero_terminal_snr(torch.tensor([0.1])),
    ],
)
def test_bad_schedule_input_raises(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


def test_unknown_schedule_message_lists_options() -> None:
    with pytest.raises(ValueError, match="'linear', 'quadratic', 'cosine', 'sigmoid'"):
        make_beta_schedule("exp", 10)  # type: ignore[arg-type]


def test_timestep_schedule_is_what_the_scheduler_uses() -> None:
    from scalemix.scheduler import DDPMScheduler
    from scalemix.schedules import timestep_schedule

    s = DDPMScheduler(500)
    for spacing in ("trailing", "leading", "linspace"):
        assert torch.equal(s.timesteps(37, spacing), timestep_schedule(500, 37, spacing))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spacing"):
        timestep_schedule(10, 5, "cosine")  # type: ignore[arg-type]
