"""scalemix.testing: its checks pass on every built-in component and fail on broken ones."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from scalemix.degradation import (
    BlurDegradation,
    GaussianDegradation,
    ScaleSpaceDegradation,
    respaced_timesteps,
)
from scalemix.nn import DualScaleDenoiser, MLPDenoiser
from scalemix.nn.flexi_unet import FlexiUNet
from scalemix.scheduler import DDPMScheduler
from scalemix.testing import (
    batches,
    check_conditional_denoiser,
    check_denoiser,
    check_linear_degradation,
    check_scheduler,
    class_labels,
    scale_space_degradations,
    scheduler_configs,
    schedulers,
    step_pairs,
    timesteps,
)

SMALL_MLP: dict[str, Any] = {"embedding_dim": 16, "hidden_dim": 32, "num_blocks": 1}
VECTOR_FORMS = ("0d", "batch")  # for the broken test models, which take tensors only


def tiny_unet(num_classes: int | None = None) -> FlexiUNet:
    """An 8 px FlexiUNet whose zero-initialised head is made non-zero."""
    model = FlexiUNet(
        in_channels=1,
        base_channels=8,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(4,),
        image_size=8,
        num_classes=num_classes,
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model


# ---------------------------------------------------------------- built-in components
def test_mlp_denoiser_passes() -> None:
    torch.manual_seed(0)
    model = MLPDenoiser(**SMALL_MLP)
    check_denoiser(model, (2,), 100, check_float64=True, check_bf16=True)


@pytest.mark.parametrize("preset", ["fixed", "learned", "adaptive", "adaptive_deep"])
def test_dual_scale_presets_pass(preset: Any) -> None:
    torch.manual_seed(0)
    model = DualScaleDenoiser.from_preset(preset, **SMALL_MLP)
    check_denoiser(model, (2,), 100, max_examples=4)


def test_flexi_unet_passes() -> None:
    model = tiny_unet()
    check_denoiser(model, (1, 8, 8), 1000, max_examples=3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"beta_schedule": "cosine", "prediction_type": "v_prediction"},
        {"beta_schedule": "quadratic", "prediction_type": "sample", "variance_type": "fixed_large"},
        {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "clip_sample": 1.0},
    ],
)
def test_scheduler_configs_pass(kwargs: dict[str, Any]) -> None:
    check_scheduler(DDPMScheduler(**kwargs), max_examples=10)


@settings(max_examples=8, suppress_health_check=[HealthCheck.nested_given])
@given(scheduler_configs(max_timesteps=50))
def test_drawn_scheduler_configs_pass(config: dict[str, Any]) -> None:
    check_scheduler(DDPMScheduler(**config), max_examples=3)


@settings(max_examples=4, suppress_health_check=[HealthCheck.nested_given])
@given(scale_space_degradations(image_sizes=(4, 8), max_timesteps=60))
def test_drawn_pyramids_pass(deg: ScaleSpaceDegradation) -> None:
    check_linear_degradation(deg, max_examples=3)


@pytest.mark.parametrize(
    "deg",
    [
        GaussianDegradation((3, 3), 40),
        ScaleSpaceDegradation(8, 2, 100),
        ScaleSpaceDegradation(8, 3, 60, resolution_schedule="linear"),
        BlurDegradation(8, 60),
    ],
    ids=repr,
)
def test_degradations_pass(deg: Any) -> None:
    check_linear_degradation(deg, max_examples=8)


def test_degradation_with_channels_passes() -> None:
    check_linear_degradation(BlurDegradation(4, 30), channels=2, max_examples=5)


# ------------------------------------------------------------------ broken components
class WrongAdjoint(ScaleSpaceDegradation):
    """The adjoint of the downsample is off by 1 % at the resolution change."""

    def apply_adjoint(self, y: Tensor, t: int) -> Tensor:
        out = super().apply_adjoint(y, t)
        return out * 1.01 if t in self.change_steps else out


class WrongCovariance(BlurDegradation):
    """The covariance root forgets the blur: the DDPM root on every step."""

    def covariance_root(self, xi: Tensor, t: int, prev_t: int) -> Tensor:
        return GaussianDegradation((8, 8), self.num_train_timesteps).covariance_root(xi, t, prev_t)


class WrongPosteriorVariance(DDPMScheduler):
    """Stores beta_t where the posterior variance beta_tilde_t belongs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.posterior_variance = self.betas.clone()


class WrongPosteriorMethod(DDPMScheduler):
    """Returns the posterior with its variance doubled."""

    def posterior(self, x0: Tensor, x_t: Tensor, t: Any, prev_t: Any = None) -> Any:
        post = super().posterior(x0, x_t, t, prev_t)
        return post._replace(variance=2 * post.variance)


class BatchMean(nn.Module):
    """Adds the batch mean: item i depends on item j."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = MLPDenoiser(**SMALL_MLP)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.inner(x, t) + x.mean(0)


class TrainBatchNorm(nn.Module):
    """BatchNorm on the output: mixes the batch in train mode only."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = MLPDenoiser(**SMALL_MLP)
        self.norm = nn.BatchNorm1d(2)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.norm(self.inner(x, t))


