"""Networks of one's own in the scale space: UpsampleInput, the out_size contract, the check.

Two patterns train with scale_space_loss on a three-level pyramid (16, 8, 4 px): a
fixed-resolution network wrapped in UpsampleInput, and a network that upsamples
itself to out_size. check_scale_space_model refuses a bare fixed-resolution network on
that pyramid and accepts both patterns (through an AveragedModel too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from scalemix import ScaleSpaceDegradation
from scalemix._model_checks import (
    check_scale_space_model,
    declared_changes_resolution,
)
from scalemix.scale_space import scale_space_loss
from scalemix.scale_space.upsample_input import UpsampleInput

PYRAMID = ScaleSpaceDegradation(16, 3, num_train_timesteps=20)  # 16 px to t=10, 8 to 16, 4


class FixedResolutionNet(nn.Module):
    """A small conv net that returns its prediction at the size of its input."""

    changes_resolution: ClassVar[bool] = False

    def __init__(self, channels: int = 1, width: int = 8) -> None:
        super().__init__()
        self.in_channels = channels
        self.time = nn.Embedding(20, width)
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h = torch.relu(self.conv_in(x) + self.time(t)[:, :, None, None])
        out: Tensor = self.conv_out(h)
        return out


class SelfUpsamplingNet(FixedResolutionNet):
    """The other pattern: the network upsamples its features to ``out_size`` itself."""

    changes_resolution: ClassVar[bool] = True

    def forward(self, x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:  # type: ignore[override]
        h = torch.relu(self.conv_in(x) + self.time(t)[:, :, None, None])
        if out_size is not None and out_size != h.shape[-1]:
            h = F.interpolate(h, size=(out_size, out_size), mode="bilinear", align_corners=False)
        out: Tensor = self.conv_out(h)
        return out


class XOnly(nn.Module):
    """``layer(x)``, ignoring ``t``: a stand-in for a model with a known output."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        out: Tensor = self.layer(x)
        return out


def _images(n: int = 8) -> Tensor:
    """Smooth images in [-1, 1]: a blob at a different place in each."""
    grid = torch.linspace(-1.0, 1.0, 16)
    centres = torch.linspace(-0.5, 0.5, n)
    yy, xx = grid[:, None], grid[None, :]
    blobs = [torch.exp(-((xx - c) ** 2 + (yy + c) ** 2) / 0.1) for c in centres.tolist()]
    return torch.stack(blobs)[:, None] * 2.0 - 1.0


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- UpsampleInput
def test_upsample_input_is_bilinear_upsampling_then_the_model() -> None:
    torch.manual_seed(0)
    net = FixedResolutionNet()
    wrapped = UpsampleInput(net)
    x, t = torch.randn(2, 1, 4, 4), torch.tensor([17, 19])
    with torch.no_grad():
        up = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)
        assert torch.equal(wrapped(x, t, out_size=8), net(up, t))
        # resolution-preserving steps (and no out_size) call the model on x itself
        assert torch.equal(wrapped(x, t, out_size=4), net(x, t))
        assert torch.equal(wrapped(x, t), net(x, t))
    # bilinear upsampling of a constant image is that constant at the new size
    identity = UpsampleInput(XOnly(nn.Identity()))
    constant = identity(torch.full((1, 3, 4, 4), 0.25), t[:1], out_size=16)
    assert torch.equal(constant, torch.full((1, 3, 16, 16), 0.25))
    assert wrapped.in_channels == 1 and list(wrapped.state_dict()) == [
        f"model.{k}" for k in net.state_dict()
    ]


def test_upsample_input_rejects_bad_input() -> None:
    wrapped = UpsampleInput(XOnly(nn.Identity()))
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        UpsampleInput(lambda x, t: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"x must have shape \(b, c, h, w\)"):
        wrapped(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="out_size must be None or a positive int"):
        wrapped(torch.zeros(1, 1, 4, 4), torch.zeros(1, dtype=torch.long), out_size=0)
    shrink = UpsampleInput(XOnly(nn.AvgPool2d(2)))
    with pytest.raises(ValueError, match="must keep the spatial size"):
        shrink(torch.zeros(1, 1, 4, 4), torch.zeros(1, dtype=torch.long), out_size=8)


