"""The generalized reverse step: mean, covariance, closed form, Lanczos, isotropic."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from scalemix.debug import check_values
from scalemix.degradation import (
    GaussianDegradation,
    LinearDegradation,
    ScaleSpaceDegradation,
    posterior_coefficients,
    posterior_mean,
    reverse_step,
)
from scalemix.degradation.lanczos import lanczos_function, power_iteration
from scalemix.degradation.posterior import lanczos_covariance_root
from scalemix.scheduler import DDPMScheduler
from scalemix.schedules import linear_beta_schedule

F64 = torch.float64


def dense(op: Callable[[Tensor], Tensor], in_shape: tuple[int, ...]) -> Tensor:
    """Matrix of a linear map on (b, 1, *in_shape) tensors: (out_dim, in_dim)."""
    n = math.prod(in_shape)
    out = op(torch.eye(n, dtype=F64).reshape(n, 1, *in_shape))
    return out.reshape(n, -1).T


class BlurDegradation:
    """A DCT-domain blur (Hoogeboom & Salimans, 2023 style) as a LinearDegradation.

    Every step applies the same symmetric contraction B = V diag(f) V^T on each axis.
    It has no closed-form covariance root, so only the generic path applies.
    """

    def __init__(self, n: int = 8, num_timesteps: int = 30) -> None:
        k = torch.arange(n, dtype=F64)
        v = torch.cos(math.pi * (k[None, :] + 0.5) * k[:, None] / n) * math.sqrt(2 / n)
        v[0] /= math.sqrt(2)  # orthonormal DCT-II rows
        self.b = v.T @ torch.diag(torch.exp(-0.05 * k**2)) @ v
        self.n = n
        self._abar = torch.cumprod(1 - linear_beta_schedule(num_timesteps, 1e-3, 0.2), 0)

    @property
    def num_train_timesteps(self) -> int:
        return int(self._abar.numel())

    @property
    def alphas_cumprod(self) -> Tensor:
        return self._abar

    def spatial_shape(self, t: int) -> tuple[int, ...]:
        return (self.n, self.n)

    def apply(self, x: Tensor, t: int) -> Tensor:
        b = self.b.to(x.dtype)
        return b @ x @ b.T

    def apply_adjoint(self, y: Tensor, t: int) -> Tensor:
        b = self.b.to(y.dtype)
        return b.T @ y @ b


def joint_moments(
    deg: LinearDegradation, x0: Tensor, s: int, t: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Moments of (x_s, x_t) | x0 propagated through the *per-step* forward process.

    x_k = sqrt(alpha_k) D_k x_{k-1} + eta_k, Cov(eta_k) = sigma_k^2 I - alpha_k
    sigma_{k-1}^2 D_k D_k^T, starting from x_{-1} = x0: independent of the marginal
    formula and of the posterior code. Returns (mu_s, mu_t, C_ss, C_ts, C_tt).
    """
    abar = [1.0, *deg.alphas_cumprod.tolist()]  # abar[k + 1] = abar_k
    mean = x0.reshape(-1)
    cov = torch.zeros(mean.numel(), mean.numel(), dtype=F64)
    mu_s, c_ss, cross = mean, cov, cov
    for k in range(t + 1):
        alpha = abar[k + 1] / abar[k]
        probe = torch.zeros(1, 1, *deg.spatial_shape(k - 1), dtype=F64)
        if deg.apply(probe, k) is probe:  # an identity step (cheap scalar update)
            mean, cross = math.sqrt(alpha) * mean, math.sqrt(alpha) * cross
            q_scale = (1 - abar[k + 1]) - alpha * (1 - abar[k])
            cov = alpha * cov + q_scale * torch.eye(len(cov), dtype=F64)
        else:
            d = dense(lambda v, k=k: deg.apply(v, k), deg.spatial_shape(k - 1))
            eye = torch.eye(d.shape[0], dtype=F64)
            q = (1 - abar[k + 1]) * eye - alpha * (1 - abar[k]) * d @ d.T
            mean = math.sqrt(alpha) * d @ mean
            cov = alpha * d @ cov @ d.T + q
            cross = math.sqrt(alpha) * d @ cross
        if k == s:
            mu_s, c_ss, cross = mean, cov, cov
    return mu_s, mean, c_ss, cross, cov


