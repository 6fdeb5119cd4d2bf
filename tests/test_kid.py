"""KID: an independent brute-force computation, a closed-form population value, and the
standard error against the spread over independent replications."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalemix.metrics import kid_from_features, mmd2_unbiased
from scalemix.metrics.kid import polynomial_kernel


def _k(a: np.ndarray, b: np.ndarray) -> float:
    return float((a @ b / a.shape[0] + 1.0) ** 3)


def _mmd2_loops(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimator written out pair by pair."""
    m, n = len(x), len(y)
    kxx = sum(_k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    kyy = sum(_k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    kxy = sum(_k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def _jackknife_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sample delete-one jackknife, recomputing the estimator on every reduced set."""
    m, n = len(x), len(y)
    tx = np.array([_mmd2_loops(np.delete(x, i, 0), y) for i in range(m)])
    ty = np.array([_mmd2_loops(x, np.delete(y, j, 0)) for j in range(n)])
    var = (m - 1) / m * ((tx - tx.mean()) ** 2).sum() + (n - 1) / n * ((ty - ty.mean()) ** 2).sum()
    return math.sqrt(var)


@settings(max_examples=15)
@given(
    m=st.integers(3, 9),
    n=st.integers(3, 9),
    d=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    shift=st.floats(-2.0, 2.0),
)
def test_value_and_se_equal_brute_force(m: int, n: int, d: int, seed: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, d))
    y = rng.normal(size=(n, d)) + shift
    result = kid_from_features(x, y, num_subsets=0)
    assert result.value == pytest.approx(_mmd2_loops(x, y), rel=1e-9, abs=1e-9)
    assert mmd2_unbiased(x, y) == pytest.approx(result.value, rel=1e-12, abs=1e-12)
    assert result.se == pytest.approx(_jackknife_loops(x, y), rel=1e-7, abs=1e-9)
    assert result.subset_mean is None and result.subset_size == 0


def test_blockwise_row_sums_match_dense() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(1500, 5)), rng.normal(size=(1100, 5)) * 1.1
    k = polynomial_kernel
    m, n = len(x), len(y)
    dense = (
        (k(x, x).sum() - np.trace(k(x, x))) / (m * (m - 1))
        + (k(y, y).sum() - np.trace(k(y, y))) / (n * (n - 1))
        - 2 * k(x, y).mean()
    )
    assert mmd2_unbiased(x, y) == pytest.approx(dense, rel=1e-10)


def _moments(mu: float, s: float) -> tuple[float, float, float]:
    return mu, mu**2 + s**2, mu**3 + 3 * mu * s**2


@pytest.mark.parametrize(("a", "s", "b", "r"), [(0.0, 1.0, 0.3, 1.0), (0.2, 0.7, 0.2, 1.2)])
def test_unbiased_for_the_closed_form_and_se_matches_the_spread(
    a: float, s: float, b: float, r: float
) -> None:
    # In d = 1, k(x, y) = (xy + 1)^3 = x^3 y^3 + 3 x^2 y^2 + 3 x y + 1, so the population
    # MMD^2 is (m3x - m3y)^2 + 3 (m2x - m2y)^2 + 3 (m1x - m1y)^2.
    (p1, p2, p3), (q1, q2, q3) = _moments(a, s), _moments(b, r)
    exact = (p3 - q3) ** 2 + 3 * (p2 - q2) ** 2 + 3 * (p1 - q1) ** 2
    rng = np.random.default_rng(0)
    reps = [
        kid_from_features(
            rng.normal(a, s, size=(300, 1)), rng.normal(b, r, size=(250, 1)), num_subsets=0
        )
        for _ in range(300)
    ]
    values = np.array([v.value for v in reps])
    spread = values.std(ddof=1)
    assert abs(values.mean() - exact) < 4 * spread / math.sqrt(len(values))
    # The jackknife standard error estimates that spread (within 15 %).
    assert np.mean([v.se for v in reps]) == pytest.approx(spread, rel=0.15)


def test_same_distribution_is_centred_on_zero() -> None:
    rng = np.random.default_rng(1)
    values = [
        kid_from_features(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)), num_subsets=0)
        for _ in range(100)
    ]
    v = np.array([r.value for r in values])
    assert abs(v.mean()) < 4 * v.std(ddof=1) / math.sqrt(len(v))
    assert (v < 0).any()  # unbiased, so negative values occur


def test_subsets_are_reproducible_and_capped() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(60, 4)), rng.normal(size=(50, 4)) + 0.5
    one = kid_from_features(x, y, num_subsets=10, subset_size=1000)
    two = kid_from_features(x, y, num_subsets=10, subset_size=1000)
    assert one == two
    assert one.subset_size == 50 and one.n1 == 60 and one.n2 == 50
    assert one.subset_mean is not None and one.subset_std is not None and one.subset_std >= 0


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "match"),
    [
        (np.zeros((2, 3)), np.zeros((5, 3)), {}, "features1 must have shape"),
        (np.zeros((5, 3)), np.zeros((5, 4)), {}, "feature widths differ"),
        (np.full((5, 3), np.nan), np.zeros((5, 3)), {}, "NaN"),
        (np.zeros((5, 3)), np.zeros((5, 3)), {"num_subsets": -1}, "num_subsets"),
        (np.zeros((5, 3)), np.zeros((5, 3)), {"subset_size": 2}, "subset_size"),
    ],
)
def test_bad_input(x: np.ndarray, y: np.ndarray, kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        kid_from_features(x, y, **kwargs)
