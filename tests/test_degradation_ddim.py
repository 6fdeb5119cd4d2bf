"""The DDIM-family step of linear degradations: eta = 1 is the ancestral posterior, every
eta keeps the forward marginals, and the sampler's law on Gaussian data."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from scalemix.degradation import (
    BlurDegradation,
    GaussianDegradation,
    LinearDegradation,
    ScaleSpaceDegradation,
    SeparableSpectrum,
    SupportsGramSpectrum,
    apply_range,
    ddim_step,
    gram_spectrum,
    posterior_coefficients,
    posterior_mean,
    reverse_step,
)
from scalemix.sampling import sample
from scalemix.scale_space import scale_space_sample
from scalemix.scheduler import DDPMScheduler

F64 = torch.float64


def dense(op: Callable[[Tensor], Tensor], in_shape: tuple[int, ...]) -> Tensor:
    """Matrix of a linear map on ``(b, 1, *in_shape)`` tensors: ``(out_dim, in_dim)``."""
    n = math.prod(in_shape)
    out = op(torch.eye(n, dtype=F64).reshape(n, 1, *in_shape))
    return out.reshape(n, -1).T


def _operator(deg: LinearDegradation, s: int, t: int) -> Tensor:
    """The dense matrix of M = D_{s+1:t}."""
    return dense(lambda v: apply_range(deg, v, s, t), deg.spatial_shape(s))


def _deg(kind: str) -> ScaleSpaceDegradation | BlurDegradation:
    if kind == "ssd":
        return ScaleSpaceDegradation(8, 2, num_train_timesteps=60)  # 8 -> 4
    return BlurDegradation(6, num_train_timesteps=60)


def _pairs(deg: ScaleSpaceDegradation | BlurDegradation) -> list[tuple[int, int]]:
    c = deg.change_steps[0] if deg.change_steps else 30
    return [(c, c - 1), (c, c - 9), (c + 4, c), (c + 6, c + 5), (59, 40)]


def _step_maps(
    deg: LinearDegradation, t: int, s: int, eta: float, x0: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``x_s = off + A x_t + B xi`` of one DDIM step with the fixed prediction ``x0``."""
    sh_t, sh_s = deg.spatial_shape(t), deg.spatial_shape(s)
    d_t, d_s = math.prod(sh_t), math.prod(sh_s)
    zero_t, zero_s = torch.zeros(1, 1, *sh_t, dtype=F64), torch.zeros(1, 1, *sh_s, dtype=F64)

    def run(x_t: Tensor, xi: Tensor, pred: Tensor) -> Tensor:
        b = x_t.shape[0]
        return ddim_step(
            deg, pred.expand(b, *pred.shape[1:]), t, x_t, prev_t=s, eta=eta, noise=xi
        ).prev_sample

    off = run(zero_t, zero_s, x0).reshape(-1)
    a = dense(lambda v: run(v, zero_s.expand(d_t, 1, *sh_s), 0 * x0), sh_t)
    b = dense(lambda v: run(zero_t.expand(d_s, 1, *sh_t), v, 0 * x0), sh_s)
    return off, a, b


# ---------------------------------------------------------------- eta = 1 is the posterior
@pytest.mark.parametrize("kind", ["ssd", "blur"])
def test_eta_one_is_the_ancestral_posterior(kind: str) -> None:
    deg = _deg(kind)
    for t, s in _pairs(deg):
        co = posterior_coefficients(deg, t, s)
        sh_t, sh_s = deg.spatial_shape(t), deg.spatial_shape(s)
        gen = torch.Generator().manual_seed(t)
        x0 = torch.randn(1, 1, *sh_s, generator=gen, dtype=F64)
        x_t = torch.randn(1, 1, *sh_t, generator=gen, dtype=F64)
        # mean: the ancestral posterior mean, via the library's posterior_mean
        mean = ddim_step(deg, x0, t, x_t, prev_t=s, eta=1.0, noise=0 * x0).prev_sample
        torch.testing.assert_close(mean, posterior_mean(deg, x0, t, x_t, prev_t=s))
        # covariance: sigma_s^2 (I - rho c^2 M^T M) from the dense operator M
        m = _operator(deg, s, t)
        cov = co.sigma_s**2 * (torch.eye(m.shape[1], dtype=F64) - co.rho * co.c**2 * m.T @ m)
        _, _, b = _step_maps(deg, t, s, 1.0, x0)
        torch.testing.assert_close(b @ b.T, cov, atol=1e-12, rtol=0)
        # same noise, same sample as reverse_step's exact root
        xi = torch.randn(4, 3, *sh_s, generator=gen, dtype=F64)
        xs = torch.randn(4, 3, *sh_t, generator=gen, dtype=F64)
        x0b = torch.randn(4, 3, *sh_s, generator=gen, dtype=F64)
        torch.testing.assert_close(
            ddim_step(deg, x0b, t, xs, prev_t=s, eta=1.0, noise=xi).prev_sample,
            reverse_step(deg, x0b, t, xs, prev_t=s, noise=xi).prev_sample,
            atol=1e-13,
            rtol=0,
        )


