"""Tests of the dual-scale components: embedding, gate, rescaling, blocks and denoisers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from scalemix.nn.batched import StackedLinear
from scalemix.nn.dual_denoiser import DualScaleDenoiser
from scalemix.nn.dual_scale import DualScaleBlock
from scalemix.nn.embedding import SinusoidalEmbedding, sinusoidal_frequencies
from scalemix.nn.gate import TimestepGate
from scalemix.nn.mlp import MLPDenoiser
from scalemix.nn.rescale import (
    AvgPoolDownscale,
    InterpolateUpscale,
    LearnedAffineUpscale,
    ScaleUpscale,
)

SMALL: dict[str, Any] = {"embedding_dim": 16, "hidden_dim": 32, "num_blocks": 2}


def numpy_embedding(x: np.ndarray, dim: int, scale: float) -> np.ndarray:
    half = dim // 2
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / (half - 1))
    args = (x * scale)[..., None] * freqs
    return np.concatenate([np.sin(args), np.cos(args)], axis=-1)


# --------------------------------------------------------------------- embedding
@settings(max_examples=20)
@given(
    half=st.integers(2, 96),
    scale=st.sampled_from([1.0, 25.0, 0.5]),
    values=st.lists(st.floats(-4, 4), min_size=1, max_size=8),
)
def test_embedding_matches_numpy(half: int, scale: float, values: list[float]) -> None:
    dim = 2 * half
    x = np.asarray(values, dtype=np.float32)
    got = SinusoidalEmbedding(dim, scale)(torch.from_numpy(x))
    assert got.shape == (len(values), dim)
    expected = numpy_embedding(x.astype(np.float64), dim, scale)
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-4)


def test_embedding_integer_timesteps_and_extra_dims() -> None:
    t = torch.arange(0, 100, 7)
    emb = SinusoidalEmbedding(128)(t)
    np.testing.assert_allclose(emb.numpy(), numpy_embedding(t.numpy(), 128, 1.0), atol=1e-4)
    coords = torch.randn(5, 3)
    assert SinusoidalEmbedding(8, 25.0)(coords).shape == (5, 3, 8)
    freqs = sinusoidal_frequencies(10, torch.float64)
    assert freqs[0] == 1.0 and math.isclose(float(freqs[-1]), 1e-4, rel_tol=1e-12)


@pytest.mark.parametrize("dim", [3, 2, 0, 7])
def test_embedding_rejects_bad_dim(dim: int) -> None:
    with pytest.raises(ValueError, match="even integer >= 4"):
        SinusoidalEmbedding(dim)


def test_embedding_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError):
        SinusoidalEmbedding(8.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        SinusoidalEmbedding(8, float("inf"))
    with pytest.raises(TypeError, match="dtype"):
        SinusoidalEmbedding(8)(torch.ones(2, dtype=torch.bool))


# -------------------------------------------------------------------------- gate
GATES = {
    mode: TimestepGate(mode, value=0.3, embedding_dim=16, hidden_dim=32)
    for mode in ("fixed", "learned", "mlp", "deep")
}


@settings(max_examples=15)
@given(
    mode=st.sampled_from(sorted(GATES)),
    t_values=st.lists(st.integers(0, 999), min_size=1, max_size=20),
)
def test_gate_weights_lie_in_simplex(mode: str, t_values: list[int]) -> None:
    gate = GATES[mode]
    t = torch.tensor(t_values)
    w = gate.weights(t)
    assert w.shape == (len(t_values), 2)
    assert bool(((w >= 0) & (w <= 1)).all())
    torch.testing.assert_close(w.sum(-1), torch.ones(len(t_values)))
    torch.testing.assert_close(gate.alpha(t), w[:, 0])


@pytest.mark.parametrize("value", [0.0, 0.25, 1.0])
def test_fixed_gate_is_constant(value: float) -> None:
    gate = TimestepGate("fixed", value=value)
    t = torch.arange(100)
    torch.testing.assert_close(gate.alpha(t), torch.full((100,), value))
    assert not gate.is_time_dependent and not list(gate.parameters())


def test_learned_gate_starts_at_value_and_is_trainable() -> None:
    gate = TimestepGate("learned", value=0.8)
    t = torch.arange(4)
    torch.testing.assert_close(gate.alpha(t), torch.full((4,), 0.8))
    torch.autograd.backward(gate.alpha(t).sum())
    assert gate.logits is not None and gate.logits.grad is not None


def test_network_gates_have_published_layers() -> None:
    mlp = TimestepGate("mlp")
    assert mlp.network is not None
    sizes = [(m.in_features, m.out_features) for m in mlp.network if isinstance(m, nn.Linear)]
    assert sizes == [(128, 256), (256, 2)]
    deep = TimestepGate("deep")
    assert deep.network is not None
    sizes = [(m.in_features, m.out_features) for m in deep.network if isinstance(m, nn.Linear)]
    assert sizes == [(128, 256), (256, 128), (128, 2)]
    slopes = [m.negative_slope for m in deep.network if isinstance(m, nn.LeakyReLU)]
    assert slopes == [0.2, 0.2]
    # a precomputed embedding gives the same weights as the gate's own
    t = torch.randint(0, 100, (6,))
    torch.testing.assert_close(mlp(t, SinusoidalEmbedding(128)(t)), mlp(t))


def test_gate_with_three_branches() -> None:
    gate = TimestepGate("fixed", value=[0.2, 0.3, 0.5], num_branches=3)
    torch.testing.assert_close(gate(torch.arange(2)), torch.tensor([[0.2, 0.3, 0.5]] * 2))
    w = TimestepGate("mlp", num_branches=3, embedding_dim=8, hidden_dim=8)(torch.arange(5))
    torch.testing.assert_close(w.sum(-1), torch.ones(5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "softmax"}, "unknown gate mode"),
        ({"mode": "fixed", "value": 1.5}, r"\[0, 1\]"),
        ({"mode": "fixed", "value": -0.1}, r"\[0, 1\]"),
        ({"mode": "learned", "value": 1.0}, "strictly inside"),
        ({"mode": "fixed", "value": [0.5, 0.6]}, "sum to 1"),
        ({"mode": "fixed", "value": [1.0]}, "expected 2 weights"),
        ({"mode": "fixed", "value": 0.5, "num_branches": 3}, "sequence"),
        ({"mode": "mlp", "num_branches": 1}, "num_branches"),
        ({"mode": "mlp", "hidden_dim": 0}, "hidden_dim"),
    ],
)
def test_gate_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TimestepGate(**kwargs)  # type: ignore[arg-type]


def test_gate_rejects_bad_shapes() -> None:
    gate = TimestepGate("mlp", embedding_dim=8, hidden_dim=8)
    with pytest.raises(ValueError, match=r"shape \(b,\)"):
        gate(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="t_emb"):
        gate(torch.zeros(2, dtype=torch.long), torch.zeros(2, 4))


# ------------------------------------------------------------------- rescaling
def test_rescale_modules() -> None:
    x = torch.randn(5, 2)
    torch.testing.assert_close(LearnedAffineUpscale(2, init="identity")(x), x)
    torch.testing.assert_close(ScaleUpscale(3.0)(x), 3.0 * x)
    img = torch.randn(2, 3, 4, 6)
    up = InterpolateUpscale(2, "nearest")(img)
    assert up.shape == (2, 3, 8, 12)
    torch.testing.assert_close(AvgPoolDownscale(2)(up), img)
    assert InterpolateUpscale(1.5, "bilinear")(img).shape == (2, 3, 6, 9)


def test_rescale_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="init"):
        LearnedAffineUpscale(2, init="zeros")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="last dimension"):
        LearnedAffineUpscale(2)(torch.zeros(3, 4))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="factor"):
            ScaleUpscale(bad)
    with pytest.raises(ValueError, match="mode"):
        InterpolateUpscale(2, "area")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(b, c, h, w\)"):
        InterpolateUpscale(2)(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="divisible"):
        AvgPoolDownscale(2)(torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match="integer"):
        AvgPoolDownscale(0)


# ------------------------------------------------------------------ dual block
class ConvBranch(nn.Module):
    """A tiny image denoiser (x, t) -> same shape, with a time-dependent bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        out: Tensor = self.conv(x) + 0.01 * t.float().view(-1, 1, 1, 1)
        return out


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_block_extremes_select_one_branch_vectors(alpha: float) -> None:
    torch.manual_seed(0)
    g, loc = MLPDenoiser(**SMALL), MLPDenoiser(**SMALL)
    up = LearnedAffineUpscale(2)
    block = DualScaleBlock(g, loc, alpha, up)
    x, t = torch.randn(9, 2), torch.randint(0, 100, (9,))
    expected = g(x, t) if alpha == 1.0 else loc(up(x), t)
    torch.testing.assert_close(block(x, t), expected)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.3])
