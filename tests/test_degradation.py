"""Forward process of Scale Space Diffusion: resize operator, schedules, respacing."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from scalemix.degradation import (
    GaussianDegradation,
    LinearDegradation,
    ScaleSpaceDegradation,
    SupportsCovarianceRoot,
    apply_range,
    change_steps,
    downsample,
    downsample_adjoint,
    resolution_levels,
    resolution_schedule,
    respaced_timesteps,
)
from scalemix.degradation.resize import downsample_matrix, downsample_spectrum
from scalemix.scheduler import DDPMScheduler

F64 = torch.float64


def _interp(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[-1]
    return F.interpolate(
        x, size=(n // 2, n // 2), mode="bilinear", antialias=True, align_corners=False
    )


# ---------------------------------------------------------------- the matrix D
@pytest.mark.parametrize("n", [8, 16, 64])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-6), (F64, 1e-12)])
def test_kron_matches_interpolate(n: int, dtype: torch.dtype, tol: float) -> None:
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(3, 2, n, n, generator=gen, dtype=F64).to(dtype)
    d = downsample_matrix(n, dtype=dtype)
    kron = torch.kron(d, d)  # acts on row-major vec(x)
    via_kron = (kron @ x.reshape(6, n * n).T).T.reshape(3, 2, n // 2, n // 2)
    assert torch.allclose(via_kron, _interp(x), rtol=0, atol=tol)
    assert torch.allclose(downsample(x), _interp(x), rtol=0, atol=0)


@pytest.mark.parametrize("n", [4, 8, 16, 64])
def test_matrix_rows_are_renormalised_tent_weights(n: int) -> None:
    # Independent derivation: output pixel i is centred at input coordinate 2i + 1 (pixel
    # centres at k + 1/2); the antialiased bilinear kernel at scale 2 is the tent
    # max(0, 1 - |u| / 2), renormalised over the pixels that exist.
    expected = torch.zeros(n // 2, n, dtype=F64)
    for i in range(n // 2):
        for k in range(n):
            expected[i, k] = max(0.0, 1.0 - abs(k + 0.5 - (2 * i + 1)) / 2.0)
        expected[i] /= expected[i].sum()
    assert torch.allclose(downsample_matrix(n), expected, atol=1e-15, rtol=0)
    if n >= 8:
        assert torch.allclose(
            downsample_matrix(n)[1, 1:5], torch.tensor([1, 3, 3, 1], dtype=F64) / 8
        )


@pytest.mark.parametrize(("n", "lam_max"), [(8, 0.2546), (16, 0.2523), (64, 0.2508)])
def test_spectrum(n: int, lam_max: float) -> None:
    u, lam = downsample_spectrum(n)
    d = downsample_matrix(n)
    assert torch.allclose(u @ torch.diag(lam) @ u.T, d.T @ d, atol=1e-13)
    assert torch.allclose(u.T @ u, torch.eye(n, dtype=F64), atol=1e-13)
    assert int((lam < 1e-12).sum()) == n // 2  # rank n/2
    assert float(lam.max()) ** 2 == pytest.approx(lam_max, abs=5e-5)


@pytest.mark.parametrize("bad", [7, 0, 1])
def test_matrix_rejects_bad_sizes(bad: int) -> None:
    with pytest.raises(ValueError, match="even"):
        downsample_matrix(bad)
    with pytest.raises(ValueError, match="square"):
        downsample(torch.zeros(1, 1, 8, 4))
    with pytest.raises(ValueError, match="square"):
        downsample_adjoint(torch.zeros(1, 8, 8))


# ---------------------------------------------------------------- schedules
def test_resolution_boundaries_64px() -> None:
    deg = ScaleSpaceDegradation(64, 4)
    assert deg.resolutions == (8, 16, 32, 64)
    assert deg.change_steps == (438, 750, 937)
    r = deg.resolution_table
    assert bool((r[:438] == 64).all()) and bool((r[438:750] == 32).all())
    assert bool((r[750:937] == 16).all()) and bool((r[937:] == 8).all())
    assert deg.resolution(-1) == 64 and deg.level(999) == 0 and deg.level(0) == 3
    two = ScaleSpaceDegradation(64, 2)
    assert two.change_steps == (750,) and two.resolution(749) == 64 and two.resolution(750) == 32


def test_linear_schedule_is_an_equal_split() -> None:
    r = resolution_schedule(64, 4, 1000, "linear")
    counts = [int((r == size).sum()) for size in (64, 32, 16, 8)]
    assert counts == [250, 250, 250, 250]


@settings(max_examples=30)
@given(
    size_exp=st.integers(1, 8),
    levels=st.integers(1, 8),
    T=st.integers(2, 400),
    gamma=st.floats(0.2, 3.0),
)
def test_schedule_properties(size_exp: int, levels: int, T: int, gamma: float) -> None:
    size = 2**size_exp
    if levels > max(size_exp, 1):
        with pytest.raises(ValueError, match="too large"):
            resolution_levels(size, levels)
        return
    try:
        r = resolution_schedule(size, levels, T, "convex", gamma)
    except ValueError as err:  # a schedule that skips a level is refused
        assert "skips a level" in str(err)
        return
    assert int(r[0]) == size and int(r[-1]) == size >> (levels - 1)
    ratios = r[:-1] // r[1:]
    assert bool(((ratios == 1) | (ratios == 2)).all())


def test_schedule_bad_input() -> None:
    with pytest.raises(ValueError, match="multiple of"):
        ScaleSpaceDegradation(48, 6)  # a 6-level UNet halves 5 times: 48 is no multiple of 32
    with pytest.raises(ValueError, match="too large"):
        ScaleSpaceDegradation(64, 7)
    with pytest.raises(ValueError, match=">= 1"):
        resolution_levels(64, 0)
    with pytest.raises(TypeError):
        resolution_levels(64.0, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resolution_schedule"):
        ScaleSpaceDegradation(64, 2, resolution_schedule="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gamma"):
        ScaleSpaceDegradation(64, 2, gamma=0.0)
    with pytest.raises(ValueError, match="skips a level"):
        ScaleSpaceDegradation(64, 4, num_train_timesteps=3)
    with pytest.raises(ValueError, match="beta_schedule"):
        ScaleSpaceDegradation(64, 2, beta_schedule="exp")  # type: ignore[arg-type]


def test_protocols() -> None:
    deg = ScaleSpaceDegradation(16, 3)
    assert isinstance(deg, LinearDegradation) and isinstance(deg, SupportsCovarianceRoot)
    gauss = GaussianDegradation((16, 16))
    assert isinstance(gauss, LinearDegradation) and change_steps(gauss) == ()
    assert change_steps(deg) == deg.change_steps


# ---------------------------------------------------------------- adjoint
@settings(max_examples=15)
@given(seed=st.integers(0, 2**31 - 1), size_exp=st.integers(3, 6))
def test_adjoint_identity_every_level(seed: int, size_exp: int) -> None:
    size = 2**size_exp
    deg = ScaleSpaceDegradation(size, size_exp - 1)
    gen = torch.Generator().manual_seed(seed)
    for t in (0, *deg.change_steps, deg.num_train_timesteps - 1):
        r_in, r_out = deg.resolution(t - 1), deg.resolution(t)
        x = torch.randn(2, 3, r_in, r_in, generator=gen, dtype=F64)
        y = torch.randn(2, 3, r_out, r_out, generator=gen, dtype=F64)
        lhs = (deg.apply(x, t) * y).sum()
        rhs = (x * deg.apply_adjoint(y, t)).sum()
        assert abs(float(lhs - rhs)) <= 1e-12 * float(x.norm() * y.norm())


# ---------------------------------------------------------------- forward process
def test_degrade_add_noise_target_shapes_and_values() -> None:
    deg = ScaleSpaceDegradation(16, 3)  # 16 -> 8 at t = 555, 8 -> 4 at t = 889
    t1, t2 = deg.change_steps
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 16, 16, generator=gen, dtype=F64) * 2 - 1
    assert torch.equal(deg.degrade(x0, 0), x0)
    assert torch.allclose(deg.degrade(x0, t2), _interp(_interp(x0)), atol=1e-15)
    assert torch.equal(deg.target(x0, t1), x0)  # r(t1 - 1) is full size
    assert torch.allclose(deg.target(x0, t1 + 1), _interp(x0), atol=1e-15)
    t = torch.full((4,), t1 + 5)
    t[0] = t1 + 1  # different timesteps within one level are accepted
    noise = torch.randn(4, 3, 8, 8, generator=gen, dtype=F64)
    abar = deg.alphas_cumprod[t].view(4, 1, 1, 1)
    expected = abar.sqrt() * _interp(x0) + (1 - abar).sqrt() * noise
    assert torch.allclose(deg.add_noise(x0, noise, t), expected, atol=1e-15)
    # x_t = M_{1:t} x0 + sigma_t eps with M_{1:t} composed step by step
    composed = apply_range(deg, x0, -1, t2 + 3)
    assert torch.allclose(composed, deg.degrade(x0, t2 + 3), atol=1e-15)


@pytest.mark.parametrize("t", [0, 437, 600, 760, 999])
def test_forward_marginal_statistics(t: int) -> None:
    # Monte Carlo check of mean sqrt(abar) D x0 and variance 1 - abar, N = 20000 draws:
    # 5 standard errors (1/sqrt(N) for the mean, sqrt(2/N) for the variance) per pixel.
    deg = ScaleSpaceDegradation(8, 3, num_train_timesteps=1000)
    gen = torch.Generator().manual_seed(t)
    x0 = (torch.rand(1, 1, 8, 8, generator=gen, dtype=F64) * 2 - 1).expand(20000, 1, 8, 8)
    r = deg.resolution(t)
    x_t = deg.add_noise(x0, torch.randn(20000, 1, r, r, generator=gen, dtype=F64), t)
    abar = float(deg.alphas_cumprod[t])
    mean = math.sqrt(abar) * deg.degrade(x0[:1], t)[0]
    n = 20000
    assert float((x_t.mean(0) - mean).abs().max()) < 5 * math.sqrt((1 - abar) / n)
    assert float((x_t.var(0) / (1 - abar) - 1).abs().max()) < 5 * math.sqrt(2 / n)


def test_forward_transition_is_consistent_with_marginals() -> None:
    # One forward step x_t = sqrt(alpha_t) D x_{t-1} + eta with
    # Cov(eta) = sigma_t^2 I - alpha_t sigma_{t-1}^2 D D^T (sampled densely by Cholesky)
    # from x_{t-1} ~ q(x_{t-1} | x0) must give the marginal q(x_t | x0) at a change step.
    deg = ScaleSpaceDegradation(8, 2)
    (t,) = deg.change_steps
    gen = torch.Generator().manual_seed(1)
    n = 20000
    x0 = (torch.rand(1, 1, 8, 8, generator=gen, dtype=F64) * 2 - 1).expand(n, 1, 8, 8)
    prev = deg.add_noise(x0, torch.randn(n, 1, 8, 8, generator=gen, dtype=F64), t - 1)
    abar_t, abar_p = float(deg.alphas_cumprod[t]), float(deg.alphas_cumprod[t - 1])
    alpha = abar_t / abar_p
    m = torch.kron(downsample_matrix(8), downsample_matrix(8))
    cov = (1 - abar_t) * torch.eye(16, dtype=F64) - alpha * (1 - abar_p) * m @ m.T
    eta = torch.randn(n, 16, generator=gen, dtype=F64) @ torch.linalg.cholesky(cov).T
    x_t = math.sqrt(alpha) * deg.apply(prev, t) + eta.reshape(n, 1, 4, 4)
    mean = math.sqrt(abar_t) * deg.degrade(x0[:1], t)[0]
    assert float((x_t.mean(0) - mean).abs().max()) < 5 * math.sqrt(1 / n)
    emp = torch.cov(x_t.reshape(n, 16).T) / (1 - abar_t)
    assert float((emp - torch.eye(16, dtype=F64)).abs().max()) < 6 * math.sqrt(2 / n)


def test_forward_bad_input() -> None:
    deg = ScaleSpaceDegradation(16, 3)
    x0 = torch.zeros(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        deg.degrade(x0, 1000)
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        deg.add_noise(x0, torch.zeros(2, 3, 16, 16), -1)
    with pytest.raises(ValueError, match="one resolution"):
        deg.degrade(x0, torch.tensor([10, 900]))
    with pytest.raises(ValueError, match="share one timestep"):
        deg.resolution(torch.tensor([10, 11]))
    with pytest.raises(TypeError, match="integer"):
        deg.degrade(x0, torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        deg.degrade(x0, torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 3, 8, 8\)"):
        deg.add_noise(x0, torch.zeros(2, 3, 16, 16), 700)
    with pytest.raises(ValueError, match=r"x0 must have shape"):
        deg.degrade(torch.zeros(2, 3, 8, 8), 0)
    with pytest.raises(ValueError, match="one resolution"):
        deg.target(x0, torch.tensor([deg.change_steps[0], deg.change_steps[0] + 1]))
    with pytest.raises(ValueError, match=r"x must have shape"):
        deg.apply(torch.zeros(1, 1, 8, 8), deg.change_steps[0])
    with pytest.raises(ValueError, match=r"y must have shape"):
        deg.apply_adjoint(torch.zeros(1, 1, 16, 16), deg.change_steps[0])


# ---------------------------------------------------------------- respacing
@settings(max_examples=25)
@given(steps=st.integers(1, 1000), levels=st.integers(1, 4), linear=st.booleans())
def test_respacing_keeps_change_steps(steps: int, levels: int, linear: bool) -> None:
    deg = ScaleSpaceDegradation(32, levels, resolution_schedule="linear" if linear else "convex")
    ts = deg.timesteps(steps).tolist()
    assert ts[0] == 999 and all(a > b for a, b in itertools.pairwise(ts))
    assert set(deg.change_steps) <= set(ts)
    assert steps <= len(ts) <= steps + len(deg.change_steps)
    for t, s in itertools.pairwise([*ts, -1]):
        crossed = [c for c in deg.change_steps if s < c <= t]
        assert len(crossed) <= 1
        assert deg.resolution(s) == deg.resolution(t - 1)


def test_respacing_without_levels_is_trailing_ddpm() -> None:
    deg = ScaleSpaceDegradation(8, 1)
    ddpm = DDPMScheduler()
    for n in (1, 7, 50, 1000):
        assert torch.equal(deg.timesteps(n), ddpm.timesteps(n, "trailing"))
    assert torch.equal(deg.timesteps(), torch.arange(999, -1, -1))
    with pytest.raises(ValueError, match="num_inference_steps"):
        respaced_timesteps(deg, 0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        deg.timesteps(1001)
