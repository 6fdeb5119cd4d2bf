"""Scale Space Diffusion loss and ancestral sampler (with small stand-in models)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scalemix.degradation import GaussianDegradation, ScaleSpaceDegradation
from scalemix.sampling import SamplingState, sample
from scalemix.scale_space import (
    sample_training_timesteps,
    scale_space_loss,
    scale_space_loss_terms,
    scale_space_sample,
)
from scalemix.scheduler import DDPMScheduler

F64 = torch.float64


class TinyDenoiser(nn.Module):
    """A 3x3 conv with a timestep bias, resized to ``out_size``: the denoiser signature."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.in_channels = channels
        gen = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            for p in self.conv.parameters():
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))

    def forward(self, x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        h = torch.tanh(self.conv(x) + (t.to(x.dtype) / 1000.0).view(-1, 1, 1, 1))
        if out_size is not None and out_size != x.shape[-1]:
            h = F.interpolate(h, size=(out_size, out_size), mode="bilinear", align_corners=False)
        return h


class Oracle:
    """The exact x0 predictor for a data set of one image: D_{0:t-1}(x0*)."""

    def __init__(self, deg: ScaleSpaceDegradation, x0: Tensor) -> None:
        self.deg, self.x0 = deg, x0

    def __call__(self, x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        target = self.deg.target(self.x0.expand(x.shape[0], *self.x0.shape[1:]), t)
        assert target.shape[-1] == out_size
        return target.to(x.dtype)


# ---------------------------------------------------------------- loss
@pytest.mark.parametrize("offset", [0, 5])
def test_loss_matches_independent_computation(offset: int) -> None:
    deg = ScaleSpaceDegradation(16, 3)
    t = deg.change_steps[1] + offset  # offset 0: resolution-increasing (4 -> 8) target
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 16, 16, generator=gen) * 2 - 1
    noise = torch.randn(4, 3, 4, 4, generator=gen)
    model = TinyDenoiser()
    abar = float(deg.alphas_cumprod[t])
    down = lambda x: F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)  # noqa: E731
    x_t = math.sqrt(abar) * down(down(x0)) + math.sqrt(1 - abar) * noise
    target = down(x0) if offset == 0 else down(down(x0))
    pred = model(x_t, torch.full((4,), t), out_size=target.shape[-1])
    weight = min(abar / (1 - abar), 5.0)
    expected = weight * ((pred - target) ** 2).mean()
    loss = scale_space_loss(model, deg, x0, t=t, noise=noise)
    assert loss.ndim == 0 and float(loss.detach()) == pytest.approx(
        float(expected.detach()), rel=1e-5
    )
    unweighted = scale_space_loss(model, deg, x0, t=t, noise=noise, min_snr_gamma=None)
    plain = float(((pred - target) ** 2).mean().detach())
    assert float(unweighted.detach()) == pytest.approx(plain, rel=1e-5)
    loss.backward()
    assert model.conv.weight.grad is not None and bool(model.conv.weight.grad.abs().sum() > 0)


def test_loss_of_oracle_is_zero_and_terms() -> None:
    deg = ScaleSpaceDegradation(16, 3)
    x0 = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    gen = torch.Generator().manual_seed(2)
    for _ in range(5):
        terms = scale_space_loss_terms(Oracle(deg, x0), deg, x0.expand(6, 3, 16, 16), generator=gen)
        assert float(terms.loss) == 0.0 and terms.t.shape == (6,) and terms.per_sample.shape == (6,)
        snr = deg.snr(terms.t)
        assert torch.allclose(terms.weight.double(), snr.clamp(max=5.0), rtol=1e-6)


