"""One-command GPU benchmark suite: writes ``results.json`` and ``results.md`` into ``--out``.

Parts (``gpu_suite_parts.py`` and ``gpu_suite_unet.py``), each with its own time cap:

1. ``step_ratio``: dual-scale / baseline training-step time (eager, compiled, CUDA graphs)
   and the same ratio inside ``scalemix.training.train``;
2. ``study_2d``: the 2D study's training time for 36 runs (4 datasets x 3 models x 3
   seeds) with ``train_ensemble`` against 36 separate ``train`` runs (both projected to
   10,000 steps from the steps measured);
3. ``ssd_sampling``: SSD vs full-resolution DDPM sampling at 64 px (paper UNet and the
   (1, 2, 2, 2) one, bf16, batch 64) as a fraction of the FLOP bound of ``flops.py``;
4. ``unet_training``: FlexiUNet training throughput per level and for uniform-t SSD vs
   DDPM iterations (bf16, channels_last);
5. ``celeba_preset``: iterations/s of the CelebA ``small`` preset on synthetic images
   and the projected time of the full run (and of the ``paper`` preset).

On CUDA every part runs in its own process, killed at its cap, so a hang or a crash
keeps what the other parts measured; each part saves its figures as it goes, and
``results.json`` / ``results.md`` are rewritten after every part. Usage::

    PYTHONPATH=src python benchmarks/gpu_suite.py --out benchmarks/results/h100
    python benchmarks/gpu_suite.py --device cpu --tiny --out /tmp/suite   # toy sizes
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_suite_parts import Context, step_ratio, study_2d
from gpu_suite_unet import celeba_preset, ssd_sampling, unet_training

PARTS = {
    "step_ratio": step_ratio,
    "study_2d": study_2d,
    "ssd_sampling": ssd_sampling,
    "unet_training": unet_training,
    "celeba_preset": celeba_preset,
}

#: seconds per part on a GPU (their sum stays under 5 minutes with process start-up)
CAPS = {
    "step_ratio": 95.0,
    "study_2d": 150.0,
    "ssd_sampling": 150.0,
    "unet_training": 100.0,
    "celeba_preset": 80.0,
}
TINY_CAP = 40.0


def part_file(out: Path, name: str) -> Path:
    return out / "parts" / f"{name}.json"


def run_in_process(name: str, args: argparse.Namespace, cap: float) -> dict[str, Any]:
    """Run one part here; its figures are saved to ``parts/<name>.json`` as they come."""
    path = part_file(args.out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    ctx = Context(torch.device(args.device), args.tiny, cap, path)
    start = time.perf_counter()
    try:
        PARTS[name](ctx)
        ctx.result["status"] = "ok"
    except Exception as err:  # one failing part must not stop the others
        ctx.result["status"] = "error"
        ctx.result["error"] = f"{type(err).__name__}: {err}"
        ctx.result["traceback"] = traceback.format_exc(limit=8)
    ctx.result["seconds"] = round(time.perf_counter() - start, 2)
    ctx.save()
    return ctx.result


def run_isolated(name: str, args: argparse.Namespace, cap: float) -> dict[str, Any]:
    """Run one part in a child process (and process group) killed after ``cap`` seconds.

    The child's output goes to ``parts/<name>.log``.
    """
    path = part_file(args.out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--part", name, "--out", str(args.out)]
    cmd += ["--device", args.device, "--cap", str(cap)] + (["--tiny"] if args.tiny else [])
    start = time.perf_counter()
    status, detail = "crashed", f"see {path.with_suffix('.log')}"
    with path.with_suffix(".log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=cap)
            detail = f"exit code {code}; see {path.with_suffix('.log')}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the part and any compile workers it started
            proc.wait()
            status = "timeout"
            detail = f"killed after the part's cap of {cap:.0f} s; the figures above were measured"
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if result.get("status") not in ("ok", "error"):
        result["status"] = status
        result["error"] = detail
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def metadata(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    meta: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "tiny": args.tiny,
        "cpu_threads": torch.get_num_threads(),
        "host_cpus": os.cpu_count(),
    }
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
        meta["cuda"] = torch.version.cuda
        meta["tf32_matmul"] = True  # set by every part on CUDA (the 2D models run fp32)
        meta["cudnn_benchmark"] = True
    return meta


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = ["# scalemix GPU suite", ""]
    lines += [f"- {key}: {cell(value)}" for key, value in meta.items()]
    for name, part in results["parts"].items():
        lines += ["", f"## {name}: {part.get('status', '?')} ({part.get('seconds', '?')} s)", ""]
        lines += [f"- {note}" for note in part.get("notes", [])]
        for key, value in part.get("summary", {}).items():
            lines.append(f"- **{key}**: {cell(value)}")
        if part.get("error"):
            lines.append(f"- error: `{str(part['error']).strip().splitlines()[-1]}`")
        rows = part.get("rows", [])
        if rows:
            cols = list(dict.fromkeys(k for row in rows for k in row))
            lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write(out: Path, results: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="toy sizes (CPU smoke test)")
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    p.add_argument("--isolate", choices=("auto", "yes", "no"), default="auto")
    p.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)
    p.add_argument("--cap", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if torch.device(args.device).type == "cpu":
        torch.set_num_threads(1)
    if args.part is not None:  # child process of run_isolated
        return run_in_process(args.part, args, args.cap or CAPS[args.part])
    isolate = args.isolate == "yes" or (args.isolate == "auto" and args.device != "cpu")
    results: dict[str, Any] = {"meta": metadata(args), "parts": {}}
    write(args.out, results)
    for name in args.parts:
        cap = TINY_CAP if args.tiny else CAPS[name]
        run = run_isolated if isolate else run_in_process
        results["parts"][name] = run(name, args, cap)
        write(args.out, results)
        print(
            f"{name}: {results['parts'][name]['status']} in {results['parts'][name]['seconds']} s"
        )
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return results


if __name__ == "__main__":
    main()
