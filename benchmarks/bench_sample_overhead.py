"""Per-step cost of ``scalemix.sample`` against another checkout, side by side.

Runs the same sampling calls with this tree's scalemix and with the scalemix of
``--base`` (a folder holding ``src/scalemix``, e.g. ``git worktree add /tmp/base REV``),
alternating rounds in separate processes, one torch thread each, and prints the median
wall time per call of each and their ratio. The samples of both trees must agree
(``--tolerance``), so the comparison is between equal computations.

    python benchmarks/bench_sample_overhead.py --base /tmp/base --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
import scalemix
from scalemix import DDPMScheduler, ScaleSpaceDegradation, sample, scale_space_sample

net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.SiLU(), torch.nn.Linear(64, 2))
conv = torch.nn.Conv2d(1, 1, 3, padding=1)
init = torch.Generator().manual_seed(0)
with torch.no_grad():
    for p in [*net.parameters(), *conv.parameters()]:
        p.copy_(0.3 * torch.randn(p.shape, generator=init))
mlp = lambda x, t: net(x)
def ssd(x, t, out_size=None):
    h = conv(x)
    if out_size is not None and out_size != x.shape[-1]:
        h = torch.nn.functional.interpolate(h, size=(out_size, out_size), mode="bilinear")
    return h
sched, deg = DDPMScheduler(1000), ScaleSpaceDegradation(16, 2, num_train_timesteps=1000)
cases = {
    "ddpm 2D, 1000 steps": lambda g: sample(mlp, sched, (256, 2), generator=g),
    "dpmpp_2m 2D, 20 steps": lambda g: sample(
        mlp, sched, (256, 2), sampler="dpmpp_2m", steps=20, generator=g
    ),
    "ssd 16/8 px, 250 steps": lambda g: scale_space_sample(
        ssd, deg, 8, channels=1, steps=250, generator=g
    ),
}
out = {}
with torch.no_grad():
    for name, fn in cases.items():
        fn(torch.Generator().manual_seed(0))  # warm-up
        t0 = time.perf_counter()
        x = fn(torch.Generator().manual_seed(1))
        out[name] = [time.perf_counter() - t0, x.flatten()[:64].tolist()]
print(json.dumps(out))
"""


def run(src: Path) -> dict[str, list[object]]:
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(src)], capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="checkout to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    trees = {"this tree": Path(__file__).resolve().parents[1] / "src", "base": args.base / "src"}
    times: dict[str, dict[str, list[float]]] = {k: {} for k in trees}
    first: dict[str, dict[str, list[object]]] = {}
    for _ in range(args.rounds):
        for label, src in trees.items():
            result = run(src)
            first.setdefault(label, result)
            for case, (seconds, _) in result.items():
                times[label].setdefault(case, []).append(float(seconds))  # type: ignore[arg-type]
    print(f"one torch thread per process, {args.rounds} alternating rounds; median s per call")
    print(f"{'case':<26} {'this tree':>10} {'base':>10} {'base / this':>12}")
    for case in times["this tree"]:
        a = [float(v) for v in first["this tree"][case][1]]  # type: ignore[union-attr]
        b = [float(v) for v in first["base"][case][1]]  # type: ignore[union-attr]
        diff = max(abs(x - y) for x, y in zip(a, b, strict=True))
        if diff > args.tolerance:
            raise SystemExit(f"{case}: the trees' samples differ by {diff:.3g}")
        new, old = (
            statistics.median(times["this tree"][case]),
            statistics.median(times["base"][case]),
        )
        print(f"{case:<26} {new:>10.3f} {old:>10.3f} {old / new:>11.2f}x")


if __name__ == "__main__":
    main()
