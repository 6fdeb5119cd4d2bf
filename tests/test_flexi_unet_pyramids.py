"""FlexiUNet on pyramids that do not halve: entry levels, shapes, routes and gradients."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from scalemix.degradation import Pyramid, pyramid_sizes
from scalemix.nn.flexi_unet import FlexiUNet

BASE: dict[str, Any] = {"base_channels": 8, "num_res_blocks": 1, "in_channels": 1}
# (UNet config, pyramid): the reference's rounding rule for the UNet's level count
CASES: list[tuple[dict[str, Any], Pyramid]] = [
    (
        {"image_size": 64, "channel_mult": (1, 2, 2, 2), "attention_resolutions": (8,)},
        pyramid_sizes(64, 4, 1.5),  # 64/40/28/20 at levels 0/0/1/1
    ),
    (
        {"image_size": 48, "channel_mult": (1, 2, 2), "attention_resolutions": (12,)},
        pyramid_sizes(48, 3, 2.0),  # 48/24/12: not a power of two
    ),
    (
        {"image_size": 48, "channel_mult": (1, 2, 2), "attention_resolutions": ()},
        pyramid_sizes(48, 4, 1.5, unet_levels=3),  # 48/32/20/14 at levels 0/0/1/1
    ),
    (
        {"image_size": 32, "channel_mult": (1, 1, 2), "attention_resolutions": ()},
        pyramid_sizes(32, 5, 1.3, unet_levels=3),  # 32/24/20/14/12 at 0/0/0/1/1
    ),
]
IDS = ["64-f1.5", "48-f2", "48-f1.5", "32-f1.3"]


def _perturbed(config: dict[str, Any], **extra: Any) -> FlexiUNet:
    model = FlexiUNet(**BASE, **config, **extra)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def _inputs(b: int, r: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(r)
    return torch.randn(b, 1, r, r, generator=gen), torch.randint(0, 1000, (b,), generator=gen)


@pytest.mark.parametrize(("config", "pyramid"), CASES, ids=IDS)
def test_every_level_in_both_modes(config: dict[str, Any], pyramid: Pyramid) -> None:
    model = _perturbed(config, entry_levels=dict(zip(*pyramid, strict=True))).eval()
    sizes = pyramid.sizes
    with torch.no_grad():
        for i, r in enumerate(sizes):
            assert model.level(r) == pyramid.unet_levels[i]
            x, t = _inputs(2, r)
            assert model(x, t).shape == (2, 1, r, r)
            assert model(x, t, r).shape == (2, 1, r, r)
            if i > 0:  # resolution-increasing: to the next (larger) pyramid size
                y = model(x, t, sizes[i - 1])
                assert y.shape == (2, 1, sizes[i - 1], sizes[i - 1])
                assert bool(torch.isfinite(y).all()) and float(y.abs().max()) > 0


@pytest.mark.parametrize(("r", "out"), [(40, 64), (28, 40), (20, 28), (28, 28)])
def test_non_halving_routes_use_exactly_their_parameters(r: int, out: int) -> None:
    config, _ = CASES[0]
    model = _perturbed(config)
    x, t = _inputs(2, r)
    model(x, t, out).square().mean().backward()
    no_grad = {n for n, p in model.named_parameters() if p.grad is None}
    assert no_grad == set(model.unused_parameters(r, out))
    k, e = model.level(r), model.level(out)
    levels = model.num_levels
    used = {n for n, p in model.named_parameters() if p.grad is not None}
    # encoder from the entry level down, decoder from the bottom up to the exit level
    for i in range(levels):
        assert any(n.startswith(f"encoder.{i}.") for n in used) == (i >= k)
        assert any(n.startswith(f"decoder.{i}.") for n in used) == (i >= e)


def test_band_rule_and_entry_level_override() -> None:
    # 32 px, 3 levels, factor 1.25: the reference runs 16 at level 0 (its unrounded size
    # 17 lies in band 0); the band rule on 16 itself gives level 1. Both run.
    pyramid = pyramid_sizes(32, 4, 1.25, unet_levels=3)
    assert pyramid == Pyramid((32, 24, 20, 16), (0, 0, 0, 0))
    config = {"image_size": 32, "channel_mult": (1, 1, 2), "attention_resolutions": ()}
    plain = _perturbed(config).eval()
    ref = _perturbed(config, entry_levels=dict(zip(*pyramid, strict=True))).eval()
    assert plain.level(16) == 1 and ref.level(16) == 0
    x, t = _inputs(1, 16)
    with torch.no_grad():
        for m in (plain, ref):
            assert m(x, t, 20).shape == (1, 1, 20, 20)
        assert not torch.allclose(plain(x, t), ref(x, t))  # different routes
    assert "in_adapters.0.weight" not in ref.unused_parameters(16)
    with pytest.raises(ValueError, match="entry_levels"):
        FlexiUNet(**BASE, **config, entry_levels={20: 0, 18: 0})  # 18 is no multiple of 4
    with pytest.raises(ValueError, match="entry_levels"):
        FlexiUNet(**BASE, **config, entry_levels={16: 3})


def test_bad_sizes_on_a_non_halving_unet() -> None:
    config, _ = CASES[0]
    model = FlexiUNet(**BASE, **config)
    x, t = _inputs(1, 28)
    for bad in (20, 30, 72, 36):  # smaller, not a multiple of 8 at level 0, too large
        with pytest.raises(ValueError, match="out_size"):
            model(x, t, bad)
    with pytest.raises(ValueError, match="accepted resolutions"):
        model(*_inputs(1, 30))
    with pytest.raises(ValueError, match="accepted resolutions"):
        model(*_inputs(1, 72))
