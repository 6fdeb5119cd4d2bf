"""Exact k-nearest-neighbour distances for the KL estimators: a k-d tree and a torch path.

Both backends return the same :class:`Neighbours` record for the points of ``x``:

* ``rho[i]``: distance from ``x_i`` to its k-th nearest *other* point of ``x``;
* ``nu[i]``: distance from ``x_i`` to its k-th nearest point of ``y``;

and, for the adaptive estimator, with ``eps_i = max(rho[i], nu[i])``:

* ``x_count[i]``: the number of other points of ``x`` within ``eps_i`` (ties included);
* ``y_count[i]``: the number of points of ``y`` within ``eps_i``;
* ``rho_adaptive[i]`` / ``nu_adaptive[i]``: the largest of those distances, i.e. the
  distance to the ``x_count[i]``-th nearest other ``x`` point and to the ``y_count[i]``-th
  nearest ``y`` point.

Self-exclusion: the tree path queries ``k + 1`` neighbours of ``x_i`` among ``x`` and drops
one zero distance; the torch path masks the diagonal. Both see the same multiset of
distances, so they agree even when ``x`` holds duplicate points.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from ._inputs import FloatArray

__all__ = ["Neighbours", "kdtree_neighbours", "torch_neighbours"]

IntArray = npt.NDArray[np.int64]

#: Number of distances held at once by one chunk (float64: 128 MiB).
_CHUNK_ELEMENTS = 1 << 24


class Neighbours(NamedTuple):
    """k-th neighbour distances of the points of ``x``; every field has shape ``(n,)``.

    The rows follow some permutation of the points of ``x`` (the same for every field).
    """

    rho: FloatArray
    nu: FloatArray
    x_count: IntArray | None = None
    y_count: IntArray | None = None
    rho_adaptive: FloatArray | None = None
    nu_adaptive: FloatArray | None = None


def _sorted_distances(
    tree: cKDTree, query: FloatArray, kq: int, p: float, workers: int
) -> FloatArray:
    dist, _ = tree.query(query, k=kq, p=p, workers=workers)
    return np.asarray(dist, dtype=np.float64).reshape(query.shape[0], kq)


def _count_within(
    tree: cKDTree,
    query: FloatArray,
    eps: FloatArray,
    first: FloatArray,
    offset: int,
    p: float,
    workers: int,
) -> tuple[IntArray, FloatArray]:
    """Count tree points within ``eps[i]`` of ``query[i]`` and return the largest such distance.

    ``first`` holds the ascending distances of a first query; rows whose count saturates it
    are queried again with four times as many neighbours, in chunks that bound memory.
    ``offset`` (1 when the query points are the tree's own points) removes the self match.
    """
    size = tree.n
    count = np.empty(query.shape[0], dtype=np.int64)
    radius = np.empty(query.shape[0], dtype=np.float64)
    todo = np.arange(query.shape[0])
    dist = first
    while True:
        kq = dist.shape[1]
        inside = dist <= eps[todo, None]
        c = inside.sum(axis=1)
        saturated = (c == kq) & (kq < size)
        done = ~saturated
        rows = todo[done]
        count[rows] = c[done] - offset
        radius[rows] = dist[done, c[done] - 1]
        todo = todo[saturated]
        if todo.size == 0:
            return count, radius
        kq = min(4 * kq, size)
        step = max(1, _CHUNK_ELEMENTS // kq)
        parts = [
            _sorted_distances(tree, query[todo[s : s + step]], kq, p, workers)
            for s in range(0, todo.size, step)
        ]
        dist = np.concatenate(parts, axis=0)


def kdtree_neighbours(
    x: FloatArray, y: FloatArray, k: int, p: float, adaptive: bool, workers: int
) -> Neighbours:
    """k-th neighbour distances with :class:`scipy.spatial.cKDTree` (``p=inf``: max-norm).

    Args:
        x: ``(n, d)`` float64 points of P.
        y: ``(m, d)`` float64 points of Q.
        k: neighbour order, ``1 <= k < n`` and ``k <= m``.
        p: Minkowski order, ``np.inf`` (Chebyshev) or ``2.0`` (Euclidean).
        adaptive: also compute the counts and radii of the adaptive estimator.
        workers: parallel query threads (``-1``: all cores).
    """
    tree_x = cKDTree(x)
    tree_y = cKDTree(y)
    # Query in the tree's leaf order: consecutive queries then visit the same nodes, which
    # is markedly faster than the input order. The rows of the result are permuted
    # accordingly; the estimators only average over them.
    xq = x[tree_x.indices]
    if not adaptive:
        rho = tree_x.query(xq, k=[k + 1], p=p, workers=workers)[0][:, 0]
        nu = tree_y.query(xq, k=[k], p=p, workers=workers)[0][:, 0]
        return Neighbours(np.asarray(rho, np.float64), np.asarray(nu, np.float64))
    start = 4 * k
    dx = _sorted_distances(tree_x, xq, min(start + 1, x.shape[0]), p, workers)
    dy = _sorted_distances(tree_y, xq, min(start, y.shape[0]), p, workers)
    rho, nu = dx[:, k], dy[:, k - 1]
    eps = np.maximum(rho, nu)
    x_count, rho_adaptive = _count_within(tree_x, xq, eps, dx, 1, p, workers)
    y_count, nu_adaptive = _count_within(tree_y, xq, eps, dy, 0, p, workers)
    return Neighbours(rho, nu, x_count, y_count, rho_adaptive, nu_adaptive)


def torch_neighbours(
    x: Tensor, y: Tensor, k: int, p: float, adaptive: bool, chunk_size: int | None
) -> Neighbours:
    """The same distances as :func:`kdtree_neighbours`, by brute force in chunks of rows.

    Each chunk computes a ``(c, n)`` and a ``(c, m)`` block of exact distances with
    :func:`torch.cdist` (without the matrix-product shortcut for Euclidean distances) on
    the device of ``x``, masks the self-distances, and keeps the ``k`` smallest with
    :func:`torch.topk`. Memory is ``O(c (n + m))``; time is ``O(n (n + m) d)``.

    Args:
        x: ``(n, d)`` float64 tensor.
        y: ``(m, d)`` float64 tensor on the same device.
        k: neighbour order.
        p: ``inf`` or ``2.0``.
        adaptive: as in :func:`kdtree_neighbours`.
        chunk_size: rows per chunk; ``None`` picks about 2**24 distances per block.
    """
    n, m = x.shape[0], y.shape[0]
    rows = chunk_size if chunk_size is not None else max(1, _CHUNK_ELEMENTS // max(n, m))
    mode = "donot_use_mm_for_euclid_dist"
    outputs: list[list[Tensor]] = [[] for _ in range(6 if adaptive else 2)]
    for start in range(0, n, rows):
        xs = x[start : start + rows]
        dxx = torch.cdist(xs, x, p=p, compute_mode=mode)
        local = torch.arange(xs.shape[0], device=x.device)
        dxx[local, local + start] = float("inf")
        dxy = torch.cdist(xs, y, p=p, compute_mode=mode)
        rho = dxx.topk(k, dim=1, largest=False).values[:, k - 1]
        nu = dxy.topk(k, dim=1, largest=False).values[:, k - 1]
        results = [rho, nu]
        if adaptive:
            eps = torch.maximum(rho, nu)[:, None]
            in_x, in_y = dxx <= eps, dxy <= eps
            floor = torch.tensor(float("-inf"), dtype=x.dtype, device=x.device)
            results += [
                in_x.sum(dim=1),
                in_y.sum(dim=1),
                torch.where(in_x, dxx, floor).amax(dim=1),
                torch.where(in_y, dxy, floor).amax(dim=1),
            ]
        for out, res in zip(outputs, results, strict=True):
            out.append(res)
    arrays = [torch.cat(out).cpu().numpy() for out in outputs]
    if not adaptive:
        return Neighbours(arrays[0], arrays[1])
    return Neighbours(
        arrays[0],
        arrays[1],
        arrays[2].astype(np.int64),
        arrays[3].astype(np.int64),
        arrays[4],
        arrays[5],
    )
