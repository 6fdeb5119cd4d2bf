r"""Train ``N`` independent copies of a small denoiser as one batched model.

A 2D study trains many tiny networks (datasets x models x seeds); one of them uses a
sliver of a GPU. :func:`train_ensemble` stacks the parameters of ``N`` models of one
architecture (:func:`torch.func.stack_module_state`, every tensor gains a leading
axis of size ``N``) and evaluates all of them in one call of
:func:`torch.func.vmap` over :func:`torch.func.functional_call`. The copies stay
independent: copy :math:`k` has its own generator (batches, noise, timesteps), data,
loss :math:`L_k`, gradient-norm clip, AdamW state and EMA. Because

.. math:: \nabla_{\theta_k} \sum_j L_j(\theta_j) = \nabla_{\theta_k} L_k(\theta_k),

one backward pass of :math:`\sum_k L_k` gives every copy its own gradient, AdamW acts
elementwise, and the clip coefficient :math:`\min(1, c / (\lVert g_k \rVert + 10^{-6}))`
is computed per copy, so the result equals ``N`` separate :func:`~scalemix.training.train`
runs with the same settings to float rounding. Models that ``vmap`` cannot batch (an
operation with a data-dependent output shape, such as :func:`torch.unique`) are run
one copy after the other on the stacked parameters (:attr:`EnsembleResult.vectorized`
is then ``False``); the optimiser step and the EMA remain batched.

The EMA follows a schedule, a pure function ``step -> decay`` (:data:`EmaSchedule`):
after optimiser step :math:`s` (1-based) the EMA is left alone when it returns
``None``, set to the weights when it returns ``0``, and otherwise updated as
:math:`\theta^\text{EMA} \leftarrow \delta\,\theta^\text{EMA} + (1 - \delta)\,\theta_s`.
:func:`warmup_ema` gives ``train``'s default rule (the reference's warm-up, see
:mod:`scalemix.training.ema`), :func:`periodic_ema` its ``ema_warmup=None`` rule.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import get_args

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.optim.lr_scheduler import CosineAnnealingLR

from .._utils import check_choice, check_finite, progress_bar
from ..scheduler import DDPMScheduler
from ._stacking import Wrap, check_models, clip_per_copy, stack_data, unstack, vmap_works
from .ema import ema_warmup_decay
from .loop import Batching, LossName, _batches, check_settings
from .losses import draw_noise_and_timesteps, vlb_term
from .precision import Precision, autocast_context, compile_model, grad_scaler

__all__ = ["EmaSchedule", "EnsembleResult", "periodic_ema", "train_ensemble", "warmup_ema"]

EmaSchedule = Callable[[int], float | None]
"""``step -> decay``: ``None`` (no update after this step), ``0`` (copy) or a decay."""


def periodic_ema(decay: float, every: int) -> EmaSchedule:
    """The EMA rule of :func:`~scalemix.training.train` with ``ema_warmup=None``: update
    after every ``every``-th step, the first update copying the weights, the others
    with decay ``decay``.

    Returns:
        A pure function of the 1-based optimiser step.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must lie in [0, 1], got {decay}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")

    def schedule(step: int) -> float | None:
        if step % every:
            return None
        return 0.0 if step == every else decay

    return schedule


def warmup_ema(decay: float, every: int, warmup: int = 100) -> EmaSchedule:
    r"""The default EMA rule of :func:`~scalemix.training.train`: update after every
    ``every``-th step :math:`s`, the first update copying the weights, the later ones
    with decay :func:`~scalemix.training.ema_warmup_decay` at :math:`k = s -` ``every``
    (``beta=decay``, ``warmup=warmup``), as :func:`~scalemix.training.make_ema` does.

    Returns:
        A pure function of the 1-based optimiser step.
    """
    periodic_ema(decay, every)  # validates decay and every
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")

    def schedule(step: int) -> float | None:
        if step % every:
            return None
        if step == every:
            return 0.0
        return float(ema_warmup_decay(step - every, beta=decay, warmup=warmup))

    return schedule


