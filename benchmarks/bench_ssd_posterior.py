"""Closed-form versus Lanczos covariance root on a resolution-changing reverse step.

Scale Space Diffusion's reverse step into a larger resolution needs
Sigma^{1/2} xi with Sigma = sigma_s^2 (I - rho c^2 M^T M), M the antialiased bilinear
resize to the next (smaller) pyramid size: the 2x downsample, or any other pair such as
64 -> 40 for a factor-1.5 pyramid. ``ScaleSpaceDegradation.covariance_root`` applies it exactly with
the eigendecomposition of the 1-D factor (two small matmuls per side);
``lanczos_covariance_root`` is the generic path (power iteration for lambda_max, then
Lanczos with full reorthogonalisation), which needs only ``apply``/``apply_adjoint``.

Both run side by side in one process on the same noise (a batch of 16 RGB images) for
each change step (by default 32 -> 64, 40 -> 64 and 28 -> 40 px); the script prints
the median times, their ratio and the largest absolute difference between the two
results (in the working dtype and in float64).

Usage::

    python benchmarks/bench_ssd_posterior.py [--batch 16] [--pairs 64:32 64:40 40:28]
        [--iterations 40] [--device cpu] [--dtype float32] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch
from torch.utils import benchmark

from scalemix.degradation import ScaleSpaceDegradation
from scalemix.degradation.posterior import lanczos_covariance_root

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def time_median(fn: benchmark.Timer, min_run_time: float) -> float:
    """Median seconds per call of a ``torch.utils.benchmark.Timer`` (with warm-up)."""
    fn.blocked_autorange(min_run_time=min(0.5, min_run_time))  # warm-up
    return float(fn.blocked_autorange(min_run_time=min_run_time).median)


def bench_pair(args: argparse.Namespace, big: int, small: int) -> None:
    """Time and compare both roots on the change step ``small -> big`` of a 2-level pyramid."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    deg = ScaleSpaceDegradation(resolutions=(big, small))  # one change: small -> big
    (t,) = deg.change_steps
    gen = torch.Generator().manual_seed(0)
    xi64 = torch.randn(args.batch, args.channels, big, big, generator=gen, dtype=torch.float64)
    xi = xi64.to(device=device, dtype=dtype)
    sync = "torch.cuda.synchronize()" if device.type == "cuda" else ""
    env = {"deg": deg, "xi": xi, "t": t, "lanczos": lanczos_covariance_root, "k": args.iterations}
    closed = benchmark.Timer(
        stmt=f"deg.covariance_root(xi, t, t - 1); {sync}", globals=env, num_threads=args.threads
    )
    lanczos = benchmark.Timer(
        stmt=f"lanczos(deg, xi, t, num_iterations=k); {sync}",
        globals=env,
        num_threads=args.threads,
    )
    t_closed = time_median(closed, args.min_run_time)
    t_lanczos = time_median(lanczos, args.min_run_time)

    diff = (deg.covariance_root(xi, t, t - 1) - lanczos_covariance_root(deg, xi, t)).abs().max()
    xi64 = xi64.to(device)
    diff64 = (
        (deg.covariance_root(xi64, t, t - 1) - lanczos_covariance_root(deg, xi64, t)).abs().max()
    )
    print(
        f"reverse step t={t} -> {t - 1} ({small} -> {big} px), "
        f"xi {tuple(xi.shape)} {args.dtype} on {device}, {args.threads} thread(s)"
    )
    print(f"  closed form     : {t_closed * 1e3:9.3f} ms (median)")
    print(f"  Lanczos (k={args.iterations:>3}) : {t_lanczos * 1e3:9.3f} ms (median)")
    print(f"  speed-up        : {t_lanczos / t_closed:9.1f}x  (Lanczos time / closed-form time)")
    print(
        f"  max |closed - Lanczos| : {float(diff):.3e} ({args.dtype}), "
        f"{float(diff64):.3e} (float64)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument(
        "--pairs",
        nargs="+",
        default=["64:32", "64:40", "40:28"],
        help="change steps as BIG:SMALL sizes (the reverse step goes SMALL -> BIG)",
    )
    parser.add_argument("--iterations", type=int, default=40, help="Lanczos steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per timer")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    # A throwaway Lanczos call first: until large buffers have been freed once, glibc
    # serves every ~1 MB tensor by a fresh mmap (page faults), and the first closed-form
    # timing of a process read 2-3x slow.
    warm = ScaleSpaceDegradation(resolutions=(64, 32))
    xi = torch.randn(args.batch, args.channels, 64, 64).to(args.device, DTYPES[args.dtype])
    lanczos_covariance_root(warm, xi, warm.change_steps[0], num_iterations=4)
    for pair in args.pairs:
        big, small = (int(v) for v in pair.split(":"))
        bench_pair(args, big, small)


if __name__ == "__main__":
    main()
