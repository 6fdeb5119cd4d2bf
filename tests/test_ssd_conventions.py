"""The reference's conventions as options, channel inference, and non-halving sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from scalemix.degradation import ScaleSpaceDegradation
from scalemix.nn.flexi_unet import FlexiUNet
from scalemix.sampling import SamplingState
from scalemix.scale_space import scale_space_loss_terms, scale_space_sample

F64 = torch.float64
# 16 px, factor 1.5 on a 3-level UNet: 16 -> 12 -> 6 (changes at 555 and 889)
DEG = ScaleSpaceDegradation(16, 3, factor=1.5, unet_levels=3)


def _flexi(channels: int = 1) -> FlexiUNet:
    model = FlexiUNet(
        in_channels=channels,
        base_channels=8,
        channel_mult=(1, 1, 1),
        num_res_blocks=1,
        attention_resolutions=(),
        image_size=16,
        entry_levels=dict(zip(*DEG.pyramid, strict=True)),
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


class Oracle:
    """The exact x0 predictor for a data set of one image: D_{0:t-1}(x0*)."""

    def __init__(self, deg: ScaleSpaceDegradation, x0: Tensor) -> None:
        self.deg, self.x0 = deg, x0

    def __call__(self, x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        target = self.deg.target(self.x0.expand(x.shape[0], *self.x0.shape[1:]), t)
        return target.to(x.dtype)


def test_pyramid_of_the_test_degradation() -> None:
    assert DEG.pyramid.sizes == (16, 12, 6) and DEG.change_steps == (555, 889)


def test_channels_are_read_from_the_model() -> None:
    model = _flexi(1)
    out = scale_space_sample(model, DEG, 2, steps=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 16, 16)
    ema = AveragedModel(model)  # a wrapper: the channels come from .module
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(scale_space_sample(ema, DEG, 2, steps=4, generator=gen), out)
    x_T = torch.zeros(2, 1, 6, 6)
    assert scale_space_sample(lambda x, t, out_size=None: x[..., :1, :1].expand(
        -1, -1, out_size or x.shape[-1], out_size or x.shape[-1]
    ), DEG, 2, steps=4, x_T=x_T).shape == (2, 1, 16, 16)  # fmt: skip


def test_exact_and_lanczos_agree_on_non_halving_sampling() -> None:
    model = _flexi(1).double()
    kw = {"steps": 6, "dtype": F64}
    a = scale_space_sample(model, DEG, 2, generator=torch.Generator().manual_seed(3), **kw)  # type: ignore[arg-type]
    b = scale_space_sample(
        model, DEG, 2, generator=torch.Generator().manual_seed(3), method="lanczos", **kw
    )  # type: ignore[arg-type]
    assert torch.allclose(a, b, atol=1e-9)
    c = scale_space_sample(
        model, DEG, 2, generator=torch.Generator().manual_seed(3), method="isotropic", **kw
    )  # type: ignore[arg-type]
    assert c.shape == a.shape and not torch.allclose(a, c)  # the shortcut's noise differs


def test_oracle_sampling_reproduces_marginals_across_non_halving_changes() -> None:
    # If x_t follows the forward marginal and x_s ~ q(x_s | x_t, x0*) exactly, x_s
    # follows the forward marginal at s: z = (x_s - sqrt(abar_s) D_{0:s} x0*) / sigma_s
    # is N(0, I). Checked right after each change (12 -> 16 and 6 -> 12 px).
    x0 = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=F64) * 2 - 1
    states: dict[int, Tensor] = {}

    def keep(st: SamplingState) -> None:
        if st.t in DEG.change_steps:
            states[st.t] = st.prev_sample

    scale_space_sample(
        Oracle(DEG, x0), DEG, 96, channels=1, steps=20, dtype=F64, callback=keep,
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    for t, x_s in states.items():
        s = t - 1
        abar = float(DEG.alphas_cumprod[s])
        z = (x_s - math.sqrt(abar) * DEG.degrade(x0, s)) / math.sqrt(1 - abar)
        n = z.numel()  # >= 96 * 144: mean within 5 sd, std within 5 sd of 1
        assert abs(float(z.mean())) < 5 / math.sqrt(n)
        assert abs(float(z.std()) - 1) < 5 / math.sqrt(2 * n)


def test_final_step_reference_returns_x_0_with_its_noise() -> None:
    x0 = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(4), dtype=F64) * 2 - 1
    seen: list[SamplingState] = []
    calls: list[int] = []

    def model(x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        calls.append(int(t[0]))
        return Oracle(DEG, x0)(x, t, out_size)

    out = scale_space_sample(
        model, DEG, 16, channels=1, steps=25, dtype=F64, final_step="reference", spacing="even",
        callback=seen.append, generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    ts = DEG.timesteps(25, spacing="even").tolist()
    assert calls == ts and ts[-1] == 0  # the model still runs at t = 0
    last = seen[-1]
    assert last.t == 0 and torch.equal(out, last.x_t) and torch.equal(out, last.prev_sample)
    # x_0 = sqrt(abar_0) x0* + sqrt(1 - abar_0) eps: noise of std 0.01 remains
    abar0 = float(DEG.alphas_cumprod[0])
    z = (out - math.sqrt(abar0) * x0) / math.sqrt(1 - abar0)
    assert abs(float(z.std()) - 1) < 5 / math.sqrt(2 * z.numel())
    default = scale_space_sample(
        model, DEG, 16, channels=1, steps=25, dtype=F64, spacing="even",
        generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    assert torch.equal(default, x0.expand_as(default))  # the oracle's clipped x0 prediction


def test_final_step_reference_needs_a_full_size_last_step() -> None:
    # one trailing step: 999 plus the change steps; the last kept step 555 is at 12 px
    with pytest.raises(ValueError, match="spacing='even'"):
        scale_space_sample(_flexi(), DEG, 1, steps=1, final_step="reference")
    with pytest.raises(ValueError, match="final_step"):
        scale_space_sample(_flexi(), DEG, 1, steps=1, final_step="last")  # type: ignore[arg-type]


def test_upsample_top_level_on_a_non_halving_pyramid() -> None:
    model = _flexi(1)
    seen: list[tuple[int, int]] = []

    def spy(x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        seen.append((x.shape[-1], out_size or x.shape[-1]))
        return model(x, t, out_size)

    x0 = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(6)) * 2 - 1
    gen = torch.Generator().manual_seed(7)
    for t, pair, up in [(555, (12, 16), False), (555, (16, 16), True), (889, (6, 12), True)]:
        terms = scale_space_loss_terms(spy, DEG, x0, t=t, generator=gen, upsample_top_level=up)
        assert seen[-1] == pair and bool(torch.isfinite(terms.loss))
        terms.loss.backward()
    seen.clear()
    scale_space_sample(spy, DEG, 1, channels=1, steps=3, upsample_top_level=True, generator=gen)
    assert (16, 16) in seen and (12, 16) not in seen and (6, 12) in seen
