"""One call on a GPU: SSD (3 and 2 levels) against DDPM on Fashion-MNIST, with KID.

Runs the real-image study (``examples/scale_space_study/study.py``) with its ``gpu``
preset: 32 px (the largest size Fashion-MNIST has), a 4.5M-parameter FlexiUNet, 6,000
iterations of batch 128 per model, the three trainings side by side on the one GPU (bf16
autocast), then 2,000 samples per model (1,000 at the two earlier checkpoints) and their
KID / FID against the held-out test images. It is sized to finish in under 8 minutes on
one H100-class GPU; ``--iterations`` trades quality for time. Results go to ``--out``
(``results.md``, ``results.json``, figures)::

    python benchmarks/gpu_real_images.py --out benchmarks/results/h100/real_images
    python benchmarks/gpu_real_images.py --out /tmp/real --device cpu --quick   # pipeline check

Needs ``scalemix[examples,fid]`` and Debian's ``dataset-fashion-mnist`` (or
``--fashion-root``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STUDY = Path(__file__).resolve().parents[1] / "examples" / "scale_space_study"


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="the study's quick preset instead")
    p.add_argument("--iterations", type=int)
    p.add_argument("--fashion-root")
    args, rest = p.parse_known_args(argv)
    sys.path.insert(0, str(STUDY))
    import study

    forwarded = ["--out", args.out, "--device", args.device, *rest]
    forwarded += ["--quick"] if args.quick else ["--preset", "gpu"]
    if args.iterations is not None:
        forwarded += ["--iterations", str(args.iterations)]
    if args.fashion_root is not None:
        forwarded += ["--fashion-root", args.fashion_root]
    start = time.perf_counter()
    results: dict[str, Any] | None = study.main(forwarded)
    print(f"gpu_real_images: {time.perf_counter() - start:.0f} s on {args.device}")
    return results


if __name__ == "__main__":
    main()