def test_training_timesteps_share_a_resolution_pair() -> None:
    deg = ScaleSpaceDegradation(8, 3, num_train_timesteps=20)  # changes at 11 and 17
    gen = torch.Generator().manual_seed(3)
    counts = torch.zeros(20)
    n_batches, b = 4000, 8
    for _ in range(n_batches):
        t = sample_training_timesteps(deg, b, generator=gen)
        pairs = {(deg.resolution(v), deg.resolution(v - 1)) for v in t.tolist()}
        assert len(pairs) == 1
        counts += torch.bincount(t, minlength=20)
    # Each item is marginally uniform on [0, T). Per bin the count has variance
    # <= n_batches * E[X^2] with X <= b items of one batch in the bin, E[X^2] <= b * b / T.
    sd = math.sqrt(n_batches * b * b / 20)
    assert float((counts - n_batches * b / 20).abs().max()) < 5 * sd
    shared = sample_training_timesteps(deg, 5, generator=gen, mode="shared")
    assert len(set(shared.tolist())) == 1
    a = sample_training_timesteps(deg, 5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(
        a, sample_training_timesteps(deg, 5, generator=torch.Generator().manual_seed(9))
    )


def test_loss_upsample_top_level_variant() -> None:
    deg = ScaleSpaceDegradation(16, 3)
    c_top, c_low = deg.change_steps
    seen: list[tuple[int, int | None]] = []

    def model(x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        seen.append((x.shape[-1], out_size))
        return TinyDenoiser()(x, t, out_size)

    x0 = torch.zeros(2, 3, 16, 16)
    for t in (c_top, c_low, c_top + 3):
        scale_space_loss(model, deg, x0, t=t, upsample_top_level=True)
    assert seen == [(16, 16), (4, 8), (8, 8)]


def test_loss_passes_model_kwargs_to_the_model() -> None:
    """``model_kwargs`` reaches the model call beside ``out_size``; the loss equals the
    loss of a model with the labels bound in; a tensor without ``b`` rows is refused."""
    deg = ScaleSpaceDegradation(16, 3)
    x0 = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    labels = torch.tensor([2, 0, 1])
    seen: list[Tensor] = []
    tiny = TinyDenoiser()

    def model(x: Tensor, t: Tensor, out_size: int | None = None, *, class_labels: Tensor) -> Tensor:
        seen.append(class_labels)
        return tiny(x, t, out_size) + class_labels.to(x.dtype).view(-1, 1, 1, 1)

    def bound(x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        return tiny(x, t, out_size) + labels.to(x.dtype).view(-1, 1, 1, 1)

    kw = {"model_kwargs": {"class_labels": labels}}
    for fn in (scale_space_loss, lambda *a, **k: scale_space_loss_terms(*a, **k).loss):
        got = fn(model, deg, x0, generator=torch.Generator().manual_seed(3), **kw)
        ref = scale_space_loss(bound, deg, x0, generator=torch.Generator().manual_seed(3))
        assert torch.equal(got, ref)
    assert len(seen) == 2 and all(s is labels for s in seen)
    with pytest.raises(ValueError, match=r"class_labels.*batch size 3"):
        scale_space_loss(model, deg, x0, model_kwargs={"class_labels": labels[:2]})


def test_loss_bad_input() -> None:
    deg = ScaleSpaceDegradation(16, 3)
    x0 = torch.zeros(2, 3, 16, 16)
    c = deg.change_steps[0]
    with pytest.raises(ValueError, match="next resolution"):
        scale_space_loss(lambda x, t, out_size=None: x, deg, x0, t=c)
    with pytest.raises(ValueError, match="min_snr_gamma"):
        scale_space_loss(TinyDenoiser(), deg, x0, min_snr_gamma=0.0)
    with pytest.raises(ValueError, match="one resolution"):
        scale_space_loss(TinyDenoiser(), deg, x0, t=torch.tensor([c, c + 1]))
    with pytest.raises(ValueError, match="mode"):
        sample_training_timesteps(deg, 2, mode="per_item")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        sample_training_timesteps(deg, 0)
    with pytest.raises(ValueError, match=r"noise must have shape"):
        scale_space_loss(TinyDenoiser(), deg, x0, t=0, noise=torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"x0 must have shape"):
        scale_space_loss(TinyDenoiser(), deg, torch.zeros(2, 3, 8, 8))


# ---------------------------------------------------------------- sampler
@pytest.mark.parametrize("steps", [12, 40])
def test_single_level_is_ddpm_ancestral_sampling(steps: int) -> None:
    model = TinyDenoiser().double()
    ddpm = DDPMScheduler(prediction_type="sample", clip_sample=1.0)
    ref = sample(
        lambda x, t: model(x, t),
        ddpm,
        (2, 3, 8, 8),
        steps=steps,
        generator=torch.Generator().manual_seed(5),
        dtype=F64,
    )
    for deg, method in (
        (ScaleSpaceDegradation(8, 1), "exact"),
        (GaussianDegradation((8, 8)), "exact"),
        (GaussianDegradation((8, 8)), "lanczos"),
    ):
        got = scale_space_sample(
            model,
            deg,
            2,
            steps=steps,
            method=method,  # type: ignore[arg-type]
            generator=torch.Generator().manual_seed(5),
            dtype=F64,
        )
        assert torch.allclose(got, ref, atol=1e-10, rtol=0)


def _z_stats(x_t: Tensor, mean: Tensor, sigma: float) -> tuple[float, float, float]:
    n = x_t.shape[0]
    z = ((x_t - mean) / sigma).reshape(n, -1)
    corr = torch.corrcoef(z.T) - torch.eye(z.shape[1], dtype=z.dtype)
    return float(z.mean(0).abs().max()), float((z.var(0) - 1).abs().max()), float(corr.abs().max())


def test_oracle_sampler_reproduces_forward_marginals_and_the_image() -> None:
    # With a one-image data set the oracle x0 is exact, so every ancestral step is an
    # exact draw from q(x_s | x_t, x0) and each state must follow q(x_t | x0) =
    # N(sqrt(abar_t) D_{0:t} x0, (1 - abar_t) I) (up to the N(0, I) start, whose mean
    # error sqrt(abar_999) |x0| < 0.007 only shrinks). Tolerances for N draws: 5/sqrt(N)
    # (+0.01) for the z-means, 6 sqrt(2/N) for the variances, 5.5/sqrt(N) for the
    # correlations between pixels (the maximum over at most 2016 pairs).
    deg = ScaleSpaceDegradation(8, 3)
    x0 = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(6), dtype=F64) * 2 - 1
    n = 4000
    states: list[SamplingState] = []
    out = scale_space_sample(
        Oracle(deg, x0),
        deg,
        n,
        channels=1,
        steps=20,
        dtype=F64,
        generator=torch.Generator().manual_seed(7),
        callback=states.append,
    )
    assert torch.equal(out, x0.expand(n, 1, 8, 8))
    ts = deg.timesteps(20).tolist()
    assert [st.t for st in states] == ts and [st.step for st in states] == list(range(len(ts)))
    for st in states:
        abar = float(deg.alphas_cumprod[st.t])
        mean_err, var_err, corr = _z_stats(
            st.x_t, math.sqrt(abar) * deg.degrade(x0, st.t), math.sqrt(1 - abar)
        )
        assert mean_err < 5 / math.sqrt(n) + 0.01, st.t
        assert var_err < 6 * math.sqrt(2 / n), st.t
        assert corr < 5.5 / math.sqrt(n), st.t
    # the isotropic shortcut under-noises the frequencies the downsample removed
    iso: list[SamplingState] = []
    scale_space_sample(
        Oracle(deg, x0),
        deg,
        n,
        channels=1,
        steps=20,
        dtype=F64,
        method="isotropic",
        generator=torch.Generator().manual_seed(7),
        callback=iso.append,
    )
    after = [st for st in iso if ts.index(st.t) > 0 and ts[ts.index(st.t) - 1] in deg.change_steps]
    for st in after:
        abar = float(deg.alphas_cumprod[st.t])
        _, var_err, _ = _z_stats(
            st.x_t, math.sqrt(abar) * deg.degrade(x0, st.t), math.sqrt(1 - abar)
        )
        assert var_err > 0.3


def test_sampler_shapes_determinism_and_methods() -> None:
    deg = ScaleSpaceDegradation(16, 3)
    model = TinyDenoiser().double()
    seen: list[SamplingState] = []
    kw = {"steps": 10, "dtype": F64}
    a = scale_space_sample(
        model, deg, 2, generator=torch.Generator().manual_seed(8), callback=seen.append, **kw
    )  # type: ignore[arg-type]
    b = scale_space_sample(
        model, deg, 2, generator=torch.Generator().manual_seed(8), progress=True, **kw
    )  # type: ignore[arg-type]
    c = scale_space_sample(
        model, deg, 2, generator=torch.Generator().manual_seed(8), method="lanczos", **kw
    )  # type: ignore[arg-type]
    assert a.shape == (2, 3, 16, 16) and torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-9)
    for st in seen:
        s = -1 if st.step == len(seen) - 1 else seen[st.step + 1].t
        assert st.x_t.shape[-1] == deg.resolution(st.t)
        assert st.pred_original_sample.shape[-1] == st.prev_sample.shape[-1] == deg.resolution(s)


def test_upsample_top_level_variant() -> None:
    deg = ScaleSpaceDegradation(16, 3)
    inner = TinyDenoiser()
    calls: list[tuple[int, int, int | None]] = []

    def model(x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
        calls.append((int(t[0]), x.shape[-1], out_size))
        return inner(x, t, out_size)

    gen = torch.Generator().manual_seed(0)
    scale_space_sample(model, deg, 1, channels=3, steps=5, generator=gen, upsample_top_level=True)
    c_top, c_low = deg.change_steps
    by_t = {t: (size, out) for t, size, out in calls}
    assert by_t[c_top] == (16, 16)  # into full size: upsampled, resolution-preserving
    assert by_t[c_low] == (4, 8)  # lower changes stay resolution-increasing


def test_plugged_in_operator_uses_the_generic_path() -> None:
    class Shrink(GaussianDegradation):
        """D_t = 0.999 I: a non-identity operator without a closed-form root."""

        def apply(self, x: Tensor, t: int) -> Tensor:
            return 0.999 * x

        apply_adjoint = apply

        covariance_root = None  # type: ignore[assignment]

    deg = Shrink((8, 8), num_train_timesteps=50)
    out = scale_space_sample(
        TinyDenoiser(), deg, 2, method="lanczos", generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (2, 3, 8, 8) and bool(torch.isfinite(out).all())
    with pytest.raises(TypeError, match="lanczos"):
        scale_space_sample(TinyDenoiser(), deg, 2, method="exact")


def test_sampler_bad_input() -> None:
    deg = ScaleSpaceDegradation(16, 3)
    with pytest.raises(ValueError, match="expected shape"):
        scale_space_sample(lambda x, t, out_size=None: x, deg, 2, channels=3, steps=3)
    with pytest.raises(ValueError, match="batch_size"):
        scale_space_sample(TinyDenoiser(), deg, 0)
    with pytest.raises(ValueError, match="x_T must have shape"):
        scale_space_sample(TinyDenoiser(), deg, 2, x_T=torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="method"):
        scale_space_sample(TinyDenoiser(), deg, 2, steps=3, method="svd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps must be None or an int"):
        scale_space_sample(TinyDenoiser(), deg, 2, steps=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_model_output_raises_once_at_the_end(bad: float) -> None:
    class Broken(nn.Module):
        """Finite except for one pixel of one item at one timestep."""

        in_channels = 3

        def forward(self, x: Tensor, t: Tensor, out_size: int | None = None) -> Tensor:
            out = TinyDenoiser()(x, t, out_size)
            if int(t[0]) < 300:
                out = out.clone()
                out[1, 0, 0, 0] = bad
            return out

    deg = ScaleSpaceDegradation(16, 3)
    for sampler in ("ancestral", "ddim"):
        with pytest.raises(ValueError, match=r"model Broken .*check_values"):
            scale_space_sample(
                Broken(),
                deg,
                2,
                steps=5,
                sampler=sampler,
                clip_sample=None,  # type: ignore[arg-type]
            )
    # with clipping, an infinite prediction is clamped and the samples stay finite
    if bad == float("inf"):
        out = scale_space_sample(Broken(), deg, 2, steps=5)
        assert bool(torch.isfinite(out).all())
    else:
        with pytest.raises(ValueError, match="NaN or infinite"):
            scale_space_sample(Broken(), deg, 2, steps=5)


def test_ddim_sampler_options() -> None:
    deg = ScaleSpaceDegradation(16, 3)
    model = TinyDenoiser().double()
    kw = {"steps": 8, "dtype": F64}
    a = scale_space_sample(
        model, deg, 2, sampler="ddim", generator=torch.Generator().manual_seed(3), **kw
    )  # type: ignore[arg-type]
    b = scale_space_sample(
        model, deg, 2, sampler="ddim", generator=torch.Generator().manual_seed(3), **kw
    )  # type: ignore[arg-type]
    c = scale_space_sample(
        model, deg, 2, sampler="ddim", generator=torch.Generator().manual_seed(4), **kw
    )  # type: ignore[arg-type]
    assert a.shape == (2, 3, 16, 16) and torch.equal(a, b)
    assert not torch.equal(a, c)  # eta = 0 still draws the frequencies each change adds
    one = GaussianDegradation((8, 8))
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=F64)
    d, e = (
        scale_space_sample(
            model, one, 2, sampler="ddim", x_T=x_t, generator=torch.Generator().manual_seed(k), **kw
        )  # type: ignore[arg-type]
        for k in (1, 2)
    )
    assert torch.equal(d, e)  # one level, eta = 0: a function of x_T only
    with pytest.raises(ValueError, match="eta only applies to sampler='ddim'"):
        scale_space_sample(model, deg, 2, eta=0.5, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eta must be a float in"):
        scale_space_sample(model, deg, 2, sampler="ddim", eta=2.0, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sampler"):
        scale_space_sample(model, deg, 2, sampler="dpm", **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method='lanczos' chooses"):
        scale_space_sample(model, deg, 2, sampler="ddim", method="lanczos", **kw)  # type: ignore[arg-type]

    class Same(GaussianDegradation):
        """A subclass with the identity operators: the DDIM step applies."""

    class Shrink(GaussianDegradation):
        """D_t = 0.999 I, with no spectrum in closed form: no DDIM step."""

        def apply(self, x: Tensor, t: int) -> Tensor:
            return 0.999 * x

        apply_adjoint = apply

    shape = scale_space_sample(model, Same((8, 8), 50), 1, sampler="ddim", dtype=F64).shape
    assert shape == (1, 3, 8, 8)
    shrink = Shrink((8, 8), num_train_timesteps=50)

    class NoSpectrum:
        num_train_timesteps = 50
        alphas_cumprod = shrink.alphas_cumprod
        spatial_shape = shrink.spatial_shape
        apply = shrink.apply
        apply_adjoint = shrink.apply_adjoint

    for wrong in (shrink, NoSpectrum()):
        with pytest.raises(TypeError, match="gram_spectrum"):
            scale_space_sample(model, wrong, 1, sampler="ddim", dtype=F64)  # type: ignore[arg-type]
