r"""``check_denoiser``: the contract of a denoiser ``model(x, t) -> prediction``.

A scalemix sampler calls a denoiser on a batch ``x`` of shape ``(b, *input_shape)``
with timesteps ``t`` and treats the result as one prediction per item. The checks:

* **shape and dtype**: the output has the shape and dtype of ``x``;
* **finite output** and **finite gradients** (of a random projection of the output,
  with respect to the input and every parameter);
* **timestep forms**: an int and a 0-d tensor give the output of the ``(b,)`` tensor
  holding that value (for the forms the model declares);
* **batch independence**: :math:`f(x)_0` does not change when items :math:`1..b-1`
  (data and timesteps) change, in train and in eval mode (BatchNorm in train mode or
  ``x.mean(0)`` fail);
* **eval determinism**: two calls in eval mode agree;
* **non-contiguous input**: a strided view of ``x`` gives the output of ``x``;
* optionally **float64** and **bfloat16** copies of the model give outputs of that
  dtype, finite and close to the float32 output.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
from hypothesis import strategies as st
from torch import Tensor, nn

from ._runner import check_budget, require, run_property
from .strategies import TimestepForm, _check_forms

__all__ = ["TimestepForm", "check_denoiser"]

_NAME = "check_denoiser"


class _Case(NamedTuple):
    batch: int
    t: tuple[int, ...]
    other_t: tuple[int, ...]
    seed: int

    def describe(self) -> str:
        return f"input: batch size {self.batch}, timesteps {list(self.t)}, data seed {self.seed}"


def _cases(num_timesteps: int, max_batch: int) -> st.SearchStrategy[_Case]:
    @st.composite
    def draw(d: st.DrawFn) -> _Case:
        b = d(st.integers(2, max_batch))
        value = st.integers(0, num_timesteps - 1)
        t = d(st.lists(value, min_size=b, max_size=b))
        other = d(st.lists(value, min_size=b, max_size=b))
        return _Case(b, tuple(t), tuple(other), d(st.integers(0, 2**31 - 1)))

    return draw()


def _gap(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _scale(a: Tensor) -> float:
    return float(a.double().abs().max()) if a.numel() else 0.0


def check_denoiser(
    model: nn.Module,
    input_shape: Sequence[int],
    num_timesteps: int,
    *,
    max_examples: int = 10,
    seed: int = 0,
    timestep_forms: Sequence[TimestepForm] = ("int", "0d", "batch"),
    max_batch_size: int = 4,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    check_float64: bool = False,
    check_bf16: bool = False,
    dtype_rtol: float = 1e-3,
    bf16_rtol: float = 0.1,
) -> None:
    r"""Check that ``model(x, t)`` behaves as a per-item denoiser (module docstring).

    The model is called in train and eval mode and restored to its mode afterwards; its
    parameters are not changed (gradients come from :func:`torch.autograd.grad`). Random
    layers (dropout) see the same torch seed in the calls that are compared.

    Args:
        model: called as ``model(x, t)`` with ``x`` float32 ``(b, *input_shape)``.
        input_shape: shape of one item, e.g. ``(2,)`` or ``(3, 16, 16)``.
        num_timesteps: ``T``; timesteps are drawn from ``[0, T)``.
        max_examples: hypothesis examples per property.
        seed: seed of the draws.
        timestep_forms: the forms of ``t`` the model accepts: ``"batch"`` (int64
            ``(b,)``, always tested), ``"0d"`` (a 0-d tensor), ``"int"``.
        max_batch_size: largest batch drawn (at least 2).
        atol: absolute tolerance of the float32 comparisons.
        rtol: relative tolerance (times the largest output entry).
        check_float64: also run a float64 copy of the model.
        check_bf16: also run a bfloat16 copy of the model.
        dtype_rtol: tolerance of float64 against float32, relative to the output scale.
        bf16_rtol: tolerance of bfloat16 against float32, relative to the output scale.

    Raises:
        AssertionError: a property fails; the message names it, the shrunk input and the
            size of the violation.
        ValueError: bad arguments.
    """
    check_budget(max_examples, seed)
    forms = _check_forms(timestep_forms, "timestep_forms")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must hold positive sizes, got {tuple(input_shape)}")
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps!r}")
    if max_batch_size < 2:
        raise ValueError(
            f"max_batch_size must be >= 2 to test batch independence, got {max_batch_size}"
        )
    was_training = model.training
    extra: list[tuple[str, nn.Module, torch.dtype, float]] = []
    if check_float64:
        extra.append(("float64", copy.deepcopy(model).double(), torch.float64, dtype_rtol))
    if check_bf16:
        extra.append(
            ("bfloat16", copy.deepcopy(model).to(torch.bfloat16), torch.bfloat16, bf16_rtol)
        )

    def call(m: nn.Module, x: Tensor, t: int | Tensor, rng_seed: int) -> Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng_seed)
            out = m(x, t)
        if not isinstance(out, Tensor):
            raise AssertionError(f"{_NAME}: the model returned {type(out).__name__}, not a tensor")
        return out

    def prop(case: _Case) -> None:
        detail = case.describe()
        gen = torch.Generator().manual_seed(case.seed)
        x = torch.randn((case.batch, *shape), generator=gen)
        other = torch.randn((case.batch, *shape), generator=gen)
        t = torch.tensor(case.t, dtype=torch.long)
        model.eval()
        with torch.no_grad():
            y = call(model, x, t, case.seed)
            if tuple(y.shape) != tuple(x.shape) or y.dtype != x.dtype:
                raise AssertionError(
                    f"{_NAME}: output shape and dtype violated: got {tuple(y.shape)} "
                    f"{y.dtype} for input {tuple(x.shape)} {x.dtype}; {detail}"
                )
            tol = atol + rtol * _scale(y)
            require(_NAME, "finite output", float((~torch.isfinite(y)).sum()), 0.0, detail)
            again = call(model, x, t, case.seed + 1)
            require(_NAME, "eval-mode determinism", _gap(y, again), tol, detail)
            t0 = case.t[0]
            for form in forms:
                if form == "batch":
                    continue
                same = torch.full_like(t, t0)
                tf: int | Tensor = t0 if form == "int" else torch.tensor(t0, dtype=torch.long)
                try:
                    got = call(model, x, tf, case.seed)
                except Exception as err:  # a failure of an undeclared form is the finding
                    raise AssertionError(
                        f"{_NAME}: timestep form {form!r} violated: the model raised "
                        f"{type(err).__name__}: {err} (declare the forms it accepts with "
                        f"timestep_forms); {detail}"
                    ) from err
                gap = _gap(got, call(model, x, same, case.seed))
                require(_NAME, f"timestep form {form!r} (t={t0})", gap, tol, detail)
            wide = torch.zeros((*x.shape[:-1], 2 * x.shape[-1]), dtype=x.dtype)
            wide[..., ::2] = x
            strided = wide[..., ::2]
            if not strided.is_contiguous():
                gap = _gap(call(model, strided, t, case.seed), y)
                require(_NAME, "non-contiguous input", gap, tol, detail)
        mixed_x = torch.cat([x[:1], other[1:]])
        mixed_t = torch.tensor((case.t[0], *case.other_t[1:]), dtype=torch.long)
        for mode in ("train", "eval"):
            model.train(mode == "train")
            with torch.no_grad():
                a = call(model, x, t, case.seed)[:1]
                b = call(model, mixed_x, mixed_t, case.seed)[:1]
            require(
                _NAME,
                f"batch independence ({mode} mode: item 0 changed with items 1..b-1)",
                _gap(a, b),
                atol + rtol * _scale(a),
                f"{detail}, other timesteps {list(mixed_t.tolist())}",
            )
        model.train()
        xg = x.clone().requires_grad_(True)
        out = call(model, xg, t, case.seed)
        weights = torch.randn(out.shape, generator=gen, dtype=out.dtype)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad((out * weights).sum(), [xg, *params], allow_unused=True)
        bad = sum(int((~torch.isfinite(g)).sum()) for g in grads if g is not None)
        require(_NAME, "finite gradients (count of non-finite entries)", float(bad), 0.0, detail)
        for name, m, dtype, dtol in extra:
            m.eval()
            with torch.no_grad():
                yd = call(m, x.to(dtype), t, case.seed)
            if yd.dtype != dtype or yd.shape != y.shape:
                raise AssertionError(
                    f"{_NAME}: {name} output dtype and shape violated: got "
                    f"{tuple(yd.shape)} {yd.dtype}; {detail}"
                )
            require(_NAME, f"finite {name} output", float((~torch.isfinite(yd)).sum()), 0.0, detail)
            gap = _gap(yd, y) / (1.0 + _scale(y))
            require(_NAME, f"{name} output agrees with float32 (relative)", gap, dtol, detail)

    try:
        run_property(
            prop, _cases(num_timesteps, max_batch_size), max_examples=max_examples, seed=seed
        )
    finally:
        model.train(was_training)