def test_block_on_images(alpha: float) -> None:
    torch.manual_seed(0)
    g, loc = ConvBranch(3), ConvBranch(3)
    block = DualScaleBlock(g, loc, TimestepGate("fixed", value=alpha), InterpolateUpscale(2))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 50])
    out = block(x, t)
    assert out.shape == x.shape
    local = F.avg_pool2d(loc(F.interpolate(x, scale_factor=2, mode="bilinear"), t), 2)
    torch.testing.assert_close(out, alpha * g(x, t) + (1 - alpha) * local)
    # an explicit downscale gives the same result as the default area pooling
    explicit = DualScaleBlock(g, loc, alpha, InterpolateUpscale(2), AvgPoolDownscale(2))
    torch.testing.assert_close(explicit(x, t), out)


def test_block_adaptive_gate_mixes_per_sample() -> None:
    torch.manual_seed(1)
    g, loc = MLPDenoiser(**SMALL), MLPDenoiser(**SMALL)
    gate = TimestepGate("mlp", embedding_dim=16, hidden_dim=16)
    block = DualScaleBlock.for_vectors(g, loc, gate, 2)
    x, t = torch.randn(6, 2), torch.randint(0, 100, (6,))
    gl, local, w = block.branches(x, t)
    torch.testing.assert_close(block(x, t), w[:, :1] * gl + w[:, 1:] * local)
    torch.testing.assert_close(block.alpha(t), block.gate_weights(t)[:, 0])


