"""Graph and graph-break counts of the hot paths under ``torch._dynamo.explain``.

A graph break is where Python needs a tensor's value (``.item()``, ``bool(tensor)``, a
data-dependent shape); on a GPU each one is a host synchronisation per call. Every path
should report one graph and no break (``tests/test_hot_paths.py`` asserts it).

Run: ``python benchmarks/explain_hot_paths.py`` (``--reasons`` to print why each
break happens). CPU only, about half a minute.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from scalemix import DDPMScheduler, DualScaleDenoiser, FlexiUNet, MLPDenoiser
from scalemix.degradation import ScaleSpaceDegradation
from scalemix.solvers import DynamicThreshold


def paths() -> list[tuple[str, Callable[..., Any], tuple[Any, ...]]]:
    """``(name, function, arguments)`` of every hot path."""
    x, t = torch.randn(8, 2), torch.randint(0, 1000, (8,))
    mlp = MLPDenoiser(32, 32, 2)
    out: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = [("MLPDenoiser", mlp, (x, t))]
    for preset in ("fixed", "learned", "adaptive", "adaptive_deep"):
        dual = DualScaleDenoiser.from_preset(preset, embedding_dim=32, hidden_dim=32, num_blocks=2)
        out.append((f"DualScaleDenoiser[{preset}]", dual, (x, t)))
    unet = FlexiUNet(3, 8, (1, 2), 1, (), image_size=16, num_heads=1).eval()
    images, t2 = torch.randn(2, 3, 8, 8), t[:2]
    out.append(("FlexiUNet out_size=r", unet, (images, t2)))
    out.append(("FlexiUNet out_size=2r", lambda a, b: unet(a, b, out_size=16), (images, t2)))
    for prediction_type in ("epsilon", "sample", "v_prediction"):
        scheduler = DDPMScheduler(prediction_type=prediction_type)

        def train_step(
            x0: Tensor, noise: Tensor, tt: Tensor, s: DDPMScheduler = scheduler
        ) -> Tensor:
            x_t = s.add_noise(x0, noise, tt)
            return F.mse_loss(mlp(x_t, tt), s.target(x0, noise, tt))

        out.append((f"training step [{prediction_type}]", train_step, (x, torch.randn_like(x), t)))
    scheduler = DDPMScheduler()
    z = torch.randn_like(x)
    out.append(
        (
            "DDPMScheduler.step (int t)",
            lambda o, a, n: scheduler.step(o, 500, a, noise=n),
            (z, x, z),
        )
    )
    out.append(
        (
            "DDPMScheduler.step (tensor t)",
            lambda o, a, n: scheduler.step(o, t, a, noise=n),
            (z, x, z),
        )
    )
    out.append(
        (
            "DDPMScheduler.ddim_step (eta=0)",
            lambda o, a: scheduler.ddim_step(o, 500, a, prev_t=480),
            (z, x),
        )
    )
    out.append(
        (
            "DDPMScheduler.ddim_step (eta=1)",
            lambda o, a, n: scheduler.ddim_step(o, 500, a, prev_t=480, eta=1.0, noise=n),
            (z, x, z),
        )
    )
    out.append(
        (
            "DDPMScheduler.dpmpp_2m_step (first)",
            lambda o, a: scheduler.dpmpp_2m_step(o, 500, a, prev_t=480),
            (z, x),
        )
    )
    out.append(
        (
            "DDPMScheduler.dpmpp_2m_step (2nd)",
            lambda o, a, p: scheduler.dpmpp_2m_step(
                o, 500, a, prev_t=480, last_x0=p, last_t=520, threshold=DynamicThreshold()
            ),
            (z, x, z),
        )
    )
    degradation = ScaleSpaceDegradation(16, 2, 100)
    c = degradation.change_steps[0]
    for name, step in (("same resolution", c + 5), ("resolution change", c)):
        r_t, r_s = degradation.resolution(step), degradation.resolution(step - 1)

        def reverse(a: Tensor, b: Tensor, n: Tensor, tt: int = step) -> Tensor:
            return degradation.reverse_step(a, tt, b, prev_t=tt - 1, noise=n).prev_sample

        xs = torch.randn(2, 3, r_s, r_s)
        out.append((f"reverse step ({name})", reverse, (xs, torch.randn(2, 3, r_t, r_t), xs)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reasons", action="store_true", help="print the break reasons")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}")
    print(f"{'path':40s} graphs  breaks")
    for name, fn, inputs in paths():
        torch._dynamo.reset()
        report = torch._dynamo.explain(fn)(*inputs)
        print(f"{name:40s} {report.graph_count:6d} {report.graph_break_count:7d}")
        if args.reasons:
            for reason in report.break_reasons:
                print(f"    {str(reason.reason).splitlines()[0]}")


if __name__ == "__main__":
    main()
