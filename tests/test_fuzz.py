"""Fuzz the public entry points with hypothesis.

Each call gets inputs of random rank, shape, dtype and batch size (0 and 1
included), timesteps of every kind (int, numpy int, 0-d, ``(b,)``, wrong shape,
float, bool, out of range) and random option values. The property: the call either
returns a finite result of the documented shape and dtype, or raises a
``TypeError``/``ValueError`` whose message names one of its arguments. Any other
exception (a ``RuntimeError`` from deep inside torch, an ``IndexError``, a NaN
result) fails the test.

The default profile keeps the whole file to a few seconds per test; run
``pytest tests/test_fuzz.py --hypothesis-profile=deep`` for a long search.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from scalemix import (
    DDPMScheduler,
    DualScaleBlock,
    DualScaleDenoiser,
    FlexiUNet,
    MLPDenoiser,
    TimestepGate,
    sample,
    scale_space_loss,
    scale_space_sample,
)
from scalemix.datasets import DATASET_NAMES, make_dataset
from scalemix.degradation import ScaleSpaceDegradation
from scalemix.metrics import (
    gaussian_kl,
    gaussian_kl_diag,
    histogram_kl,
    jensen_shannon,
    kl_confidence_interval,
    knn_kl,
    symmetric_kl,
)
from scalemix.nn import SinusoidalEmbedding
from scalemix.training import eps_mse_loss, train

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
DTYPES = (*FLOATS, torch.int64)
T = 12


def _names_an_argument(message: str, names: Sequence[str]) -> bool:
    return any(re.search(rf"(?<![\w']){re.escape(n)}(?![\w'])", message) for n in names)


def attempt(names: Sequence[str], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; return its result, or ``None`` after a clear TypeError/ValueError."""
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError) as err:
        message = f"{type(err).__name__}: {err}"
        assert _names_an_argument(str(err), names), f"{message!r} names none of {names}"
        return None


def assert_tensor(out: Tensor, shape: Sequence[int], dtype: torch.dtype) -> None:
    assert isinstance(out, Tensor)
    assert tuple(out.shape) == tuple(shape), (tuple(out.shape), tuple(shape))
    assert out.dtype == dtype, (out.dtype, dtype)
    assert bool(torch.isfinite(out.float()).all()), "non-finite result"


# ------------------------------------------------------------------ strategies
@st.composite
def tensors(
    draw: st.DrawFn,
    *,
    shape: Sequence[int] | None = None,
    dtypes: Sequence[torch.dtype] = DTYPES,
    max_rank: int = 4,
    likely: Sequence[int] | None = None,
) -> Tensor:
    """A tensor of random (or given) shape and dtype; half the draws use ``likely``'s
    shape and the first dtype, so that valid calls are common."""
    if shape is None:
        if likely is not None and draw(st.booleans()):
            shape = likely
        else:
            rank = draw(st.integers(0, max_rank))
            shape = draw(st.lists(st.integers(0, 3), min_size=rank, max_size=rank))
    dtype = draw(st.one_of(st.just(dtypes[0]), st.sampled_from(dtypes)))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(tuple(shape), generator=gen)
    return (values * 3).round().to(dtype) if dtype == torch.int64 else values.to(dtype)


@st.composite
def timesteps(draw: st.DrawFn, batch: int, num_timesteps: int = T) -> Any:
    value = draw(st.integers(-2, num_timesteps + 1))
    kind = draw(
        st.sampled_from(["int", "numpy", "0d", "vector", "vector", "wrong_shape", "float", "bool"])
    )
    if kind == "int":
        return value
    if kind == "numpy":
        return np.int64(value)
    if kind == "0d":
        return torch.tensor(value)
    if kind == "vector":
        low, high = draw(st.sampled_from([(0, num_timesteps), (-1, num_timesteps + 1)]))
        return torch.randint(low, high, (batch,))
    if kind == "wrong_shape":
        return torch.zeros(batch + 1, dtype=torch.long)
    if kind == "float":
        return draw(st.sampled_from([float(value), torch.full((batch,), 0.5)]))
    return True


def _valid_timesteps(t: Any, batch: int, num_timesteps: int = T) -> bool:
    if isinstance(t, (bool, float)) or (isinstance(t, Tensor) and t.is_floating_point()):
        return False
    values = torch.as_tensor(t)
    if values.ndim == 1 and values.shape[0] != batch:
        return False
    return bool(((values >= 0) & (values < num_timesteps)).all())


