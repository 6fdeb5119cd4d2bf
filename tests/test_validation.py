"""Bad input: each class of unclear error or silent wrong result, and its fix.

Every test here pins one class: a dtype mismatch, an empty batch, a timestep kind,
a metric on hostile data, a message that named the wrong argument, an export path.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from scalemix import (
    DDPMScheduler,
    DualScaleBlock,
    DualScaleDenoiser,
    FlexiUNet,
    MLPDenoiser,
    TimestepGate,
    sample,
    scale_space_loss,
)
from scalemix.datasets import make_dataset
from scalemix.degradation import ScaleSpaceDegradation
from scalemix.metrics import gaussian_kl, kl_confidence_interval, knn_kl

SMALL = {"embedding_dim": 8, "hidden_dim": 16, "num_blocks": 1}


def _unet() -> FlexiUNet:
    return FlexiUNet(3, 8, (1, 2), 1, (), image_size=8, num_heads=1)


# ---------------------------------------------------------------- dtype mismatches
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_models_name_a_dtype_mismatch_with_their_parameters(dtype: torch.dtype) -> None:
    t = torch.tensor([1, 2])
    for model, x in (
        (MLPDenoiser(**SMALL), torch.zeros(2, 2)),
        (DualScaleDenoiser(**SMALL), torch.zeros(2, 2)),
        (_unet(), torch.zeros(2, 3, 8, 8)),
    ):
        with pytest.raises(TypeError, match=r"x has dtype .* model's parameters are"):
            model(x.to(dtype), t)


def test_models_accept_other_dtypes_under_autocast() -> None:
    model = MLPDenoiser(**SMALL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.zeros(2, 2, dtype=torch.bfloat16), torch.tensor([1, 2]))
    assert out.shape == (2, 2)


def test_sample_names_dtype_when_it_does_not_match_the_model() -> None:
    with pytest.raises(TypeError, match=r"dtype=torch.float64 does not match"):
        sample(MLPDenoiser(**SMALL), DDPMScheduler(4), (3, 2), dtype=torch.float64)


def test_add_noise_returns_the_dtype_of_x0() -> None:
    scheduler = DDPMScheduler(10)
    x0 = torch.randn(4, 2)
    noise = torch.randn(4, 2, dtype=torch.float64)
    out = scheduler.add_noise(x0, noise, 3)
    assert out.dtype == torch.float32
    abar = scheduler.alphas_cumprod[3]
    expected = abar.sqrt() * x0.double() + (1 - abar).sqrt() * noise
    torch.testing.assert_close(out, expected.float())


# ----------------------------------------------------------------- empty batches
def test_degrade_of_an_empty_batch() -> None:
    degradation = ScaleSpaceDegradation(8, 2, 20)
    x0 = torch.zeros(0, 3, 8, 8)
    t = degradation.change_steps[0]
    assert degradation.degrade(x0, t).shape == (0, 3, 4, 4)
    with pytest.raises(ValueError, match="t is empty"):
        degradation.degrade(x0, torch.zeros(0, dtype=torch.long))


def test_scale_space_loss_names_x0_for_an_empty_batch() -> None:
    degradation = ScaleSpaceDegradation(8, 2, 20)
    with pytest.raises(ValueError, match=r"x0 must hold at least one image"):
        scale_space_loss(_unet(), degradation, torch.zeros(0, 3, 8, 8))


# ------------------------------------------------------------------- timesteps
def test_zero_dim_timesteps_broadcast_in_flexi_unet_and_gate() -> None:
    unet, x = _unet().eval(), torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(unet(x, torch.tensor(7)), unet(x, torch.full((3,), 7)))
    gate = TimestepGate("mlp", embedding_dim=8, hidden_dim=8)
    single = gate(torch.tensor(7))
    assert single.shape == (1, 2)
    torch.testing.assert_close(single, gate(torch.tensor([7])))


def test_numpy_integer_timesteps_are_accepted_everywhere() -> None:
    x = torch.randn(2, 2)
    scheduler = DDPMScheduler(10)
    step = np.int64(5)
    torch.testing.assert_close(scheduler.add_noise(x, x, step), scheduler.add_noise(x, x, 5))
    torch.testing.assert_close(
        scheduler.step(x, step, x, prev_t=np.int32(2), noise=x).prev_sample,
        scheduler.step(x, 5, x, prev_t=2, noise=x).prev_sample,
    )
    model = MLPDenoiser(**SMALL)
    torch.testing.assert_close(model(x, step), model(x, torch.tensor([5, 5])))
    dual = DualScaleDenoiser(**SMALL)
    torch.testing.assert_close(dual.gate_weights(step), dual.gate_weights(torch.tensor([5])))
    degradation = ScaleSpaceDegradation(8, 2, 20)
    x0 = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(degradation.degrade(x0, np.int64(15)), degradation.degrade(x0, 15))
    t = degradation.change_steps[0] + 1  # r(t) == r(t - 1)
    r = degradation.resolution(t)
    x_t = torch.randn(2, 3, r, r)
    torch.testing.assert_close(
        degradation.reverse_step(x_t, np.int64(t), x_t, noise=x_t).prev_sample,
        degradation.reverse_step(x_t, t, x_t, noise=x_t).prev_sample,
    )


def test_dual_scale_block_accepts_an_int_timestep() -> None:
    block = DualScaleBlock.for_vectors(MLPDenoiser(**SMALL), MLPDenoiser(**SMALL), 0.3, dim=2)
    x = torch.randn(4, 2)
    torch.testing.assert_close(block(x, 5), block(x, torch.full((4,), 5)))


@pytest.mark.parametrize("bad", [True, torch.tensor([1.0j, 2.0j]), "5", torch.zeros(2, 2)])
def test_models_name_t_for_bad_timesteps(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="t must"):
        MLPDenoiser(**SMALL)(torch.zeros(2, 2), bad)


def test_shared_timestep_computes_the_time_work_once_with_the_same_result() -> None:
    model = DualScaleDenoiser(**SMALL)
    x = torch.randn(5, 2)
    expanded = torch.full((1,), 9).expand(5)
    torch.testing.assert_close(model(x, expanded), model(x, torch.full((5,), 9)))


# --------------------------------------------------------------------- metrics
def test_knn_kl_is_scale_invariant_up_to_huge_magnitudes() -> None:
    gen = np.random.default_rng(0)
    x, y = gen.normal(size=(200, 2)), gen.normal(1.0, 1.0, size=(300, 2))
    for metric in ("euclidean", "chebyshev"):
        reference = knn_kl(x, y, metric=metric)  # type: ignore[arg-type]
        for scale in (1e200, 1e-200):
            value = knn_kl(x * scale, y * scale, metric=metric)  # type: ignore[arg-type]
            assert math.isfinite(value)
            assert value == pytest.approx(reference, rel=1e-9, abs=1e-9)


def test_gaussian_kl_rejects_a_non_symmetric_covariance() -> None:
    mean, eye = torch.zeros(2), torch.eye(2)
    bad = torch.tensor([[2.0, 0.5], [0.0, 2.0]])
    with pytest.raises(ValueError, match="cov_q must be symmetric"):
        gaussian_kl(mean, eye, mean, bad)


def test_gaussian_kl_in_half_precision_matches_float32() -> None:
    mean_p, mean_q = torch.tensor([0.0, 1.0]), torch.tensor([0.5, -0.5])
    cov_p = torch.tensor([[2.0, 0.3], [0.3, 1.0]])
    cov_q = torch.tensor([[1.0, -0.2], [-0.2, 0.5]])
    reference = gaussian_kl(mean_p, cov_p, mean_q, cov_q)
    half = gaussian_kl(mean_p.half(), cov_p.half(), mean_q.half(), cov_q.half())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, reference, rtol=1e-2, atol=1e-3)


def test_kl_confidence_interval_names_a_nan_estimate() -> None:
    x = np.random.default_rng(0).normal(size=(40, 1))

    def broken(a: Any, b: Any) -> float:
        return float("nan")

    with pytest.raises(ValueError, match="estimator_fn returned nan"):
        kl_confidence_interval(broken, x, x)


# -------------------------------------------------------------------- messages
def test_flexi_unet_names_base_channels() -> None:
    with pytest.raises(ValueError, match="base_channels must be an even integer >= 4"):
        FlexiUNet(base_channels=3)


def test_make_dataset_names_a_negative_seed() -> None:
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        make_dataset("moons", 10, seed=-1)


# ---------------------------------------------------------------------- export
def _exported_matches(model: torch.nn.Module, args: tuple[Tensor, ...], **kw: Any) -> None:
    model.eval()
    program = torch.export.export(model, args, kw)
    fresh = tuple(torch.randn_like(a) if a.is_floating_point() else a.flip(0) for a in args)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*fresh, **kw), model(*fresh, **kw))


def test_torch_export_of_the_three_models() -> None:
    t = torch.tensor([3, 1, 4, 1])
    _exported_matches(MLPDenoiser(**SMALL), (torch.randn(4, 2), t))
    _exported_matches(DualScaleDenoiser(**SMALL), (torch.randn(4, 2), t))
    for out_size in (4, 8):
        _exported_matches(_unet(), (torch.randn(2, 3, 4, 4), t[:2]), out_size=out_size)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_jit_trace_of_dual_scale_denoiser_passes_its_check() -> None:
    model = DualScaleDenoiser(**SMALL)
    x, t = torch.randn(4, 2), torch.tensor([3, 1, 4, 1])
    traced = torch.jit.trace(model, (x, t))
    x2 = torch.randn(4, 2)
    torch.testing.assert_close(traced(x2, t), model(x2, t))