def test_block_rejects_bad_configuration() -> None:
    g = MLPDenoiser(**SMALL)
    with pytest.raises(ValueError, match="2 branches"):
        DualScaleBlock(g, g, TimestepGate("fixed", value=[0.5, 0.25, 0.25], num_branches=3), g)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        DualScaleBlock(g, g, 1.2, ScaleUpscale(2))
    with pytest.raises(TypeError, match="local_branch"):
        DualScaleBlock(g, lambda x, t: x, 0.5, ScaleUpscale(2))  # type: ignore[arg-type]
    block = DualScaleBlock(ConvBranch(1), ConvBranch(1), 0.5, ScaleUpscale(2), nn.Identity())
    with pytest.raises(ValueError, match="shape"):
        block(torch.zeros(2, 1, 4, 4), torch.zeros(3, dtype=torch.long))
    wrong = DualScaleBlock(ConvBranch(1), ConvBranch(1), 0.5, InterpolateUpscale(2), nn.Identity())
    with pytest.raises(ValueError, match="local branch output"):
        wrong(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))


# ------------------------------------------------------------------- denoisers
def test_mlp_denoiser_input_is_published_embedding() -> None:
    model = MLPDenoiser()
    x, t = torch.randn(4, 2), torch.randint(0, 100, (4,))
    emb = model.embed(x, t)
    expected = np.concatenate(
        [
            numpy_embedding(x[:, 0].double().numpy(), 128, 25.0),
            numpy_embedding(x[:, 1].double().numpy(), 128, 25.0),
            numpy_embedding(t.double().numpy(), 128, 1.0),
        ],
        axis=1,
    )
    np.testing.assert_allclose(emb.numpy(), expected, atol=2e-4)
    assert model(x, t).shape == (4, 2)
    assert model.input_layer.in_features == 384 and len(model.blocks) == 3
    # a scalar timestep is broadcast over the batch
    torch.testing.assert_close(model(x, torch.tensor(7)), model(x, torch.full((4,), 7)))