def conditional(
    deg: LinearDegradation, x0: Tensor, x_t: Tensor, s: int, t: int
) -> tuple[Tensor, Tensor]:
    mu_s, mu_t, c_ss, c_ts, c_tt = joint_moments(deg, x0, s, t)
    gain = torch.linalg.solve(c_tt, c_ts).T  # C_st C_tt^{-1}
    return mu_s + gain @ (x_t.reshape(-1) - mu_t), c_ss - gain @ c_ts


SSD8 = ScaleSpaceDegradation(8, 2)  # 8 px for t < 750, 4 px after
SSD8_3 = ScaleSpaceDegradation(8, 3)  # changes at 555 (8 -> 4) and 889 (4 -> 2)
BLUR = BlurDegradation()
# pyramids that do not halve: 7 -> 5 (change at 750), 12 -> 8 -> 5 (at 555 and 889)
SSD7_5 = ScaleSpaceDegradation(resolutions=(7, 5))
SSD12 = ScaleSpaceDegradation(resolutions=(12, 8, 5))


@pytest.mark.parametrize(
    ("deg", "t", "s", "method"),
    [
        (SSD8, 750, 749, "exact"),  # resolution change
        (SSD8, 760, 700, "exact"),  # respaced step across the change
        (SSD8, 500, 499, "exact"),  # same resolution
        (SSD8, 999, 950, "exact"),  # same (low) resolution, respaced
        (SSD8, 750, 749, "lanczos"),
        (SSD8_3, 889, 554, "lanczos"),  # two changes in one step: generic path only
        (SSD7_5, 750, 749, "exact"),
        (SSD7_5, 780, 700, "exact"),
        (SSD7_5, 750, 749, "lanczos"),
        (SSD12, 555, 554, "exact"),  # 8 -> 12
        (SSD12, 889, 888, "exact"),  # 5 -> 8
        (SSD12, 900, 600, "exact"),  # respaced across 5 -> 8
        (SSD12, 889, 554, "lanczos"),  # 5 -> 8 -> 12 in one step
        (BLUR, 20, 12, "lanczos"),
        (BLUR, 5, 4, "lanczos"),
    ],
)
def test_posterior_matches_dense_gaussian_conditioning(
    deg: LinearDegradation, t: int, s: int, method: str
) -> None:
    gen = torch.Generator().manual_seed(t)
    n = deg.spatial_shape(-1)[0]
    x0 = torch.rand(1, 1, n, n, generator=gen, dtype=F64) * 2 - 1
    mu_s, mu_t, c_ss, _, c_tt = joint_moments(deg, x0, s, t)
    # the per-step process has marginals sigma^2 I (the claim x_t = M_{1:t} x0 + sigma_t eps)
    for k, cov in ((t, c_tt), (s, c_ss)):
        var = 1 - float(deg.alphas_cumprod[k]) if k >= 0 else 0.0
        assert torch.allclose(cov, var * torch.eye(len(cov), dtype=F64), atol=1e-12)
    x_t = (mu_t + torch.randn(mu_t.shape, generator=gen, dtype=F64)).reshape(
        1, 1, *deg.spatial_shape(t)
    )
    mean_ref, cov_ref = conditional(deg, x0, x_t, s, t)
    x0_hat = (
        mu_s.reshape(1, 1, *deg.spatial_shape(s)) / posterior_coefficients(deg, t, s).sqrt_abar_s
    )
    mean = posterior_mean(deg, x0_hat, t, x_t, prev_t=s)
    assert torch.allclose(mean.reshape(-1), mean_ref, atol=1e-10)
    if method == "exact":
        root = dense(lambda xi: deg.covariance_root(xi, t, s), deg.spatial_shape(s))  # type: ignore[attr-defined]
    else:
        root = dense(lambda xi: lanczos_covariance_root(deg, xi, t, prev_t=s), deg.spatial_shape(s))
    assert torch.allclose(root, root.T, atol=1e-10)  # the symmetric square root
    assert torch.allclose(root @ root.T, cov_ref, atol=1e-10)