# -------------------------------------------------------------------- scheduler
@given(data=st.data())
def test_scheduler_methods(data: st.DataObject) -> None:
    prediction_type = data.draw(st.sampled_from(["epsilon", "sample", "v_prediction"]))
    clip = data.draw(st.sampled_from([None, 1.0]))
    scheduler = DDPMScheduler(T, prediction_type=prediction_type, clip_sample=clip)
    x = data.draw(tensors(likely=(2, 3)))
    other = data.draw(st.one_of(st.just(torch.randn_like(x.float()).to(x.dtype)), tensors()))
    batch = x.shape[0] if x.ndim else 0
    t = data.draw(timesteps(batch))
    method = data.draw(
        st.sampled_from(
            ["add_noise", "velocity", "target", "predict_x0", "predict_eps", "step", "ddim"]
        )
    )
    names = ["x0", "noise", "t", "x_t", "model_output", "prev_t", "eta", "timesteps"]
    if method == "step":
        prev_t = data.draw(st.one_of(st.none(), st.integers(-2, T)))
        out = attempt(names, scheduler.step, other, t, x, prev_t=prev_t)
        result = None if out is None else out.prev_sample
    elif method == "ddim":
        eta = data.draw(st.sampled_from([0.0, 1.0, -1.0]))
        out = attempt(names, scheduler.ddim_step, other, t, x, prev_t=-1, eta=eta)
        result = None if out is None else out.prev_sample
    elif method in ("add_noise", "velocity", "target"):
        result = attempt(names, getattr(scheduler, method), x, other, t)
    else:
        result = attempt(names, getattr(scheduler, method), other, x, t)
    if result is not None:
        assert x.is_floating_point() and x.ndim >= 1 and _valid_timesteps(t, batch)
        assert_tensor(result, x.shape, x.dtype)


# ----------------------------------------------------------------------- models
SMALL = {"embedding_dim": 8, "hidden_dim": 8, "num_blocks": 1}
MODELS: dict[str, torch.nn.Module] = {
    "mlp": MLPDenoiser(**SMALL),
    "dual": DualScaleDenoiser.from_preset("adaptive", **SMALL),
    "dual_fixed": DualScaleDenoiser.from_preset("fixed", **SMALL),
    "block": DualScaleBlock.for_vectors(MLPDenoiser(**SMALL), MLPDenoiser(**SMALL), 0.5, 2),
}
UNET = FlexiUNet(3, 8, (1, 2), 1, (4,), image_size=8, num_heads=2).eval()
GATE = TimestepGate("deep", embedding_dim=8, hidden_dim=8)


@given(data=st.data())
def test_vector_models(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(MODELS)))
    shape = data.draw(st.sampled_from([(0, 2), (1, 2), (3, 2), (3, 2), (3, 3), (2,), (2, 2, 2)]))
    x = data.draw(tensors(shape=shape))
    t = data.draw(timesteps(shape[0] if shape else 0))
    with torch.no_grad():
        out = attempt(["x", "t"], MODELS[name], x, t)
    if out is not None:
        assert x.dtype == torch.float32 and x.ndim == 2 and x.shape[1] == 2
        assert_tensor(out, x.shape, torch.float32)


@given(data=st.data())
def test_flexi_unet(data: st.DataObject) -> None:
    batch = data.draw(st.integers(0, 2))
    size = data.draw(st.sampled_from([2, 4, 8, 5]))
    channels = data.draw(st.sampled_from([3, 1]))
    x = data.draw(tensors(shape=(batch, channels, size, size), dtypes=FLOATS))
    t = data.draw(timesteps(batch))
    out_size = data.draw(st.sampled_from([None, size, 2 * size, 3]))
    with torch.no_grad():
        out = attempt(["x", "t", "out_size", "resolution"], UNET, x, t, out_size)
    if out is not None:
        side = size if out_size is None else out_size
        assert_tensor(out, (batch, 3, side, side), torch.float32)


@given(t=st.one_of(timesteps(3), tensors(max_rank=2)))
def test_gate(t: Any) -> None:
    with torch.no_grad():
        out = attempt(["t", "t_emb"], GATE, t)
    if out is not None:
        batch = int(t.shape[0]) if isinstance(t, Tensor) and t.ndim == 1 else 1
        assert_tensor(out, (batch, 2), torch.float32)
        torch.testing.assert_close(out.sum(1), torch.ones(batch))