def reference_dual(
    g: MLPDenoiser, loc: MLPDenoiser, gate: TimestepGate, up: nn.Module, x: Tensor, t: Tensor
) -> Tensor:
    """The published unbatched forward pass, written out."""
    w = gate(t)
    out: Tensor = w[:, :1] * g(x, t) + w[:, 1:] * loc(up(x), t)
    return out


@pytest.mark.parametrize("preset", ["fixed", "learned", "adaptive", "adaptive_deep"])
def test_batched_dual_equals_unbatched_reference(preset: str) -> None:
    torch.manual_seed(3)
    model = DualScaleDenoiser.from_preset(preset, **SMALL)  # type: ignore[arg-type]
    g, loc = model.branch(0), model.branch(1)
    x, t = torch.randn(64, 2), torch.randint(0, 100, (64,))
    ref_gate, ref_up = model.to_block().gate, model.to_block().upscale
    expected = reference_dual(g, loc, ref_gate, ref_up, x, t)
    out = model(x, t)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # gradients of shared pieces agree too
    torch.autograd.backward(out.square().sum())
    torch.autograd.backward(expected.square().sum())
    for p_batched, p_ref in zip(model.upscale.parameters(), ref_up.parameters(), strict=True):
        torch.testing.assert_close(p_batched.grad, p_ref.grad, rtol=1e-4, atol=1e-5)
    grads = [p.grad for p in model.gate.parameters()]
    for got, want in zip(grads, [p.grad for p in ref_gate.parameters()], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_no_grad_path_matches_autograd_path() -> None:
    torch.manual_seed(6)
    model = DualScaleDenoiser.from_preset("adaptive", **SMALL)
    x, t = torch.randn(50, 2), torch.randint(0, 100, (50,))
    with_grad = model(x, t)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), with_grad, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        torch.testing.assert_close(model(x, t), with_grad.detach(), rtol=1e-5, atol=1e-6)


def test_from_branches_round_trip() -> None:
    torch.manual_seed(4)
    g, loc = MLPDenoiser(**SMALL), MLPDenoiser(**SMALL)
    gate, up = TimestepGate("mlp", embedding_dim=16, hidden_dim=8), LearnedAffineUpscale(2)
    model = DualScaleDenoiser.from_branches(g, loc, gate, up)
    x, t = torch.randn(10, 2), torch.randint(0, 100, (10,))
    torch.testing.assert_close(
        model(x, t), reference_dual(g, loc, gate, up, x, t), rtol=1e-5, atol=1e-6
    )
    outputs, weights = model.forward_branches(x, t)
    torch.testing.assert_close(outputs[0], g(x, t), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outputs[1], loc(up(x), t), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, gate(t))
    torch.testing.assert_close(model.gate_weights(t), gate(t))
    torch.testing.assert_close(model.alpha(t), gate.alpha(t))
    for original, copy in ((g, model.branch(0)), (loc, model.branch(1))):
        for a, b in zip(original.state_dict().values(), copy.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b)