@pytest.mark.parametrize(
    "deg",
    [
        SSD8,
        SSD8_3,
        ScaleSpaceDegradation(16, 4),
        SSD7_5,
        SSD12,
        ScaleSpaceDegradation(resolutions=(16, 12, 8)),
        ScaleSpaceDegradation(16, 3, factor=1.5, unet_levels=3),
    ],
)
def test_covariance_is_psd_at_every_change(deg: ScaleSpaceDegradation) -> None:
    for t in deg.change_steps:
        co = posterior_coefficients(deg, t)
        m = dense(lambda v, t=t: deg.apply(v, t), deg.spatial_shape(t - 1))
        cov = co.sigma_s**2 * (torch.eye(m.shape[1], dtype=F64) - co.rho * co.c**2 * m.T @ m)
        assert float(torch.linalg.eigvalsh(cov).min()) >= -1e-12
        # the highest frequencies (null space of M) get the full variance sigma_s^2
        assert float(torch.linalg.eigvalsh(cov).max()) == pytest.approx(co.sigma_s**2, rel=1e-12)


@pytest.mark.parametrize(
    ("t", "s"), [(1, 0), (500, 499), (600, 520), (900, 899), (999, 760), (3, -1)]
)
def test_same_resolution_step_is_ddpm_posterior(t: int, s: int) -> None:
    ddpm = DDPMScheduler(prediction_type="sample")
    gen = torch.Generator().manual_seed(t)
    r = SSD8.resolution(t)
    x0 = torch.rand(2, 3, r, r, generator=gen, dtype=F64) * 2 - 1
    x_t = torch.randn(2, 3, r, r, generator=gen, dtype=F64)
    post = ddpm.posterior(x0, x_t, t, s)
    out = SSD8.reverse_step(x0, t, x_t, prev_t=s, noise=torch.zeros_like(x0))
    assert torch.allclose(out.prev_sample, post.mean, atol=1e-12)
    if s >= 0:
        std = SSD8.covariance_root(torch.ones_like(x0), t, s)
        assert torch.allclose(std**2, post.variance.expand_as(std), rtol=1e-10, atol=0)
    if s == t - 1:
        assert float(std[0, 0, 0, 0]) ** 2 == pytest.approx(
            float(ddpm.posterior_variance[t]), rel=1e-10
        )


def test_closed_form_matches_dense_square_root() -> None:
    # n = 8 -> 4: the 64 x 64 covariance, its symmetric root by eigh, applied to xi.
    t = SSD8.change_steps[0]
    co = posterior_coefficients(SSD8, t)
    m = dense(lambda v: SSD8.apply(v, t), (8, 8))
    cov = co.sigma_s**2 * (torch.eye(64, dtype=F64) - co.rho * co.c**2 * m.T @ m)
    w, v = torch.linalg.eigh(cov)
    root = v @ torch.diag(w.clamp(min=0).sqrt()) @ v.T
    xi = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    expected = (xi.reshape(15, 64) @ root.T).reshape(5, 3, 8, 8)
    assert torch.allclose(SSD8.covariance_root(xi, t, t - 1), expected, atol=1e-12)


@pytest.mark.parametrize(
    ("sizes", "dtype", "tol"),
    [
        ((8, 4), F64, 1e-10),
        ((64, 32), F64, 1e-10),
        ((64, 32), torch.float32, 2e-5),
        ((64, 40), F64, 1e-10),
        ((40, 24), F64, 1e-10),
        ((48, 32), F64, 1e-10),
        ((7, 5), F64, 1e-10),
        ((40, 24), torch.float32, 2e-5),
    ],
)
def test_closed_form_matches_lanczos(
    sizes: tuple[int, int], dtype: torch.dtype, tol: float
) -> None:
    # The spectrum of I - rho c^2 M^T M lies in [0.745, 1]; Lanczos error for sqrt decays
    # like q^k with q = (sqrt(1/0.745) - 1) / (sqrt(1/0.745) + 1) < 0.08, so after 40
    # steps (q^40 < 1e-43) only rounding error is left: ~1e-15 in float64 and ~1e-6
    # in float32 (relative to |xi|, entries are O(1)).
    # For the non-halving pairs lambda_max(D^T D) is at most 0.75 (not 0.25), so the
    # spectrum lies in [1 - 0.75^2, 1] ~ [0.44, 1], q < 0.2 and q^40 < 1e-27: still exact.
    deg = ScaleSpaceDegradation(resolutions=sizes)
    size = sizes[0]
    t = deg.change_steps[0]
    xi = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=F64).to(
        dtype
    )
    exact = deg.covariance_root(xi, t, t - 1)
    lanczos = lanczos_covariance_root(deg, xi, t)
    assert float((exact - lanczos).abs().max()) < tol


