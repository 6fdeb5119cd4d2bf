"""Regression tests: inputs that used to give a wrong value or an unclear error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from scalemix.metrics import gaussian_kl, gaussian_kl_diag, gaussian_kl_from_samples
from scalemix.nn import DualScaleBlock, FlexiUNet, MLPDenoiser, ScaleUpscale

# ------------------------------------------------------------------ DualScaleBlock sizes


class LinearBranch(nn.Module):
    """A branch ``(x, t) -> W x`` that checks nothing itself."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        out: Tensor = self.linear(x)
        return out


def test_dual_scale_block_names_the_expected_feature_size() -> None:
    block = DualScaleBlock.for_vectors(LinearBranch(2), LinearBranch(2), 0.5, 2)
    t = torch.zeros(4, dtype=torch.long)
    assert block(torch.randn(4, 2), t).shape == (4, 2)
    with pytest.raises(ValueError, match=r"x has 3 features .* expects in_features=2"):
        block(torch.randn(4, 3), t)


def test_dual_scale_block_reads_the_size_off_its_modules() -> None:
    mlp = DualScaleBlock(MLPDenoiser(8, 16, 1, 3), MLPDenoiser(8, 16, 1, 3), 0.5, ScaleUpscale())
    assert mlp.in_features == 3
    unet = FlexiUNet(1, 8, (1, 2), 1, (), image_size=8, num_heads=1)
    images = DualScaleBlock(unet, unet, 0.5, ScaleUpscale())
    assert images.in_features == 1
    with pytest.raises(ValueError, match="expects in_features=1"):
        images(torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
    # a module without a size attribute: nothing to check against
    assert DualScaleBlock(LinearBranch(2), LinearBranch(2), 0.5, ScaleUpscale()).in_features is None
    explicit = DualScaleBlock(LinearBranch(2), LinearBranch(2), 0.5, ScaleUpscale(), in_features=2)
    with pytest.raises(ValueError, match="expects in_features=2"):
        explicit(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))


def test_dual_scale_block_rejects_a_size_that_contradicts_the_upscale() -> None:
    from scalemix.nn import LearnedAffineUpscale

    with pytest.raises(ValueError, match=r"in_features=3 disagrees with the upscale's dim=2"):
        DualScaleBlock(
            LinearBranch(2), LinearBranch(2), 0.5, LearnedAffineUpscale(2), in_features=3
        )
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        DualScaleBlock(LinearBranch(2), LinearBranch(2), 0.5, ScaleUpscale(), in_features=0)


# ------------------------------------------------------------------ Gaussian KL at extreme scales


def _closed_form_fit_kl(x: np.ndarray, y: np.ndarray) -> float:
    """KL(N(mean x, cov x) || N(mean y, cov y)) in nats, by numpy's dense linear algebra."""
    mu_p, mu_q = x.mean(axis=0), y.mean(axis=0)
    cov_p, cov_q = np.cov(x.T), np.cov(y.T)
    inv_q = np.linalg.inv(cov_q)
    diff = mu_q - mu_p
    d = x.shape[1]
    return 0.5 * float(
        np.trace(inv_q @ cov_p)
        + diff @ inv_q @ diff
        - d
        + np.linalg.slogdet(cov_q)[1]
        - np.linalg.slogdet(cov_p)[1]
    )


@pytest.mark.parametrize("scale", [1e200, 1e155, 1e-160, 1e-200])
def test_gaussian_kl_from_samples_is_invariant_to_the_data_scale(scale: float) -> None:
    # The Gaussian fits of s x and s y are (s mu, s^2 Sigma): the KL between them is that
    # of the unit-scale data. At 1e155 and above the covariance used to overflow (a
    # "singular covariance" error); at 1e-160 it lost its digits to subnormal numbers
    # (0.02 % off at 1e-160, 0.9 % at 1e-161) without a warning.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 2))
    y = rng.standard_normal((400, 2)) @ np.array([[1.5, 0.0], [0.4, 0.7]]) + [0.3, -0.2]
    expected = _closed_form_fit_kl(x, y) / math.log(2)
    assert gaussian_kl_from_samples(x * scale, y * scale) == pytest.approx(expected, rel=1e-10)
    # and with a common offset much larger than the spread
    offset = 3.0 * scale * 1e6
    shifted = gaussian_kl_from_samples(x * scale + offset, y * scale + offset)
    assert shifted == pytest.approx(expected, rel=1e-6)


def test_gaussian_kl_from_samples_unchanged_on_ordinary_data() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((300, 3)), 2.0 * rng.standard_normal((300, 3)) + 1.0
    expected = _closed_form_fit_kl(x, y) / math.log(2)
    assert gaussian_kl_from_samples(x, y) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("scale", [1e200, 1e250])
def test_gaussian_kl_diag_with_large_means(scale: float) -> None:
    # (mu_q - mu_p)^2 / sigma_q^2 with mu ~ s and sigma^2 ~ s: the square of the mean
    # difference alone overflows (it returned inf), the term is ~s and representable.
    mu_p, mu_q, var_p, var_q = -1.0, 1.0, 1.0, 4.0
    # closed form of the scaled parameters: E_p[log p - log q] in one dimension, per
    # coordinate, with the mean term (mu_q - mu_p)^2 s^2 / (var_q s) = 4 s / 4 = s
    log_ratio = math.log(var_q / var_p)
    per_dim = 0.5 * (var_p / var_q + (mu_q - mu_p) ** 2 * scale / var_q - 1.0 + log_ratio)

    def t(v: float, s: float) -> Tensor:
        return torch.full((3,), v * s, dtype=torch.float64)

    got = gaussian_kl_diag(t(mu_p, scale), t(var_p, scale), t(mu_q, scale), t(var_q, scale))
    assert math.isfinite(float(got))
    assert float(got) == pytest.approx(3 * per_dim, rel=1e-12)
    full = gaussian_kl(
        t(mu_p, scale),
        torch.diag(t(var_p, scale)),
        t(mu_q, scale),
        torch.diag(t(var_q, scale)),
    )
    assert float(full) == pytest.approx(3 * per_dim, rel=1e-12)


def test_gaussian_kl_diag_log_variance_matches_variance_at_large_scale() -> None:
    mean_p = torch.tensor([-2e200, 1e200], dtype=torch.float64)
    mean_q = torch.tensor([2e200, 0.0], dtype=torch.float64)
    var = torch.tensor([1e300, 4e300], dtype=torch.float64)
    by_var = gaussian_kl_diag(mean_p, var, mean_q, var)
    by_log = gaussian_kl_diag(mean_p, var.log(), mean_q, var.log(), parameterization="log_variance")
    # identical variances: only the mean term, (4e200)^2 / 1e300 / 2 + (1e200)^2 / 4e300 / 2
    assert float(by_var) == pytest.approx(8e100 + 1.25e99, rel=1e-12)
    assert float(by_log) == pytest.approx(float(by_var), rel=1e-12)
