"""Tests for FlexiUNet and its UNet building blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from scalemix.nn.embedding import SinusoidalEmbedding
from scalemix.nn.flexi_unet import FlexiUNet
from scalemix.nn.unet_blocks import (
    AttentionBlock,
    Downsample,
    ResBlock,
    TimeEmbedding,
    TimestepEmbedSequential,
    Upsample,
    group_norm,
)

TINY: dict[str, Any] = {
    "image_size": 32,
    "base_channels": 16,
    "channel_mult": (1, 2, 2, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (8,),
}
PAIRS = [(r, o) for r in (32, 16, 8, 4) for o in (r, 2 * r) if o <= 32]


def _perturbed(seed: int = 0, **overrides: Any) -> FlexiUNet:
    """A tiny FlexiUNet whose zero-initialised parameters are made non-zero."""
    model = FlexiUNet(**{**TINY, **overrides})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(scope="module")
def model() -> FlexiUNet:
    return _perturbed().eval()


def _inputs(b: int, r: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, r, r, generator=gen), torch.randint(0, 1000, (b,), generator=gen)


def test_levels_and_widths() -> None:
    m = FlexiUNet(**TINY)
    assert m.resolutions == (32, 16, 8, 4)
    assert m.widths == (16, 32, 32, 32)
    assert [m.level(r) for r in m.resolutions] == [0, 1, 2, 3]


@pytest.mark.parametrize(("r", "out"), PAIRS)
def test_output_shapes(model: FlexiUNet, r: int, out: int) -> None:
    x, t = _inputs(2, r)
    with torch.no_grad():
        assert model(x, t, out).shape == (2, 3, out, out)
        if out == r:
            assert model(x, t).shape == (2, 3, r, r)


@settings(max_examples=10)
@given(level=st.integers(0, 3), double=st.booleans(), b=st.integers(1, 3), cout=st.integers(1, 4))
def test_output_shape_property(level: int, double: bool, b: int, cout: int) -> None:
    m = FlexiUNet(**{**TINY, "out_channels": cout})
    r = 32 >> level
    out = 2 * r if double and level > 0 else r
    x, t = _inputs(b, r)
    with torch.no_grad():
        assert m(x, t, out).shape == (b, cout, out, out)


@pytest.mark.parametrize(("r", "out"), PAIRS)
def test_zero_initialised_head_gives_zero_output(r: int, out: int) -> None:
    x, t = _inputs(2, r)
    with torch.no_grad():
        assert torch.equal(FlexiUNet(**TINY)(x, t, out), torch.zeros(2, 3, out, out))


def test_perturbed_model_depends_on_x_and_t(model: FlexiUNet) -> None:
    x, t = _inputs(2, 16)
    with torch.no_grad():
        y = model(x, t, 32)
        assert y.abs().max() > 0
        assert not torch.allclose(y, model(x + 0.5, t, 32))
        assert not torch.allclose(y, model(x, t + 100, 32))


def _called_blocks(m: FlexiUNet, x: Tensor, t: Tensor, out: int) -> set[str]:
    called: set[str] = set()
    kinds = (ResBlock, AttentionBlock, Downsample, Upsample, nn.Conv2d)
    handles = [
        mod.register_forward_hook(lambda *_, n=name: called.add(n))
        for name, mod in m.named_modules()
        if isinstance(mod, kinds)
    ]
    m(x, t, out)
    for h in handles:
        h.remove()
    return called


@pytest.mark.parametrize(("r", "out"), PAIRS)
def test_skipped_parameters_are_untouched(r: int, out: int) -> None:
    m = _perturbed()
    x, t = _inputs(2, r)
    called = _called_blocks(m, x, t, out)
    m(x, t, out).square().mean().backward()
    no_grad = {n for n, p in m.named_parameters() if p.grad is None}
    unused = m.unused_parameters(r, out)
    assert no_grad == set(unused)
    # No module owning an unused parameter runs at all (no wasted compute).
    for name in called:
        assert not any(u.startswith(name + ".") for u in unused), name
    # Compute scales with resolution: blocks of levels finer than the exit level never run.
    exit_level = m.level(out)
    for level in range(exit_level):
        assert not any(n.startswith((f"encoder.{level}.", f"decoder.{level}.")) for n in called)


def test_full_resolution_call_is_a_standard_unet() -> None:
    m = _perturbed()
    unused = m.unused_parameters(32)
    assert unused == m.unused_parameters(32, 32)
    assert unused and all(n.startswith(("in_adapters.", "out_adapters.")) for n in unused)
    assert not any(n.startswith(("in_adapters.0.", "out_adapters.0.")) for n in unused)
    # channel_mult[0] == 1: the level-0 adapters are identities.
    assert isinstance(m.in_adapters[0], nn.Identity)
    assert isinstance(m.out_adapters[0], nn.Identity)
    x, t = _inputs(2, 32)
    m(x, t).sum().backward()
    for name, p in m.named_parameters():
        if not name.startswith(("in_adapters.", "out_adapters.")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def _train_levels(model: nn.Module) -> None:
    for r, out in [(32, 32), (8, 16), (16, 16)]:
        x, t = _inputs(2, r)
        model(x, t, out).square().mean().backward()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_over_several_levels_needs_find_unused_parameters(tmp_path: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        for find_unused in (True, False):
            ddp = DistributedDataParallel(FlexiUNet(**TINY), find_unused_parameters=find_unused)
            if find_unused:
                _train_levels(ddp)
            else:
                with pytest.raises(RuntimeError, match="not used in producing loss"):
                    _train_levels(ddp)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("r", "out"), [(32, 32), (8, 16), (4, 4)])
def test_batch_independence(model: FlexiUNet, r: int, out: int) -> None:
    x, t = _inputs(3, r)
    with torch.no_grad():
        batched = model(x, t, out)
        for i in range(3):
            single = model(x[i : i + 1], t[i : i + 1], out)
            torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_is_finite(model: FlexiUNet) -> None:
    x, t = _inputs(2, 16)
    with torch.no_grad():
        ref = model(x, t, 32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x, t, 32)
    assert y.shape == ref.shape and torch.isfinite(y).all()
    rel = (y.float() - ref).norm() / ref.norm()
    assert rel < 0.1


def test_dropout_and_additive_conditioning_variant() -> None:
    m = _perturbed(dropout=0.1, scale_shift=False, num_head_channels=8)
    x, t = _inputs(2, 8)
    assert m(x, t, 16).shape == (2, 3, 16, 16)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"image_size": 36}, "multiple of 8"),
        ({"image_size": 0}, "positive"),
        ({"image_size": 4}, "at most 3 levels"),
        ({"channel_mult": ()}, "channel_mult"),
        ({"channel_mult": (1, 0, 2, 2)}, "channel_mult"),
        ({"base_channels": 0}, "base_channels"),
        ({"base_channels": 3}, "even"),
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": 0}, "out_channels"),
        ({"num_res_blocks": 0}, "num_res_blocks"),
        ({"dropout": 1.0}, "dropout"),
        ({"attention_resolutions": (12,)}, "native resolutions"),
        ({"num_heads": 3}, "heads"),
        ({"num_head_channels": 5}, "num_head_channels"),
    ],
)
def test_bad_config_raises(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FlexiUNet(**{**TINY, **overrides})


def test_bad_forward_inputs_raise(model: FlexiUNet) -> None:
    x, t = _inputs(2, 16)
    with pytest.raises(ValueError, match=r"accepted resolutions are \[32, 16, 8, 4\]"):
        model(torch.randn(2, 3, 13, 13), t)  # level 2 (16 >= 13 > 8) needs a multiple of 2
    with pytest.raises(ValueError, match=r"accepted resolutions are \[32, 16, 8, 4\]"):
        model(torch.randn(2, 3, 20, 20), t)  # level 0 (32 >= 20 > 16) needs a multiple of 8
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(2, 3, 16, 8), t)
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(3, 16, 16), t)
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(2, 4, 16, 16), t)
    with pytest.raises(TypeError, match="floating"):
        model(x.long(), t)
    for bad in (8, 48, 17):
        with pytest.raises(ValueError, match="out_size"):
            model(x, t, bad)
    with pytest.raises(ValueError, match="out_size"):
        model(torch.randn(2, 3, 32, 32), t, 64)
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        model(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        model(x, torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="dtype"):
        model(x, torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="accepted"):
        model.unused_parameters(5)
    with pytest.raises(ValueError, match="out_size"):
        model.unused_parameters(32, 64)


# --- building blocks -------------------------------------------------------------------


@given(channels=st.integers(1, 512))
def test_group_norm_group_count(channels: int) -> None:
    g = group_norm(channels).num_groups
    assert channels % g == 0 and 32 % g == 0
    assert all(channels % d != 0 for d in (2 * g, 4 * g) if d <= 32)


def test_group_norm_rejects_bad_channels() -> None:
    with pytest.raises(ValueError, match="positive"):
        group_norm(0)


def test_time_embedding_is_mlp_of_sinusoidal_features() -> None:
    t = torch.tensor([0, 1, 7, 999])
    layer = TimeEmbedding(8, 32)
    expected = layer.mlp(SinusoidalEmbedding(8)(t))
    torch.testing.assert_close(layer(t), expected)
    assert layer(t).shape == (4, 32)
    with pytest.raises(ValueError, match="dim"):
        TimeEmbedding(3, 4)
    with pytest.raises(ValueError, match="hidden_dim"):
        TimeEmbedding(8, 0)


def test_attention_matches_explicit_softmax() -> None:
    gen = torch.Generator().manual_seed(0)
    block = AttentionBlock(8, num_heads=2)
    with torch.no_grad():
        block.proj.weight.copy_(torch.randn(block.proj.weight.shape, generator=gen))
        x = torch.randn(2, 8, 3, 3, generator=gen)
        q, k, v = block.qkv(block.norm(x)).flatten(2).chunk(3, dim=1)  # (b, 8, 9) each
        heads = []
        for h in range(2):
            qh, kh, vh = (z[:, 4 * h : 4 * h + 4] for z in (q, k, v))
            w = torch.softmax(torch.einsum("bci,bcj->bij", qh, kh) / 2.0, dim=-1)
            heads.append(torch.einsum("bij,bcj->bci", w, vh))
        expected = x + block.proj(torch.cat(heads, 1).reshape(2, 8, 3, 3))
        torch.testing.assert_close(block(x), expected)
    with pytest.raises(ValueError, match="heads"):
        AttentionBlock(8, num_heads=3)


def test_resblock_scale_shift_equation() -> None:
    gen = torch.Generator().manual_seed(0)
    block = ResBlock(4, 8, emb_dim=6)
    with torch.no_grad():
        block.conv2.weight.copy_(torch.randn(block.conv2.weight.shape, generator=gen))
        x, emb = torch.randn(2, 4, 5, 5, generator=gen), torch.randn(2, 6, generator=gen)
        h = block.conv1(F.silu(block.norm1(x)))
        scale, shift = block.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = F.silu(block.norm2(h) * (1 + scale) + shift)
        expected = block.skip(x) + block.conv2(h)
        torch.testing.assert_close(block(x, emb), expected)


def test_resampling_and_sequential_shapes() -> None:
    x, emb = torch.randn(2, 4, 8, 8), torch.randn(2, 6)
    assert Downsample(4, 8)(x).shape == (2, 8, 4, 4)
    assert Upsample(4, 2)(x).shape == (2, 2, 16, 16)
    seq = TimestepEmbedSequential(ResBlock(4, 4, 6), AttentionBlock(4, 1), nn.Identity())
    assert seq(x, emb).shape == x.shape
