"""Wall time of the README's command 1, the quick 2D study, against a base commit.

Runs ``examples/dual_scale_2d/run_study.py --quick`` of two source trees side by side:
the base (a ``git worktree`` of an earlier commit, e.g.
``git worktree add /tmp/base 324278f``) and this tree, alternating the order round by
round, each run in its own process with the same thread count and job count, and the
package imported from that tree's ``src`` (``PYTHONPATH``). It prints, per run, the
wall time, the CPU time of the study's processes (user + system, which a loaded
machine inflates less than wall time) and the load average before and after; then the
median base / current ratios; and it checks that both trees computed the same KL table
(every run's KL and evaluation loss, compared exactly). If they differ it prints the
largest differences and fails, unless ``--tolerance`` allows them.

The exact check holds against c38e8a3 (measured on moons). Against 324278f it does
not: 17c2b18 (the scheduler's forward process and posterior moved to
``_forward_process``) changed the float rounding of the sampler, so the KLs of the two
trees differ in the seventh digit (by up to 6e-7 bits over the 12 runs; the evaluation
losses are equal); run that comparison with ``--tolerance 1e-6``, and check exactness
against a base from after that commit.

    python benchmarks/bench_quick_study.py                        # the full command 1
    python benchmarks/bench_quick_study.py --datasets moons       # 3 of its 12 runs
    python benchmarks/bench_quick_study.py --base /tmp/base --rounds 3
    python benchmarks/bench_quick_study.py --base /tmp/base --tolerance 1e-6  # 324278f
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)  # this driver does no tensor work; the study sets its own threads

HERE = Path(__file__).resolve().parents[1]
STUDY = Path("examples") / "dual_scale_2d" / "run_study.py"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", type=Path, default=Path("/tmp/base"), help="the base tree")
    p.add_argument("--rounds", type=int, default=2, help="runs of each tree (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--jobs", type=int, default=None, help="parallel runs (default: the study's)")
    p.add_argument("--datasets", nargs="+", default=None, help="default: all four")
    p.add_argument("--models", nargs="+", default=None, help="default: all three")
    p.add_argument("--steps", type=int, default=None, help="default: the quick study's 1,000")
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="largest accepted |difference| of a KL or an evaluation loss (default 0: exact)",
    )
    return p.parse_args()


def study_argv(args: argparse.Namespace, out: Path) -> list[str]:
    argv = [sys.executable, str(STUDY), "--quick", "--out", str(out)]
    argv += ["--threads", str(args.threads)]
    if args.jobs is not None:
        argv += ["--jobs", str(args.jobs)]
    if args.datasets:
        argv += ["--datasets", *args.datasets]
    if args.models:
        argv += ["--models", *args.models]
    if args.steps is not None:
        argv += ["--steps", str(args.steps)]
    return argv


def run_once(tree: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One study run of ``tree`` in a fresh process: wall and CPU seconds, load, KLs."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(study_argv(args, out), cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    runs = json.loads((out / "results.json").read_text())["runs"]
    table = {(r["dataset"], r["model"], r["seed"]): (r["kl"], r["eval_loss"]) for r in runs}
    load = (load_before, os.getloadavg()[0])
    return {"wall": wall, "cpu": cpu, "load": load, "table": table}


def main() -> None:
    args = parse_args()
    base = args.base.resolve()
    if not (base / STUDY).exists():
        sys.exit(f"no base tree at {base}: create one with `git worktree add {base} <commit>`")
    trees = {"base": base, "current": HERE}
    print(f"base {base}, current {HERE}; {args.threads} torch thread(s) per run, cores "
          f"{os.cpu_count()}; study: {' '.join(study_argv(args, Path('OUT'))[1:])}")  # fmt: skip
    results: dict[str, list[dict[str, Any]]] = {"base": [], "current": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            order = ("base", "current") if rnd % 2 == 0 else ("current", "base")
            for name in order:
                r = run_once(trees[name], args, Path(tmp) / f"{name}{rnd}")
                results[name].append(r)
                print(
                    f"round {rnd + 1} {name:8s}: wall {r['wall']:7.1f} s, CPU {r['cpu']:7.1f} s, "
                    f"load average {r['load'][0]:.1f} -> {r['load'][1]:.1f}",
                    flush=True,
                )
    walls = [
        b["wall"] / c["wall"] for b, c in zip(results["base"], results["current"], strict=True)
    ]
    cpus = [b["cpu"] / c["cpu"] for b, c in zip(results["base"], results["current"], strict=True)]
    print(f"base / current, median over {len(walls)} rounds: wall {statistics.median(walls):.2f}x "
          f"(rounds: {', '.join(f'{w:.2f}' for w in walls)}), CPU {statistics.median(cpus):.2f}x "
          f"(rounds: {', '.join(f'{c:.2f}' for c in cpus)})")  # fmt: skip
    tables = [r["table"] for r in results["base"] + results["current"]]
    same = all(t == tables[0] for t in tables)
    print("KL table (KL bits, eval loss):")
    for key, (kl, ev) in sorted(tables[0].items()):
        print(f"  {key[0]:7s} {key[1]:9s} seed {key[2]}: KL {kl:.6f}, eval {ev:.6f}")
    if same:
        print("every run of both trees computed the same table exactly")
        return
    if any(t.keys() != tables[0].keys() for t in tables):
        sys.exit("THE TABLES DIFFER in their runs: " + "; ".join(str(sorted(t)) for t in tables))
    for name, tree_tables in results.items():
        exact = all(r["table"] == tree_tables[0]["table"] for r in tree_tables)
        print(f"  the {name} tree's rounds are {'equal' if exact else 'NOT equal'} to each other")
    d_kl, d_ev = (
        max(abs(t[key][i] - tables[0][key][i]) for t in tables for key in tables[0]) for i in (0, 1)
    )
    print(f"the tables differ: largest |difference| of a KL {d_kl:.3g} bits, of an "
          f"evaluation loss {d_ev:.3g} (tolerance {args.tolerance:g})")  # fmt: skip
    if max(d_kl, d_ev) > args.tolerance:
        sys.exit("THE TABLES DIFFER beyond the tolerance: " + "; ".join(str(t) for t in tables))
    print(f"the tables agree to within {args.tolerance:g}, not exactly")


if __name__ == "__main__":
    main()