# ---------------------------------------------------------------- training, both patterns
@pytest.mark.parametrize(
    "build",
    [lambda: UpsampleInput(FixedResolutionNet()), SelfUpsamplingNet],
    ids=["wrapped", "self"],
)
def test_both_patterns_train_on_a_three_level_pyramid(build: Callable[[], nn.Module]) -> None:
    torch.manual_seed(0)
    model = build()
    check_scale_space_model(model, PYRAMID)  # accepted
    x0 = _images()
    # the out_size contract at every change step and inside every level
    shapes = {}
    with torch.no_grad():
        for t in (0, 10, *PYRAMID.change_steps, 19):
            r_t, r_next = PYRAMID.resolution(t), PYRAMID.resolution(t - 1)
            tt = torch.full((3,), t)
            x_t = torch.randn(3, 1, r_t, r_t)
            shapes[t] = tuple(model(x_t, tt, out_size=r_next).shape)
            assert shapes[t] == (3, 1, r_next, r_next)
    assert shapes[11] == (3, 1, 16, 16) and shapes[17] == (3, 1, 8, 8)  # 8 -> 16, 4 -> 8

    def evaluation_loss() -> float:  # the same timesteps and noise every time
        with torch.no_grad():
            losses = [
                scale_space_loss(model, PYRAMID, x0, t=t, generator=_seeded(t))
                for t in (5, 11, 14, 17, 19)
            ]
        return float(torch.stack(losses).mean())

    before = evaluation_loss()
    initial = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        loss = scale_space_loss(model, PYRAMID, x0, generator=g)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluation_loss()
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), initial, strict=True))
    assert after < 0.8 * before, (before, after)


# ---------------------------------------------------------------- check_scale_space_model
def test_check_refuses_a_fixed_resolution_model_on_a_multi_level_pyramid() -> None:
    net = FixedResolutionNet()
    with pytest.raises(ValueError, match=r"FixedResolutionNet keeps the resolution") as err:
        check_scale_space_model(net, PYRAMID)
    message = str(err.value)
    assert "4x4 -> 8x8 -> 16x16" in message and "UpsampleInput(model)" in message
    assert "upsample_top_level=True" in message
    with pytest.raises(ValueError, match="keeps the resolution"):  # through a wrapper
        check_scale_space_model(AveragedModel(net), PYRAMID)
    # accepted: wrapped (also inside an AveragedModel), a one-level pyramid, and a
    # two-level pyramid whose only change step the loss upsamples itself
    check_scale_space_model(UpsampleInput(net), PYRAMID)
    check_scale_space_model(AveragedModel(UpsampleInput(net)), PYRAMID)
    check_scale_space_model(net, ScaleSpaceDegradation(16, 1, num_train_timesteps=20))
    two_levels = ScaleSpaceDegradation(16, 2, num_train_timesteps=20)
    check_scale_space_model(net, two_levels, upsample_top_level=True)
    with pytest.raises(ValueError, match="8x8 -> 16x16"):
        check_scale_space_model(net, two_levels)
    with pytest.raises(ValueError, match="keeps the resolution"):  # three levels: not enough
        check_scale_space_model(net, PYRAMID, upsample_top_level=True)


def test_declared_changes_resolution_reads_through_wrappers() -> None:
    net = FixedResolutionNet()
    assert declared_changes_resolution(net) is False
    assert declared_changes_resolution(AveragedModel(AveragedModel(net))) is False
    assert declared_changes_resolution(UpsampleInput(net)) is True
    assert declared_changes_resolution(nn.Conv2d(1, 1, 1)) is None  # undeclared: unchecked
    check_scale_space_model(nn.Conv2d(1, 1, 1), PYRAMID)

    class Bad(nn.Module):
        changes_resolution = "no"

    with pytest.raises(TypeError, match="changes_resolution must be True or False"):
        declared_changes_resolution(Bad())


def test_diffusers_unet_declares_its_fixed_resolution() -> None:
    diffusers = pytest.importorskip("diffusers")
    from scalemix.interop import DiffusersUNet

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    model = DiffusersUNet(unet)
    with pytest.raises(ValueError, match="DiffusersUNet keeps the resolution"):
        check_scale_space_model(model, PYRAMID)
    wrapped = UpsampleInput(model)
    check_scale_space_model(wrapped, PYRAMID)
    assert wrapped.in_channels == 1
    x0 = _images(4)
    opt = torch.optim.Adam(wrapped.parameters(), lr=1e-3)
    for step, t in enumerate((17, 11, 5)):  # one step at each kind of step: 4->8, 8->16, 16
        loss = scale_space_loss(
            wrapped, PYRAMID, x0, t=t, generator=torch.Generator().manual_seed(step)
        )
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = wrapped(torch.randn(2, 1, 4, 4), torch.tensor([18, 18]), out_size=8)
    assert out.shape == (2, 1, 8, 8)