# --------------------------------------------------------------------- samplers
@given(data=st.data())
def test_sample(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from([(1, 2), (3, 2), (0, 2), (2,), (2, 3)]))
    sampler = data.draw(st.sampled_from(["ddpm", "ddim", "euler"]))
    eta = data.draw(st.sampled_from([0.0, 0.5]))
    steps = data.draw(st.sampled_from([None, 1, 3, 0, 13]))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    gen = torch.Generator().manual_seed(0)
    names = ["shape", "sampler", "eta", "steps", "dtype", "x"]
    out = attempt(
        names,
        sample,
        MODELS["dual"],
        DDPMScheduler(T),
        shape,
        sampler=sampler,
        eta=eta,
        steps=steps,
        dtype=dtype,
        generator=gen,
    )
    if out is not None:
        assert_tensor(out, shape, torch.float32)


DEGRADATION = ScaleSpaceDegradation(8, 2, T)


@given(data=st.data())
def test_scale_space_degradation(data: st.DataObject) -> None:
    batch = data.draw(st.integers(0, 2))
    size = data.draw(st.sampled_from([8, 4]))
    x0 = data.draw(tensors(shape=(batch, 3, size, size), dtypes=(torch.float32, torch.float64)))
    t = data.draw(timesteps(batch))
    method = data.draw(st.sampled_from(["degrade", "target", "add_noise", "reverse_step"]))
    names = ["x0", "t", "noise", "x_t", "x0_pred", "prev_t", "x"]
    if method in ("degrade", "target"):
        out = attempt(names, getattr(DEGRADATION, method), x0, t)
        if out is not None:
            offset = -1 if method == "target" else 0
            step = int(torch.as_tensor(t).reshape(-1)[0]) if batch else int(t)
            r = DEGRADATION.resolution(step + offset)
            assert_tensor(out, (batch, 3, r, r), x0.dtype)
        return
    r = 4 if data.draw(st.booleans()) else 8
    state = torch.randn(batch, 3, r, r, dtype=x0.dtype)
    if method == "add_noise":
        out = attempt(names, DEGRADATION.add_noise, x0, state, t)
    else:
        result = attempt(names, DEGRADATION.reverse_step, state, t, state, noise=state)
        out = None if result is None else result.prev_sample
    if out is not None:
        assert_tensor(out, state.shape, x0.dtype)


@given(data=st.data())
def test_scale_space_loss_and_sample(data: st.DataObject) -> None:
    batch = data.draw(st.integers(0, 2))
    x0 = data.draw(tensors(shape=(batch, 3, 8, 8), dtypes=(torch.float32, torch.float64)))
    gen = torch.Generator().manual_seed(0)
    names = ["x0", "t", "batch_size", "steps", "dtype", "channels", "min_snr_gamma"]
    gamma = data.draw(st.sampled_from([None, 5.0, -1.0]))
    loss = attempt(
        names, scale_space_loss, UNET, DEGRADATION, x0, generator=gen, min_snr_gamma=gamma
    )
    if loss is not None:
        assert_tensor(loss, (), torch.float32)
    steps = data.draw(st.sampled_from([None, 2, 0]))
    with torch.no_grad():
        out = attempt(
            names, scale_space_sample, UNET, DEGRADATION, batch, steps=steps, generator=gen
        )
    if out is not None:
        assert_tensor(out, (batch, 3, 8, 8), torch.float32)


# ---------------------------------------------------------------------- training
@given(data=st.data())
def test_training_loss(data: st.DataObject) -> None:
    x0 = data.draw(tensors(max_rank=3, dtypes=FLOATS, likely=(3, 2)))
    gen = torch.Generator().manual_seed(0)
    loss = attempt(
        ["x0", "x", "t", "noise"], eps_mse_loss, MODELS["mlp"], DDPMScheduler(T), x0, generator=gen
    )
    if loss is not None:
        assert_tensor(loss, (), torch.float32)


@given(data=st.data())
def test_train(data: st.DataObject) -> None:
    points = data.draw(tensors(max_rank=3, dtypes=FLOATS, likely=(6, 2)))
    steps = data.draw(st.sampled_from([1, 2, 0]))
    batch_size = data.draw(st.sampled_from([1, 4, 0]))
    loss = data.draw(st.sampled_from(["mse", "hybrid", "l1"]))
    names = ["data", "steps", "batch_size", "loss", "x", "x0", "t"]
    model = MLPDenoiser(**SMALL)
    gen = torch.Generator().manual_seed(0)
    result = attempt(
        names,
        train,
        model,
        DDPMScheduler(T),
        points,
        steps=steps,
        batch_size=batch_size,
        loss=loss,
        generator=gen,
    )
    if result is not None:
        assert_tensor(result.losses, (steps,), torch.float32)


