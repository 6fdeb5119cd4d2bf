r"""``check_conditional_denoiser``: the contract of ``model(x, t, class_labels=y)``.

A class-conditional denoiser built for ``K`` classes takes int64 labels of shape
``(b,)`` in ``[0, K]``, ``K`` being the learned null class (the unconditional half of
classifier-free guidance). The checks:

* **shape and dtype** of the output with labels, and a **finite output**;
* **null class**: ``class_labels=None`` gives the output of labels all equal to ``K``;
* **per-item labels**: item ``i``'s output depends on label ``i`` only (changing the
  labels of the other items, or of item 0 alone, leaves the rest unchanged);
* **label effect** (optional): another label changes item 0's output (not so for a
  zero class embedding, nor, before training, for a UNet whose output convolutions
  are zero-initialised);
* **errors**: labels outside ``[0, K]`` and labels of another shape raise
  ``ValueError``, floating-point labels ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import torch
from hypothesis import strategies as st
from torch import Tensor, nn

from ._runner import check_budget, require, run_property
from .strategies import class_labels

__all__ = ["check_conditional_denoiser"]

_NAME = "check_conditional_denoiser"


class _Case(NamedTuple):
    t: Tensor
    labels: Tensor
    other: Tensor
    seed: int

    def describe(self) -> str:
        return (
            f"input: batch size {self.t.shape[0]}, timesteps {self.t.tolist()}, labels "
            f"{self.labels.tolist()}, other labels {self.other.tolist()}, data seed {self.seed}"
        )


def _cases(num_timesteps: int, num_classes: int, max_batch: int) -> st.SearchStrategy[_Case]:
    @st.composite
    def draw(d: st.DrawFn) -> _Case:
        b = d(st.integers(2, max_batch))
        t = d(st.lists(st.integers(0, num_timesteps - 1), min_size=b, max_size=b))
        labels, other = d(class_labels(b, num_classes)), d(class_labels(b, num_classes))
        return _Case(torch.tensor(t, dtype=torch.long), labels, other, d(st.integers(0, 2**31 - 1)))

    return draw()


def _gap(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _expect(error: type[Exception], what: str, call: Callable[[], object]) -> None:
    """Raise an ``AssertionError`` unless calling ``call`` raises ``error``."""
    try:
        call()
    except error:
        return
    except Exception as err:
        raise AssertionError(
            f"{_NAME}: {what} must raise {error.__name__}, raised {type(err).__name__}: {err}"
        ) from err
    raise AssertionError(f"{_NAME}: {what} must raise {error.__name__}, nothing was raised")


def check_conditional_denoiser(
    model: nn.Module,
    input_shape: Sequence[int],
    num_timesteps: int,
    num_classes: int,
    *,
    max_examples: int = 10,
    seed: int = 0,
    max_batch_size: int = 4,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    check_label_effect: bool = True,
    min_label_effect: float = 1e-6,
) -> None:
    r"""Check that ``model(x, t, class_labels=y)`` is a class-conditional denoiser.

    The properties are those of the module docstring; the model runs in eval mode and
    is restored to its mode afterwards. Use :func:`~scalemix.testing.check_denoiser`
    for the unconditional contract (the call without labels).

    Args:
        model: called as ``model(x, t, class_labels=y)`` with ``x`` float32
            ``(b, *input_shape)``, ``t`` and ``y`` int64 ``(b,)``.
        input_shape: shape of one item, e.g. ``(2,)`` or ``(3, 16, 16)``.
        num_timesteps: ``T``; timesteps are drawn from ``[0, T)``.
        num_classes: ``K``; labels are drawn from ``[0, K]``, ``K`` the null class.
        max_examples: hypothesis examples per property.
        seed: seed of the draws.
        max_batch_size: largest batch drawn (at least 2).
        atol: absolute tolerance of the comparisons.
        rtol: relative tolerance (times the largest output entry).
        check_label_effect: require another label to change item 0's output (off for
            a network whose class embedding starts at zero).
        min_label_effect: the smallest change that counts.

    Raises:
        AssertionError: a property fails; the message names it, the shrunk input and the
            size of the violation.
        ValueError: bad arguments.
    """
    check_budget(max_examples, seed)
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must hold positive sizes, got {tuple(input_shape)}")
    for name, value in (("num_timesteps", num_timesteps), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if max_batch_size < 2:
        raise ValueError(
            f"max_batch_size must be >= 2 to test per-item labels, got {max_batch_size}"
        )
    k = num_classes
    was_training = model.training

    def call(x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        out = model(x, t, class_labels=y)
        if not isinstance(out, Tensor):
            raise AssertionError(f"{_NAME}: the model returned {type(out).__name__}, not a tensor")
        return out

    def prop(case: _Case) -> None:
        detail = case.describe()
        b, t, y = case.t.shape[0], case.t, case.labels
        x = torch.randn((b, *shape), generator=torch.Generator().manual_seed(case.seed))
        with torch.no_grad():
            out = call(x, t, y)
            if tuple(out.shape) != tuple(x.shape) or out.dtype != x.dtype:
                raise AssertionError(
                    f"{_NAME}: output shape and dtype violated: got {tuple(out.shape)} "
                    f"{out.dtype} for input {tuple(x.shape)} {x.dtype}; {detail}"
                )
            require(_NAME, "finite output", float((~torch.isfinite(out)).sum()), 0.0, detail)
            tol = atol + rtol * float(out.double().abs().max())
            null = torch.full_like(y, k)
            gap = _gap(call(x, t, None), call(x, t, null))
            require(_NAME, f"class_labels=None equals the null class {k}", gap, tol, detail)
            others = torch.cat([y[:1], case.other[1:]])
            gap = _gap(call(x, t, others)[:1], out[:1])
            require(_NAME, "per-item labels (item 0 changed with labels 1..b-1)", gap, tol, detail)
            first = torch.cat([case.other[:1], y[1:]])
            gap = _gap(call(x, t, first)[1:], out[1:])
            require(_NAME, "per-item labels (items 1..b-1 changed with label 0)", gap, tol, detail)
            if check_label_effect:
                shifted = torch.cat([(y[:1] + 1) % (k + 1), y[1:]])
                effect = _gap(call(x, t, shifted)[:1], out[:1])
                if not effect > min_label_effect:
                    raise AssertionError(
                        f"{_NAME}: label effect violated: item 0's output changed by "
                        f"{effect:.3e} from label {int(y[0])} to {int(shifted[0])} (at least "
                        f"{min_label_effect:.1e} expected; a zero class embedding, or "
                        "zero-initialised layers after it (a UNet's output convolutions), give "
                        f"none: pass check_label_effect=False to skip); {detail}"
                    )

    try:
        model.eval()
        x = torch.zeros((2, *shape))
        t = torch.zeros(2, dtype=torch.long)
        with torch.no_grad():
            for bad in (k + 1, -1):
                labels = torch.tensor([0, bad])
                _expect(ValueError, f"label {bad} outside [0, {k}]", partial(call, x, t, labels))
            wrong = torch.zeros(3, dtype=torch.long)
            _expect(ValueError, "labels of shape (3,) for a batch of 2", partial(call, x, t, wrong))
            real = torch.zeros(2)
            _expect(TypeError, "float32 labels", partial(call, x, t, real))
        run_property(
            prop,
            _cases(num_timesteps, num_classes, max_batch_size),
            max_examples=max_examples,
            seed=seed,
        )
    finally:
        model.train(was_training)
