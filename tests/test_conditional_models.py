"""Class-conditional networks: ``num_classes=K``, ``class_labels=``, the null class ``K``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from scalemix.nn import DualScaleDenoiser, FlexiUNet, MLPDenoiser
from scalemix.nn._conditioning import class_embedding
from scalemix.nn.unet_blocks import ResBlock

SMALL: dict[str, Any] = {"embedding_dim": 8, "hidden_dim": 16, "num_blocks": 2}
K = 3


def _flexi(**kwargs: Any) -> FlexiUNet:
    args: dict[str, Any] = {
        "in_channels": 1,
        "base_channels": 8,
        "channel_mult": (1, 2),
        "num_res_blocks": 1,
        "attention_resolutions": (4,),
        "image_size": 8,
        "num_heads": 2,
    }
    return FlexiUNet(**{**args, **kwargs})


def _perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter moved off its initial value (the UNet's zero-initialised output
    convolutions hide the embedding otherwise), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


# (builder taking **kwargs, the shape of one input item)
NETWORKS: dict[str, tuple[Callable[..., nn.Module], tuple[int, ...]]] = {
    "flexi": (_flexi, (1, 8, 8)),
    "mlp": (lambda **kw: MLPDenoiser(**SMALL, **kw), (2,)),
    "dual": (lambda **kw: DualScaleDenoiser.from_preset("adaptive", **SMALL, **kw), (2,)),
}


def _build(name: str, seed: int = 0, **kwargs: Any) -> nn.Module:
    torch.manual_seed(seed)
    return NETWORKS[name][0](**kwargs)


def _inputs(name: str, batch: int = 3, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *NETWORKS[name][1]), generator=g)
    return x, torch.randint(0, 100, (batch,), generator=g)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_the_unconditional_default_is_unchanged(name: str) -> None:
    old, none = _build(name), _build(name, num_classes=None)
    assert list(none.state_dict()) == list(old.state_dict())
    assert not any("class" in key for key in old.state_dict())
    assert getattr(none, "num_classes") is None  # noqa: B009
    x, t = _inputs(name)
    with torch.no_grad():
        assert torch.equal(none(x, t), old(x, t))


@pytest.mark.parametrize("name", list(NETWORKS))
def test_the_conditional_net_adds_only_the_class_embedding(name: str) -> None:
    """Built with the same seed, the conditional net has the unconditional one's weights
    plus ``class_embed`` (K + 1 rows, initialised non-zero); with that embedding zeroed,
    every label gives the unconditional output."""
    plain = _perturbed(_build(name))
    cond = _build(name, num_classes=K)
    extra = set(cond.state_dict()) - set(plain.state_dict())
    assert extra == {"class_embed.weight"} and set(plain.state_dict()) <= set(cond.state_dict())
    table = cond.state_dict()["class_embed.weight"]
    assert table.shape[0] == K + 1 and float(table.std()) > 0.5  # N(0, 1), not zero
    cond.load_state_dict({**plain.state_dict(), "class_embed.weight": torch.zeros_like(table)})
    cond.eval()
    x, t = _inputs(name)
    with torch.no_grad():
        for label in range(K + 1):
            y = torch.full((3,), label)
            torch.testing.assert_close(cond(x, t, class_labels=y), plain(x, t), rtol=0, atol=1e-6)


def test_flexi_unet_blocks_read_time_plus_class_embedding() -> None:
    """The embedding the residual blocks receive is ``time_embed(t) + class_embed.weight[y]``."""
    model = _perturbed(_build("flexi", num_classes=K))
    assert isinstance(model, FlexiUNet) and model.class_embed is not None
    seen: list[Tensor] = []
    blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    hooks = [b.register_forward_pre_hook(lambda _m, args: seen.append(args[1])) for b in blocks]
    x, t = _inputs("flexi")
    y = torch.tensor([2, 0, K])
    with torch.no_grad():
        model(x, t, class_labels=y)
        model(x, t)
    for hook in hooks:
        hook.remove()
    assert len(seen) == 2 * len(blocks) == 2 * 8  # encoder 2, middle 2, decoder 4 (per call)
    with torch.no_grad():
        time = model.time_embed(t)
        weight = model.class_embed.weight
        for emb in seen[: len(blocks)]:
            assert torch.equal(emb, time + weight[y])
        for emb in seen[len(blocks) :]:
            assert torch.equal(emb, time + weight[K].expand(3, -1))


def test_mlp_input_is_coordinates_and_time_plus_class() -> None:
    model = _perturbed(_build("mlp", num_classes=K))
    assert isinstance(model, MLPDenoiser) and model.class_embed is not None
    x, t = _inputs("mlp")
    y = torch.tensor([1, K, 0])
    with torch.no_grad():
        expected_in = torch.cat(
            (
                model.coord_embedding(x).flatten(1),
                model.time_embedding(t) + model.class_embed.weight[y],
            ),
            dim=-1,
        )
        assert torch.equal(model.embed(x, t, class_labels=y), expected_in)
        h = model.input_layer(expected_in)
        for block in model.blocks:
            h = h + block.linear(torch.relu(h))  # type: ignore[operator]
        expected = model.output_layer(torch.relu(h))
        torch.testing.assert_close(model(x, t, class_labels=y), expected, rtol=0, atol=1e-6)


def test_dual_branches_read_time_plus_class_and_the_gate_time_alone() -> None:
    """The batched model equals ``w_g(t) g(x, t, y) + w_l(t) l(u(x), t, y)`` of its two
    conditional branches; the gate weights do not depend on the label."""
    model = _perturbed(_build("dual", num_classes=K))
    assert isinstance(model, DualScaleDenoiser)
    x, t = _inputs("dual")
    y = torch.tensor([0, 2, K])
    g, loc = model.branch(0), model.branch(1)
    assert g.num_classes == loc.num_classes == K
    with torch.no_grad():
        w = model.gate_weights(t)
        expected = w[:, :1] * g(x, t, class_labels=y) + w[:, 1:] * loc(
            model.upscale(x), t, class_labels=y
        )
        weights = model.forward_branches(x, t, class_labels=y)[1]
        assert torch.equal(weights, w)
        assert torch.equal(model.forward_branches(x, t, class_labels=y.flip(0))[1], w)
        torch.testing.assert_close(model(x, t, class_labels=y), expected, rtol=0, atol=1e-5)
        rebuilt = DualScaleDenoiser.from_branches(g, loc, model.gate, model.upscale).eval()
        torch.testing.assert_close(rebuilt(x, t, class_labels=y), expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="DualScaleBlock"):
        model.to_block()
    other = MLPDenoiser(**SMALL, num_classes=K)
    with pytest.raises(ValueError, match="class_embed"):
        DualScaleDenoiser.from_branches(g, other, model.gate, model.upscale)


@pytest.mark.parametrize("name", ["mlp", "dual"])
def test_no_grad_blocks_equal_the_autograd_forward(name: str) -> None:
    """Batches above 256 rows run in blocks without autograd: same output, labels included."""
    model = _perturbed(_build(name, num_classes=K))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(600, 2, generator=g)
    y = torch.randint(0, K + 1, (600,), generator=g)
    for t in (torch.randint(0, 100, (600,), generator=g), torch.tensor(7).expand(600)):
        with_grad = model(x, t, class_labels=y)
        with torch.no_grad():
            torch.testing.assert_close(model(x, t, class_labels=y), with_grad, rtol=0, atol=1e-6)
            torch.testing.assert_close(model(x, t), model(x, t, class_labels=torch.full((600,), K)))


@pytest.mark.parametrize("name", list(NETWORKS))
def test_null_class_and_per_item_labels(name: str) -> None:
    model = _perturbed(_build(name, num_classes=K))
    x, t = _inputs(name)
    y = torch.tensor([0, 1, 2])
    with torch.no_grad():
        out = model(x, t, class_labels=y)
        null = model(x, t, class_labels=torch.full((3,), K))
        # (the dual model computes the shared null row once: float rounding apart)
        torch.testing.assert_close(model(x, t), null, rtol=0, atol=1e-6)
        changed = model(x, t, class_labels=torch.tensor([0, 2, K]))
        torch.testing.assert_close(changed[0], out[0], rtol=0, atol=1e-6)
        for i in (1, 2):
            assert not torch.allclose(changed[i], out[i])  # its own label changed
        assert not torch.allclose(null, out)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_label_errors(name: str) -> None:
    cond, plain = _build(name, num_classes=K), _build(name)
    x, t = _inputs(name)
    cls = type(cond).__name__
    with pytest.raises(ValueError, match=f"{cls} was built without num_classes"):
        plain(x, t, class_labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="int64"):
        cond(x, t, class_labels=torch.zeros(3))
    with pytest.raises(TypeError, match="int64"):
        cond(x, t, class_labels=[0, 1, 2])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        cond(x, t, class_labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        cond(x, t, class_labels=torch.tensor(0))
    for bad in (K + 1, -1):
        with pytest.raises(ValueError, match=rf"\[0, {K}\].*{K} the null class"):
            cond(x, t, class_labels=torch.tensor([0, bad, 1]))
    out = cond(x, t, class_labels=torch.tensor([0, 1, 2], dtype=torch.int32))  # any int dtype
    assert out.shape == x.shape
    for bad_k, error in ((0, ValueError), (-2, ValueError), (True, TypeError), (2.0, TypeError)):
        with pytest.raises(error, match="num_classes"):
            _build(name, num_classes=bad_k)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_gradients_reach_the_class_embedding(name: str) -> None:
    model = _perturbed(_build(name, num_classes=K)).train()
    x, t = _inputs(name)
    y = torch.tensor([2, 0, 2])
    model(x, t, class_labels=y).square().sum().backward()
    grad = model.class_embed.weight.grad  # type: ignore[union-attr]
    assert grad is not None
    rows = grad.abs().sum(dim=1)
    assert bool((rows[[0, 2]] > 0).all()) and float(rows[1]) == 0 and float(rows[K]) == 0


def test_out_of_range_labels_give_nan_where_unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the range is not read back (here: a tensor the embedding never checked),
    an out-of-range label gives NaN for its item only, with no out-of-bounds read."""
    embed = nn.Embedding(K + 1, 4)
    labels = torch.tensor([0, K + 2, -1, K])
    monkeypatch.setattr("scalemix.nn._conditioning.range_checked", lambda _t: False)
    rows = class_embedding(embed, labels)
    assert bool(rows[[1, 2]].isnan().all()) and bool(torch.isfinite(rows[[0, 3]]).all())
    assert torch.equal(rows[[0, 3]], embed.weight[[0, K]])


def test_flexi_unet_class_embedding_is_used_at_every_level() -> None:
    model = _flexi(num_classes=K)
    for r, out in ((8, None), (4, None), (4, 8)):
        assert not any(n.startswith("class_embed") for n in model.unused_parameters(r, out))
