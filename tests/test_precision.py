"""Half precision: scale-space operators and sampler, train(precision=...), channels_last."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scalemix import DDPMScheduler, MLPDenoiser
from scalemix.degradation import ScaleSpaceDegradation
from scalemix.nn.flexi_unet import FlexiUNet
from scalemix.scale_space import scale_space_sample
from scalemix.training import autocast_context, train

HALF = [torch.bfloat16, torch.float16]
#: unit roundoff of each dtype; results of O(1) values are compared at a few of these
EPS = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


@pytest.fixture(scope="module")
def degradation() -> ScaleSpaceDegradation:
    return ScaleSpaceDegradation(16, 3, num_train_timesteps=60)


def _close(low: Tensor, ref: Tensor, dtype: torch.dtype, ulps: float = 8.0) -> None:
    """``low`` has ``dtype``, is finite and within ``ulps`` roundoffs (relative to max |ref|)."""
    assert low.dtype == dtype
    assert torch.isfinite(low).all()
    tol = ulps * EPS[dtype] * max(1.0, float(ref.abs().max()))
    assert float((low.float() - ref).abs().max()) <= tol


@pytest.mark.parametrize("dtype", HALF)
def test_degradation_operators(degradation: ScaleSpaceDegradation, dtype: torch.dtype) -> None:
    """degrade/target/add_noise/covariance_root in half precision equal the float32 values
    of the same (rounded) inputs, rounded once."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 16, 16, generator=g).mul(2).sub(1).to(dtype)
    ref_x0 = x0.float()
    for t in (0, degradation.change_steps[0], degradation.change_steps[-1], 59):
        r = degradation.resolution(t)
        noise = torch.randn(2, 3, r, r, generator=g).to(dtype)
        _close(degradation.degrade(x0, t), degradation.degrade(ref_x0, t), dtype)
        _close(degradation.target(x0, t), degradation.target(ref_x0, t), dtype)
        ref = degradation.add_noise(ref_x0, noise.float(), t)
        _close(degradation.add_noise(x0, noise, t), ref, dtype)
    c = degradation.change_steps[0]
    r_s = degradation.resolution(c - 1)
    xi = torch.randn(2, 3, r_s, r_s, generator=g).to(dtype)
    ref_root = degradation.covariance_root(xi.float(), c, c - 1)
    _close(degradation.covariance_root(xi, c, c - 1), ref_root, dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_reverse_step(degradation: ScaleSpaceDegradation, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    c = degradation.change_steps[0]
    r_t, r_s = degradation.resolution(c), degradation.resolution(c - 1)
    x_t = torch.randn(2, 3, r_t, r_t, generator=g).to(dtype)
    x0_pred = torch.rand(2, 3, r_s, r_s, generator=g).to(dtype)
    noise = torch.randn(2, 3, r_s, r_s, generator=g).to(dtype)
    out = degradation.reverse_step(x0_pred, c, x_t, noise=noise)
    ref = degradation.reverse_step(x0_pred.float(), c, x_t.float(), noise=noise.float())
    _close(out.prev_sample, ref.prev_sample, dtype)
    _close(out.pred_original_sample, ref.pred_original_sample, dtype)


class _Shrink(nn.Module):
    """A fixed, cheap x0 predictor: bilinear resize of ``0.5 x_t`` to ``out_size``."""

    def forward(self, x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        size = x.shape[-1] if out_size is None else out_size
        return F.interpolate(0.5 * x, size=(size, size), mode="bilinear", align_corners=False)


def test_sampler_bf16_close_to_fp32(degradation: ScaleSpaceDegradation) -> None:
    """bf16 sampling (model input in bf16, steps in float32) tracks the float32 run: the
    rounding of the model's input (relative 2^-8 per step) stays below 0.005 over the
    run for samples of size about 0.3 (measured: 0.0009)."""
    kwargs = {"steps": 12, "channels": 3}
    ref = scale_space_sample(
        _Shrink(), degradation, 2, generator=torch.Generator().manual_seed(0), **kwargs
    )
    low = scale_space_sample(
        _Shrink(),
        degradation,
        2,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.bfloat16,
        **kwargs,
    )
    assert low.dtype == torch.bfloat16 and low.shape == ref.shape == (2, 3, 16, 16)
    assert torch.isfinite(low).all()
    assert float((low.float() - ref).abs().max()) < 0.005


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_train_mixed_precision(precision: str) -> None:
    """Losses of an autocast run stay finite and within 2 % of the float32 run's."""
    data = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    losses = {}
    for p in ("fp32", precision):
        torch.manual_seed(0)
        model = MLPDenoiser(16, 32, 2)
        gen = torch.Generator().manual_seed(0)
        kwargs = {"steps": 15, "batch_size": 64, "generator": gen}
        losses[p] = train(model, DDPMScheduler(50), data, precision=p, **kwargs).losses  # type: ignore[arg-type]
        assert all(param.dtype == torch.float32 for param in model.parameters())
    assert torch.isfinite(losses[precision]).all()
    torch.testing.assert_close(losses[precision], losses["fp32"], rtol=0.02, atol=0.0)


def test_precision_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="precision"):
        autocast_context("fp8", torch.device("cpu"))  # type: ignore[arg-type]


@pytest.mark.parametrize(("size", "out_size"), [(8, 16), (16, None)])
def test_flexi_unet_channels_last(size: int, out_size: int | None) -> None:
    """A channels_last FlexiUNet (weights and input) gives the contiguous model's output.

    Both are compared with a float64 evaluation: on CPU, GroupNorm on channels_last
    tensors accumulates its statistics in another order, so the outputs agree to about
    1e-4 of their scale rather than to the last bits (measured: 2e-4 on outputs of
    size 2, against 2e-6 for the contiguous model).
    """
    torch.manual_seed(0)
    model = FlexiUNet(3, 8, (1, 2), 1, (8,), image_size=16, num_heads=2).eval()
    # the head is zero-initialised; give it weights so the comparison sees the whole net
    nn.init.normal_(model.head[-1].weight, std=0.1)  # type: ignore[index, union-attr, arg-type]
    x = torch.randn(2, 3, size, size)
    t = torch.tensor([3, 700])
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(x.double(), t, out_size=out_size)
        model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last), t, out_size=out_size)
    assert out.shape == exact.shape == (2, 3, 16, 16)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert float((out.double() - exact).abs().max()) <= 1e-3 * float(exact.abs().max())
