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
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.optim.lr_scheduler import CosineAnnealingLR
from typing_extensions import Unpack

from .._utils import check_finite, progress_bar
from ..scheduler import DDPMScheduler
from ._common import as_callbacks, backward, index_batches, optimizer_step
from ._ensemble_stacking import (
    Wrap,
    check_models,
    clip_per_copy,
    stack_data,
    stack_labels,
    unstack,
    vmap_works,
)
from .conditioning import drop_labels, null_label_of, resolve_null_label, split_labelled
from .config import LossName, TrainConfig, TrainSettings, resolve_config
from .ema import ema_warmup_decay
from .losses import draw_noise_and_timesteps, vlb_term
from .precision import autocast_context, compile_model, grad_scaler
from .results import Callback, EnsembleResult, EnsembleState

__all__ = ["EmaSchedule", "periodic_ema", "train_ensemble", "warmup_ema"]

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


def _ema_schedule(config: TrainConfig, ema_schedule: EmaSchedule | None) -> EmaSchedule:
    if ema_schedule is not None:
        return ema_schedule
    if config.ema_warmup is None:
        return periodic_ema(config.ema_decay, config.ema_every)
    return warmup_ema(config.ema_decay, config.ema_every, config.ema_warmup)


def train_ensemble(
    models: Sequence[nn.Module],
    scheduler: DDPMScheduler,
    data: Tensor | Sequence[Tensor] | tuple[Tensor | Sequence[Tensor], Tensor | Sequence[Tensor]],
    config: TrainConfig | None = None,
    *,
    generators: Sequence[torch.Generator],
    ema_schedule: EmaSchedule | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    callback: Callback[EnsembleState] = None,
    **settings: Unpack[TrainSettings],
) -> EnsembleResult:
    """Train ``N = len(models)`` copies at once (module docstring), each as ``train`` would.

    Takes the :class:`~scalemix.training.TrainConfig` of
    :func:`~scalemix.training.train` (or its fields as keywords), with two differences:
    ``loss`` must be ``"mse"`` or ``"hybrid"``, and no checkpoints are written
    (``checkpoint_every`` and ``keep_checkpoints`` are not used). ``compile`` compiles
    the batched forward. With ``precision="fp16"`` a single gradient scaler serves all
    copies: a step with a non-finite gradient in one copy is skipped for all.

    Args:
        models: ``N`` initialised models of one type and one set of parameter shapes;
            they receive the trained weights in place (and move to ``device``).
        scheduler: the diffusion process shared by all copies.
        data: one ``(n, ...)`` tensor shared by all copies, or ``N`` tensors of one
            shape; or a pair ``(x0, labels)`` of such data and its integer labels, one
            ``(n,)`` tensor shared by all copies or ``N`` of them. Copy ``k``'s batch
            takes the labels of its rows, dropped to the null class with
            probability ``label_dropout`` through ``generators[k]``, as
            :func:`~scalemix.training.train` does.
        config: the settings shared by all copies (``batch_size`` per copy).
        generators: ``N`` generators, copy ``k``'s only source of randomness, used in
            the order :func:`~scalemix.training.train` uses its generator.
        ema_schedule: an :data:`EmaSchedule` replacing the config's ``ema_decay``,
            ``ema_every`` and ``ema_warmup`` (default: :func:`warmup_ema`, or
            :func:`periodic_ema` when ``ema_warmup`` is ``None``, as in ``train``).
        device: where to train; default: the device of ``models[0]``.
        progress: show a tqdm progress bar.
        callback: a function, or a sequence of functions, called with an
            :class:`~scalemix.training.EnsembleState` after every step.
        **settings: fields of :class:`~scalemix.training.TrainConfig`
            (:class:`~scalemix.training.TrainSettings`), e.g. ``steps=1000``.

    Returns:
        An :class:`~scalemix.training.EnsembleResult`; ``losses[k]`` equals ``train``'s
        ``losses`` of copy ``k``.

    Raises:
        TypeError: neither ``config`` nor ``steps`` given, or an unknown setting.
        ValueError: models of different types or shapes, ``len(generators) != N``,
            an invalid setting, bad labels, ``label_dropout > 0`` for models without
            ``num_classes``, a loss that is not a name, or a loss that becomes NaN or
            infinite.
    """
    hooks = as_callbacks(callback)
    config = resolve_config(TrainConfig, config, settings, "train_ensemble")
    check_models(models)
    n = len(models)
    if len(generators) != n:
        raise ValueError(
            f"generators must hold {n} generators (one per model), got {len(generators)}"
        )
    loss = config.loss
    if callable(loss):
        raise ValueError(f"train_ensemble takes loss 'mse' or 'hybrid', got {loss!r}")
    schedule = _ema_schedule(config, ema_schedule)
    steps, ema_every, kl_weight = config.steps, config.ema_every, config.kl_weight

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
    x_data, labels = split_labelled(data)
    data_stack = check_finite("data", stack_data(x_data, n, target).to(dtype=first.dtype))
    rows = torch.arange(n, device=target).unsqueeze(1)
    label_stack, null, p_drop = None, -1, config.label_dropout
    if labels is not None:
        null = resolve_null_label(models[0], p_drop)
        num_classes = null_label_of(models[0])
        label_stack = stack_labels(labels, n, data_stack.shape[1], num_classes, target)

    base = copy.deepcopy(models[0]).to("meta")
    base.train()

    def call_one(
        p: dict[str, Tensor],
        b: dict[str, Tensor],
        x: Tensor,
        t: Tensor,
        kw: dict[str, Tensor] | None = None,
    ) -> Tensor:
        out: Tensor = functional_call(base, (p, b), (x, t), kw)
        return out

    def call_looped(
        p: dict[str, Tensor],
        b: dict[str, Tensor],
        x: Tensor,
        t: Tensor,
        kw: dict[str, Tensor] | None = None,
    ) -> Tensor:
        return torch.stack(
            [
                call_one(
                    {k: v[i] for k, v in p.items()},
                    {k: v[i] for k, v in b.items()},
                    x[i],
                    t[i],
                    None if kw is None else {k: v[i] for k, v in kw.items()},
                )
                for i in range(n)
            ]
        )

    probe = None if label_stack is None else {"class_labels": label_stack[:, :2]}
    vectorized = vmap_works(call_one, params, buffers, data_stack[:, :2], probe)
    forward: Callable[..., Tensor] = vmap(call_one) if vectorized else call_looped
    if config.compile is not False:
        forward = compile_model(Wrap(forward), config.compile)

    fused = target.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(
        plist, lr=config.lr, weight_decay=config.weight_decay, fused=fused
    )
    lr_schedule = CosineAnnealingLR(optimizer, T_max=steps)
    amp = autocast_context(config.precision, target)
    scaler = grad_scaler(config.precision, target)
    size = config.batch_size
    batch_iters = [index_batches(data_stack.shape[1], size, config.batching, g) for g in generators]
    clip = None if config.grad_clip is None else partial(clip_per_copy, plist, config.grad_clip)
    losses = torch.zeros(n, steps, dtype=torch.float32, device=target)

    start = time.perf_counter()
    bar = progress_bar(range(1, steps + 1), enabled=progress, total=steps, desc="ensemble")
    for step in bar:
        idx = torch.stack([next(it).to(target) for it in batch_iters])  # (N, B)
        x0 = data_stack[rows, idx]  # (N, B, ...)
        kw = None
        if label_stack is not None:
            y = label_stack[rows, idx]  # (N, B), then dropped per copy, as train does
            drops = [
                drop_labels(y[i], p_drop, null_label=null, generator=g)
                for i, g in enumerate(generators)
            ]
            kw = {"class_labels": torch.stack(drops)}
        draws = [draw_noise_and_timesteps(scheduler, x0[i], g) for i, g in enumerate(generators)]
        noise = torch.stack([d[0] for d in draws]).flatten(0, 1)
        t = torch.stack([d[1] for d in draws]).flatten(0, 1)
        with amp:
            loss_vec = _losses(
                forward, params, buffers, scheduler, x0, noise, t, loss, kl_weight, kw
            )
        step_lr = float(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad(set_to_none=True)
        backward(loss_vec.sum(), scaler)
        optimizer_step(optimizer, scaler, clip)
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
        if hooks:
            state = EnsembleState(step, losses[:, step - 1], step_lr)
            for hook in hooks:
                hook(state)
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
    kw: dict[str, Tensor] | None,
) -> Tensor:
    """Per-copy losses ``(N,)``: the MSE to the scheduler's target (+ the KL term);
    ``kw``: the model's keyword tensors, ``(N, B, ...)``, or ``None``."""
    n, b = x0.shape[:2]
    flat = x0.flatten(0, 1)
    x_t = scheduler.add_noise(flat, noise, t)
    args = (params, buffers, x_t.view(n, b, *x_t.shape[1:]), t.view(n, b))
    pred = forward(*args) if kw is None else forward(*args, kw)
    target = scheduler.target(flat, noise, t).view(pred.shape)
    mse: Tensor = (pred.float() - target).square().flatten(1).mean(dim=1)
    if loss == "mse":
        return mse
    kl = vlb_term(scheduler, pred.flatten(0, 1).float(), flat, x_t, t)
    total: Tensor = mse + kl_weight * kl.reshape(n, -1).mean(dim=1)
    return total