class NoisyEval(nn.Module):
    """Draws from the global RNG even in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = MLPDenoiser(**SMALL_MLP)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.inner(x, t) + 0.1 * torch.randn_like(x)


class Halves(nn.Module):
    """Returns half of the channels: the wrong shape."""

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return x[:, :1]


class ContiguousOnly(nn.Module):
    """Reads the raw storage, so a strided view gives the wrong numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = MLPDenoiser(**SMALL_MLP)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        raw = torch.as_strided(x, x.shape, (x.shape[1], 1))
        return self.inner(raw, t)


class InfiniteGradient(nn.Module):
    """sqrt at zero: a finite output whose gradient is infinite."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = MLPDenoiser(**SMALL_MLP)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.inner(x, t) + torch.sqrt(x * 0)


def _fails(match: str, fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(AssertionError, match=match) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_wrong_adjoint_fails() -> None:
    deg = WrongAdjoint(8, 2, 100)
    msg = _fails("adjoint identity", check_linear_degradation, deg, max_examples=5)
    assert f"t={deg.change_steps[0]}" in msg  # the step that broke it
    assert "violated by" in msg


def test_wrong_covariance_root_fails() -> None:
    msg = _fails("covariance_root", check_linear_degradation, WrongCovariance(8, 30))
    assert "t=" in msg and "s=" in msg


def test_wrong_posterior_variance_fails() -> None:
    msg = _fails("posterior_variance", check_scheduler, WrongPosteriorVariance())
    assert "t=0" in msg  # beta_0 > 0 = beta_tilde_0: the largest relative gap


def test_wrong_posterior_method_fails() -> None:
    msg = _fails("posterior variance", check_scheduler, WrongPosteriorMethod(), max_examples=10)
    assert "input: t=[" in msg


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (BatchMean, r"batch independence \(train"),
        (TrainBatchNorm, r"batch independence \(train"),
        (NoisyEval, "eval-mode determinism"),
        (Halves, "output shape and dtype"),
        (ContiguousOnly, "non-contiguous input"),
        (InfiniteGradient, "finite gradients"),
    ],
)
def test_broken_denoisers_fail(model: type[nn.Module], match: str) -> None:
    torch.manual_seed(0)
    msg = _fails(match, check_denoiser, model(), (2,), 100, timestep_forms=VECTOR_FORMS)
    assert "batch size" in msg and "timesteps" in msg


class TensorTimestepsOnly(nn.Module):
    """Reads ``t.float()``: a Python int timestep fails."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = MLPDenoiser(**SMALL_MLP)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.inner(x, t.float())


def test_undeclared_timestep_form_fails() -> None:
    torch.manual_seed(0)
    _fails("timestep form 'int'", check_denoiser, TensorTimestepsOnly(), (2,), 100)


def test_model_mode_is_restored() -> None:
    torch.manual_seed(0)
    model = MLPDenoiser(**SMALL_MLP).eval()
    check_denoiser(model, (2,), 100, timestep_forms=VECTOR_FORMS, max_examples=2)
    assert not model.training


def test_same_seed_same_shrunk_input() -> None:
    torch.manual_seed(0)
    model = BatchMean()
    msgs = {
        _fails(
            "batch independence",
            check_denoiser,
            model,
            (2,),
            100,
            timestep_forms=VECTOR_FORMS,
            seed=3,
        )
        for _ in range(2)
    }
    assert len(msgs) == 1


