"""Pyramids of any factor, the general resize, the four resolution schedules, even spacing."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from scalemix.degradation import (
    Pyramid,
    ScaleSpaceDegradation,
    even_timesteps,
    level_schedule,
    posterior_coefficients,
    pyramid_sizes,
    resize,
    resize_adjoint,
    resolution_schedule,
    respaced_timesteps,
    sigmoid_like,
    tanh_like,
    unet_level,
)
from scalemix.degradation.resize import resize_matrix, resize_spectrum

F64 = torch.float64
PAIRS = [(64, 40), (40, 24), (48, 32), (7, 5), (40, 28), (28, 20), (64, 32), (5, 7), (40, 64)]


def _changes(idx: tuple[int, ...] | list[int]) -> list[int]:
    return [t for t in range(1, len(idx)) if idx[t] != idx[t - 1]]


# ---------------------------------------------------------------- pyramid rule
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((64, 4, 1.5), Pyramid((64, 40, 28, 20), (0, 0, 1, 1))),
        ((64, 4, 2.0), Pyramid((64, 32, 16, 8), (0, 1, 2, 3))),
        ((48, 3, 2.0), Pyramid((48, 24, 12), (0, 1, 2))),
    ],
)
def test_pyramid_worked_examples(args: tuple[int, int, float], expected: Pyramid) -> None:
    assert pyramid_sizes(*args) == expected


@settings(max_examples=60)
@given(
    size=st.integers(2, 160),
    levels=st.integers(1, 6),
    unet=st.integers(1, 5),
    factor=st.floats(1.05, 3.0),
)
def test_pyramid_properties(size: int, levels: int, unet: int, factor: float) -> None:
    size *= 2 ** (unet - 1)
    try:
        pyr = pyramid_sizes(size, levels, factor, unet)
    except ValueError as err:
        assert "too large" in str(err)
        return
    assert pyr.sizes[0] == size and len(pyr.sizes) == levels
    assert all(a > b >= 2 for a, b in zip(pyr.sizes, pyr.sizes[1:], strict=False))
    assert list(pyr.unet_levels) == sorted(pyr.unet_levels)
    for r, lvl in zip(pyr.sizes, pyr.unet_levels, strict=True):
        assert r % 2 ** (unet - 1 - lvl) == 0  # the UNet can halve it to its last level
        # the band of the unrounded size: within half a multiple of its band's rule
        assert 0 <= lvl < unet


def test_pyramid_with_factor_two_is_the_halving_pyramid() -> None:
    for exp in range(1, 8):
        for levels in range(1, exp + 1):
            sizes = pyramid_sizes(2**exp, levels).sizes
            assert sizes == tuple(2**exp >> i for i in range(levels))


def test_pyramid_bad_input() -> None:
    with pytest.raises(ValueError, match="factor"):
        pyramid_sizes(64, 4, 0.9)
    with pytest.raises(ValueError, match="factor"):
        pyramid_sizes(64, 4, math.nan)
    with pytest.raises(TypeError, match="factor"):
        pyramid_sizes(64, 4, "2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple of"):
        pyramid_sizes(36, 4)
    with pytest.raises(ValueError, match="too large"):
        pyramid_sizes(64, 3, 1.0)  # equal sizes
    with pytest.raises(ValueError, match="too large"):
        pyramid_sizes(16, 5, 2.0)
    with pytest.raises(ValueError, match="multiple of 4"):
        unet_level(30, 64, 4)  # band 1 (32 >= 30 > 16) needs a multiple of 4
    assert [unet_level(r, 64, 4) for r in (64, 40, 32, 28, 20, 16, 10, 8, 3)] == [
        0, 0, 1, 1, 1, 2, 2, 3, 3,
    ]  # fmt: skip


# ---------------------------------------------------------------- resize operator
@pytest.mark.parametrize(("n", "m"), PAIRS)
def test_resize_matrix_is_interpolate(n: int, m: int) -> None:
    d = resize_matrix(n, m)
    assert d.shape == (m, n)
    assert torch.allclose(d.sum(dim=1), torch.ones(m, dtype=F64), atol=1e-14)
    x = torch.randn(3, 2, n, n, generator=torch.Generator().manual_seed(n * m), dtype=F64)
    ref = F.interpolate(x, size=(m, m), mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(resize(x, m), ref)
    assert torch.allclose(d @ x @ d.T, ref, atol=1e-13, rtol=0)
    # the adjoint identity <D X D^T, Y> = <X, D^T Y D>
    y = torch.randn(3, 2, m, m, generator=torch.Generator().manual_seed(1), dtype=F64)
    lhs, rhs = (ref * y).sum(), (x * resize_adjoint(y, n)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-12)


@pytest.mark.parametrize(("n", "m"), PAIRS)
def test_resize_spectrum(n: int, m: int) -> None:
    u, lam = resize_spectrum(n, m)
    d = resize_matrix(n, m)
    assert torch.allclose(u @ torch.diag(lam) @ u.T, d.T @ d, atol=1e-13)
    assert torch.allclose(u.T @ u, torch.eye(n, dtype=F64), atol=1e-13)
    assert float(lam.min()) >= 0.0
    if m < n:  # a downsample has an (n - m)-dimensional null space
        assert int((lam < 1e-12).sum()) == n - m


@pytest.mark.parametrize(("n", "m"), [(64, 40), (40, 24), (48, 32), (7, 5)])
def test_closed_form_root_squares_to_the_covariance(n: int, m: int) -> None:
    # Sigma xi = sigma_s^2 (xi - kappa M^T M xi) from apply/apply_adjoint alone (no
    # eigendecomposition); the closed-form root is symmetric, so root(root(xi)) = Sigma xi.
    deg = ScaleSpaceDegradation(resolutions=(n, m))
    (t,) = deg.change_steps
    co = posterior_coefficients(deg, t)
    kappa = co.rho * co.c**2
    lam_max = float(resize_spectrum(n, m).eigenvalues.max())
    assert kappa * lam_max**2 < 1  # PSD: the smallest eigenvalue 1 - kappa lam_max^2 > 0
    xi = torch.randn(2, 1, n, n, generator=torch.Generator().manual_seed(n), dtype=F64)
    sigma_xi = co.sigma_s**2 * (xi - kappa * deg.apply_adjoint(deg.apply(xi, t), t))
    root = deg.covariance_root(deg.covariance_root(xi, t, t - 1), t, t - 1)
    assert torch.allclose(root, sigma_xi, atol=1e-13)


def test_resize_bad_input() -> None:
    with pytest.raises(ValueError, match="square"):
        resize(torch.zeros(1, 1, 8, 4), 4)
    with pytest.raises(ValueError, match="positive"):
        resize_matrix(8, 0)
    with pytest.raises(TypeError, match="int"):
        resize_matrix(8.0, 4)  # type: ignore[arg-type]


# ---------------------------------------------------------------- schedules
@pytest.mark.parametrize(
    ("schedule", "gamma", "expected"),
    [
        ("tanh", 2.0, [159, 500, 841]),
        ("sigmoid", 2.0, [364, 500, 636]),
        ("linear", 0.5, [250, 500, 750]),
        ("equal", 0.5, [250, 500, 750]),
        ("convex", 0.5, [438, 750, 937]),
    ],
)
def test_schedule_worked_boundaries(schedule: str, gamma: float, expected: list[int]) -> None:
    assert _changes(level_schedule(4, 1000, schedule, gamma)) == expected  # type: ignore[arg-type]
    deg = ScaleSpaceDegradation(64, 4, resolution_schedule=schedule, gamma=gamma)  # type: ignore[arg-type]
    assert list(deg.change_steps) == expected


def test_equal_schedule_on_a_non_halving_pyramid() -> None:
    deg = ScaleSpaceDegradation(64, 4, factor=1.5, resolution_schedule="linear")
    assert deg.resolutions == (20, 28, 40, 64)
    assert deg.change_steps == (250, 500, 750)
    assert [deg.resolution(t) for t in (249, 250, 500, 750, 999)] == [64, 40, 28, 20, 20]


@pytest.mark.parametrize("levels", [3, 6])
def test_convex_boundary_is_decided_by_float64_rounding(levels: int) -> None:
    # At t = 888, 1 - tau = 1/9 exactly, so x n = (1 - 1/3) n = 2n/3 is an integer
    # (2 or 4); float64 gives 1.9999999999999996 (or 3.999999999999999), so the level
    # changes one step later, at t = 889, as in the reference.
    assert 1 - Fraction(888, 999) == Fraction(1, 9)
    exact = Fraction(2 * levels, 3)
    assert exact.denominator == 1
    u = (1 - (1 - 888 / 999) ** 0.5) * levels
    assert u < exact and math.floor(u) == exact - 1
    idx = level_schedule(levels, 1000, "convex", 0.5)
    assert idx[888] == idx[887] and idx[889] == idx[888] - 1


@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.75, 0.9, 1.5])
def test_sigmoid_schedule_refuses_the_gammas_where_the_reference_fails(gamma: float) -> None:
    match = f"undefined for gamma={gamma}" if gamma >= 1 else f"gamma >= 1, got gamma={gamma}"
    with pytest.raises(ValueError, match=match):
        level_schedule(4, 1000, "sigmoid", gamma)
    with pytest.raises(ValueError, match=f"gamma={gamma}"):
        ScaleSpaceDegradation(64, 4, resolution_schedule="sigmoid", gamma=gamma)


@pytest.mark.parametrize("gamma", [1.0, 2.0, 3.0, 5.0])
def test_sigmoid_like_inverts_tanh_like(gamma: float) -> None:
    # G inverts H/2 and G(-1/2) = 1/2, so sigmoid_like(s) = G(s - 1/2) + 1/2 and
    # tanh_like(sigmoid_like(s)) = s: an identity independent of the root finder.
    for s in (0.0, 0.1, 0.3, 0.5, 0.77, 1.0):
        assert tanh_like(sigmoid_like(s, gamma), gamma) == pytest.approx(s, abs=1e-10)
    assert tanh_like(0.0, gamma) == 1.0 and tanh_like(1.0, gamma) == pytest.approx(0.0)
    assert tanh_like(0.5, gamma) == 0.5
    # gamma = 1: v = u + 1/2 and H is the (decreasing) smoothstep 1 - 2 S(s): tanh_like = 1 - S
    if gamma == 1.0:
        for s in (0.2, 0.6):
            assert tanh_like(s, 1.0) == pytest.approx(1 - (3 * s**2 - 2 * s**3), abs=1e-14)


@settings(max_examples=30)
@given(
    schedule=st.sampled_from(["linear", "convex", "tanh", "sigmoid"]),
    gamma=st.sampled_from([0.3, 0.5, 1.0, 2.0, 3.0]),
    levels=st.integers(1, 5),
    T=st.integers(2, 300),
)
def test_level_schedule_properties(schedule: str, gamma: float, levels: int, T: int) -> None:
    if schedule in ("sigmoid", "tanh") and gamma < 1:
        with pytest.raises(ValueError, match=f"gamma={gamma}"):
            level_schedule(levels, T, schedule, gamma)  # type: ignore[arg-type]
        return
    idx = level_schedule(levels, T, schedule, gamma)  # type: ignore[arg-type]
    assert len(idx) == T and idx[0] == levels - 1 and idx[-1] == 0
    assert all(a >= b for a, b in itertools.pairwise(idx))


def test_resolution_schedule_with_explicit_sizes() -> None:
    r = resolution_schedule(64, 4, 1000, "linear", resolutions=(64, 40, 24, 16))
    assert [int((r == s).sum()) for s in (64, 40, 24, 16)] == [250, 250, 250, 250]
    with pytest.raises(ValueError, match="resolutions"):
        resolution_schedule(64, 3, 1000, resolutions=(64, 40, 24, 16))
    with pytest.raises(ValueError, match="resolution_schedule"):
        level_schedule(4, 1000, "cubic")  # type: ignore[arg-type]


# ---------------------------------------------------------------- degradation
def test_degradation_with_explicit_resolutions() -> None:
    deg = ScaleSpaceDegradation(resolutions=(64, 40, 24, 16))
    assert deg.image_size == 64 and deg.num_levels == 4 and deg.resolutions == (16, 24, 40, 64)
    x0 = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected = x0
    for size in (40, 24, 16):  # one antialiased bilinear resize per level
        expected = F.interpolate(
            expected, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    assert torch.equal(deg.degrade(x0, 999), expected)
    for t in deg.change_steps:
        r_in, r_out = deg.resolution(t - 1), deg.resolution(t)
        x = torch.randn(1, 1, r_in, r_in, dtype=F64)
        y = torch.randn(1, 1, r_out, r_out, dtype=F64)
        assert float((deg.apply(x, t) * y).sum()) == pytest.approx(
            float((x * deg.apply_adjoint(y, t)).sum()), rel=1e-12
        )
    same = ScaleSpaceDegradation(64, 4, resolutions=(64, 40, 24, 16))
    assert same.change_steps == deg.change_steps


def test_degradation_bad_pyramids() -> None:
    with pytest.raises(ValueError, match="strictly decreasing"):
        ScaleSpaceDegradation(resolutions=(64, 64, 32))
    with pytest.raises(ValueError, match="positive ints"):
        ScaleSpaceDegradation(resolutions=(64, 0))
    with pytest.raises(ValueError, match="image_size=32 disagrees"):
        ScaleSpaceDegradation(32, resolutions=(64, 40))
    with pytest.raises(ValueError, match="image_size and num_levels"):
        ScaleSpaceDegradation()
    with pytest.raises(ValueError, match="one resolution change per step"):
        deg = ScaleSpaceDegradation(resolutions=(12, 8, 5))
        deg.covariance_root(torch.zeros(1, 1, 12, 12), deg.change_steps[1], 0)


# ---------------------------------------------------------------- respacing
def _space_timesteps(T: int, k: int) -> set[int]:
    """guided-diffusion's rule written from its definition, with exact fractions."""
    stride = Fraction(T - 1, k - 1) if k > 1 else Fraction(1)
    return {round(j * stride) for j in range(k)}


@pytest.mark.parametrize(("T", "k"), [(1000, 50), (1000, 25), (1000, 1), (1000, 1000), (50, 7)])
def test_even_timesteps_is_guided_diffusion_spacing(T: int, k: int) -> None:
    steps = even_timesteps(T, k)
    assert set(steps) == _space_timesteps(T, k) and len(steps) == k
    assert steps[0] == 0 and (k == 1 or steps[-1] == T - 1)


def test_even_spacing_keeps_change_steps_and_differs_from_trailing() -> None:
    deg = ScaleSpaceDegradation(64, 4)
    even = deg.timesteps(50, spacing="even").tolist()
    trailing = deg.timesteps(50).tolist()
    assert even[0] == 999 and even[-1] == 0 and set(deg.change_steps) <= set(even)
    assert even == sorted(even, reverse=True) and len(set(even)) == len(even)
    # the figure: 53 steps each, only 5 shared
    assert len(even) == 53 and len(trailing) == 53 and len(set(even) & set(trailing)) == 5
    assert respaced_timesteps(deg, 50, "even").tolist() == even
    with pytest.raises(ValueError, match="spacing"):
        deg.timesteps(50, spacing="uniform")  # type: ignore[arg-type]