def test_empirical_covariance_of_draws() -> None:
    # N = 20000 draws of Sigma^{1/2} xi (64-dim). The sample covariance entry (i, j) has
    # standard deviation sqrt((S_ii S_jj + S_ij^2) / N) <= sqrt(2 / N) sigma_s^2; 6 of them
    # bound the maximum over the 64 * 64 entries.
    n = 20000
    t = SSD8.change_steps[0]
    co = posterior_coefficients(SSD8, t)
    xi = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=F64)
    draws = SSD8.covariance_root(xi, t, t - 1).reshape(n, 64)
    m = dense(lambda v: SSD8.apply(v, t), (8, 8))
    cov = co.sigma_s**2 * (torch.eye(64, dtype=F64) - co.rho * co.c**2 * m.T @ m)
    emp = draws.T @ draws / n  # the mean is zero by construction
    assert float((emp - cov).abs().max()) < 6 * math.sqrt(2 / n) * co.sigma_s**2


def test_lanczos_function_on_dense_matrices() -> None:
    gen = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=gen, dtype=F64))
    w = torch.linspace(0.1, 1.0, 30, dtype=F64)
    a = q @ torch.diag(w) @ q.T
    v = torch.randn(4, 30, generator=gen, dtype=F64)
    for fn, ref in ((torch.sqrt, w.sqrt()), (torch.exp, w.exp())):
        expected = v @ (q @ torch.diag(ref) @ q.T)
        got = lanczos_function(lambda x: x @ a, v, fn, num_iterations=30)
        assert torch.allclose(got, expected, atol=1e-10)
    # a multiple of the identity breaks down after one step and stays exact
    got = lanczos_function(lambda x: 0.49 * x, v, torch.sqrt, num_iterations=40)
    assert torch.allclose(got, 0.7 * v, atol=1e-14)
    assert torch.equal(
        lanczos_function(lambda x: x @ a, torch.zeros(1, 30, dtype=F64), torch.sqrt),
        torch.zeros(1, 30, dtype=F64),
    )
    lam = power_iteration(lambda x: x @ a, torch.ones(1, 30, dtype=F64), num_iterations=300)
    assert lam <= 1.0 + 1e-12 and lam == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="num_iterations"):
        lanczos_function(lambda x: x, v, torch.sqrt, num_iterations=0)
    with pytest.raises(ValueError, match="non-zero"):
        power_iteration(lambda x: x, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="preserve the shape"):
        lanczos_function(lambda x: x[:, :2], v, torch.sqrt)


def test_power_iteration_finds_lambda_max_of_downsample() -> None:
    t = SSD8.change_steps[0]
    lam_true = float(downsample_lam_max(8))
    lam = power_iteration(
        lambda v: SSD8.apply_adjoint(SSD8.apply(v, t), t),
        torch.ones(1, 1, 8, 8, dtype=F64),
        num_iterations=100,
    )
    assert lam <= lam_true + 1e-14 and lam == pytest.approx(lam_true, rel=1e-8)


def downsample_lam_max(n: int) -> float:
    from scalemix.degradation.resize import downsample_spectrum

    return float(downsample_spectrum(n).eigenvalues.max()) ** 2


class _Expanding(GaussianDegradation):
    """D_t = 2.5 I at t = 5: an ill-posed forward step (Sigma would not be PSD)."""

    def apply(self, x: Tensor, t: int) -> Tensor:
        return 2.5 * x if t == 5 else x

    apply_adjoint = apply


