"""Speed of ``knn_kl`` against a scikit-learn re-implementation of NPEET's ``kldiv``.

Workload of the 2-D study's KL metric: n = 100,000 "real" and m = 10,000 "generated"
points in 2-D (two different Gaussian mixtures, seeded), k = 5, max-norm, bits.

* reference: the approach of NPEET's ``kldiv``, written here from its definition:
  ``sklearn.neighbors.KDTree(metric="chebyshev")`` on each set, ``query(x, k + 1)`` on the
  real tree for rho (the first column is the point itself), ``query(x, k)`` on the
  generated tree for nu, then
  ``(log(m) - log(n - 1) + d * (mean(log nu) - mean(log rho))) / log(2)``.
* ours: ``scalemix.metrics.knn_kl(x, y, k=5)`` (scipy ``cKDTree``, all cores).
* ours, torch backend: exact chunked ``torch.cdist`` + ``topk`` (on CUDA when available;
  on the CPU its O(n (n + m)) work is timed on ``--torch-n`` real points).

Times are medians over ``--repeats`` runs after one warm-up; the ratio is measured side
by side in the same process.

Usage::

    python benchmarks/bench_knn_kl.py [--n 100000] [--m 10000] [--repeats 5] [--torch-n 10000]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.neighbors import KDTree

from scalemix.metrics import knn_kl


def gaussian_mixture(n: int, means: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """``n`` points from an equal-weight mixture of isotropic Gaussians at ``means``."""
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(means), size=n)
    return means[which] + scale * rng.normal(size=(n, means.shape[1]))


def sklearn_kldiv(x: np.ndarray, y: np.ndarray, k: int = 5) -> float:
    """NPEET-style ``kldiv`` (bits) with scikit-learn k-d trees in the max-norm."""
    n, d = x.shape
    m = y.shape[0]
    rho = KDTree(x, metric="chebyshev").query(x, k=k + 1)[0][:, k]
    nu = KDTree(y, metric="chebyshev").query(x, k=k)[0][:, k - 1]
    const = math.log(m) - math.log(n - 1)
    return float(const + d * (np.log(nu).mean() - np.log(rho).mean())) / math.log(2)


def median_time(fn: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up, and its value."""
    value = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="real points")
    parser.add_argument("--m", type=int, default=10_000, help="generated points")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch-n", type=int, default=10_000, help="real points, CPU torch run")
    args = parser.parse_args()

    real = gaussian_mixture(args.n, np.array([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.5]]), 0.3, 0)
    generated = gaussian_mixture(args.m, np.array([[-1.1, 0.1], [0.9, 0.5], [0.0, -1.4]]), 0.35, 1)
    print(f"n={args.n} real, m={args.m} generated, d=2, k={args.k}, max-norm, bits")
    print(f"cpu threads: os.cpu_count()={os.cpu_count()}, torch={torch.get_num_threads()}")

    t_ref, v_ref = median_time(lambda: sklearn_kldiv(real, generated, args.k), args.repeats)
    t_ours, v_ours = median_time(lambda: knn_kl(real, generated, k=args.k), args.repeats)
    print(f"sklearn KDTree (NPEET kldiv approach): {t_ref * 1e3:9.1f} ms   KL = {v_ref:.12f}")
    print(f"scalemix knn_kl (cKDTree, workers=-1): {t_ours * 1e3:9.1f} ms   KL = {v_ours:.12f}")
    print(f"speed-up: {t_ref / t_ours:.2f}x   |difference| = {abs(v_ref - v_ours):.2e}")
    one = lambda: knn_kl(real, generated, k=args.k, workers=1)  # noqa: E731
    t_one, _ = median_time(one, args.repeats)
    print(f"scalemix knn_kl (cKDTree, workers=1):  {t_one * 1e3:9.1f} ms   "
          f"speed-up {t_ref / t_one:.2f}x")  # fmt: skip
    t_ad, v_ad = median_time(
        lambda: knn_kl(real, generated, k=args.k, estimator="adaptive"), args.repeats
    )
    print(f"scalemix knn_kl adaptive estimator:    {t_ad * 1e3:9.1f} ms   KL = {v_ad:.6f}")

    if torch.cuda.is_available():
        xt = torch.from_numpy(real).cuda()
        yt = torch.from_numpy(generated).cuda()

        def on_gpu() -> float:
            value = knn_kl(xt, yt, k=args.k, backend="torch")
            torch.cuda.synchronize()
            return value

        t_gpu, v_gpu = median_time(on_gpu, args.repeats)
        print(f"scalemix knn_kl torch backend (CUDA):  {t_gpu * 1e3:9.1f} ms   KL = {v_gpu:.12f}"
              f"   |difference| = {abs(v_gpu - v_ours):.2e}")  # fmt: skip
    sub = real[: args.torch_n]
    t_sub, v_sub = median_time(lambda: knn_kl(sub, generated, k=args.k), args.repeats)
    repeats = max(1, min(args.repeats, 3))
    t_cpu, v_cpu = median_time(lambda: knn_kl(sub, generated, k=args.k, backend="torch"), repeats)
    print(f"torch backend on the CPU, n={len(sub)}: {t_cpu * 1e3:9.1f} ms vs cKDTree "
          f"{t_sub * 1e3:.1f} ms ({t_cpu / t_sub:.0f}x slower)   |difference| = "
          f"{abs(v_cpu - v_sub):.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