@dataclass
class EnsembleResult:
    """The outcome of :func:`train_ensemble`.

    Attributes:
        models: the ``N`` trained models (the objects that were passed in).
        ema_models: ``N`` copies holding the EMA weights, ready to sample with.
        losses: float32 CPU tensor ``(N, steps)``, every copy's loss at every step.
        seconds: wall-clock duration of the loop.
        vectorized: whether the forward ran under ``vmap`` (else one copy at a time).
    """

    models: list[nn.Module]
    ema_models: list[nn.Module]
    losses: Tensor
    seconds: float
    vectorized: bool


def train_ensemble(
    models: Sequence[nn.Module],
    scheduler: DDPMScheduler,
    data: Tensor | Sequence[Tensor],
    *,
    generators: Sequence[torch.Generator],
    steps: int,
    batch_size: int = 256,
    lr: float = 3e-4,
    weight_decay: float = 1e-2,
    grad_clip: float | None = 0.5,
    ema_decay: float = 0.995,
    ema_every: int = 10,
    ema_warmup: int | None = 100,
    ema_schedule: EmaSchedule | None = None,
    loss: LossName = "mse",
    kl_weight: float = 0.1,
    batching: Batching = "epoch",
    device: torch.device | str | None = None,
    precision: Precision = "fp32",
    compile: bool | str = False,
    progress: bool = False,
) -> EnsembleResult:
    """Train ``N = len(models)`` copies at once (module docstring), each as ``train`` would.

    Args:
        models: ``N`` initialised models of one type and one set of parameter shapes;
            they receive the trained weights in place (and move to ``device``).
        scheduler: the diffusion process shared by all copies.
        data: one ``(n, ...)`` tensor shared by all copies, or ``N`` tensors of one shape.
        generators: ``N`` generators, copy ``k``'s only source of randomness, used in
            the order :func:`~scalemix.training.train` uses its generator.
        steps: optimiser steps (> 0), also the cosine schedule's length.
        batch_size: points per batch and copy.
        lr: peak AdamW learning rate.
        weight_decay: AdamW's decoupled weight decay.
        grad_clip: maximum gradient norm of each copy, or ``None``.
        ema_decay: EMA decay :math:`\\beta` (when ``ema_schedule`` is None).
        ema_every: EMA period.
        ema_warmup: the warm-up of :func:`warmup_ema`, as in ``train``; ``None`` for
            :func:`periodic_ema` (a constant ``ema_decay``).
        ema_schedule: an :data:`EmaSchedule` replacing the three settings above.
        loss: ``"mse"`` or ``"hybrid"`` (with ``kl_weight``), as in ``train``.
        kl_weight: :math:`\\lambda` of the hybrid loss.
        batching: ``"epoch"`` or ``"replacement"``, as in ``train``.
        device: where to train; default: the device of ``models[0]``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``. With ``"fp16"`` a single
            gradient scaler serves all copies: a step with a non-finite gradient in
            one copy is skipped for all.
        compile: ``True`` or a backend name to :func:`torch.compile` the batched forward.
        progress: show a tqdm progress bar.

    Returns:
        An :class:`EnsembleResult`; ``losses[k]`` equals ``train``'s ``losses`` of copy ``k``.

    Raises:
        ValueError: models of different types or shapes, ``len(generators) != N``,
            invalid settings as in ``train``, or a loss that becomes NaN or infinite.
    """
    check_models(models)
    n = len(models)
    if len(generators) != n:
        raise ValueError(
            f"generators must hold {n} generators (one per model), got {len(generators)}"
        )
    check_settings(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        ema_decay=ema_decay,
        ema_every=ema_every,
        ema_warmup=ema_warmup,
        kl_weight=kl_weight,
        batching=batching,
    )
    check_choice("loss", loss, get_args(LossName))
    if ema_schedule is not None:
        schedule = ema_schedule
    elif ema_warmup is None:
        schedule = periodic_ema(ema_decay, ema_every)
    else:
        schedule = warmup_ema(ema_decay, ema_every, ema_warmup)

    first = next(iter(models[0].parameters()))
    target = torch.device(device) if device is not None else first.device
    stacked_params, stacked_buffers = stack_module_state(list(models))
    params = {
        k: v.detach().to(target).requires_grad_(v.requires_grad) for k, v in stacked_params.items()
    }
    buffers = {k: v.to(target) for k, v in stacked_buffers.items()}
    plist = [p for p in params.values() if p.requires_grad]
    if not plist:
        raise ValueError("the models have no trainable parameters")
    states = list(params.values()) + list(buffers.values())
    ema_states = [v.detach().clone() for v in states]
    data_stack = check_finite("data", stack_data(data, n, target).to(dtype=first.dtype))
    rows = torch.arange(n, device=target).unsqueeze(1)

    base = copy.deepcopy(models[0]).to("meta")
    base.train()

    def call_one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, t: Tensor) -> Tensor:
        out: Tensor = functional_call(base, (p, b), (x, t))
        return out

    def call_looped(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, t: Tensor) -> Tensor:
        return torch.stack(
            [
                call_one(
                    {k: v[i] for k, v in p.items()}, {k: v[i] for k, v in b.items()}, x[i], t[i]
                )
                for i in range(n)
            ]
        )

    vectorized = vmap_works(call_one, params, buffers, data_stack[:, :2])
    forward: Callable[..., Tensor] = vmap(call_one) if vectorized else call_looped
    if compile is not False:
        forward = compile_model(Wrap(forward), compile)

    fused = target.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(plist, lr=lr, weight_decay=weight_decay, fused=fused)
    lr_schedule = CosineAnnealingLR(optimizer, T_max=steps)
    amp = autocast_context(precision, target)
    scaler = grad_scaler(precision, target)
    batch_iters = [_batches(data_stack.shape[1], batch_size, batching, g) for g in generators]
    losses = torch.zeros(n, steps, dtype=torch.float32, device=target)

    start = time.perf_counter()
    bar = progress_bar(range(1, steps + 1), enabled=progress, total=steps, desc="ensemble")
    for step in bar:
        idx = torch.stack([next(it).to(target) for it in batch_iters])  # (N, B)
        x0 = data_stack[rows, idx]  # (N, B, ...)
        draws = [draw_noise_and_timesteps(scheduler, x0[i], g) for i, g in enumerate(generators)]
        noise = torch.stack([d[0] for d in draws]).flatten(0, 1)
        t = torch.stack([d[1] for d in draws]).flatten(0, 1)
        with amp:
            loss_vec = _losses(forward, params, buffers, scheduler, x0, noise, t, loss, kl_weight)
        optimizer.zero_grad(set_to_none=True)
        total = loss_vec.sum()
        torch.autograd.backward(total if scaler is None else scaler.scale(total))
        if scaler is not None:
            scaler.unscale_(optimizer)
        if grad_clip is not None:
            clip_per_copy([p.grad for p in plist if p.grad is not None], grad_clip)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        lr_schedule.step()
        decay = schedule(step)
        if decay is not None:
            with torch.no_grad():
                if decay == 0.0:
                    torch._foreach_copy_(ema_states, states)
                else:
                    torch._foreach_lerp_(ema_states, [s.detach() for s in states], 1.0 - decay)
        losses[:, step - 1] = loss_vec.detach()
        check = step % ema_every == 0 or step == steps
        if check and not bool(torch.isfinite(losses[:, step - 1]).all()):
            raise ValueError(f"a training loss became non-finite at step {step}")
    seconds = time.perf_counter() - start
    trained, averaged = unstack(models, states, ema_states, target)
    return EnsembleResult(trained, averaged, losses.cpu(), seconds, vectorized)


def _losses(
    forward: Callable[..., Tensor],
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    scheduler: DDPMScheduler,
    x0: Tensor,
    noise: Tensor,
    t: Tensor,
    loss: LossName,
    kl_weight: float,
) -> Tensor:
    """Per-copy losses ``(N,)``: the MSE to the scheduler's target (+ the KL term)."""
    n, b = x0.shape[:2]
    flat = x0.flatten(0, 1)
    x_t = scheduler.add_noise(flat, noise, t)
    pred = forward(params, buffers, x_t.view(n, b, *x_t.shape[1:]), t.view(n, b))
    target = scheduler.target(flat, noise, t).view(pred.shape)
    mse: Tensor = (pred.float() - target).square().flatten(1).mean(dim=1)
    if loss == "mse":
        return mse
    kl = vlb_term(scheduler, pred.flatten(0, 1).float(), flat, x_t, t)
    total: Tensor = mse + kl_weight * kl.reshape(n, -1).mean(dim=1)
    return total
