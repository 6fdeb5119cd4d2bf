"""scalemix.interop: diffusers scheduler configs both ways, and UNet2DModel as a denoiser.

The comparisons with diffusers need the extra ``scalemix[diffusers]`` and are skipped
without it; the conversions themselves never import diffusers.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import scalemix
from scalemix import DDPMScheduler, ScaleSpaceDegradation
from scalemix.interop import (
    DiffusersUNet,
    scheduler_from_diffusers,
    scheduler_to_diffusers_config,
    timestep_spacing_from_diffusers,
)
from scalemix.schedules import timestep_schedule
from scalemix.testing import check_conditional_denoiser

# scalemix constructor arguments of every schedule both libraries have
SCHEDULES: list[dict[str, Any]] = [
    {"beta_schedule": "linear"},
    {"beta_schedule": "linear", "beta_start": 3e-4, "beta_end": 0.05},
    {"beta_schedule": "quadratic", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "cosine"},
    {"beta_schedule": "sigmoid"},
    {"beta_schedule": "sigmoid", "beta_start": 1e-3, "beta_end": 0.3},
]
# diffusers constructor arguments of the same schedules (and a few more options)
DIFFUSERS_SCHEDULES: list[dict[str, Any]] = [
    {"beta_schedule": "linear"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "sigmoid", "beta_start": 1e-3, "beta_end": 0.3},
    {"beta_schedule": "linear", "prediction_type": "v_prediction", "rescale_betas_zero_snr": True},
    {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample", "clip_sample": False},
    {"beta_schedule": "linear", "variance_type": "fixed_large", "clip_sample_range": 2.0},
]
F32_ATOL = 1e-6  # diffusers keeps its tables in float32, scalemix in float64
F32_RTOL = 1e-5


@pytest.fixture(scope="module")
def diffusers() -> ModuleType:
    return pytest.importorskip("diffusers")


def _betas(n: int, seed: int = 0) -> Tensor:
    """A schedule no formula makes: sorted uniform draws in (1e-4, 0.05)."""
    g = torch.Generator().manual_seed(seed)
    return torch.sort(1e-4 + 0.05 * torch.rand(n, generator=g, dtype=torch.float64)).values


def _same_process(a: DDPMScheduler, b: DDPMScheduler, rtol: float = 1e-10) -> None:
    torch.testing.assert_close(a.betas, b.betas, rtol=rtol, atol=1e-15)
    assert a.num_train_timesteps == b.num_train_timesteps
    assert (a.prediction_type, a.variance_type) == (b.prediction_type, b.variance_type)
    assert a.clip_sample == b.clip_sample


# ----------------------------------------------------------- round trips, no diffusers
def test_import_needs_no_diffusers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # any import of it now fails
    for name in [m for m in sys.modules if m.startswith("scalemix.interop")]:
        monkeypatch.delitem(sys.modules, name)
    interop = importlib.import_module("scalemix.interop")
    config = interop.scheduler_to_diffusers_config(DDPMScheduler(20))
    _same_process(interop.scheduler_from_diffusers(config), DDPMScheduler(20))


@pytest.mark.parametrize("kwargs", SCHEDULES)
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_scalemix_round_trip(kwargs: dict[str, Any], prediction_type: str) -> None:
    for variance_type, clip in (("fixed_small", None), ("fixed_large", 1.5)):
        s = DDPMScheduler(
            100,
            prediction_type=prediction_type,  # type: ignore[arg-type]
            variance_type=variance_type,  # type: ignore[arg-type]
            clip_sample=clip,
            **kwargs,
        )
        config = s.to_diffusers_config()
        assert config["trained_betas"] is None, "a named schedule is written by name"
        _same_process(DDPMScheduler.from_diffusers(config), s)


def test_schedule_names_and_ranges_are_written() -> None:
    names = {"linear": "linear", "quadratic": "scaled_linear"}
    names |= {"cosine": "squaredcos_cap_v2", "sigmoid": "sigmoid"}
    for kwargs in SCHEDULES:
        config = DDPMScheduler(1000, **kwargs).to_diffusers_config()
        assert config["beta_schedule"] == names[kwargs["beta_schedule"]]
        if kwargs["beta_schedule"] != "cosine":  # the cosine schedule has no range
            assert config["beta_start"] == kwargs.get("beta_start", 1e-4)
            assert config["beta_end"] == kwargs.get("beta_end", 0.02)


@pytest.mark.parametrize("kwargs", [SCHEDULES[0], SCHEDULES[2], SCHEDULES[3], SCHEDULES[5]])
def test_zero_terminal_snr_round_trip(kwargs: dict[str, Any]) -> None:
    s = DDPMScheduler(200, prediction_type="v_prediction", rescale_betas_zero_snr=True, **kwargs)
    config = s.to_diffusers_config()
    assert config["rescale_betas_zero_snr"] is True
    assert config["trained_betas"] is None
    _same_process(DDPMScheduler.from_diffusers(config), s)


@settings(max_examples=10)  # each rescaled example searches beta_end
@given(
    n=st.integers(2, 300),
    name=st.sampled_from(["linear", "quadratic", "sigmoid", "cosine"]),
    start=st.floats(1e-5, 0.01),
    width=st.floats(0.0, 0.3),
    rescale=st.booleans(),
)
def test_any_schedule_round_trips(
    n: int, name: str, start: float, width: float, rescale: bool
) -> None:
    """Whatever the schedule, the written config rebuilds the same betas (by name when
    one reproduces them, else as trained_betas)."""
    s = DDPMScheduler(
        n,
        beta_schedule=name,  # type: ignore[arg-type]
        beta_start=start,
        beta_end=start + width,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=rescale,
    )
    _same_process(DDPMScheduler.from_diffusers(s.to_diffusers_config()), s, rtol=1e-8)


def test_explicit_betas_round_trip_as_trained_betas() -> None:
    s = DDPMScheduler(betas=_betas(50), prediction_type="sample")
    config = s.to_diffusers_config()
    assert config["trained_betas"] == s.betas.tolist()
    _same_process(DDPMScheduler.from_diffusers(config), s, rtol=0.0)
    # rescaled explicit betas are written with their terminal 1 and read back
    z = DDPMScheduler(betas=_betas(50), prediction_type="sample", rescale_betas_zero_snr=True)
    config = z.to_diffusers_config()
    assert config["trained_betas"][-1] == 1.0 and config["rescale_betas_zero_snr"] is False
    _same_process(DDPMScheduler.from_diffusers(config), z, rtol=1e-8)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_spacing_is_written_and_read(spacing: str) -> None:
    config = DDPMScheduler(10).to_diffusers_config(spacing)  # type: ignore[arg-type]
    assert config["timestep_spacing"] == spacing
    assert timestep_spacing_from_diffusers(config) == spacing
    assert DDPMScheduler().to_diffusers_config()["timestep_spacing"] == "trailing"
    assert timestep_spacing_from_diffusers({}) == "leading"  # diffusers' DDPM default


def test_functions_and_methods_agree() -> None:
    s = DDPMScheduler(30, beta_schedule="cosine", clip_sample=1.0)
    assert scheduler_to_diffusers_config(s) == s.to_diffusers_config()
    config = s.to_diffusers_config("leading")
    _same_process(scheduler_from_diffusers(config), DDPMScheduler.from_diffusers(config))


# ------------------------------------------------------------------------ bad options
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("thresholding", True),
        ("steps_offset", 1),
        ("set_alpha_to_one", False),
        ("use_karras_sigmas", True),
        ("use_flow_sigmas", True),
        ("timestep_type", "continuous"),
        ("variance_type", "learned_range"),
        ("variance_type", "fixed_large_log"),
        ("beta_schedule", "laplace"),
        ("prediction_type", "flow_prediction"),
        ("timestep_spacing", "karras"),
        ("no_such_option", 3),
    ],
)
def test_options_without_counterpart_raise(option: str, value: object) -> None:
    config = {"num_train_timesteps": 100, option: value}
    with pytest.raises(ValueError, match=rf"{option}={value!r}"):
        DDPMScheduler.from_diffusers(config)
    if option not in ("variance_type", "beta_schedule", "prediction_type", "timestep_spacing"):
        # options outside the process can be dropped explicitly
        dropped = DDPMScheduler.from_diffusers(config, ignore=(option,))
        _same_process(dropped, DDPMScheduler(100))


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="scheduler_or_config"):
        DDPMScheduler.from_diffusers(42)
    with pytest.raises(TypeError, match="ignore"):
        scheduler_from_diffusers({}, ignore="steps_offset")
    with pytest.raises(ValueError, match="trained_betas has 3 entries"):
        DDPMScheduler.from_diffusers({"num_train_timesteps": 4, "trained_betas": [0.1] * 3})
    with pytest.raises(ValueError, match="spacing"):
        DDPMScheduler().to_diffusers_config("even")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zero terminal SNR"):  # as in diffusers: x0 undefined
        DDPMScheduler.from_diffusers({"rescale_betas_zero_snr": True})


def test_defaults_of_a_hand_written_config() -> None:
    # diffusers' DDPMScheduler defaults, except clip_sample: no key, no clipping
    _same_process(DDPMScheduler.from_diffusers({}), DDPMScheduler())
    clipped = DDPMScheduler.from_diffusers({"clip_sample": True})
    assert clipped.clip_sample == 1.0


# -------------------------------------------------- diffusers objects and their tables
@pytest.mark.parametrize("kwargs", DIFFUSERS_SCHEDULES)
def test_diffusers_round_trip(diffusers: ModuleType, kwargs: dict[str, Any]) -> None:
    d = diffusers.DDPMScheduler(num_train_timesteps=200, **kwargs)
    s = DDPMScheduler.from_diffusers(d)
    back = s.to_diffusers_config(timestep_spacing_from_diffusers(d))
    original = {k: v for k, v in d.config.items() if not k.startswith("_")}
    assert back.keys() == original.keys()
    for key, value in original.items():
        if key in ("beta_start", "beta_end") and kwargs["beta_schedule"] != "squaredcos_cap_v2":
            assert back[key] == pytest.approx(value, rel=1e-9), key
        elif key not in ("beta_start", "beta_end"):  # ignored by the cosine schedule
            assert back[key] == value, key


@pytest.mark.parametrize("kwargs", DIFFUSERS_SCHEDULES)
def test_tables_equal_diffusers(diffusers: ModuleType, kwargs: dict[str, Any]) -> None:
    d = diffusers.DDPMScheduler(num_train_timesteps=300, **kwargs)
    s = DDPMScheduler.from_diffusers(d)
    torch.testing.assert_close(s.alphas_cumprod, d.alphas_cumprod.double(), rtol=0, atol=F32_ATOL)
    # the reverse-step variance of every t (diffusers clamps it at 1e-20)
    theirs = torch.stack([d._get_variance(t) for t in range(300)]).double()
    ours = s.posterior_variance if s.variance_type == "fixed_small" else s.betas
    torch.testing.assert_close(ours.clamp(min=1e-20), theirs, rtol=F32_RTOL, atol=F32_ATOL)
    # and back: diffusers built from scalemix's config
    d2 = diffusers.DDPMScheduler.from_config(s.to_diffusers_config())
    torch.testing.assert_close(d2.alphas_cumprod, d.alphas_cumprod, rtol=0, atol=0)


def test_trained_betas_tables_equal_diffusers(diffusers: ModuleType) -> None:
    for rescale, pred in ((False, "epsilon"), (True, "v_prediction")):
        s = DDPMScheduler(betas=_betas(80), prediction_type=pred, rescale_betas_zero_snr=rescale)
        d = diffusers.DDPMScheduler.from_config(s.to_diffusers_config())
        torch.testing.assert_close(
            s.alphas_cumprod, d.alphas_cumprod.double(), rtol=0, atol=F32_ATOL
        )
        _same_process(DDPMScheduler.from_diffusers(d), s, rtol=1e-6)


def test_strided_posterior_variance_equals_ddim(diffusers: ModuleType) -> None:
    d = diffusers.DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    s = DDPMScheduler.from_diffusers(d)
    x = torch.zeros(1, dtype=torch.float64)
    for t, prev in ((99, 89), (50, 10), (7, 0), (30, 29)):
        ours = s.posterior(x, x, t, prev_t=prev).variance.reshape(())
        theirs = d._get_variance(t, prev).double()
        torch.testing.assert_close(ours, theirs, rtol=0, atol=F32_ATOL)


@pytest.mark.parametrize(
    "name",
    [
        "DDIMScheduler",
        "DPMSolverMultistepScheduler",
        "EulerDiscreteScheduler",
        "PNDMScheduler",
        "UniPCMultistepScheduler",
    ],
)
def test_other_diffusers_schedulers_convert(diffusers: ModuleType, name: str) -> None:
    d = getattr(diffusers, name)(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    s = DDPMScheduler.from_diffusers(d, ignore=("set_alpha_to_one",))  # PNDM's default: False
    assert s.clip_sample == (1.0 if d.config.get("clip_sample") else None)
    torch.testing.assert_close(s.alphas_cumprod, d.alphas_cumprod.double(), rtol=0, atol=F32_ATOL)


def test_ddim_without_alpha_one_raises(diffusers: ModuleType) -> None:
    d = diffusers.DDIMScheduler(set_alpha_to_one=False)
    with pytest.raises(ValueError, match="set_alpha_to_one=False"):
        DDPMScheduler.from_diffusers(d)
    DDPMScheduler.from_diffusers(d, ignore=("set_alpha_to_one",))


# ------------------------------------------------------------------ timestep spacings
def _diffusers_grid(T: int, n: int, spacing: str) -> list[float] | None:
    """The unrounded grid diffusers rounds (None for "leading", which is integer)."""
    if spacing == "linspace":
        return [T - 1 - (T - 1) * i / (n - 1) for i in range(n)] if n > 1 else [0.0]
    if spacing == "trailing":
        return [T - i * T / n for i in range(n)]
    return None


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timestep_spacings_match_but_at_exact_halves(diffusers: ModuleType, spacing: str) -> None:
    """Equal grids, except (documented) where diffusers rounds an exact half to even
    (scalemix rounds it up), and linspace with one step (diffusers: t = 0)."""
    T = 60
    d = diffusers.DDPMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    for n in range(1, T + 1):
        d.set_timesteps(n)
        ours = timestep_schedule(T, n, spacing)  # type: ignore[arg-type]
        if spacing == "linspace" and n == 1:
            assert ours.tolist() == [T - 1] and d.timesteps.tolist() == [0]
            continue
        theirs = d.timesteps
        if spacing == "trailing" and theirs.numel() == n + 1:
            # diffusers' float arange overshoots for some n (here 13, 26, 52, 55): a last -1
            assert int(theirs[-1]) == -1, n
            theirs = theirs[:-1]
        assert theirs.shape == ours.shape, n
        grid = _diffusers_grid(T, n, spacing)
        for i in torch.nonzero(theirs != ours).flatten().tolist():
            assert grid is not None, f"leading grids differ at n={n}"
            assert math.isclose(grid[i] % 1.0, 0.5, abs_tol=1e-9), (n, i, grid[i])
            assert int(ours[i]) - int(theirs[i]) == 1


# ------------------------------------------------- sampling against diffusers' loops
def _gaussian_model(s: DDPMScheduler, mu: float, sd: float) -> Callable[[Tensor, Tensor], Tensor]:
    """The exact denoiser of data N(mu, sd^2) in every entry, in ``s``'s parameterisation:
    E[x0 | x_t] = mu + sqrt(abar) sd^2 (x_t - sqrt(abar) mu) / (abar sd^2 + 1 - abar)."""

    def model(x: Tensor, t: Tensor) -> Tensor:
        abar = s.alphas_cumprod[t.reshape(-1).long()].reshape(-1, *([1] * (x.ndim - 1)))
        x64 = x.double()
        x0 = mu + abar.sqrt() * sd**2 * (x64 - abar.sqrt() * mu) / (abar * sd**2 + 1 - abar)
        eps = (x64 - abar.sqrt() * x0) / (1 - abar).sqrt()
        out = {
            "epsilon": eps,
            "sample": x0,
            "v_prediction": abar.sqrt() * eps - (1 - abar).sqrt() * x0,
        }
        return out[s.prediction_type].to(x.dtype)

    return model


def _diffusers_loop(
    d: Any, model: Callable[[Tensor, Tensor], Tensor], shape: tuple[int, ...], seed: int
) -> Tensor:
    """diffusers' DDPMPipeline loop: x_T, then one step per timestep, one generator."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    for t in d.timesteps:
        out = model(x, t.expand(shape[0]))
        x = d.step(out, t, x, generator=g).prev_sample
    return x


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prediction_type": "epsilon", "clip_sample": False},
        {"prediction_type": "epsilon", "clip_sample": True, "clip_sample_range": 1.2},
        {"prediction_type": "sample", "beta_schedule": "squaredcos_cap_v2", "clip_sample": False},
        {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "clip_sample": False},
        {"prediction_type": "epsilon", "variance_type": "fixed_large", "clip_sample": False},
    ],
)
@pytest.mark.parametrize(
    ("steps", "spacing"), [(None, "leading"), (10, "leading"), (7, "trailing")]
)
def test_ddpm_sampling_equals_diffusers(
    diffusers: ModuleType, kwargs: dict[str, Any], steps: int | None, spacing: str
) -> None:
    T, shape = 50, (64, 3)
    d = diffusers.DDPMScheduler(num_train_timesteps=T, timestep_spacing=spacing, **kwargs)
    if steps is not None:
        d.set_timesteps(steps)
    s = DDPMScheduler.from_diffusers(d)
    model = _gaussian_model(s, mu=0.5, sd=0.3)
    theirs = _diffusers_loop(d, model, shape, seed=3)
    g = torch.Generator().manual_seed(3)
    ours = scalemix.sample(model, s, shape, steps=steps, spacing=spacing, generator=g)  # type: ignore[arg-type]
    t_last = int(d.timesteps[-1])
    if s.variance_type == "fixed_large" and t_last > 0:
        # Convention difference: on the step to clean data diffusers adds noise of
        # variance beta_{t|-1} = 1 - abar_t; scalemix adds none (Ho et al., Algorithm 2).
        # Both draw x_T and then one z per step from the generator.
        g = torch.Generator().manual_seed(3)
        z_last = [torch.randn(shape, generator=g) for _ in range(len(d.timesteps) + 1)][-1]
        sd = float((1 - s.alphas_cumprod[t_last]).sqrt())
        torch.testing.assert_close(theirs, ours + sd * z_last, rtol=0, atol=1e-4)
        return
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("clip_sample", [False, True])
def test_ddim_sampling_equals_diffusers(diffusers: ModuleType, clip_sample: bool) -> None:
    T, steps, shape = 100, 20, (64, 3)
    d = diffusers.DDIMScheduler(
        num_train_timesteps=T, clip_sample=clip_sample, clip_sample_range=0.6
    )
    d.set_timesteps(steps)
    s = DDPMScheduler.from_diffusers(d)
    model = _gaussian_model(s, mu=0.5, sd=0.3)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    x = x_T
    for t in d.timesteps:
        out = model(x, t.expand(shape[0]))
        x = d.step(out, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    ours = scalemix.sample(
        model,
        s,
        shape,
        steps=steps,
        sampler="ddim",
        spacing=timestep_spacing_from_diffusers(d),
        x_T=x_T,
    )
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-4)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_clipped_ddim_step_rederives_eps(diffusers: ModuleType, prediction_type: str) -> None:
    """scalemix's DDIM step with clipping is diffusers' with use_clipped_model_output=True
    (eps re-derived from the clipped x0); diffusers' default keeps the raw eps."""
    d = diffusers.DDIMScheduler(100, clip_sample=True, prediction_type=prediction_type)
    d.set_timesteps(5)  # leading: 80, 60, 40, 20, 0
    s = DDPMScheduler.from_diffusers(d)
    g = torch.Generator().manual_seed(7)
    x, out = torch.randn(16, 4, generator=g), 3 * torch.randn(16, 4, generator=g)
    ours = s.ddim_step(out, 60, x, prev_t=40).prev_sample
    clipped = d.step(out, 60, x, use_clipped_model_output=True).prev_sample
    torch.testing.assert_close(ours, clipped, rtol=0, atol=1e-5)
    if prediction_type == "epsilon":  # the other two re-derive eps in diffusers anyway
        raw = d.step(out, 60, x).prev_sample
        assert float((ours - raw).abs().max()) > 0.1