def test_lanczos_clamps_rho_below_one_over_lambda_max() -> None:
    deg = _Expanding((4, 4), num_train_timesteps=10)
    xi = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    co = posterior_coefficients(deg, 5)
    assert co.rho * co.c**2 * 6.25 > 1  # unclamped, the covariance is indefinite
    root = lanczos_covariance_root(deg, xi, 5, safety=1e-3)
    assert torch.allclose(root, co.sigma_s * math.sqrt(1e-3) * xi, rtol=1e-9)


def test_isotropic_shortcut() -> None:
    t = SSD8.change_steps[0]
    gen = torch.Generator().manual_seed(4)
    x0 = torch.rand(2, 3, 8, 8, generator=gen, dtype=F64)
    x_t = torch.randn(2, 3, 4, 4, generator=gen, dtype=F64)
    xi = torch.randn(2, 3, 8, 8, generator=gen, dtype=F64)
    co = posterior_coefficients(SSD8, t)
    iso = SSD8.reverse_step(x0, t, x_t, method="isotropic", noise=xi).prev_sample
    mean = posterior_mean(SSD8, x0, t, x_t)
    assert torch.allclose(iso - mean, co.sigma_s * math.sqrt(1 - co.rho * co.c**2) * xi, atol=1e-14)


def test_reverse_step_noise_and_generator() -> None:
    t = SSD8.change_steps[0]
    x0, x_t = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 4, 4)
    a = SSD8.reverse_step(x0, t, x_t, generator=torch.Generator().manual_seed(7)).prev_sample
    b = SSD8.reverse_step(x0, t, x_t, generator=torch.Generator().manual_seed(7)).prev_sample
    assert torch.equal(a, b) and a.shape == (2, 3, 8, 8) and a.dtype == torch.float32
    final = SSD8.reverse_step(x0 + 3, 0, torch.zeros(2, 3, 8, 8), prev_t=-1, clip_sample=1.0)
    assert torch.equal(final.prev_sample, torch.ones(2, 3, 8, 8))  # no noise at s = -1
    assert torch.equal(final.pred_original_sample, torch.ones(2, 3, 8, 8))


def test_reverse_step_bad_input() -> None:
    t = SSD8.change_steps[0]
    x0, x_t = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="method"):
        SSD8.reverse_step(x0, t, x_t, method="svd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 3, 8, 8\)"):
        SSD8.reverse_step(x0, t, x_t, noise=torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="x0_pred must have shape"):
        SSD8.reverse_step(torch.zeros(2, 3, 4, 4), t, x_t)
    with pytest.raises(ValueError, match="x_t must have shape"):
        SSD8.reverse_step(x0, t, torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="smaller than t"):
        SSD8.reverse_step(x0, t, x_t, prev_t=t)
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        SSD8.reverse_step(x0, 1000, x_t)
    with pytest.raises(ValueError, match="share one timestep"):
        SSD8.reverse_step(x0, torch.tensor([t, t + 1]), x_t)
    with check_values(), pytest.raises(ValueError, match="NaN"):
        SSD8.reverse_step(x0, t, x_t * float("nan"))
    with pytest.raises(ValueError, match="clip_sample"):
        SSD8.reverse_step(x0, t, x_t, clip_sample=0.0)
    with pytest.raises(TypeError, match="lanczos"):
        reverse_step(BLUR, torch.zeros(1, 1, 8, 8), 5, torch.zeros(1, 1, 8, 8))
    c1, c2 = SSD8_3.change_steps
    with pytest.raises(ValueError, match="one resolution change per step"):
        SSD8_3.covariance_root(torch.zeros(1, 1, 8, 8), c2, c1 - 1)


class _BadSchedule(ScaleSpaceDegradation):
    @property
    def alphas_cumprod(self) -> Tensor:
        abar = super().alphas_cumprod.clone()
        abar[750] = 0.5  # abar_t >> abar_s: rho c^2 ~ 99
        return abar


def test_non_psd_covariance_is_refused() -> None:
    deg = _BadSchedule(8, 2)
    with pytest.raises(ValueError, match="not PSD"):
        deg.covariance_root(torch.zeros(1, 1, 8, 8), 750, 749)
