"""Tests of the analytic Gaussian KL, the histogram KL and the symmetrised divergences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scalemix.metrics import (
    gaussian_kl,
    gaussian_kl_diag,
    gaussian_kl_from_samples,
    histogram_kl,
    histogram_probabilities,
    jensen_shannon,
    symmetric_kl,
)


def _spd(d: int, seed: int, batch: tuple[int, ...] = ()) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(*batch, d, d, generator=g, dtype=torch.float64)
    return a @ a.transpose(-1, -2) + 0.5 * torch.eye(d, dtype=torch.float64)


# --------------------------------------------------------------------------- Gaussian KL


@given(
    mu_p=st.floats(-5, 5),
    mu_q=st.floats(-5, 5),
    sd_p=st.floats(0.1, 10),
    sd_q=st.floats(0.1, 10),
)
def test_one_dimensional_closed_form(mu_p: float, mu_q: float, sd_p: float, sd_q: float) -> None:
    # By hand: E_p[log p - log q]
    #   = log(sd_q / sd_p) + (sd_p^2 + (mu_p - mu_q)^2) / (2 sd_q^2) - 1/2.
    expected = math.log(sd_q / sd_p) + (sd_p**2 + (mu_p - mu_q) ** 2) / (2 * sd_q**2) - 0.5

    def t(v: float) -> torch.Tensor:
        return torch.tensor([v], dtype=torch.float64)

    full = gaussian_kl(t(mu_p), t(sd_p**2)[:, None], t(mu_q), t(sd_q**2)[:, None])
    diag = gaussian_kl_diag(t(mu_p), t(sd_p**2), t(mu_q), t(sd_q**2))
    assert float(full) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert float(diag) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_identical_gaussians_give_zero() -> None:
    cov = _spd(4, seed=0, batch=(3,))
    mean = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(
        gaussian_kl(mean, cov, mean, cov), torch.zeros(3, dtype=torch.float64), atol=1e-12
    )
    var = cov.diagonal(dim1=-2, dim2=-1)
    assert torch.allclose(
        gaussian_kl_diag(mean, var, mean, var), torch.zeros(3, dtype=torch.float64), atol=1e-12
    )


@settings(max_examples=20)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 5))
def test_diagonal_agrees_with_full(seed: int, d: int) -> None:
    g = torch.Generator().manual_seed(seed)
    mp, mq = torch.randn(2, 3, d, generator=g, dtype=torch.float64)
    vp, vq = torch.rand(2, 3, d, generator=g, dtype=torch.float64) * 3 + 0.1
    full = gaussian_kl(mp, torch.diag_embed(vp), mq, torch.diag_embed(vq))
    diag = gaussian_kl_diag(mp, vp, mq, vq)
    logvar = gaussian_kl_diag(mp, vp.log(), mq, vq.log(), parameterization="log_variance")
    assert torch.allclose(full, diag, rtol=1e-10, atol=1e-12)
    assert torch.allclose(logvar, diag, rtol=1e-10, atol=1e-12)


@settings(max_examples=20)
@given(seed=st.integers(0, 10_000))
def test_invariant_under_common_affine_map(seed: int) -> None:
    # KL(A p + b || A q + b) = KL(p || q) for invertible A: an independent check of the
    # full-covariance formula (mean shift, trace and log-determinant terms all move).
    g = torch.Generator().manual_seed(seed)
    d = 3
    mp, mq, b = torch.randn(3, d, generator=g, dtype=torch.float64)
    cp, cq = _spd(d, seed), _spd(d, seed + 1)
    a = torch.randn(d, d, generator=g, dtype=torch.float64) + 2 * torch.eye(d, dtype=torch.float64)
    ref = gaussian_kl(mp, cp, mq, cq)
    moved = gaussian_kl(a @ mp + b, a @ cp @ a.T, a @ mq + b, a @ cq @ a.T)
    assert float(moved) == pytest.approx(float(ref), rel=1e-8, abs=1e-10)


def test_batched_matches_unbatched_and_broadcasts() -> None:
    cp, cq = _spd(3, 2, batch=(4,)), _spd(3, 3, batch=(4,))
    mp = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mq = torch.zeros(3, dtype=torch.float64)  # broadcast against the batch
    batched = gaussian_kl(mp, cp, mq, cq)
    assert batched.shape == (4,)
    for i in range(4):
        assert float(batched[i]) == pytest.approx(float(gaussian_kl(mp[i], cp[i], mq, cq[i])))


def test_from_samples_is_kl_of_fitted_moments() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 2))
    y = rng.normal(size=(300, 2)) @ np.array([[1.0, 0.4], [0.0, 0.7]]) + 0.3
    fits = [(torch.from_numpy(a.mean(0)), torch.from_numpy(np.cov(a.T))) for a in (x, y)]
    expected = float(gaussian_kl(*fits[0], *fits[1])) / math.log(2)
    assert gaussian_kl_from_samples(x, y) == pytest.approx(expected, rel=1e-12)
    # large samples recover the true KL: N(0, I) vs N(1/2, 2.25 I), 0.3665 nats
    big_x, big_y = rng.normal(size=(100_000, 2)), 1.5 * rng.normal(size=(100_000, 2)) + 0.5
    true_kl = 0.5 * (2 / 2.25 + 0.5 / 2.25 - 2 + 2 * math.log(2.25))
    assert gaussian_kl_from_samples(big_x, big_y, base=math.e) == pytest.approx(true_kl, abs=0.01)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((torch.zeros(2), -torch.eye(2), torch.zeros(2), torch.eye(2)), ValueError, "positive"),
        ((torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2)), ValueError, "cov_p"),
        ((torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(2)), ValueError, "mean_q"),
        ((torch.zeros(()), torch.eye(2), torch.zeros(2), torch.eye(2)), ValueError, "0-d"),
        ((torch.zeros(2), torch.eye(2).long(), torch.zeros(2), torch.eye(2)), TypeError, "float"),
        ((np.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(2)), TypeError, "tensor"),
        (
            (torch.full((2,), math.nan), torch.eye(2), torch.zeros(2), torch.eye(2)),
            ValueError,
            "NaN",
        ),
        (
            (torch.zeros(3, 2), torch.eye(2), torch.zeros(4, 2), torch.eye(2)),
            ValueError,
            "broadcast",
        ),
    ],
)
def test_gaussian_kl_bad_input(
    args: tuple[object, ...], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        gaussian_kl(*args)  # type: ignore[arg-type]


def test_gaussian_kl_diag_bad_input() -> None:
    z, o = torch.zeros(2), torch.ones(2)
    with pytest.raises(ValueError, match="> 0"):
        gaussian_kl_diag(z, -o, z, o)
    with pytest.raises(ValueError, match="broadcast"):
        gaussian_kl_diag(z, o, torch.zeros(3), o)
    with pytest.raises(ValueError, match="log_variance"):
        gaussian_kl_diag(z, o, z, o, parameterization="std")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0-d"):
        gaussian_kl_diag(torch.zeros(()), o, z, o)
    with pytest.raises(ValueError, match="d \\+ 1"):
        gaussian_kl_from_samples(np.ones((2, 2)), np.ones((5, 2)))
    with pytest.raises(ValueError, match="singular"):
        gaussian_kl_from_samples(np.ones((5, 2)), np.random.default_rng(0).normal(size=(5, 2)))


# --------------------------------------------------------------------------- histogram KL


def test_identical_data_gives_zero() -> None:
    x = np.random.default_rng(0).normal(size=(1000, 2))
    assert histogram_kl(x, x) == 0.0
    assert histogram_kl(x, x.copy(), bins=(7, 11), pseudocount=0.0) == 0.0


def test_one_dimensional_hand_computed() -> None:
    # Grid [0, 1) in 2 cells: x counts (2, 1), y counts (1, 3). Pseudocount a = 0.5:
    # p = (2.5, 1.5) / 4, q = (1.5, 3.5) / 5.
    x = np.array([0.1, 0.2, 0.6])
    y = np.array([0.1, 0.7, 0.8, 0.9])
    p = np.array([2.5, 1.5]) / 4
    q = np.array([1.5, 3.5]) / 5
    expected = float(np.sum(p * np.log2(p / q)))
    got = histogram_kl(x, y, bins=2, range=(0.0, 1.0), pseudocount=0.5)
    assert got == pytest.approx(expected, abs=1e-14)
    np.testing.assert_allclose(
        histogram_probabilities(x, y, bins=2, range=(0.0, 1.0)), np.stack([p, q]), atol=1e-15
    )


def test_two_dimensional_hand_computed_no_pseudocount() -> None:
    # 2 x 2 grid on [0, 2]^2; cells in C order (x0 low/high, x1 low/high).
    x = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 1.5], [1.5, 1.5]])  # counts 2, 1, 0, 1
    y = np.array([[0.5, 0.5], [0.5, 1.5], [1.5, 0.5], [1.5, 1.5]])  # counts 1, 1, 1, 1
    p = np.array([2, 1, 0, 1]) / 4
    expected = (2 / 4) * math.log(2.0) + (1 / 4) * math.log(1.0) + (1 / 4) * math.log(1.0)
    got = histogram_kl(x, y, bins=2, range=[(0, 2), (0, 2)], pseudocount=0.0, base=math.e)
    assert got == pytest.approx(expected, abs=1e-14)
    assert p.sum() == 1.0
    with pytest.raises(ValueError, match="infinite"):
        histogram_kl(y, x, bins=2, range=[(0, 2), (0, 2)], pseudocount=0.0)


def test_histogram_auto_range_and_base() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(500, 2)), rng.normal(size=(400, 2)) + 0.5
    nats = histogram_kl(x, y, bins=10, base=math.e)
    assert histogram_kl(x, y, bins=10) == pytest.approx(nats / math.log(2), abs=1e-14)
    lo, hi = np.minimum(x.min(0), y.min(0)), np.maximum(x.max(0), y.max(0))
    explicit = histogram_kl(x, y, bins=10, range=list(zip(lo, hi, strict=True)), base=math.e)
    assert nats == explicit > 0
    assert histogram_kl(torch.from_numpy(x), torch.from_numpy(y), bins=10, base=math.e) == nats
    const = np.ones(20)  # a constant coordinate gets a unit-width range, no error
    assert histogram_kl(const, const) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"bins": 0}, ValueError, "positive"),
        ({"bins": (3, 3, 3)}, ValueError, "d=2"),
        ({"bins": 10_000}, ValueError, "cells"),
        ({"range": [(0, 1)]}, ValueError, "pairs"),
        ({"range": [(1, 0), (0, 1)]}, ValueError, "low < high"),
        ({"range": [(0, 0.1), (0, 0.1)]}, ValueError, "outside"),
        ({"range": [(0, 1, 2), (0, 1)]}, ValueError, "pair"),
        ({"pseudocount": -1.0}, ValueError, "pseudocount"),
        ({"base": 0.0}, ValueError, "base"),
    ],
)
def test_histogram_bad_input(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    x = np.random.default_rng(0).uniform(size=(50, 2))
    with pytest.raises(error, match=match):
        histogram_kl(x, x, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same dimension"):
        histogram_kl(x, x[:, :1])


# --------------------------------------------------------------------------- JS and Jeffreys


def test_histogram_jensen_shannon_exact_values() -> None:
    x = np.array([0.1, 0.2, 0.3])
    # identical: 0; disjoint cells without pseudocounts: exactly log 2 = 1 bit
    assert jensen_shannon(x, x, method="histogram", bins=2, range=(0, 1)) == 0.0
    disjoint = jensen_shannon(x, x + 0.5, method="histogram", bins=2, range=(0, 1), pseudocount=0.0)
    assert disjoint == pytest.approx(1.0, abs=1e-14)


@settings(max_examples=20)
@given(seed=st.integers(0, 10_000), shift=st.floats(0, 3))
def test_histogram_jensen_shannon_symmetric_and_bounded(seed: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(200, 2)), rng.normal(size=(150, 2)) + shift
    a = jensen_shannon(x, y, method="histogram", bins=8)
    b = jensen_shannon(y, x, method="histogram", bins=8)
    assert a == pytest.approx(b, abs=1e-12)
    assert -1e-12 <= a <= 1.0 + 1e-12


def test_symmetric_kl_histogram_and_gaussian() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(300, 2)), rng.normal(size=(200, 2)) * 1.3
    hist = histogram_kl(x, y, bins=6) + histogram_kl(y, x, bins=6)
    assert symmetric_kl(x, y, method="histogram", bins=6) == pytest.approx(hist, abs=1e-14)
    gauss = gaussian_kl_from_samples(x, y) + gaussian_kl_from_samples(y, x)
    assert symmetric_kl(x, y, method="gaussian") == pytest.approx(gauss, abs=1e-14)