# --------------------------------------------------------------- UNet2DModel adapter
def _tiny_unet(diffusers: ModuleType, out_channels: int = 1, **kwargs: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    unet: torch.nn.Module = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=out_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        **kwargs,
    )
    return unet


def test_unet_in_sample_equals_diffusers_loop(diffusers: ModuleType) -> None:
    unet = _tiny_unet(diffusers).eval()
    d = diffusers.DDPMScheduler(num_train_timesteps=20, clip_sample=True)
    s = DDPMScheduler.from_diffusers(d)
    model = DiffusersUNet(unet)
    assert model.in_channels == 1
    assert all(k.startswith("unet.") for k in model.state_dict())
    with torch.no_grad():
        theirs = _diffusers_loop(d, lambda x, t: unet(x, t).sample, (2, 1, 8, 8), seed=5)
    g = torch.Generator().manual_seed(5)
    ours = scalemix.sample(model, s, (2, 1, 8, 8), spacing="leading", generator=g)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


def test_ddpm_pipeline_equals_sample(diffusers: ModuleType) -> None:
    unet = _tiny_unet(diffusers).eval()
    d = diffusers.DDPMScheduler(num_train_timesteps=30)  # diffusers' defaults: clip, leading
    pipeline = diffusers.DDPMPipeline(unet=unet, scheduler=d)
    pipeline.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(8)
    theirs = pipeline(batch_size=2, generator=g, num_inference_steps=10, output_type="pt").images
    s = DDPMScheduler.from_diffusers(d)
    g = torch.Generator().manual_seed(8)
    x = scalemix.sample(
        DiffusersUNet(unet), s, (2, 1, 8, 8), steps=10, spacing="leading", generator=g
    )
    torch.testing.assert_close((x / 2 + 0.5).clamp(0, 1), theirs, rtol=0, atol=1e-4)


