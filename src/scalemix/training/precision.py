r"""Mixed precision and compilation switches shared by the training loops.

``precision`` selects the arithmetic of the forward pass and the loss:

* ``"fp32"``: everything in float32 (no autocast);
* ``"bf16"``: :func:`torch.autocast` with ``torch.bfloat16`` (same exponent range as
  float32, so no loss scaling is needed);
* ``"fp16"``: :func:`torch.autocast` with ``torch.float16`` and a
  :class:`torch.amp.GradScaler`, which multiplies the loss by a scale :math:`S` before
  the backward pass, unscales the gradients :math:`g = \nabla(S L) / S` before clipping,
  skips steps whose gradients are not finite and adapts :math:`S`.

Parameters, optimiser state and the EMA stay in float32 in every mode.

:func:`~scalemix.training.train_images` also takes ``"auto"``, resolved once at the start
of a run by :func:`choose_precision`: on CUDA ``"bf16"`` where
:func:`torch.cuda.is_bf16_supported`, else ``"fp32"``; on a CPU a short measurement of
whole training steps (forward, backward and optimiser step on copies of the model and
the optimiser) in ``"fp32"`` and ``"bf16"``, keeping the faster (``"bf16"`` only when it
is at least ``AUTO_MARGIN`` faster, as it rounds the forward pass); on other devices
``"fp32"``. The choice and the timings are reported as a :class:`PrecisionChoice`.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from .._utils import check_choice

__all__ = [
    "AUTO_MARGIN",
    "Precision",
    "PrecisionChoice",
    "PrecisionSetting",
    "autocast_context",
    "choose_precision",
    "compile_model",
    "grad_scaler",
    "step_on_copies",
]

Precision = Literal["fp32", "bf16", "fp16"]
"""Arithmetic of the forward pass and the loss (module docstring)."""

PrecisionSetting = Literal["fp32", "bf16", "fp16", "auto"]
"""A :data:`Precision`, or ``"auto"``: chosen per device by :func:`choose_precision`."""

#: The relative speed-up ``"bf16"`` needs over ``"fp32"`` to be chosen by ``"auto"`` on
#: a CPU: its mean step time must be below ``(1 - AUTO_MARGIN)`` times fp32's.
AUTO_MARGIN = 0.05

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(
    precision: Precision, device: torch.device
) -> contextlib.AbstractContextManager[object]:
    """The autocast context of ``precision`` on ``device`` (a null context for fp32).

    Raises:
        ValueError: an unknown ``precision``, or one that torch cannot autocast on
            ``device``'s type.
    """
    check_choice("precision", precision, get_args(Precision))
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = _AUTOCAST_DTYPES[precision]
    if not torch.amp.is_autocast_available(device.type):
        raise ValueError(
            f"precision={precision!r} needs autocast, which torch does not offer on "
            f"device type {device.type!r}; use precision='fp32'"
        )
    try:
        return torch.autocast(device.type, dtype=dtype)
    except RuntimeError as err:  # e.g. a dtype this build cannot autocast to on the device
        raise ValueError(
            f"precision={precision!r} is not supported on {device.type!r} by this torch "
            f"build ({err}); use precision='bf16' or 'fp32'"
        ) from err


def grad_scaler(precision: Precision, device: torch.device) -> torch.amp.GradScaler | None:
    """A :class:`torch.amp.GradScaler` for ``"fp16"``, else ``None``."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def compile_model(model: nn.Module, compile: bool | str) -> nn.Module:
    """``model`` itself (``compile=False``) or :func:`torch.compile` of it.

    Args:
        model: the network; the compiled wrapper shares its parameters.
        compile: ``False``, ``True`` (torch's default backend, ``"inductor"``) or the
            name of a backend (``"eager"``, ``"aot_eager"``, ``"inductor"``, ...).

    Raises:
        TypeError: ``compile`` is neither a bool nor a string.
    """
    if isinstance(compile, bool):
        if not compile:
            return model
        return torch.compile(model)  # type: ignore[return-value]
    if isinstance(compile, str):
        return torch.compile(model, backend=compile)  # type: ignore[return-value]
    raise TypeError(f"compile must be a bool or a backend name, got {type(compile).__name__}")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses and, for ``"auto"`` on a CPU, the measurement behind it.

    Attributes:
        precision: the precision the run trains in.
        setting: what was asked for (``"auto"`` or the precision itself).
        seconds: mean seconds of one measured training step per candidate, e.g.
            ``{"fp32": 1.9, "bf16": 1.2}``; empty when nothing was measured (an explicit
            precision, CUDA, or a choice restored from a checkpoint).
        reason: one line saying how the precision was chosen.
    """

    precision: Precision
    setting: PrecisionSetting
    seconds: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def summary(self) -> str:
        """One line for a log, e.g. ``precision auto -> bf16 (fp32 1.90 s/step, ...)``."""
        timings = ", ".join(f"{k} {v:.3g} s/step" for k, v in self.seconds.items())
        detail = f" ({timings})" if timings else ""
        return f"precision {self.setting} -> {self.precision}{detail}: {self.reason}"


def _mean_step_seconds(
    step: Callable[[Precision], None], candidates: tuple[Precision, ...], repeats: int
) -> dict[str, float]:
    """Mean wall time of ``step(p)`` per candidate: one untimed warm-up call each, then
    ``repeats`` timed rounds alternating the candidates (so drifts in the machine's load
    hit all of them alike). With :func:`step_on_copies`, the candidates' ``k``-th calls
    do the same work, so the means compare the same ``repeats`` steps."""
    for p in candidates:
        step(p)
    times: dict[str, list[float]] = {p: [] for p in candidates}
    for _ in range(repeats):
        for p in candidates:
            start = time.perf_counter()
            step(p)
            times[p].append(time.perf_counter() - start)
    return {p: statistics.fmean(v) for p, v in times.items()}


def step_on_copies(
    model: nn.Module,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    loss: Callable[[nn.Module, torch.Generator], Tensor],
    generator: torch.Generator,
    grad_clip: float | None,
) -> Callable[[Precision], None]:
    """A training step to time for :func:`choose_precision`, run on copies.

    The model (deep-copied, in training mode), a fresh optimiser
    ``make_optimizer(copy)`` and a generator with ``generator``'s state take every step,
    so the run's weights, optimiser state and ``generator`` stay as they are. A step is
    ``loss(copy, generator_copy)`` under the precision's autocast on the model's device,
    the backward pass, clipping at ``grad_clip`` (``None``: none) and the optimiser step.

    The ``k``-th call of every precision starts the generator copy from the same state,
    so the ``k``-th steps of the candidates draw the same timesteps and noise: a loss
    whose cost depends on its draws (a scale-space loss trains one pyramid level per
    batch) gives every candidate the same work.
    Steps may draw from torch's global generator (dropout); the caller restores it, e.g.
    inside :func:`torch.random.fork_rng`.
    """
    net = copy.deepcopy(model).train()
    optimizer = make_optimizer(net)
    params = [p for p in net.parameters() if p.requires_grad]
    gen = torch.Generator(generator.device)
    gen.set_state(generator.get_state())
    device = params[0].device if params else torch.device("cpu")
    states: list[Tensor] = []  # generator state before the k-th call of any precision
    calls: dict[str, int] = {}

    def step(precision: Precision) -> None:
        k = calls.get(precision, 0)
        calls[precision] = k + 1
        if k < len(states):
            gen.set_state(states[k])
        else:
            states.append(gen.get_state())
        with autocast_context(precision, device):
            value = loss(net, gen)
        torch.autograd.backward(value)
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def choose_precision(
    setting: PrecisionSetting,
    device: torch.device,
    step: Callable[[Precision], None] | None = None,
    *,
    repeats: int = 5,
) -> PrecisionChoice:
    """Resolve a precision setting on ``device`` (``"auto"``: module docstring).

    Args:
        setting: ``"fp32"``, ``"bf16"``, ``"fp16"`` (returned as they are) or ``"auto"``.
        device: the training device.
        step: for ``"auto"`` on a CPU, one training step in the given precision, run on
            copies of the model and optimiser state (it must leave the run's state and
            random streams alone); called ``1 + repeats`` times per candidate.
        repeats: timed calls per candidate (their mean counts).

    Returns:
        A :class:`PrecisionChoice`.

    Raises:
        ValueError: an unknown ``setting``, ``repeats < 1``, or ``"auto"`` on a CPU
            without ``step``.
    """
    check_choice("precision", setting, get_args(PrecisionSetting))
    if setting != "auto":
        return PrecisionChoice(setting, setting, reason="given explicitly")
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return PrecisionChoice(
            "bf16" if ok else "fp32",
            "auto",
            reason=f"CUDA device {'with' if ok else 'without'} bf16 support",
        )
    if device.type != "cpu" or not torch.amp.is_autocast_available("cpu"):
        return PrecisionChoice("fp32", "auto", reason=f"no measurement on {device.type!r}")
    if step is None:
        raise ValueError("precision='auto' on a CPU needs a training step to time")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    seconds = _mean_step_seconds(step, ("fp32", "bf16"), repeats)
    faster = seconds["bf16"] < (1.0 - AUTO_MARGIN) * seconds["fp32"]
    ratio = seconds["fp32"] / seconds["bf16"]
    reason = f"bf16 is {ratio:.2f}x the speed of fp32 on this CPU"
    return PrecisionChoice("bf16" if faster else "fp32", "auto", seconds, reason)
