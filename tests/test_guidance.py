"""Conditioning and guidance against the exact denoisers of a two-class Gaussian mixture.

Class ``c`` is :math:`\\mathcal N(\\mu_c, s^2 I)` with prior 1/2. With
:math:`a = \\bar\\alpha_t` and :math:`v = a s^2 + 1 - a`, the exact conditional noise
prediction is :math:`\\epsilon_c(x) = \\sqrt{1-a}\\,(x - \\sqrt a\\,\\mu_c) / v`, and the
unconditional one the responsibility-weighted sum of the two, the responsibilities
:math:`\\operatorname{softmax}_c(-\\lVert x - \\sqrt a\\,\\mu_c\\rVert^2 / (2v))`.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scalemix import DDPMScheduler, ScaleSpaceDegradation, sample
from scalemix.guidance import AutoGuidance, ClassifierFreeGuidance, combine_guidance
from scalemix.samplers import SamplerName

F64 = torch.float64
S = 0.5  # each class's standard deviation
MU = torch.tensor([[-0.6, 0.3], [0.6, -0.3]], dtype=F64)  # overlapping classes


class TwoGaussians(nn.Module):
    """The exact eps predictor of the mixture; label 2 is the null (unconditional) class."""

    num_classes = 2

    def __init__(self, scheduler: DDPMScheduler) -> None:
        super().__init__()
        self.abar = scheduler.alphas_cumprod
        self.calls: list[int] = []

    def forward(self, x: Tensor, t: Tensor, *, class_labels: Tensor) -> Tensor:
        self.calls.append(x.shape[0])
        a = self.abar[t].to(x).unsqueeze(1)  # (b, 1)
        v = a * S**2 + 1 - a
        diff = x.unsqueeze(1) - a.sqrt().unsqueeze(1) * MU.to(x)  # (b, 2, d)
        eps_c = (1 - a).sqrt().unsqueeze(1) * diff / v.unsqueeze(1)
        resp = torch.softmax(-diff.square().sum(-1) / (2 * v), dim=1)  # (b, 2)
        uncond = (resp.unsqueeze(-1) * eps_c).sum(1)
        picked = eps_c[torch.arange(x.shape[0]), class_labels.clamp(max=1)]
        return torch.where((class_labels == 2).unsqueeze(1), uncond, picked)


def _draw(
    model: nn.Module, labels: Tensor, sampler: SamplerName, steps: int, seed: int = 0
) -> Tensor:
    scheduler = DDPMScheduler(1000)
    return sample(
        model,
        scheduler,
        (labels.shape[0], 2),
        sampler=sampler,
        steps=steps,
        model_kwargs={"class_labels": labels},
        generator=torch.Generator().manual_seed(seed),
        dtype=F64,
    )


@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", 1000), ("ddim", 200), ("dpmpp_2m", 50)])
def test_conditional_sampling_lands_on_the_class_gaussian(sampler: SamplerName, steps: int) -> None:
    n = 2000
    model = TwoGaussians(DDPMScheduler(1000))
    for c in (0, 1):
        x = _draw(model, torch.full((n,), c), sampler, steps)
        se = S / math.sqrt(n)
        assert torch.allclose(x.mean(0), MU[c], atol=5 * se + 0.01), (c, x.mean(0))
        # the sample std of n normals has standard error s / sqrt(2n)
        assert torch.allclose(
            x.std(0), torch.full((2,), S, dtype=F64), atol=5 * S / math.sqrt(2 * n) + 0.01
        )


def test_scale_zero_and_one_are_the_unconditional_and_conditional_model_exactly() -> None:
    model = TwoGaussians(DDPMScheduler(1000))
    labels = torch.tensor([0, 1, 1, 0, 1])
    for w, reference_labels in ((0.0, torch.full((5,), 2)), (1.0, labels)):
        guided = _draw(ClassifierFreeGuidance(model, w), labels, "ddim", 20)
        plain = _draw(model, reference_labels, "ddim", 20)
        assert torch.equal(guided, plain)
    with torch.no_grad():
        x, t = (
            torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(1)),
            torch.full((5,), 500),
        )
        weak = TwoGaussians(DDPMScheduler(1000, beta_end=0.03))
        auto = AutoGuidance(model, weak, 0.0)
        assert torch.equal(auto(x, t, class_labels=labels), weak(x, t, class_labels=labels))
        auto = AutoGuidance(model, weak, 1.0)
        assert torch.equal(auto(x, t, class_labels=labels), model(x, t, class_labels=labels))


def test_guidance_is_one_batched_call_and_the_affine_combination() -> None:
    model = TwoGaussians(DDPMScheduler(1000))
    guided = ClassifierFreeGuidance(model, 3.0)
    x = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    t, labels = torch.tensor([999, 600, 300, 10]), torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        out = guided(x, t, class_labels=labels)
        assert model.calls == [8]
        c = model(x, t, class_labels=labels)
        u = model(x, t, class_labels=torch.full((4,), 2))
    torch.testing.assert_close(out, u + 3.0 * (c - u), rtol=0, atol=1e-12)


def test_guidance_is_the_same_for_eps_and_x0_predictions() -> None:
    """eps and x0 are affine in each other at fixed x_t: guiding either gives one x0."""
    scheduler = DDPMScheduler(1000)
    eps_model = TwoGaussians(scheduler)

    class X0(nn.Module):
        num_classes = 2

        def forward(self, x: Tensor, t: Tensor, *, class_labels: Tensor) -> Tensor:
            return scheduler.predict_x0(eps_model(x, t, class_labels=class_labels), x, t)

    x = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    t, labels = torch.full((6,), 400), torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.no_grad():
        from_eps = scheduler.predict_x0(
            ClassifierFreeGuidance(eps_model, 2.5)(x, t, class_labels=labels), x, t
        )
        from_x0 = ClassifierFreeGuidance(X0(), 2.5)(x, t, class_labels=labels)
    torch.testing.assert_close(from_eps, from_x0, rtol=0, atol=1e-10)


def test_higher_scale_sharpens_the_classes() -> None:
    """Overlapping classes: the share of class-c samples nearer mu_c grows with w."""
    model = TwoGaussians(DDPMScheduler(1000))
    labels = torch.arange(2).repeat(1000)

    def agreement(w: float) -> float:
        x = _draw(ClassifierFreeGuidance(model, w), labels, "ddim", 50, seed=4)
        nearest = torch.cdist(x, MU).argmin(1)
        return float((nearest == labels).to(F64).mean())

    a0, a1, a3 = agreement(0.0), agreement(1.0), agreement(3.0)
    assert a0 < 0.6 < a1 < a3, (a0, a1, a3)  # w = 0 ignores the label


def test_rescale_and_interval() -> None:
    gen = torch.Generator().manual_seed(5)
    c, u = torch.randn(3, 4, 4, generator=gen), torch.randn(3, 4, 4, generator=gen)
    t = torch.tensor([900, 500, 100])
    full = combine_guidance(c, u, 4.0, t, rescale=1.0)
    torch.testing.assert_close(full.std(dim=(1, 2)), c.std(dim=(1, 2)))
    plain = combine_guidance(c, u, 4.0, t)
    half = combine_guidance(c, u, 4.0, t, rescale=0.5)
    torch.testing.assert_close(half, 0.5 * full + 0.5 * plain)
    windowed = combine_guidance(c, u, 4.0, t, interval=(200, 800))
    assert torch.equal(windowed[0], c[0]) and torch.equal(windowed[2], c[2])
    assert torch.equal(windowed[1], plain[1])


def test_bad_settings() -> None:
    model = TwoGaussians(DDPMScheduler(10))
    with pytest.raises(ValueError, match=r"rescale \(phi\) must lie in \[0, 1\]"):
        ClassifierFreeGuidance(model, 2.0, rescale=1.5)
    with pytest.raises(ValueError, match="interval must be a pair"):
        ClassifierFreeGuidance(model, 2.0, interval=(5, 5))
    with pytest.raises(ValueError, match="no int num_classes attribute"):
        ClassifierFreeGuidance(nn.Identity(), 2.0)
    with pytest.raises(ValueError, match="needs the labels as the keyword 'class_labels'"):
        ClassifierFreeGuidance(model, 2.0)(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))


def test_scale_space_model_is_guided_on_every_step() -> None:
    """x0-predicting scale-space model: out_size passes through, both halves batched."""

    class Conditional(nn.Module):
        num_classes = 3

        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[int, int | None]] = []

        def forward(
            self, x: Tensor, t: Tensor, out_size: int | None = None, *, class_labels: Tensor
        ) -> Tensor:
            self.calls.append((x.shape[0], out_size))
            h = torch.tanh(x + class_labels.to(x).view(-1, 1, 1, 1) / 3)
            if out_size is not None and out_size != x.shape[-1]:
                h = F.interpolate(h, size=(out_size, out_size), mode="bilinear")
            return h

    deg = ScaleSpaceDegradation(16, 3, num_train_timesteps=30)
    net = Conditional()
    out = sample(
        ClassifierFreeGuidance(net, 2.0),
        deg,
        (2, 1, 16, 16),
        steps=5,
        model_kwargs={"class_labels": torch.tensor([0, 2])},
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == (2, 1, 16, 16) and bool(torch.isfinite(out).all())
    assert {b for b, _ in net.calls} == {4} and {8, 16} <= {r for _, r in net.calls}


@pytest.mark.slow
def test_conditioning_page_runs_and_each_class_lands_on_its_data() -> None:
    """docs/conditioning.md's example: each class within 1 bit of its own data set, at
    least 2 bits further from the other, and the printed lines as the page states."""
    import contextlib
    import io
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "conditioning.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    stated = re.findall(r"```text\n(.*?)```", text, re.DOTALL)[0]
    out, threads = io.StringIO(), torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out):
            for code in blocks:
                exec(compile(code, "conditioning.md", "exec"), {"__name__": "conditioning_page"})
    finally:
        torch.set_num_threads(threads)
    rows = re.findall(
        r"class (\w+): KL\(moons \|\| samples\) = (-?[\d.]+) bits, "
        r"KL\(circle \|\| samples\) = (-?[\d.]+) bits",
        out.getvalue(),
    )
    assert len(rows) == 4, out.getvalue()
    for name, moons, circle in rows:
        own, other = (float(moons), float(circle))[:: 1 if name == "moons" else -1]
        assert own < 1.0 and other > own + 2.0, out.getvalue()
    printed = [float(v) for v in re.findall(r"= (-?\d+\.\d+) bits", out.getvalue())]
    expected = [float(v) for v in re.findall(r"= (-?\d+\.\d+) bits", stated)]
    assert printed == pytest.approx(expected, abs=0.2)


def test_null_label_is_found_through_a_moving_average() -> None:
    from torch.optim.swa_utils import AveragedModel

    from scalemix.nn import MLPDenoiser

    net = MLPDenoiser(num_classes=3)
    assert ClassifierFreeGuidance(AveragedModel(net), 2.0).null_label == 3
    with pytest.raises(ValueError, match="no int num_classes"):
        ClassifierFreeGuidance(AveragedModel(MLPDenoiser()), 2.0)