def test_unet_in_scale_space_loss_and_sampler(diffusers: ModuleType) -> None:
    model = DiffusersUNet(_tiny_unet(diffusers))
    degradation = ScaleSpaceDegradation(8, num_levels=1, num_train_timesteps=20)
    g = torch.Generator().manual_seed(6)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    loss = scalemix.scale_space_loss(model, degradation, x0, generator=g)
    assert loss.ndim == 0 and bool(torch.isfinite(loss))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(gr is not None for gr in grads) and any(bool(gr.abs().sum() > 0) for gr in grads)
    model.eval()
    out = scalemix.scale_space_sample(model, degradation, 3, steps=5, generator=g)  # channels 1
    assert out.shape == (3, 1, 8, 8) and bool(torch.isfinite(out).all())
    assert float(out.abs().max()) <= 1.0  # the final x0 prediction, clipped


def test_unet_adapter_errors(diffusers: ModuleType) -> None:
    x, t = torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    with pytest.raises(TypeError, match="unet"):
        DiffusersUNet(lambda x, t: x)  # type: ignore[arg-type]
    model = DiffusersUNet(_tiny_unet(diffusers))
    assert model(x, t, out_size=8).shape == x.shape
    with pytest.raises(ValueError, match="out_size=16"):
        model(x, t, out_size=16)
    with pytest.raises(ValueError, match="out_channels"):
        DiffusersUNet(_tiny_unet(diffusers, out_channels=2))(x, t)  # learned variance