@given(x=st.one_of(tensors(), timesteps(2)))
def test_sinusoidal_embedding(x: Any) -> None:
    out = attempt(["x", "dim"], SinusoidalEmbedding(8), x)
    if out is not None:
        assert_tensor(out, (*x.shape, 8), torch.float32)


# ----------------------------------------------------------------------- metrics
POINTS = st.one_of(
    tensors(max_rank=3, dtypes=(torch.float64, torch.float32, torch.int64), likely=(12, 2)),
    st.builds(
        lambda n, d, s: np.random.default_rng(n).normal(size=(n, d)) * 10.0**s,
        st.integers(0, 12),
        st.integers(1, 3),
        st.sampled_from([0, 100, -100]),
    ),
)
KL_NAMES = ["x", "y", "k", "metric", "estimator", "bins", "base", "method", "duplicates", "n", "m"]


@given(x=POINTS, y=POINTS, k=st.integers(0, 4), data=st.data())
def test_sample_based_divergences(x: Any, y: Any, k: int, data: st.DataObject) -> None:
    which = data.draw(st.sampled_from(["knn", "histogram", "symmetric", "js"]))
    if which == "knn":
        metric = data.draw(st.sampled_from(["euclidean", "chebyshev", "cosine"]))
        estimator = data.draw(st.sampled_from(["npeet", "wkv", "adaptive"]))
        value = attempt(KL_NAMES, knn_kl, x, y, k=k, metric=metric, estimator=estimator)
    elif which == "histogram":
        value = attempt(KL_NAMES, histogram_kl, x, y, bins=max(k, 1))
    elif which == "symmetric":
        method = data.draw(st.sampled_from(["knn", "histogram", "gaussian"]))
        value = attempt(KL_NAMES, symmetric_kl, x, y, method=method)
    else:
        value = attempt(KL_NAMES, jensen_shannon, x, y)
    if value is not None:
        assert isinstance(value, float) and math.isfinite(value)


@given(data=st.data())
def test_gaussian_divergences(data: st.DataObject) -> None:
    d = data.draw(st.integers(1, 3))
    dtype = data.draw(st.sampled_from(FLOATS))
    mean_shape = data.draw(st.sampled_from([(d,), (2, d), (), (d + 1,)]))
    mean_p, mean_q = (data.draw(tensors(shape=mean_shape, dtypes=(dtype,))) for _ in range(2))
    names = ["mean_p", "mean_q", "cov_p", "cov_q", "var_p", "var_q"]
    if data.draw(st.booleans()):
        a = torch.randn(d, d, dtype=torch.float64)
        spd = (a @ a.T + torch.eye(d, dtype=torch.float64)).to(dtype)
        cov_q = data.draw(st.sampled_from([spd, spd + torch.triu(torch.ones(d, d), 1).to(dtype)]))
        out = attempt(names, gaussian_kl, mean_p, spd, mean_q, cov_q)
    else:
        var = data.draw(tensors(shape=mean_shape, dtypes=(dtype,))).abs() + 0.5
        out = attempt(names, gaussian_kl_diag, mean_p, var, mean_q, var)
    if out is not None:
        assert out.shape == mean_p.shape[:-1]
        assert out.dtype == (torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype)
        assert bool(torch.isfinite(out).all()) and bool((out >= -1e-3).all())


@given(n=st.integers(0, 40), fraction=st.sampled_from([0.5, 0.5, 0.0, 0.99]), r=st.integers(1, 3))
def test_kl_confidence_interval(n: int, fraction: float, r: int) -> None:
    x = np.random.default_rng(n).normal(size=(n, 1))
    names = ["x", "y", "k", "n_subsamples", "fraction", "estimator_fn"]
    out = attempt(
        names, kl_confidence_interval, knn_kl, x, x + 0.5, n_subsamples=r, fraction=fraction
    )
    if out is not None:
        assert all(math.isfinite(v) for v in out) and out[1] <= out[2]


@given(
    name=st.sampled_from([*sorted(set(DATASET_NAMES) - {"dino"}), "blobs"]),
    n=st.integers(-1, 5),
    seed=st.one_of(st.integers(-2, 3), st.just(1.5)),
)
def test_make_dataset(name: Any, n: int, seed: Any) -> None:
    out = attempt(["dataset", "n", "seed"], make_dataset, name, n, seed=seed)
    if out is not None:
        assert_tensor(out, (n, 2), torch.float32)
