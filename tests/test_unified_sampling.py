"""One ``sample()`` for every process: the loop against a hand-written one, the alias,
the sampler and spacing vocabularies, and ``model_kwargs``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from scalemix import DDPMScheduler, ScaleSpaceDegradation, sample, scale_space_sample
from scalemix.degradation import GaussianDegradation, ddim_step, respaced_timesteps, reverse_step
from scalemix.samplers import SAMPLERS, SamplerName
from scalemix.schedules import Spacing, even_timesteps, timestep_schedule

F64 = torch.float64
SPACINGS: tuple[Spacing, ...] = ("trailing", "leading", "linspace", "even", "logsnr")


def tiny(x: Tensor, t: Tensor, out_size: int | None = None, scale: float = 1.0) -> Tensor:
    """A fixed nonlinear x0 predictor with the scale-space signature."""
    h = torch.tanh(scale * x + t.to(x.dtype).view(-1, 1, 1, 1) / 500.0)
    if out_size is not None and out_size != x.shape[-1]:
        h = F.interpolate(h, size=(out_size, out_size), mode="bilinear", align_corners=False)
    return h


def hand_loop(deg: ScaleSpaceDegradation, sampler: str, seed: int, steps: int) -> Tensor:
    """The reverse process written out: x_T first, then one step per kept timestep."""
    gen = torch.Generator().manual_seed(seed)
    ts = respaced_timesteps(deg, steps).tolist()
    x = torch.randn(2, 1, *deg.spatial_shape(ts[0]), generator=gen).to(F64)
    for t, s in zip(ts, [*ts[1:], -1], strict=True):
        t_batch = torch.full((2,), t)
        x0 = tiny(x, t_batch, out_size=deg.spatial_shape(s)[-1])
        if sampler == "ddpm":
            x = reverse_step(deg, x0, t, x, prev_t=s, generator=gen, clip_sample=1.0).prev_sample
        else:
            x = ddim_step(deg, x0, t, x, prev_t=s, eta=0.3, generator=gen, clip_sample=1.0)[0]
    return x


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_degradation_sampling_is_the_hand_written_loop(sampler: SamplerName) -> None:
    deg = ScaleSpaceDegradation(16, 3, num_train_timesteps=60)
    eta = 0.3 if sampler == "ddim" else 0.0
    got = sample(
        tiny,
        deg,
        (2, 1, 16, 16),
        sampler=sampler,
        eta=eta,
        steps=7,
        generator=torch.Generator().manual_seed(3),
        dtype=F64,
    )
    torch.testing.assert_close(got, hand_loop(deg, sampler, 3, 7), rtol=0, atol=0)
    alias = scale_space_sample(
        tiny,
        deg,
        2,
        channels=1,
        sampler="ancestral" if sampler == "ddpm" else "ddim",
        eta=eta,
        steps=7,
        generator=torch.Generator().manual_seed(3),
        dtype=F64,
    )
    assert torch.equal(alias, got)


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m", "dpmpp_2m_sde"])
def test_gaussian_solvers_refuse_a_degradation_by_name(sampler: SamplerName) -> None:
    deg = ScaleSpaceDegradation(8, 2, num_train_timesteps=20)
    with pytest.raises(ValueError, match=r"sampler='ddpm' .*or 'ddim'"):
        sample(tiny, deg, (1, 1, 8, 8), sampler=sampler)


def test_settings_are_checked_against_the_process() -> None:
    scheduler = DDPMScheduler(20)
    model = lambda x, t: x  # noqa: E731
    for kwargs in ({"method": "lanczos"}, {"clip_sample": 1.0}, {"upsample_top_level": True}):
        with pytest.raises(ValueError, match="apply to a linear degradation"):
            sample(model, scheduler, (1, 2), **kwargs)  # type: ignore[arg-type]
    deg = ScaleSpaceDegradation(8, 2, num_train_timesteps=20)
    with pytest.raises(ValueError, match=r"shape must be \(b, c, \*\(8, 8\)\)"):
        sample(tiny, deg, (1, 1, 4, 4))
    with pytest.raises(ValueError, match="unknown sampler 'ancestral'"):
        sample(tiny, deg, (1, 1, 8, 8), sampler="ancestral")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"eta must be a float in \[0, 1\]"):
        sample(tiny, deg, (1, 1, 8, 8), sampler="ddim", eta=1.5)
    with pytest.raises(TypeError, match="DDPMScheduler or a LinearDegradation"):
        sample(tiny, object(), (1, 1, 8, 8))  # type: ignore[arg-type]


def test_steps_accept_numpy_ints_once() -> None:
    scheduler = DDPMScheduler(20)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = sample(lambda x, t: 0.1 * x, scheduler, (3, 2), steps=np.int64(5), generator=gen())  # type: ignore[arg-type]
    b = sample(lambda x, t: 0.1 * x, scheduler, (3, 2), steps=5, generator=gen())
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match="steps must be None or an int"):
        sample(lambda x, t: x, scheduler, (3, 2), steps=5.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 7, 20])
def test_one_spacing_vocabulary_for_every_process(spacing: Spacing, steps: int) -> None:
    scheduler = DDPMScheduler(40)
    gauss = GaussianDegradation((4, 4), num_train_timesteps=40)
    ts = scheduler.timesteps(steps, spacing)
    assert torch.equal(respaced_timesteps(gauss, steps, spacing), ts)
    assert ts.shape == (steps,) and bool((ts[1:] < ts[:-1]).all())
    assert int(ts[-1]) >= 0 and int(ts[0]) <= 39
    if spacing == "even":
        assert ts.tolist() == list(even_timesteps(40, steps))[::-1]
    # a resolution-changing process keeps the same base grid plus its change steps
    deg = ScaleSpaceDegradation(8, 2, num_train_timesteps=40)
    kept = set(respaced_timesteps(deg, steps, spacing).tolist())
    base = timestep_schedule(40, steps, spacing, alphas_cumprod=deg.alphas_cumprod)
    assert kept == set(base.tolist()) | set(deg.change_steps)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_model_kwargs_reach_every_call(sampler: SamplerName) -> None:
    seen: list[float] = []

    def model(x: Tensor, t: Tensor, *, scale: Tensor) -> Tensor:
        seen.append(float(scale[0]))
        return scale.view(-1, 1) * x

    kwargs: dict[str, Any] = {"scale": torch.full((2,), 0.25)}
    sample(model, DDPMScheduler(30), (2, 3), sampler=sampler, steps=4, model_kwargs=kwargs)
    assert seen == [0.25] * (7 if sampler == "heun" else 4)
    seen.clear()
    if sampler in ("ddpm", "ddim"):
        deg = ScaleSpaceDegradation(8, 2, num_train_timesteps=30)

        def ss_model(x: Tensor, t: Tensor, out_size: int | None = None, *, scale: Tensor) -> Tensor:
            seen.append(float(scale[0]))
            return tiny(x, t, out_size, scale=float(scale[0]))

        sample(ss_model, deg, (2, 1, 8, 8), sampler=sampler, steps=4, model_kwargs=kwargs)
        assert seen and set(seen) == {0.25}


class FixedResolution(torch.nn.Module):
    """A network that keeps its input's size and says so (``out_size`` must be x's)."""

    changes_resolution = False

    def forward(self, x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        assert out_size in (None, x.shape[-1])
        return torch.tanh(x)


class Plain(torch.nn.Module):
    """A resolution-preserving network with the plain ``(x, t)`` signature."""

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.tanh(x)


def test_misfits_fail_when_the_loss_or_sampler_is_built() -> None:
    from scalemix.scale_space import UpsampleInput, scale_space_loss

    deg = ScaleSpaceDegradation(16, 3, num_train_timesteps=30)
    x0 = torch.zeros(2, 1, 16, 16)
    bare = FixedResolution()
    with pytest.raises(ValueError, match=r"16x16 -> 8x8 -> 4x4|4x4 -> 8x8 -> 16x16"):
        sample(bare, deg, (2, 1, 16, 16), steps=3)
    with pytest.raises(ValueError, match="UpsampleInput"):
        scale_space_loss(bare, deg, x0, generator=torch.Generator().manual_seed(0))
    wrapped = UpsampleInput(Plain())
    assert sample(wrapped, deg, (2, 1, 16, 16), steps=3).shape == (2, 1, 16, 16)
    assert torch.isfinite(scale_space_loss(wrapped, deg, x0, t=29))
    one_level = ScaleSpaceDegradation(16, 1, num_train_timesteps=30)
    assert sample(bare, one_level, (2, 1, 16, 16), steps=3).shape == (2, 1, 16, 16)