def test_unet_class_labels_pass_through(diffusers: ModuleType) -> None:
    """``num_class_embeds = K + 1``: labels go to the UNet, ``None`` is the null class K."""
    unet = _tiny_unet(diffusers, num_class_embeds=4).eval()
    with torch.no_grad():  # the output convolution starts at zero
        for p in unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    model = DiffusersUNet(unet)
    assert model.num_classes == 3 and DiffusersUNet(_tiny_unet(diffusers)).num_classes is None
    g = torch.Generator().manual_seed(2)
    x, t, y = torch.randn(3, 1, 8, 8, generator=g), torch.tensor([1, 5, 9]), torch.tensor([0, 2, 3])
    with torch.no_grad():
        out = model(x, t, class_labels=y)
        assert torch.equal(out, unet(x, t, class_labels=y).sample)
        assert torch.equal(model(x, t), unet(x, t, class_labels=torch.full((3,), 3)).sample)
        assert not torch.allclose(out, model(x, t))
    check_conditional_denoiser(model, (1, 8, 8), 20, 3, max_examples=2)
    with pytest.raises(ValueError, match=r"\[0, 3\].*3 the null class"):
        model(x, t, class_labels=torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="DiffusersUNet was built without num_classes"):
        DiffusersUNet(_tiny_unet(diffusers))(x, t, class_labels=y)
    with pytest.raises(ValueError, match="class_embed_type"):
        DiffusersUNet(_tiny_unet(diffusers, class_embed_type="timestep", num_class_embeds=4))


def test_docs_page_blocks_run(diffusers: ModuleType) -> None:
    """The code of docs/coming_from_diffusers.md runs, and its loops agree as it says."""
    page = Path(__file__).resolve().parents[1] / "docs" / "coming_from_diffusers.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    assert len(blocks) == 3
    namespace: dict[str, Any] = {"__name__": "coming_from_diffusers"}
    with contextlib.redirect_stdout(io.StringIO()):
        for code in blocks:  # the blocks build on each other, as a reader runs them
            exec(compile(code, str(page), "exec"), namespace)
    x, y, z = namespace["x"], namespace["y"], namespace["z"]
    torch.testing.assert_close(y, x, rtol=0, atol=1e-4)
    torch.testing.assert_close(z, x, rtol=0, atol=1e-4)
    assert namespace["samples"].shape == namespace["ddpm_samples"].shape == (2, 1, 8, 8)
