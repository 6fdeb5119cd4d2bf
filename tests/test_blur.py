"""BlurDegradation: heat dissipation in the DCT basis and its exact reverse step."""

from __future__ import annotations

import math

import pytest
import scipy.fft
import torch
from torch import Tensor

from scalemix.degradation import (
    BlurDegradation,
    apply_range,
    posterior_mean,
    reverse_step,
)
from scalemix.degradation.blur import dct_matrix
from scalemix.nn.flexi_unet import FlexiUNet
from scalemix.scale_space import scale_space_loss_terms, scale_space_sample
from scalemix.testing import check_linear_degradation

F64 = torch.float64
BLUR8 = BlurDegradation(8, 30)


def dense(deg: BlurDegradation, start: int, stop: int) -> Tensor:
    """Matrix (64, 64) of D_{start+1:stop} on 8x8 images."""
    basis = torch.eye(64, dtype=F64).reshape(64, 1, 8, 8)
    return apply_range(deg, basis, start, stop).reshape(64, 64).T


def test_dct_matrix_is_scipys_orthonormal_dct() -> None:
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(0), dtype=F64)
    c5, c7 = dct_matrix(5), dct_matrix(7)
    expected = scipy.fft.dctn(x.numpy(), type=2, norm="ortho")
    assert torch.allclose(c5 @ x @ c7.T, torch.from_numpy(expected), atol=1e-12)
    assert torch.allclose(c7 @ c7.T, torch.eye(7, dtype=F64), atol=1e-12)


@pytest.mark.parametrize(("k", "l"), [(0, 0), (1, 0), (2, 3), (7, 7)])
def test_cosine_modes_decay_like_a_gaussian_blur(k: int, l: int) -> None:
    # A Gaussian of std sigma scales frequency w by exp(-w^2 sigma^2 / 2), w = pi k / N.
    n = 8
    j = torch.arange(n, dtype=F64) + 0.5
    mode = torch.outer(torch.cos(math.pi * k * j / n), torch.cos(math.pi * l * j / n))
    for t in (0, 10, 29):
        sigma = float(BLUR8.blur_sigmas[t])
        gain = math.exp(-((math.pi / n) ** 2) * (k**2 + l**2) * sigma**2 / 2)
        out = BLUR8.degrade(mode[None, None], t)[0, 0]
        assert torch.allclose(out, gain * mode, atol=1e-12)


def test_schedule_is_log_linear_from_half_a_pixel_to_half_the_image() -> None:
    deg = BlurDegradation(16, 11)
    assert float(deg.blur_sigmas[0]) == pytest.approx(0.5)
    assert float(deg.blur_sigmas[-1]) == pytest.approx(8.0)
    ratios = deg.blur_sigmas[1:] / deg.blur_sigmas[:-1]
    assert torch.allclose(ratios, torch.full_like(ratios, 16.0**0.1))
    assert torch.allclose(deg.blur_times, deg.blur_sigmas**2 / 2)


def test_mass_is_conserved_and_steps_compose() -> None:
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(1), dtype=F64)
    for t in (-1, 0, 13, 29):
        out = BLUR8.degrade(x, t)
        assert torch.allclose(out.mean((-1, -2)), x.mean((-1, -2)), atol=1e-12)
        assert torch.allclose(out, apply_range(BLUR8, x, -1, t), atol=1e-12)
    per_item = BLUR8.degrade(x, torch.tensor([-1, 5, 29]))
    for i, t in enumerate((-1, 5, 29)):
        assert torch.allclose(per_item[i], BLUR8.degrade(x[i : i + 1], t)[0], atol=1e-14)


def test_passes_the_linear_degradation_check() -> None:
    check_linear_degradation(BLUR8, max_examples=10)
    check_linear_degradation(BlurDegradation(4, 20, blur_sigma_max=6.0), channels=3)


def _joint(deg: BlurDegradation, x0: Tensor, s: int, t: int) -> tuple[Tensor, ...]:
    """Moments of (x_s, x_t) | x0 through the per-step process x_k = sqrt(a_k) D_k x_{k-1} +
    eta_k, Cov(eta_k) = sigma_k^2 I - a_k sigma_{k-1}^2 D_k D_k^T, from dense matrices."""
    abar = [1.0, *deg.alphas_cumprod.tolist()]
    eye = torch.eye(64, dtype=F64)
    mean, cov = x0.reshape(-1), torch.zeros(64, 64, dtype=F64)
    mu_s, c_ss, cross = mean, cov, cov
    for k in range(t + 1):
        a = abar[k + 1] / abar[k]
        d = dense(deg, k - 1, k)
        q = (1 - abar[k + 1]) * eye - a * (1 - abar[k]) * d @ d.T
        assert float(torch.linalg.eigvalsh(q).min()) > -1e-12  # a valid forward step
        mean, cov, cross = math.sqrt(a) * d @ mean, a * d @ cov @ d.T + q, math.sqrt(a) * d @ cross
        if k == s:
            mu_s, c_ss, cross = mean, cov, cov
    return mu_s, mean, c_ss, cross, cov


