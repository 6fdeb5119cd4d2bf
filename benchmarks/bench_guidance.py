"""Cost of a classifier-free-guided sampling step against an unguided one, side by side.

One step is a model call and the scheduler's update. The guided model is
``scalemix.guidance.ClassifierFreeGuidance``, which runs the conditional and the
null-label halves as one batch of ``2b``. Both steps alternate in one process, one
torch thread by default, for the real-image study's 32 px class-conditional FlexiUNet
(base 16, (1, 2, 2), attention at 8 px, 10 classes) at every pyramid level, and for the
2D study's MLPDenoiser with 4 classes; the median time of each and their ratio are
printed. The target is a ratio of at most 2.1.

    python benchmarks/bench_guidance.py --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from scalemix import DDPMScheduler, FlexiUNet, MLPDenoiser
from scalemix.guidance import ClassifierFreeGuidance


def _median_pair(
    a: Callable[[], object], b: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Median seconds of ``a`` and of ``b``, run alternately after one warm-up each."""
    a(), b()
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64, help="images per sampling batch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    scheduler = DDPMScheduler(1000, prediction_type="sample")
    unet = FlexiUNet(
        in_channels=1,
        base_channels=16,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        image_size=32,
        num_classes=10,
    ).eval()
    mlp = MLPDenoiser(num_classes=4).eval()
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'model':<34} {'unguided s':>11} {'guided s':>10} {'ratio':>7}")
    cases: list[tuple[str, torch.nn.Module, tuple[int, ...], int, int | None]] = [
        (f"FlexiUNet 32 px, batch {args.batch}", unet, (args.batch, 1, 32, 32), 10, None),
        (f"FlexiUNet 16->32 px, batch {args.batch}", unet, (args.batch, 1, 16, 16), 10, 32),
        (f"FlexiUNet 8 px, batch {args.batch}", unet, (args.batch, 1, 8, 8), 10, None),
        ("MLPDenoiser 2D, batch 10000", mlp, (10_000, 2), 4, None),
    ]
    with torch.inference_mode():
        for name, model, shape, classes, out_size in cases:
            x = torch.randn(shape, generator=gen)
            t = torch.full((shape[0],), 500)
            labels = torch.randint(0, classes, (shape[0],), generator=gen)
            guided = ClassifierFreeGuidance(model, 3.0)
            kw = {} if out_size is None else {"out_size": out_size}

            def step(
                m: torch.nn.Module,
                x: torch.Tensor = x,
                t: torch.Tensor = t,
                labels: torch.Tensor = labels,
                kw: dict[str, int] = kw,
            ) -> None:
                out = m(x, t, class_labels=labels, **kw)
                if out.shape == x.shape:
                    scheduler.step(out, 500, x, generator=gen)

            plain, both = _median_pair(partial(step, model), partial(step, guided), args.repeats)
            print(f"{name:<34} {plain:>11.4f} {both:>10.4f} {both / plain:>6.2f}x")


if __name__ == "__main__":
    main()
