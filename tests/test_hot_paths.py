"""The hot paths trace as one graph: no host synchronisation, no graph break.

``torch._dynamo.explain`` splits a function wherever Python needs a tensor's value
(``.item()``, ``bool(tensor)``, a data-dependent shape): on a GPU each such split is
a host synchronisation. Every path below must trace as exactly one graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from scalemix import DDPMScheduler, DualScaleDenoiser, FlexiUNet, MLPDenoiser
from scalemix._utils import gather
from scalemix.debug import check_values
from scalemix.degradation import BlurDegradation, ScaleSpaceDegradation, ddim_step
from scalemix.solvers import DynamicThreshold

SMALL = {"embedding_dim": 8, "hidden_dim": 16, "num_blocks": 1}


def _graphs(fn: Callable[..., Any], *args: Any) -> tuple[int, int, list[str]]:
    torch._dynamo.reset()
    report = torch._dynamo.explain(fn)(*args)
    reasons = [str(r.reason).splitlines()[0] for r in report.break_reasons]
    return report.graph_count, report.graph_break_count, reasons


def _assert_one_graph(fn: Callable[..., Any], *args: Any) -> None:
    graphs, breaks, reasons = _graphs(fn, *args)
    assert (graphs, breaks) == (1, 0), reasons


X = torch.randn(6, 2)
T = torch.tensor([0, 3, 3, 7, 9, 9])


def test_mlp_denoiser_forward() -> None:
    _assert_one_graph(MLPDenoiser(**SMALL), X, T)


@pytest.mark.parametrize("preset", ["fixed", "learned", "adaptive", "adaptive_deep"])
def test_dual_scale_denoiser_forward(preset: Any) -> None:
    model = DualScaleDenoiser.from_preset(preset, **SMALL)
    _assert_one_graph(model, X, T)
    with torch.no_grad():
        _assert_one_graph(model, X, T)


@pytest.mark.parametrize("out_size", [None, 16])
def test_flexi_unet_forward(out_size: int | None) -> None:
    model = FlexiUNet(3, 8, (1, 2), 1, (), image_size=16, num_heads=1)
    with torch.no_grad():
        _assert_one_graph(lambda x, t: model(x, t, out_size), torch.randn(2, 3, 8, 8), T[:2])


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_ddpm_training_step(prediction_type: Any) -> None:
    scheduler = DDPMScheduler(10, prediction_type=prediction_type)
    model = MLPDenoiser(**SMALL)

    def step(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        x_t = scheduler.add_noise(x0, noise, t)
        return F.mse_loss(model(x_t, t), scheduler.target(x0, noise, t))

    _assert_one_graph(step, X, torch.randn_like(X), T)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddim_eta"])
@pytest.mark.parametrize("t", [7, T])
def test_scheduler_steps(sampler: str, t: int | Tensor) -> None:
    scheduler = DDPMScheduler(10)

    def step(out: Tensor, x: Tensor, noise: Tensor) -> Tensor:
        if sampler == "ddpm":
            return scheduler.step(out, t, x, noise=noise).prev_sample
        eta = 1.0 if sampler == "ddim_eta" else 0.0
        return scheduler.ddim_step(out, t, x, prev_t=-1, eta=eta, noise=noise).prev_sample

    _assert_one_graph(step, torch.randn_like(X), X, torch.randn_like(X))


@pytest.mark.parametrize("second_order", [False, True])
@pytest.mark.parametrize("t", [7, T])
def test_dpmpp_2m_step(second_order: bool, t: int | Tensor) -> None:
    scheduler = DDPMScheduler(12)

    def step(out: Tensor, x: Tensor, last: Tensor) -> Tensor:
        if not second_order:
            return scheduler.dpmpp_2m_step(out, t, x, prev_t=-1).prev_sample
        return scheduler.dpmpp_2m_step(
            out, t, x, prev_t=-1, last_x0=last, last_t=11, threshold=DynamicThreshold()
        ).prev_sample

    _assert_one_graph(step, torch.randn_like(X), X, torch.randn_like(X))


@pytest.mark.parametrize("change", [False, True])
def test_scale_space_reverse_step(change: bool) -> None:
    degradation = ScaleSpaceDegradation(8, 2, 20)
    c = degradation.change_steps[0]
    t = c if change else c + 2
    r_t, r_s = degradation.resolution(t), degradation.resolution(t - 1)
    assert (r_s != r_t) == change

    def step(x0: Tensor, x_t: Tensor, noise: Tensor) -> Tensor:
        return degradation.reverse_step(x0, t, x_t, prev_t=t - 1, noise=noise).prev_sample

    x0, x_t = torch.randn(2, 3, r_s, r_s), torch.randn(2, 3, r_t, r_t)
    _assert_one_graph(step, x0, x_t, torch.randn_like(x0))


@pytest.mark.parametrize("change", [False, True])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_of_degradations(change: bool, eta: float) -> None:
    for degradation in (ScaleSpaceDegradation(8, 2, 20), BlurDegradation(8, 20)):
        t = degradation.change_steps[0] if degradation.change_steps else 12
        t, s = (t, t - 3) if change else (t + 3, t + 1)
        r_t, r_s = degradation.resolution(t), degradation.resolution(s)

        def step(x0: Tensor, x_t: Tensor, noise: Tensor) -> Tensor:
            return ddim_step(degradation, x0, t, x_t, prev_t=s, eta=eta, noise=noise).prev_sample  # noqa: B023

        x0, x_t = torch.randn(2, 3, r_s, r_s), torch.randn(2, 3, r_t, r_t)
        _assert_one_graph(step, x0, x_t, torch.randn_like(x0))


@pytest.mark.filterwarnings("error:.*lru_cache")  # dynamo tracing through a cache
def test_compiled_change_step_embeds_the_spectrum_and_equals_eager() -> None:
    """The cached resize matrix and eigendecomposition are constants of the graph, not
    ops run per step."""
    degradation = ScaleSpaceDegradation(16, 2, 40, resolutions=(16, 12))
    t = degradation.change_steps[0]
    r_t, r_s = degradation.resolution(t), degradation.resolution(t - 1)
    gen = torch.Generator().manual_seed(0)
    x0, x_t = torch.randn(2, 3, r_s, r_s, generator=gen), torch.randn(2, 3, r_t, r_t, generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    ops: list[str] = []

    def backend(gm: torch.fx.GraphModule, inputs: Any) -> Callable[..., Any]:
        ops.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward  # type: ignore[no-any-return]

    def step(x0: Tensor, x_t: Tensor, noise: Tensor) -> Tensor:
        return degradation.reverse_step(x0, t, x_t, prev_t=t - 1, noise=noise).prev_sample

    torch._dynamo.reset()
    compiled = torch.compile(step, backend=backend, fullgraph=True, dynamic=False)
    torch.testing.assert_close(compiled(x0, x_t, noise), step(x0, x_t, noise))
    assert ops and not [op for op in ops if "linalg" in op], ops


def test_out_of_range_timesteps_give_nan_not_an_out_of_bounds_read() -> None:
    table = torch.tensor([0.5, 0.25, 0.125], dtype=torch.float64)
    out = gather(table, torch.tensor([-1, 0, 2, 3, 100]), torch.zeros(5, 4))
    assert out.shape == (5, 1)
    assert torch.isnan(out[[0, 3, 4]]).all()
    assert out[1:3, 0].tolist() == [0.5, 0.125]


def test_nan_propagates_on_hot_paths_and_raises_under_the_switch() -> None:
    scheduler = DDPMScheduler(10)
    bad = X.clone()
    bad[0, 0] = float("nan")
    out = scheduler.step(torch.zeros_like(X), 5, bad, noise=torch.zeros_like(X)).prev_sample
    assert torch.isnan(out[0, 0]) and torch.isfinite(out[1:]).all()
    with check_values(), pytest.raises(ValueError, match="x_t contains NaN"):
        scheduler.step(torch.zeros_like(X), 5, bad)
    with check_values(False):
        assert torch.isnan(scheduler.add_noise(bad, X, 3)[0, 0])


def test_models_and_degradations_check_values_only_under_the_switch() -> None:
    bad = X.clone()
    bad[1, 1] = float("inf")
    model = DualScaleDenoiser(**SMALL)
    with torch.no_grad():
        assert not torch.isfinite(model(bad, T)[1]).all()
    with check_values(), pytest.raises(ValueError, match="x contains NaN or infinite"):
        model(bad, T)
    degradation = ScaleSpaceDegradation(8, 2, 20)
    images = torch.randn(2, 3, 8, 8)
    images[0, 0, 0, 0] = float("nan")
    assert torch.isnan(degradation.degrade(images, 15)[0]).any()
    with check_values(), pytest.raises(ValueError, match="x0 contains NaN"):
        degradation.degrade(images, 15)