@pytest.mark.parametrize(("t", "s"), [(1, 0), (5, 4), (20, 12), (29, 0), (29, 28), (3, -1)])
def test_posterior_equals_dense_gaussian_conditioning(t: int, s: int) -> None:
    gen = torch.Generator().manual_seed(t)
    x0 = torch.rand(1, 1, 8, 8, generator=gen, dtype=F64) * 2 - 1
    mu_s, mu_t, c_ss, c_ts, c_tt = _joint(BLUR8, x0, s, t)
    # the per-step process has the marginal covariance sigma_t^2 I
    assert torch.allclose(c_tt, (1 - float(BLUR8.alphas_cumprod[t])) * torch.eye(64, dtype=F64))
    x_t = (mu_t + torch.randn(64, generator=gen, dtype=F64)).reshape(1, 1, 8, 8)
    gain = torch.linalg.solve(c_tt, c_ts).T
    mean_ref = mu_s + gain @ (x_t.reshape(-1) - mu_t)
    cov_ref = c_ss - gain @ c_ts
    abar_s = float(BLUR8.alphas_cumprod[s]) if s >= 0 else 1.0
    x0_hat = mu_s.reshape(1, 1, 8, 8) / math.sqrt(abar_s)  # = D_{0:s} x0
    mean = posterior_mean(BLUR8, x0_hat, t, x_t, prev_t=s)
    assert float((mean.reshape(-1) - mean_ref).abs().max()) < 1e-10
    basis = torch.eye(64, dtype=F64).reshape(64, 1, 8, 8)
    root = BLUR8.covariance_root(basis, t, s).reshape(64, 64).T
    assert float((root @ root.T - cov_ref).abs().max()) < 1e-10
    xi = torch.randn(1, 1, 8, 8, generator=gen, dtype=F64)
    step = reverse_step(BLUR8, x0_hat, t, x_t, prev_t=s, noise=xi).prev_sample
    expected = mean_ref + (root @ xi.reshape(-1) if s >= 0 else 0)
    assert float((step.reshape(-1) - expected).abs().max()) < 1e-10


def test_loss_and_sampler_run_it_unchanged() -> None:
    deg = BlurDegradation(8, 20)
    model = FlexiUNet(
        in_channels=1,
        base_channels=8,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        image_size=8,
    )
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=gen) * 2 - 1
    terms = scale_space_loss_terms(model, deg, x0, generator=gen)
    assert terms.loss.ndim == 0 and bool(torch.isfinite(terms.loss))
    # the target is D_{0:t-1} x0 of each item
    t = terms.t
    assert torch.equal(deg.target(x0, t), deg.degrade(x0, t - 1))
    samples = scale_space_sample(
        model, deg, 2, channels=1, steps=5, generator=torch.Generator().manual_seed(1)
    )
    assert samples.shape == (2, 1, 8, 8) and bool(torch.isfinite(samples).all())


def test_oracle_sampler_recovers_the_data() -> None:
    # A model that returns D_{0:s} x0 of one fixed image: every step's mean is exact and
    # the last step (s = -1) returns x0 itself.
    deg = BlurDegradation(8, 15)
    x0 = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=F64) * 2 - 1
    calls: list[int] = []

    def oracle(x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        calls.append(int(t[0]))
        return deg.target(x0.expand(x.shape[0], -1, -1, -1), t)

    out = scale_space_sample(oracle, deg, 3, channels=1, dtype=F64, clip_sample=None)
    assert calls == list(range(14, -1, -1))
    assert torch.allclose(out, x0.expand(3, -1, -1, -1), atol=1e-12)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="image_size"):
        BlurDegradation(0)
    with pytest.raises(ValueError, match="blur_sigma_min"):
        BlurDegradation(8, blur_sigma_min=5.0, blur_sigma_max=1.0)
    with pytest.raises(ValueError, match=r"shape \(b, c, 8, 8\)"):
        BLUR8.apply(torch.zeros(1, 1, 4, 4), 3)
    with pytest.raises(ValueError, match="must lie in"):
        BLUR8.degrade(torch.zeros(1, 1, 8, 8), 30)
    with pytest.raises(TypeError, match="integer"):
        BLUR8.degrade(torch.zeros(1, 1, 8, 8), torch.tensor(1.5))
    with pytest.raises(ValueError, match="positive int"):
        dct_matrix(0)
