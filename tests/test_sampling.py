"""The free ``sample`` function: determinism, callbacks, and an analytic oracle."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from scalemix.debug import check_values
from scalemix.sampling import SamplingState, sample
from scalemix.scheduler import DDPMScheduler

MEAN, VAR = 1.5, 0.25


class GaussianOracle:
    """Exact E[eps | x_t] for data x0 ~ N(MEAN, VAR) (derived by Gaussian conditioning)."""

    def __init__(self, scheduler: DDPMScheduler) -> None:
        self.abar = scheduler.alphas_cumprod

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        a = self.abar[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        marginal_var = a * VAR + (1 - a)
        return (1 - a).sqrt() * (x - a.sqrt() * MEAN) / marginal_var


def _predicted_moments(s: DDPMScheduler, ts: list[int], sampler: str) -> tuple[float, float]:
    """Propagate mean/variance through the linear-Gaussian reverse chain analytically.

    With the oracle, x0_hat = k x_t + (1 - k sqrt(a_t)) MEAN, k = sqrt(a_t) VAR / Var(x_t);
    each step is x_s = A x_t + B x0_hat + sd z with the DDPM posterior coefficients
    (or the DDIM ones), so the moments follow exactly.
    """
    abar = s.alphas_cumprod.tolist()
    m, v = 0.0, 1.0
    for t, p in zip(ts, [*ts[1:], -1], strict=True):
        a_t, a_s = abar[t], (abar[p] if p >= 0 else 1.0)
        k = a_t**0.5 * VAR / (a_t * VAR + 1 - a_t)
        if sampler == "ddpm":
            beta = 1 - a_t / a_s
            A = (a_t / a_s) ** 0.5 * (1 - a_s) / (1 - a_t)
            B = a_s**0.5 * beta / (1 - a_t)
            var = beta * (1 - a_s) / (1 - a_t) if p >= 0 else 0.0
        else:  # x_s = sqrt(a_s) x0 + sqrt(1 - a_s) (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)
            A = ((1 - a_s) / (1 - a_t)) ** 0.5
            B = a_s**0.5 - A * a_t**0.5
            var = 0.0
        c = 1 - k * a_t**0.5
        m, v = (A + B * k) * m + B * c * MEAN, (A + B * k) ** 2 * v + var
    return m, v


@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", None), ("ddpm", 50), ("ddim", 50)])
def test_oracle_sampling_matches_analytic_chain(sampler: str, steps: int | None) -> None:
    s = DDPMScheduler(1000)  # abar_T ~ 4e-5: x_T ~ N(0, I) matches the marginal
    n = 20_000
    x = sample(
        GaussianOracle(s),
        s,
        (n, 1),
        steps=steps,
        sampler=sampler,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    m, v = _predicted_moments(s, s.timesteps(steps).tolist(), sampler)
    # 5 standard errors of the sample mean / variance of n Gaussian draws
    assert x.mean().item() == pytest.approx(m, abs=5 * (v / n) ** 0.5)
    assert x.var().item() == pytest.approx(v, abs=5 * v * (2 / n) ** 0.5)
    if steps is None:  # the full chain also recovers the data distribution itself
        assert m == pytest.approx(MEAN, abs=0.01) and v == pytest.approx(VAR, abs=0.01)


def test_same_seed_same_samples_and_callback() -> None:
    s = DDPMScheduler(50)
    model = GaussianOracle(s)
    seen: list[SamplingState] = []
    a = sample(
        model, s, (7, 2), steps=10, generator=torch.Generator().manual_seed(3), callback=seen.append
    )
    b = sample(model, s, (7, 2), steps=10, generator=torch.Generator().manual_seed(3))
    c = sample(model, s, (7, 2), steps=10, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert [st.step for st in seen] == list(range(10))
    assert [st.t for st in seen] == s.timesteps(10).tolist()
    assert torch.equal(seen[-1].prev_sample, a)


def test_ddim_eta0_is_deterministic_given_start() -> None:
    s = DDPMScheduler(50)
    xT = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    a = sample(
        GaussianOracle(s),
        s,
        (6, 2),
        steps=10,
        sampler="ddim",
        x_T=xT,
        generator=torch.Generator().manual_seed(1),
    )
    b = sample(
        GaussianOracle(s),
        s,
        (6, 2),
        steps=10,
        sampler="ddim",
        x_T=xT,
        generator=torch.Generator().manual_seed(2),
    )
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampler": "dpmpp_3m"},
        {"shape": (0, 2)},
        {"eta": 0.5},
        {"steps": 0},
        {"x_T": torch.zeros(3, 3)},
    ],
)
def test_bad_sample_arguments(kwargs: dict[str, object]) -> None:
    s = DDPMScheduler(10)
    shape = kwargs.pop("shape", (2, 2))
    with pytest.raises(ValueError):
        sample(GaussianOracle(s), s, shape, **kwargs)  # type: ignore[arg-type]


def test_bad_steps_message_names_steps() -> None:
    s = DDPMScheduler(100)
    with pytest.raises(ValueError, match=r"steps must be None .* \[1, 100\].*got 500"):
        sample(GaussianOracle(s), s, (2, 2), steps=500)


class _Exploding:
    """A model whose output turns non-finite from timestep 5 down."""

    def __init__(self, bad: float) -> None:
        self.bad = bad

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        out = torch.zeros_like(x)
        return torch.where((t < 5).reshape(-1, 1), torch.full_like(x, self.bad), out)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "euler", "heun", "dpmpp_2m"])
def test_non_finite_samples_raise_naming_the_model(bad: float, sampler: str) -> None:
    s = DDPMScheduler(20)
    with pytest.raises(ValueError, match=r"_Exploding.*check_values"):
        sample(_Exploding(bad), s, (3, 2), sampler=sampler, generator=torch.Generator())  # type: ignore[arg-type]
    # the switch finds the step: the first non-finite model output
    with check_values(), pytest.raises(ValueError, match="model_output contains NaN"):
        sample(_Exploding(bad), s, (3, 2), sampler=sampler, generator=torch.Generator())  # type: ignore[arg-type]
