"""Tests of the k-nearest-neighbour KL estimators, their subsampling CI and JS / Jeffreys."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import digamma

from scalemix.metrics import (
    KnnBackend,
    KnnEstimator,
    KnnMetric,
    jensen_shannon,
    kl_confidence_interval,
    knn_kl,
    symmetric_kl,
)
from scalemix.metrics._knn_backends import kdtree_neighbours

ESTIMATORS: tuple[KnnEstimator, ...] = ("npeet", "wkv", "adaptive")
METRICS: tuple[KnnMetric, ...] = ("chebyshev", "euclidean")


def _pairwise(a: np.ndarray, b: np.ndarray, metric: KnnMetric) -> np.ndarray:
    diff = a[:, None, :] - b[None, :, :]
    if metric == "chebyshev":
        out: np.ndarray = np.abs(diff).max(axis=-1)
    else:
        out = np.sqrt((diff**2).sum(axis=-1))
    return out


def _brute_force(
    x: np.ndarray, y: np.ndarray, k: int, metric: KnnMetric, estimator: KnnEstimator
) -> float:
    """Independent O(n^2) evaluation of the formulas documented in ``knn_kl`` (in nats)."""
    n, d = x.shape
    m = y.shape[0]
    dxx = _pairwise(x, x, metric)
    np.fill_diagonal(dxx, np.inf)  # a point is not its own neighbour
    dxy = _pairwise(x, y, metric)
    rho = np.sort(dxx, axis=1)[:, k - 1]
    nu = np.sort(dxy, axis=1)[:, k - 1]
    if estimator in ("npeet", "wkv"):
        return float(d * (np.log(nu).mean() - np.log(rho).mean()) + np.log(m / (n - 1)))
    eps = np.maximum(rho, nu)[:, None]
    l_i = (dxx <= eps).sum(axis=1)
    k_i = (dxy <= eps).sum(axis=1)
    rho_l = np.where(dxx <= eps, dxx, -np.inf).max(axis=1)
    nu_k = np.where(dxy <= eps, dxy, -np.inf).max(axis=1)
    terms = d * np.log(nu_k / rho_l) + digamma(l_i) - digamma(k_i)
    return float(terms.mean() + np.log(m / (n - 1)))


def _gaussians(n: int, m: int, seed: int, d: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), 1.5 * rng.normal(size=(m, d)) + 0.5


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("k", [1, 5])
def test_matches_brute_force_formula(metric: KnnMetric, estimator: KnnEstimator, k: int) -> None:
    x, y = _gaussians(50, 40, seed=k)
    expected = _brute_force(x, y, k, metric, estimator)
    got = knn_kl(x, y, k=k, metric=metric, estimator=estimator, base=math.e)
    assert got == pytest.approx(expected, abs=1e-12, rel=1e-12)


def test_default_is_npeet_in_bits() -> None:
    x, y = _gaussians(50, 30, seed=3, d=3)
    expected = _brute_force(x, y, 5, "chebyshev", "npeet") / math.log(2)
    assert knn_kl(x, y) == pytest.approx(expected, abs=1e-12)
    assert knn_kl(x, y, estimator="wkv") == pytest.approx(knn_kl(x, y), abs=1e-12)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_torch_backend_agrees_with_kdtree(metric: KnnMetric, estimator: KnnEstimator) -> None:
    x, y = _gaussians(300, 170, seed=1)
    ref = knn_kl(x, y, metric=metric, estimator=estimator)
    got = knn_kl(
        torch.from_numpy(x),
        torch.from_numpy(y),
        metric=metric,
        estimator=estimator,
        backend="torch",
        chunk_size=37,  # several chunks, the last one partial
    )
    assert got == pytest.approx(ref, abs=1e-10)


def test_adaptive_requery_path_matches_brute_force() -> None:
    # y far away: eps = nu_k covers all of x, so the neighbour counts saturate the first
    # query (4k neighbours) and the rows are queried again until they cover all points.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(120, 2))
    y = rng.normal(size=(60, 2)) + 30.0
    got = knn_kl(x, y, estimator="adaptive", base=math.e, metric="euclidean")
    assert got == pytest.approx(_brute_force(x, y, 5, "euclidean", "adaptive"), abs=1e-10)
    nb = kdtree_neighbours(x, y, 5, 2.0, adaptive=True, workers=1)
    assert nb.x_count is not None and np.all(nb.x_count == 119)


def test_adaptive_counts_cover_k() -> None:
    x, y = _gaussians(400, 150, seed=2)
    nb = kdtree_neighbours(x, y, 4, math.inf, adaptive=True, workers=1)
    assert nb.x_count is not None and nb.y_count is not None
    assert nb.rho_adaptive is not None and nb.nu_adaptive is not None
    eps = np.maximum(nb.rho, nb.nu)
    assert np.all(nb.x_count >= 4) and np.all(nb.y_count >= 4)
    assert np.all(np.maximum(nb.rho_adaptive, nb.nu_adaptive) == eps)


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_same_distribution_is_near_zero(estimator: KnnEstimator) -> None:
    # Two independent draws of N(0, I_2), n = m = 2000. Each point contributes
    # d log(nu/rho) with variance about 2 * trigamma(5) = 0.44 nats^2, so the mean has a
    # standard deviation near sqrt(0.44 / 2000) = 0.015 nats = 0.021 bits; over 30 seeds
    # we measured sd 0.026 bits and |mean| < 0.005 bits. 0.15 bits is about 6 sd.
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
    assert abs(knn_kl(x, y, estimator=estimator)) < 0.15


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_agrees_with_analytic_gaussian_kl(metric: KnnMetric, estimator: KnnEstimator) -> None:
    # P = N(0, I_2), Q = N(0.5 * 1, 2.25 I_2), n = m = 20000. Closed form (nats):
    # 0.5 * [tr(S_q^-1 S_p) + dmu' S_q^-1 dmu - d + ln det S_q - ln det S_p].
    true_kl = 0.5 * (2 / 2.25 + 2 * 0.25 / 2.25 - 2 + 2 * math.log(2.25))
    x, y = _gaussians(20000, 20000, seed=7)
    # Over 30 seeds the error had sd 0.008 nats and mean +0.005 (finite-n bias) for
    # "npeet" and "adaptive"; 0.05 nats is about 5 sd beyond the bias.
    got = knn_kl(x, y, metric=metric, estimator=estimator, base=math.e)
    assert got == pytest.approx(true_kl, abs=0.05)


# --------------------------------------------------------------------------- invariances


@settings(max_examples=15)
@given(
    shift=st.lists(st.floats(-100, 100), min_size=2, max_size=2),
    estimator=st.sampled_from(ESTIMATORS),
    metric=st.sampled_from(METRICS),
)
def test_translation_invariance(
    shift: list[float], estimator: KnnEstimator, metric: KnnMetric
) -> None:
    x, y = _gaussians(200, 120, seed=0)
    v = np.asarray(shift)
    ref = knn_kl(x, y, estimator=estimator, metric=metric)
    assert knn_kl(x + v, y + v, estimator=estimator, metric=metric) == pytest.approx(ref, abs=1e-8)


@settings(max_examples=15)
@given(seed=st.integers(0, 2**31 - 1), estimator=st.sampled_from(ESTIMATORS))
def test_rotation_invariance_euclidean(seed: int, estimator: KnnEstimator) -> None:
    x, y = _gaussians(200, 120, seed=1, d=3)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    ref = knn_kl(x, y, estimator=estimator, metric="euclidean")
    got = knn_kl(x @ q.T, y @ q.T, estimator=estimator, metric="euclidean")
    assert got == pytest.approx(ref, abs=1e-8)


@settings(max_examples=15)
@given(
    scale=st.floats(1e-3, 1e3),
    estimator=st.sampled_from(ESTIMATORS),
    metric=st.sampled_from(METRICS),
)
def test_common_scaling_invariance(
    scale: float, estimator: KnnEstimator, metric: KnnMetric
) -> None:
    x, y = _gaussians(200, 120, seed=2)
    ref = knn_kl(x, y, estimator=estimator, metric=metric)
    got = knn_kl(scale * x, scale * y, estimator=estimator, metric=metric)
    assert got == pytest.approx(ref, abs=1e-9)


def test_row_order_invariance() -> None:
    x, y = _gaussians(200, 120, seed=3)
    rng = np.random.default_rng(0)
    ref = knn_kl(x, y, estimator="adaptive")
    got = knn_kl(rng.permutation(x), rng.permutation(y), estimator="adaptive")
    assert got == pytest.approx(ref, abs=1e-12)


def test_one_dimensional_input_and_tensors() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=300), rng.normal(size=200) + 1.0
    ref = knn_kl(x[:, None], y[:, None])
    assert knn_kl(x, y) == ref
    x32, y32 = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    expected = knn_kl(x32.double().numpy(), y32.double().numpy())
    assert knn_kl(x32, y32) == pytest.approx(expected, abs=1e-12)
    assert knn_kl(x32, y32, backend="torch") == pytest.approx(expected, abs=1e-12)
    assert knn_kl(np.arange(10), np.arange(10) + 0.5, k=2) == pytest.approx(
        knn_kl(np.arange(10.0), np.arange(10) + 0.5, k=2)
    )


def test_base_conversion() -> None:
    x, y = _gaussians(100, 100, seed=5)
    assert knn_kl(x, y, base=math.e) == pytest.approx(knn_kl(x, y) * math.log(2), abs=1e-12)


# --------------------------------------------------------------------------- duplicates


def _with_duplicates() -> tuple[np.ndarray, np.ndarray]:
    x, y = _gaussians(100, 80, seed=6)
    x[:7] = x[0]  # seven coinciding points: rho_5 = 0 for each of them
    return x, y


def test_duplicates_raise_with_count() -> None:
    x, y = _with_duplicates()
    with pytest.raises(ValueError, match=r"7 of the n=100 points.*duplicates='jitter'"):
        knn_kl(x, y)
    x2, y2 = _gaussians(100, 80, seed=6)
    y2[:5] = x2[3]  # nu_5 = 0 at x2[3]
    with pytest.raises(ValueError, match="nu_k = 0 for 1"):
        knn_kl(x2, y2)


@pytest.mark.parametrize("backend", ["kdtree", "torch"])
def test_duplicates_jitter_warns_and_is_reproducible(backend: KnnBackend) -> None:
    x, y = _with_duplicates()
    with pytest.warns(RuntimeWarning, match="jitter"):
        a = knn_kl(x, y, duplicates="jitter", generator=torch.Generator().manual_seed(0),
                   backend=backend)  # fmt: skip
    with pytest.warns(RuntimeWarning):
        b = knn_kl(x, y, duplicates="jitter", generator=torch.Generator().manual_seed(0),
                   backend=backend)  # fmt: skip
    assert math.isfinite(a) and a == b


def test_jitter_leaves_clean_data_untouched() -> None:
    x, y = _gaussians(100, 80, seed=8)
    assert knn_kl(x, y, duplicates="jitter") == knn_kl(x, y)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "error", "match"),
    [
        (np.zeros((10, 2)), np.zeros((10, 3)), {}, ValueError, "same dimension"),
        (np.ones((5, 2)), np.ones((10, 2)), {"k": 5}, ValueError, "k < n"),
        (np.ones((10, 2)), np.ones((4, 2)), {"k": 5}, ValueError, "k <= m"),
        (np.ones((10, 2)), np.ones((10, 2)), {"k": 0}, ValueError, ">= 1"),
        (np.ones((10, 2)), np.ones((10, 2)), {"k": True}, TypeError, "integer"),
        (np.ones((10, 2)), np.ones((10, 2)), {"k": 2.0}, TypeError, "integer"),
        (np.zeros((0, 2)), np.ones((10, 2)), {}, ValueError, "empty"),
        (np.ones((10, 2)), np.zeros((0, 2)), {}, ValueError, "empty"),
        (np.ones((10, 0)), np.ones((10, 0)), {}, ValueError, "zero columns"),
        (np.full((10, 2), np.nan), np.ones((10, 2)), {}, ValueError, "NaN"),
        (np.ones((10, 2)), np.full((10, 2), np.inf), {}, ValueError, "NaN or infinite"),
        (np.ones((10, 2, 2)), np.ones((10, 2)), {}, ValueError, "rank 3"),
        (np.array(1.0), np.ones((10, 1)), {}, ValueError, "rank 0"),
        ([[1.0, 2.0]] * 10, np.ones((10, 2)), {}, TypeError, "numpy array or a torch tensor"),
        (np.ones((10, 2), complex), np.ones((10, 2)), {}, TypeError, "real numbers"),
        (torch.ones(10, 2, dtype=torch.bool), np.ones((10, 2)), {}, TypeError, "real"),
        (np.ones((10, 2)), np.ones((10, 2)), {"metric": "manhattan"}, ValueError, "chebyshev"),
        (np.ones((10, 2)), np.ones((10, 2)), {"estimator": "kl"}, ValueError, "adaptive"),
        (np.ones((10, 2)), np.ones((10, 2)), {"duplicates": "drop"}, ValueError, "jitter"),
        (np.ones((10, 2)), np.ones((10, 2)), {"backend": "faiss"}, ValueError, "kdtree"),
        (np.ones((10, 2)), np.ones((10, 2)), {"base": 1.0}, ValueError, "base"),
        (np.ones((10, 2)), np.ones((10, 2)), {"base": -2.0}, ValueError, "base"),
        (np.ones((10, 2)), np.ones((10, 2)), {"chunk_size": 0}, ValueError, "chunk_size"),
    ],
)
def test_bad_input_raises(
    x: object, y: object, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        knn_kl(x, y, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["kdtree", "torch"])
def test_bad_input_raises_on_both_backends(backend: KnnBackend) -> None:
    with pytest.raises(ValueError, match="NaN"):
        knn_kl(torch.full((10, 2), float("nan")), torch.ones(10, 2), backend=backend)
    with pytest.raises(ValueError, match="same dimension"):
        knn_kl(torch.ones(10, 2), torch.ones(10, 3), backend=backend)


# --------------------------------------------------------------------------- CI, JS, Jeffreys


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_confidence_interval_scaling_matches_normal_theory(fraction: float) -> None:
    # For a difference of means the interval must match theta +- 1.96 sqrt(s_x^2/n + s_y^2/m):
    # this checks the sqrt(f / (1 - f)) scaling for subsamples without replacement.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=400), 2.0 * rng.normal(size=600)

    def diff_of_means(a: object, b: object) -> float:
        return float(np.mean(a) - np.mean(b))  # type: ignore[call-overload]

    est, low, high = kl_confidence_interval(
        diff_of_means, x, y, n_subsamples=400, fraction=fraction, level=0.95,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    half_width = 1.959964 * math.sqrt(x.var(ddof=1) / 400 + y.var(ddof=1) / 600)
    assert est == diff_of_means(x, y)
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.15)


def test_confidence_interval_for_knn_is_reproducible() -> None:
    x, y = _gaussians(1000, 400, seed=9)
    a = kl_confidence_interval(
        knn_kl, x, y, n_subsamples=8, generator=torch.Generator().manual_seed(1)
    )
    b = kl_confidence_interval(
        knn_kl, torch.from_numpy(x), torch.from_numpy(y), n_subsamples=8,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert a[0] == knn_kl(x, y)
    assert a == pytest.approx(b, abs=1e-12)
    assert a[1] < a[2]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_subsamples": 1}, ValueError, "n_subsamples"),
        ({"n_subsamples": 2.5}, TypeError, "n_subsamples"),
        ({"fraction": 1.0}, ValueError, "fraction"),
        ({"fraction": 0.001}, ValueError, "subsamples of 0"),
        ({"level": 1.5}, ValueError, "level"),
    ],
)
def test_confidence_interval_bad_input(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    x, y = _gaussians(100, 100, seed=0)
    with pytest.raises(error, match=match):
        kl_confidence_interval(knn_kl, x, y, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="numpy array"):  # a list is not accepted
        kl_confidence_interval(knn_kl, x.tolist(), y)


def test_knn_jensen_shannon_limits() -> None:
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
    # same distribution: each term is a KL between two 1000-point draws of one law
    # (sd about 0.04 bits, see test_same_distribution_is_near_zero), averaged.
    assert abs(jensen_shannon(x, y, generator=gen)) < 0.15
    # disjoint supports: JS = log 2 = 1 bit; each x point's neighbours in the mixture are
    # the x half of it (density halved), so the estimate is near 1 up to the same noise.
    assert jensen_shannon(x, y + 100.0, generator=gen) == pytest.approx(1.0, abs=0.15)


def test_symmetric_kl_is_sum_of_both_directions() -> None:
    x, y = _gaussians(300, 200, seed=4)
    expected = knn_kl(x, y, k=3) + knn_kl(y, x, k=3)
    assert symmetric_kl(x, y, k=3) == pytest.approx(expected, abs=1e-12)
    adaptive = knn_kl(x, y, estimator="adaptive") + knn_kl(y, x, estimator="adaptive")
    assert symmetric_kl(x, y, estimator="adaptive") == pytest.approx(adaptive, abs=1e-12)
    js = [
        jensen_shannon(x, y, estimator="adaptive", generator=torch.Generator().manual_seed(3))
        for _ in range(2)
    ]
    assert js[0] == js[1]
    with pytest.raises(ValueError, match="gaussian"):
        symmetric_kl(x, y, method="kde")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="histogram"):
        jensen_shannon(x, y, method="gaussian")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="4 points"):
        jensen_shannon(x[:3], y)