def test_bad_arguments() -> None:
    model = MLPDenoiser(**SMALL_MLP)
    with pytest.raises(ValueError, match="max_examples"):
        check_scheduler(DDPMScheduler(), max_examples=0)
    with pytest.raises(ValueError, match="input_shape"):
        check_denoiser(model, (), 100)
    with pytest.raises(ValueError, match="timestep_forms"):
        check_denoiser(model, (2,), 100, timestep_forms=("float",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_dense_size"):
        check_linear_degradation(BlurDegradation(32, 10))
    with pytest.raises(TypeError, match="LinearDegradation"):
        check_linear_degradation(DDPMScheduler())  # type: ignore[arg-type]


# ------------------------------------------------------------------------- strategies
@settings(max_examples=20)
@given(st.data())
def test_timesteps_strategy(data: st.DataObject) -> None:
    t = data.draw(timesteps(50, 3, shared=True))
    if isinstance(t, int):
        assert 0 <= t < 50
    else:
        assert t.dtype == torch.long and t.shape in ((), (3,))
        assert int(t.min()) == int(t.max()) and 0 <= int(t.min()) < 50
    clean = data.draw(timesteps(5, 2, forms=("batch",), allow_clean=True))
    assert isinstance(clean, Tensor) and clean.shape == (2,) and int(clean.min()) >= -1


@settings(max_examples=10)
@given(batches((3, 4, 4), batch_sizes=(2, 3), dtype=torch.float64))
def test_batches_strategy(x: Tensor) -> None:
    assert x.dtype == torch.float64 and x.shape[1:] == (3, 4, 4) and x.shape[0] in (2, 3)
    assert bool(torch.isfinite(x).all())


@settings(max_examples=10)
@given(schedulers(max_timesteps=30))
def test_schedulers_strategy(sched: DDPMScheduler) -> None:
    assert 2 <= sched.num_train_timesteps <= 30
    assert bool((sched.alphas_cumprod[1:] < sched.alphas_cumprod[:-1]).all())


@settings(max_examples=10)
@given(scale_space_degradations(image_sizes=(4, 8), max_timesteps=80), st.data())
def test_pyramid_and_pair_strategies(deg: ScaleSpaceDegradation, data: st.DataObject) -> None:
    # every level is visited: one change step per level below the full size
    assert len(deg.change_steps) == deg.num_levels - 1
    t, s = data.draw(step_pairs(deg))
    assert -1 <= s < t < deg.num_train_timesteps
    # a pair crosses at most one resolution change, as the exact closed form needs
    assert sum(s < c <= t for c in deg.change_steps) <= 1
    assert t in respaced_timesteps(deg).tolist()


def test_import_without_hypothesis_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import scalemix, scalemix.degradation, scalemix.nn\n"
        "assert 'hypothesis' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n"
        "    import scalemix.testing\n"
        "except ImportError as err:\n"
        "    assert 'scalemix[testing]' in str(err), err\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------ conditional denoisers
def test_conditional_mlp_passes() -> None:
    torch.manual_seed(0)
    check_conditional_denoiser(MLPDenoiser(**SMALL_MLP, num_classes=5), (2,), 100, 5)


def test_conditional_dual_scale_passes() -> None:
    torch.manual_seed(0)
    model = DualScaleDenoiser.from_preset("adaptive", **SMALL_MLP, num_classes=3)
    check_conditional_denoiser(model, (2,), 100, 3, max_examples=5)


def test_conditional_flexi_unet_passes() -> None:
    torch.manual_seed(0)
    check_conditional_denoiser(tiny_unet(num_classes=3), (1, 8, 8), 1000, 3, max_examples=2)


def test_a_fresh_flexi_unet_shows_no_label_effect() -> None:
    """Its zero-initialised output convolutions hide the label before training."""
    torch.manual_seed(0)
    model = FlexiUNet(1, 8, (1, 2), 1, (4,), 8, num_classes=3)
    with pytest.raises(AssertionError, match="label effect violated"):
        check_conditional_denoiser(model, (1, 8, 8), 100, 3, max_examples=1)
    check_conditional_denoiser(model, (1, 8, 8), 100, 3, max_examples=1, check_label_effect=False)


class _Conditional(nn.Module):
    """A toy conditional denoiser ``x * (1 + w[y])`` with one fault switched on."""

    def __init__(self, fault: str = "", num_classes: int = 3) -> None:
        super().__init__()
        self.k, self.fault = num_classes, fault
        self.w = nn.Parameter(torch.arange(num_classes + 1.0))

    def forward(self, x: Tensor, t: Tensor, *, class_labels: Tensor | None = None) -> Tensor:
        y = class_labels
        if y is None:
            y = torch.full((x.shape[0],), 0 if self.fault == "none_is_class_0" else self.k)
        if self.fault != "no_checks":
            if torch.is_floating_point(y):
                raise TypeError("class_labels must be int64")
            if y.shape != (x.shape[0],) or int(y.min()) < 0 or int(y.max()) > self.k:
                raise ValueError("bad class_labels")
        scale = 1 + self.w[y.clamp(0, self.k)]
        if self.fault == "mixes_items":
            scale = scale.mean().expand(x.shape[0])
        if self.fault == "ignores_labels":
            scale = torch.ones_like(scale)
        return x * scale.view(-1, *([1] * (x.ndim - 1)))


@pytest.mark.parametrize(
    ("fault", "match"),
    [
        ("none_is_class_0", "class_labels=None equals the null class 3"),
        ("mixes_items", "per-item labels"),
        ("ignores_labels", "label effect"),
        ("no_checks", "label 4 outside"),
    ],
)
def test_broken_conditional_denoisers_fail(fault: str, match: str) -> None:
    check_conditional_denoiser(_Conditional(), (2,), 10, 3, max_examples=3)
    with pytest.raises(AssertionError, match=match):
        check_conditional_denoiser(_Conditional(fault), (2,), 10, 3, max_examples=5)


def test_conditional_check_arguments() -> None:
    model = _Conditional()
    with pytest.raises(ValueError, match="num_classes"):
        check_conditional_denoiser(model, (2,), 10, 0)
    with pytest.raises(ValueError, match="max_batch_size"):
        check_conditional_denoiser(model, (2,), 10, 3, max_batch_size=1)


@settings(max_examples=20)
@given(st.data())
def test_class_labels_strategy(data: st.DataObject) -> None:
    y = data.draw(class_labels(4, 3))
    assert y.dtype == torch.long and y.shape == (4,) and 0 <= int(y.min()) <= int(y.max()) <= 3
    real = data.draw(class_labels(2, 3, include_null=False))
    assert int(real.max()) < 3
    with pytest.raises(ValueError, match="num_classes"):
        class_labels(2, 0)
