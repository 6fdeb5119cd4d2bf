r"""An exponential moving average of the weights with the reference's decay warm-up.

The 2D study's reference code averaged its weights with ``ema_pytorch`` (beta 0.995,
``update_every=10``, everything else at its defaults). Its decay is not constant: the
``j``-th acting update (``j = 0, 1, 2, ...``) happens at call :math:`k = j\,m` (every
:math:`m`-th call), and for :math:`e = k - w` calls past the warm-up :math:`w` (100),

.. math::
    \delta(k) = \begin{cases}
        0 & e \le 0 \quad\text{(the average is a copy of the weights)}\\
        \min\!\left(\beta,\ 1 - (1 + e/\gamma)^{-p}\right) & e > 0,
    \end{cases}
    \qquad
    \theta^\text{EMA} \leftarrow \delta(k)\,\theta^\text{EMA} + (1 - \delta(k))\,\theta,

with :math:`p = 2/3`, :math:`\gamma = 1` and :math:`\beta = 0.995`. So :math:`e = 10`
gives :math:`\delta = 1 - 11^{-2/3} \approx 0.797`, and :math:`\delta` reaches
:math:`\beta` only at :math:`e = (1-\beta)^{-1/p} - 1 \approx 2{,}827` (call
:math:`k \approx 2{,}930` with ``update_every=10``). A constant decay of 0.995 from the
start keeps :math:`0.995^{50} \approx 78\,\%` of the initial weights after 500 steps;
the warm-up forgets them.

:func:`ema_warmup_decay` is the schedule as a pure function;
:func:`warmup_ema_multi_avg_fn` turns it into the ``multi_avg_fn`` of
:class:`torch.optim.swa_utils.AveragedModel` (which counts its updates in
``n_averaged``); :func:`make_ema` builds that ``AveragedModel``; :func:`ema_updater`
performs its ``update_parameters(model)`` over lists of tensors gathered once (what a
training loop calls every step).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["MultiAvgFn", "ema_updater", "ema_warmup_decay", "make_ema", "warmup_ema_multi_avg_fn"]

#: The signature of ``AveragedModel``'s ``multi_avg_fn``:
#: ``(averaged_params, current_params, num_averaged) -> None``, updating in place.
MultiAvgFn = Callable[[Sequence[Tensor], Sequence[Tensor], Tensor], None]


def _check_decay_args(beta: float, warmup: int, power: float, inv_gamma: float) -> None:
    if not (isinstance(beta, (int, float)) and 0.0 <= beta <= 1.0):
        raise ValueError(f"beta (the EMA decay) must lie in [0, 1], got {beta!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
    for name, value in (("power", power), ("inv_gamma", inv_gamma)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def ema_warmup_decay(
    step: Tensor | int,
    *,
    beta: float = 0.995,
    warmup: int = 100,
    power: float = 2.0 / 3.0,
    inv_gamma: float = 1.0,
) -> Tensor:
    r"""The EMA decay :math:`\delta(k)` of the reference (module docstring).

    .. math::
        \delta(k) = \mathbb 1[k > w]\,
        \operatorname{clip}\!\left(1 - \left(1 + \frac{k - w}{\gamma}\right)^{-p},\ 0,\ \beta\right)

    Args:
        step: the update call index :math:`k` (an int or an integer tensor of any
            shape; ``ema_pytorch`` counts every call, acting or not).
        beta: the largest decay :math:`\beta \in [0, 1]`.
        warmup: :math:`w`, the calls during which the average is a copy (decay 0).
        power: :math:`p`.
        inv_gamma: :math:`\gamma`.

    Returns:
        float64 tensor of ``step``'s shape (0-d for an int), on ``step``'s device.

    Raises:
        ValueError: ``beta`` outside ``[0, 1]``, a negative ``warmup``, a non-positive
            ``power``/``inv_gamma``.
        TypeError: a floating-point ``step`` tensor.
    """
    _check_decay_args(beta, warmup, power, inv_gamma)
    if isinstance(step, Tensor):
        if step.is_floating_point() or step.dtype == torch.bool:
            raise TypeError(f"step must be an integer tensor, got dtype {step.dtype}")
        k = step.to(torch.float64)
    else:
        k = torch.tensor(float(step), dtype=torch.float64)
    e = k - warmup
    value = 1.0 - (1.0 + e.clamp(min=0.0) / inv_gamma) ** (-power)
    return torch.where(e > 0, value.clamp(0.0, beta), torch.zeros_like(value))


def warmup_ema_multi_avg_fn(
    beta: float = 0.995,
    *,
    every: int = 10,
    warmup: int = 100,
    power: float = 2.0 / 3.0,
    inv_gamma: float = 1.0,
) -> MultiAvgFn:
    r"""``multi_avg_fn`` for :class:`~torch.optim.swa_utils.AveragedModel` with the warm-up.

    ``AveragedModel`` copies the weights on its first update and afterwards calls this
    function with ``num_averaged`` :math:`= j \ge 1`, the number of earlier updates;
    the decay applied is :func:`ema_warmup_decay` at :math:`k = j \cdot` ``every``, the
    call index of the ``j``-th acting update of ``ema_pytorch``. The decay is computed
    on the parameters' device (no host synchronisation).

    Args:
        beta: the largest decay.
        every: the number of training steps between two updates (``update_every``).
        warmup, power, inv_gamma: as in :func:`ema_warmup_decay`.

    Returns:
        ``f(averaged, current, num_averaged)``, updating ``averaged`` in place:
        ``averaged <- decay * averaged + (1 - decay) * current``.
    """
    _check_decay_args(beta, warmup, power, inv_gamma)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")

    @torch.no_grad()
    def update(averaged: Sequence[Tensor], current: Sequence[Tensor], num_averaged: Tensor) -> None:
        decay = ema_warmup_decay(
            num_averaged.long() * every,
            beta=beta,
            warmup=warmup,
            power=power,
            inv_gamma=inv_gamma,
        )
        weight = 1.0 - decay
        weights: dict[torch.dtype, Tensor] = {}  # the weight in each dtype, converted once
        for p_avg, p_new in zip(averaged, current, strict=True):
            if p_avg.is_floating_point() or p_avg.is_complex():
                w = weights.get(p_avg.dtype)
                if w is None:
                    w = weights[p_avg.dtype] = weight.to(p_avg.dtype)
                p_avg.lerp_(p_new, w)
            else:  # integer buffers: rounded average, as torch's EMA helper does
                p_avg.copy_(p_avg * decay + p_new * weight)

    return update


def make_ema(
    model: nn.Module,
    *,
    decay: float = 0.995,
    every: int = 10,
    warmup: int | None = 100,
) -> AveragedModel:
    r"""An :class:`~torch.optim.swa_utils.AveragedModel` holding the EMA of ``model``.

    Call ``ema.update_parameters(model)`` every ``every`` training steps; buffers are
    averaged like parameters (``use_buffers=True``).

    Args:
        model: the network to average (deep-copied; the copy is ``ema.module``).
        decay: :math:`\beta`, the (largest) decay.
        every: the training steps between two updates, used to convert the update count
            into ``ema_pytorch``'s call index.
        warmup: :math:`w` of :func:`ema_warmup_decay` in training steps, or ``None`` for
            a constant decay ``decay`` from the second update on (the first copies).

    Returns:
        The ``AveragedModel``.
    """
    if warmup is None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must lie in [0, 1], got {decay!r}")
        fn = get_ema_multi_avg_fn(decay)  # type: ignore[no-untyped-call]
    else:
        fn = warmup_ema_multi_avg_fn(decay, every=every, warmup=warmup)
    return AveragedModel(model, multi_avg_fn=fn, use_buffers=True)


def ema_updater(ema: AveragedModel, model: nn.Module) -> Callable[[], None]:
    """A function that does ``ema.update_parameters(model)``, with the lists gathered once.

    ``AveragedModel.update_parameters`` walks both module trees, detaches every
    parameter and buffer and groups them by device and dtype on every call, which costs
    more than the averaging itself for a small network updated every step. The returned
    function does the same update (the copy on the first one, then ``multi_avg_fn`` on
    each (device, dtype) group, then ``n_averaged += 1``) over lists built here, with
    the same arithmetic and so the same result. It reads ``n_averaged`` once, here, and
    counts the updates on the host (no synchronisation per call).

    Use it while neither network's tensors are replaced (by ``.to()``, ``load_state_dict``
    with ``assign=True`` or re-assigned attributes) and nothing else updates ``ema``;
    :func:`~scalemix.training.train` builds one per run. Other configurations (no
    ``multi_avg_fn``, ``use_buffers=False``, a network on another device than its
    average) get ``ema.update_parameters(model)`` itself.

    Args:
        ema: the average, e.g. from :func:`make_ema`.
        model: the network being trained.

    Returns:
        A function of no arguments performing one update.
    """
    averaged = [t.detach() for t in itertools.chain(ema.module.parameters(), ema.module.buffers())]
    current = [t.detach() for t in itertools.chain(model.parameters(), model.buffers())]
    avg_fn = ema.multi_avg_fn
    if (
        avg_fn is None
        or ema.avg_fn is not None
        or not ema.use_buffers
        or len(averaged) != len(current)
        or any(a.device != c.device for a, c in zip(averaged, current, strict=True))
    ):
        return lambda: ema.update_parameters(model)
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = {}
    for a, c in zip(averaged, current, strict=True):
        group = groups.setdefault((a.device, a.dtype), ([], []))
        group[0].append(a)
        group[1].append(c)
    count = int(ema.n_averaged)

    def update() -> None:
        nonlocal count
        with torch.no_grad():
            if count == 0:
                for a, c in zip(averaged, current, strict=True):
                    a.copy_(c)
            else:
                for (device, _), (group_avg, group_cur) in groups.items():
                    avg_fn(group_avg, group_cur, ema.n_averaged.to(device))
            ema.n_averaged += 1
        count += 1

    return update