@pytest.mark.parametrize("kind", ["ssd", "blur"])
def test_sampler_with_eta_one_gives_the_ancestral_samples(kind: str) -> None:
    deg = _deg(kind)

    def model(x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        size = x.shape[-1] if out_size is None else out_size
        h = torch.tanh(x.mean(dim=(-1, -2), keepdim=True) + t.view(-1, 1, 1, 1) / 100.0)
        return h.expand(*x.shape[:2], size, size)

    kw = {"steps": 12, "dtype": F64, "channels": 2}
    ref = scale_space_sample(model, deg, 3, generator=torch.Generator().manual_seed(1), **kw)  # type: ignore[arg-type]
    got = scale_space_sample(
        model, deg, 3, sampler="ddim", eta=1.0, generator=torch.Generator().manual_seed(1), **kw
    )  # type: ignore[arg-type]
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- every eta keeps the marginal
@given(
    eta=st.floats(0.0, 1.0),
    kind=st.sampled_from(["ssd", "blur"]),
    pair=st.integers(0, 4),
)
def test_every_eta_keeps_the_forward_marginal(eta: float, kind: str, pair: int) -> None:
    # With the exact prediction y = D_{0:s} x0 and x_t ~ N(sqrt(abar_t) M y, sigma_t^2 I),
    # x_s = off + A x_t + B xi must be N(sqrt(abar_s) y, sigma_s^2 I).
    deg = _deg(kind)
    t, s = _pairs(deg)[pair]
    abar_t, abar_s = float(deg.alphas_cumprod[t]), float(deg.alphas_cumprod[s])
    y = torch.randn(1, 1, *deg.spatial_shape(s), generator=torch.Generator().manual_seed(3))
    y = y.to(F64)
    off, a, b = _step_maps(deg, t, s, eta, y)
    mean_t = math.sqrt(abar_t) * apply_range(deg, y, s, t).reshape(-1)
    torch.testing.assert_close(off + a @ mean_t, math.sqrt(abar_s) * y.reshape(-1))
    cov = (1 - abar_t) * a @ a.T + b @ b.T
    torch.testing.assert_close(cov, (1 - abar_s) * torch.eye(cov.shape[0], dtype=F64))


def test_eta_zero_adds_noise_only_outside_the_range_of_the_adjoint() -> None:
    deg = _deg("ssd")
    c = deg.change_steps[0]
    x0 = torch.zeros(1, 1, 8, 8, dtype=F64)
    _, _, b = _step_maps(deg, c, c - 3, 0.0, x0)
    # the 8 -> 4 resize has rank 4 per axis: 64 - 16 = 48 fresh components, variance sigma_s^2
    sigma_s2 = 1 - float(deg.alphas_cumprod[c - 3])
    ev = torch.linalg.eigvalsh(b @ b.T)
    assert torch.allclose(ev[:16], torch.zeros(16, dtype=F64), atol=1e-12)
    assert torch.allclose(ev[16:], torch.full((48,), sigma_s2, dtype=F64))
    # a same-resolution step at eta = 0 draws nothing and is the DDPM scheduler's DDIM step
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    x_t = torch.randn(2, 1, 4, 4, dtype=F64)
    pred = torch.randn(2, 1, 4, 4, dtype=F64)
    out = ddim_step(deg, pred, c + 5, x_t, prev_t=c + 1, generator=gen).prev_sample
    assert torch.equal(gen.get_state(), state)
    sched = DDPMScheduler(60, prediction_type="sample", clip_sample=None)
    ref = sched.ddim_step(pred, c + 5, x_t, prev_t=c + 1).prev_sample
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_one_level_ddim_sampler_is_ddim(eta: float) -> None:
    def model(x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        return torch.tanh(0.7 * x + t.view(-1, 1, 1, 1) / 1000.0)

    ddpm = DDPMScheduler(prediction_type="sample", clip_sample=1.0)
    ref = sample(
        lambda x, t: model(x, t),
        ddpm,
        (2, 3, 8, 8),
        steps=15,
        sampler="ddim",
        eta=eta,
        generator=torch.Generator().manual_seed(5),
        dtype=F64,
    )
    for deg in (ScaleSpaceDegradation(8, 1), GaussianDegradation((8, 8))):
        got = scale_space_sample(
            model,
            deg,
            2,
            channels=3,
            steps=15,
            sampler="ddim",
            eta=eta,
            generator=torch.Generator().manual_seed(5),
            dtype=F64,
        )
        torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)


def test_spectra_match_the_dense_gram_operator() -> None:
    for kind in ("ssd", "blur"):
        deg = _deg(kind)
        assert isinstance(deg, SupportsGramSpectrum)
        for t, s in _pairs(deg):
            sh_s = deg.spatial_shape(s)
            spec = gram_spectrum(deg, t, s)
            assert isinstance(spec, SeparableSpectrum)
            m = _operator(deg, s, t)
            if spec.basis is None:
                torch.testing.assert_close(m.T @ m, torch.eye(m.shape[1], dtype=F64))
                continue
            u = spec.basis
            gram = dense(lambda v: u @ (spec.eigenvalues * (u.T @ v @ u)) @ u.T, sh_s)  # noqa: B023
            torch.testing.assert_close(gram, m.T @ m, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- the sampler on Gaussian data
def _gaussian_oracle(
    deg: ScaleSpaceDegradation, mu: Tensor, cov: Tensor
) -> Callable[[Tensor, Tensor, int | None], Tensor]:
    """The exact E[D_{0:t-1} x0 | x_t] for x0 ~ N(mu, cov) on 1-channel images."""
    n = deg.image_size
    down = {r: dense(lambda v, r=r: deg._down_to(v, r), (n, n)) for r in deg.resolutions}  # type: ignore[misc]
    cache: dict[int, tuple[Tensor, Tensor]] = {}

    def model(x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        tt = int(t[0])
        if tt not in cache:
            abar = float(deg.alphas_cumprod[tt])
            k, p = math.sqrt(abar) * down[deg.resolution(tt)], down[deg.resolution(tt - 1)]
            cov_t = k @ cov @ k.T + (1 - abar) * torch.eye(k.shape[0], dtype=F64)
            gain = p @ cov @ k.T @ torch.linalg.inv(cov_t)
            cache[tt] = (gain, p @ mu - gain @ (k @ mu))
        gain, offset = cache[tt]
        out = x.reshape(x.shape[0], -1) @ gain.T + offset
        return out.reshape(x.shape[0], 1, out_size, out_size)  # type: ignore[arg-type]

    return model


def _sampler_law(
    deg: ScaleSpaceDegradation,
    model: Callable[[Tensor, Tensor, int | None], Tensor],
    steps: int | None,
    eta: float | None,
) -> tuple[Tensor, Tensor]:
    """The exact law N(m, C) of the samples of an affine model, step by step.

    Every step is affine in (x_t, xi): it maps N(m, R R^T) to N(m', R' R'^T) with the
    columns of R' the responses to the columns of R and to unit noises. ``eta=None``
    is the ancestral step.
    """
    ts = [int(v) for v in deg.timesteps(steps).tolist()]
    d = math.prod(deg.spatial_shape(ts[0]))
    m, root = torch.zeros(d, dtype=F64), torch.eye(d, dtype=F64)
    for t, s in zip(ts, [*ts[1:], -1], strict=True):
        sh_t, sh_s = deg.spatial_shape(t), deg.spatial_shape(s)
        d_s = math.prod(sh_s) if s >= 0 else 0
        k = root.shape[1]
        x_t = torch.cat([m[None], m + root.T, m.expand(d_s, -1)]).reshape(-1, 1, *sh_t)
        xi = torch.zeros(x_t.shape[0], 1, *sh_s, dtype=F64)
        xi[k + 1 :] = torch.eye(d_s, dtype=F64).reshape(d_s, 1, *sh_s)
        pred = model(x_t, torch.full((x_t.shape[0],), t), sh_s[-1])
        if eta is None:
            out = reverse_step(deg, pred, t, x_t, prev_t=s, noise=xi).prev_sample
        else:
            out = ddim_step(deg, pred, t, x_t, prev_t=s, eta=eta, noise=xi).prev_sample
        out = out.reshape(out.shape[0], -1)
        m = out[0]
        ev, v = torch.linalg.eigh((out[1:] - m).T @ (out[1:] - m))
        root = v * ev.clamp(min=0.0).sqrt()
    return m, root @ root.T


def _gaussian_data(gen: torch.Generator) -> tuple[Tensor, Tensor]:
    basis = torch.randn(16, 16, generator=gen, dtype=F64)
    cov = 0.03 * basis @ basis.T / 16 + 0.02 * torch.eye(16, dtype=F64)
    return 0.3 * torch.randn(16, generator=gen, dtype=F64), cov


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sampler_law_matches_gaussian_data_with_every_step(eta: float) -> None:
    # 4x4 -> 2x2 pyramid, T = 1000, every step, the exact denoiser of x0 ~ N(mu, cov)
    # (pixel variances 0.035..0.076): the samples' law is the data's up to the
    # discretisation error, 1.2% (eta 0) and 2.8% (eta 1) of |cov| in Frobenius norm
    # here (with 10 respaced steps both are above 60%).
    deg = ScaleSpaceDegradation(4, 2)
    mu, cov = _gaussian_data(torch.Generator().manual_seed(11))
    mean, law = _sampler_law(deg, _gaussian_oracle(deg, mu, cov), None, eta)
    assert float((mean - mu).abs().max()) < 1e-3
    assert float(torch.linalg.norm(law - cov) / torch.linalg.norm(cov)) < 0.04
    # eta = 1 is the ancestral sampler, step for step
    if eta == 1.0:
        _, ancestral = _sampler_law(deg, _gaussian_oracle(deg, mu, cov), 10, None)
        _, ddim_one = _sampler_law(deg, _gaussian_oracle(deg, mu, cov), 10, 1.0)
        torch.testing.assert_close(ddim_one, ancestral, atol=1e-12, rtol=0)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sampler_draws_from_its_exact_law(eta: float) -> None:
    # scale_space_sample itself, 12 respaced steps (far from the data law, which makes the
    # check sharp), against _sampler_law: n = 4000 draws of 16 pixels, standard errors
    # sqrt(C_ii / n) for the means and about sqrt(2 / n) C_ii for the variances.
    deg = ScaleSpaceDegradation(4, 2, num_train_timesteps=200, beta_end=0.1)
    mu, cov = _gaussian_data(torch.Generator().manual_seed(11))
    model = _gaussian_oracle(deg, mu, cov)
    mean, law = _sampler_law(deg, model, 12, eta)
    n = 4000
    out = scale_space_sample(
        model,
        deg,
        n,
        channels=1,
        steps=12,
        sampler="ddim",
        eta=eta,
        clip_sample=None,
        dtype=F64,
        generator=torch.Generator().manual_seed(12),
    ).reshape(n, 16)
    sd = law.diagonal().sqrt()
    assert float(((out.mean(0) - mean) / sd).abs().max()) < 4.5 / math.sqrt(n)
    emp_var = out.var(0)
    assert float((emp_var / law.diagonal() - 1).abs().max()) < 4.5 * math.sqrt(2 / n)
    assert float(torch.linalg.norm(law - cov) / torch.linalg.norm(cov)) > 0.2  # far from data


# ---------------------------------------------------------------- bad input
def test_bad_input() -> None:
    deg = _deg("ssd")
    x_t, x0 = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    for eta in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="eta must be a float in"):
            ddim_step(deg, x0, 50, x_t, prev_t=49, eta=eta)
    with pytest.raises(ValueError, match="null_tol"):
        ddim_step(deg, x0, 50, x_t, prev_t=49, null_tol=-1.0)
    with pytest.raises(ValueError, match="clip_sample"):
        ddim_step(deg, x0, 50, x_t, prev_t=49, clip_sample=0.0)
    with pytest.raises(ValueError, match="x0_pred must have shape"):
        ddim_step(deg, torch.zeros(1, 1, 8, 8), 50, x_t, prev_t=49)
    c = deg.change_steps[0]
    with pytest.raises(ValueError, match="noise must have shape"):
        ddim_step(deg, torch.zeros(1, 1, 8, 8), c, x_t, prev_t=c - 1, noise=x_t)
    with pytest.raises(TypeError, match="gram_spectrum"):
        gram_spectrum(object(), 1, 0)  # type: ignore[arg-type]