def test_published_dual_structure() -> None:
    model = DualScaleDenoiser.from_preset("adaptive")
    assert model.coord_layer.weight.shape == (2, 256, 256)
    assert model.time_layer.weight.shape == (512, 128)
    assert [b.weight.shape for b in model.blocks] == [(2, 256, 256)] * 3
    assert model.output_layer.matrices().shape == (2, 256, 2)
    n_params = sum(p.numel() for p in model.parameters())
    single = sum(p.numel() for p in MLPDenoiser().parameters())
    gate = 128 * 256 + 256 + 256 * 2 + 2
    assert n_params == 2 * single + gate + (2 * 2 + 2)
    x, t = torch.randn(3, 2), torch.tensor(5)
    assert model(x, t).shape == (3, 2)
    torch.testing.assert_close(
        DualScaleDenoiser.from_preset("fixed").alpha(t.expand(3)), torch.full((3,), 0.5)
    )


@pytest.mark.parametrize("layout", ["in_out", "out_in"])
def test_stacked_linear_matches_linears(layout: str) -> None:
    torch.manual_seed(5)
    linears = [nn.Linear(6, 4), nn.Linear(6, 4), nn.Linear(6, 4)]
    stacked = StackedLinear(3, 6, 4, layout=layout)  # type: ignore[arg-type]
    for i, lin in enumerate(linears):
        stacked.load_linear(i, lin)
    x = torch.randn(3, 5, 6)
    expected = torch.stack([lin(x[i]) for i, lin in enumerate(linears)])
    torch.testing.assert_close(stacked(x), expected)
    torch.testing.assert_close(stacked.to_linear(1).weight, linears[1].weight)
    assert stacked.matrices().shape == (3, 6, 4)
    with pytest.raises(ValueError, match="expected input"):
        stacked(torch.zeros(2, 5, 6))
    with pytest.raises(ValueError, match="Linear"):
        stacked.load_linear(0, nn.Linear(4, 6))


def test_stacked_linear_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        StackedLinear(0, 2, 2)
    with pytest.raises(ValueError, match="layout"):
        StackedLinear(2, 2, 2, layout="io")  # type: ignore[arg-type]
    no_bias = StackedLinear(2, 3, 4, bias=False)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(no_bias(x), torch.bmm(x, no_bias.weight))
    with pytest.raises(ValueError, match="has a bias"):
        StackedLinear(2, 3, 4).load_linear(0, nn.Linear(3, 4, bias=False))


def test_denoisers_reject_bad_input() -> None:
    model = DualScaleDenoiser(**SMALL)
    with pytest.raises(ValueError, match=r"shape \(b, 2\)"):
        model(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="t must have shape"):
        model(torch.zeros(4, 2), torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="floating-point"):
        MLPDenoiser(**SMALL)(torch.zeros(4, 2, dtype=torch.long), torch.zeros(4))
    with pytest.raises(ValueError, match="unknown preset"):
        DualScaleDenoiser.from_preset("bilinear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="embedding_dim"):
        DualScaleDenoiser(gate=TimestepGate("mlp", embedding_dim=64))
    with pytest.raises(ValueError, match="upscale must return"):
        DualScaleDenoiser(**SMALL, upscale=nn.Linear(2, 4))(torch.zeros(2, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="embedding_dim"):
        MLPDenoiser(embedding_dim=15)
    with pytest.raises(ValueError, match="num_blocks"):
        MLPDenoiser(num_blocks=-1)
    with pytest.raises(ValueError, match="same sizes"):
        DualScaleDenoiser.from_branches(
            MLPDenoiser(**SMALL), MLPDenoiser(), TimestepGate("mlp"), LearnedAffineUpscale(2)
        )


def test_embedding_keeps_float32_phases_when_cast_to_bfloat16() -> None:
    from scalemix.nn import SinusoidalEmbedding

    t = torch.tensor([998, 999])
    ref = SinusoidalEmbedding(128)(t)
    cast = SinusoidalEmbedding(128).to(torch.bfloat16)
    out = cast(t)
    assert out.dtype == torch.bfloat16
    # only the final rounding to bf16 (8 bits of mantissa) separates the two
    assert torch.allclose(out.float(), ref, atol=1e-2)
    assert not torch.equal(out[0], out[1])
