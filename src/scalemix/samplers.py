r"""The reverse-process loops: one function per sampler, all with one signature.

Every sampler is ``sampler(denoise, process, x, schedule, options) -> Tensor`` (the
k-diffusion convention): it starts from the
noise ``x`` at the first timestep and takes one step per ``(t, s)`` pair of
``schedule``, from ``t`` to the earlier ``s`` (``-1``: clean data). The model enters
only through ``denoise(x, t, s)``, which returns its prediction at ``(x, t)`` for a step
to ``s`` (for a resolution-changing process, at the resolution of ``s``);
:func:`scalemix.sample` builds it from a model and ``model_kwargs`` and picks the
sampler from :data:`SAMPLERS`. The loop itself, with its callback and progress bar, is
written once, in :func:`run_steps`.

The step rules are documented once each, at the functions the samplers call:
:meth:`~scalemix.DDPMScheduler.step`, :meth:`~scalemix.DDPMScheduler.ddim_step`,
:meth:`~scalemix.DDPMScheduler.euler_step`, :meth:`~scalemix.DDPMScheduler.heun_step`
and :meth:`~scalemix.DDPMScheduler.dpmpp_2m_step` for a :class:`~scalemix.DDPMScheduler`
(their equations at the pure functions of :mod:`scalemix.solvers`), and
:func:`~scalemix.degradation.reverse_step` and :func:`~scalemix.degradation.ddim_step`
for a :class:`~scalemix.degradation.LinearDegradation`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

from . import solvers
from ._utils import progress_bar
from .degradation.ddim import ddim_step as degradation_ddim_step
from .degradation.posterior import ReverseMethod, reverse_step
from .degradation.protocol import LinearDegradation
from .scheduler import DDPMScheduler
from .types import SamplingState, StepOutput

__all__ = [
    "SAMPLERS",
    "Denoise",
    "Sampler",
    "SamplerName",
    "SamplerOptions",
    "Schedule",
    "run_steps",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_euler",
    "sample_heun",
]

#: The reverse-process update: ancestral DDPM and DDIM for every process; Euler, Heun and
#: DPM-Solver++ (2M, ODE and SDE) for a :class:`~scalemix.DDPMScheduler` only.
SamplerName = Literal["ddpm", "ddim", "euler", "heun", "dpmpp_2m", "dpmpp_2m_sde"]

#: ``denoise(x, t, s)``: the model's prediction at ``(x, t)`` for the step ``t -> s``.
Denoise = Callable[[Tensor, int, int], Tensor]
#: ``step(x, t, s)``: one reverse step.
_Step = Callable[[Tensor, int, int], StepOutput]
Process = DDPMScheduler | LinearDegradation
#: The ``(t, s)`` pairs of a run: step from ``t`` to ``s`` (``-1``: clean data).
Schedule = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class SamplerOptions:
    """The settings a sampler may read; :func:`scalemix.sample` validates them.

    Attributes:
        eta: DDIM noise scale (``"ddim"``).
        threshold: dynamic thresholding of :math:`\\hat x_0` (``"dpmpp_2m"`` samplers).
        method: covariance root of the ancestral step of a linear degradation.
        clip_sample: clamp of :math:`\\hat x_0` for a linear degradation (``None``: none);
            a :class:`~scalemix.DDPMScheduler` clips as its own ``clip_sample`` says.
        generator: source of all noise of the steps.
        callback: called with a :class:`~scalemix.types.SamplingState` after every step.
        progress: show a tqdm progress bar.
    """

    eta: float = 0.0
    threshold: solvers.DynamicThreshold | None = None
    method: ReverseMethod = "exact"
    clip_sample: float | None = 1.0
    generator: torch.Generator | None = None
    callback: Callable[[SamplingState], None] | None = None
    progress: bool = False


class Sampler(Protocol):
    """The one signature of every sampler of this module."""

    def __call__(
        self,
        denoise: Denoise,
        process: Process,
        x: Tensor,
        schedule: Schedule,
        opts: SamplerOptions,
    ) -> Tensor: ...


def run_steps(x: Tensor, schedule: Schedule, step: _Step, opts: SamplerOptions) -> Tensor:
    """The loop every sampler shares: ``x <- step(x, t, s).prev_sample`` over ``schedule``,
    with ``opts.callback`` after every step and ``opts.progress``'s bar.

    Args:
        x: the state at the first timestep, ``(b, ...)``.
        schedule: the ``(t, s)`` pairs, ``t`` strictly decreasing, ``s < t`` (or
            ``s == t`` for a final step that returns the state itself).
        step: one reverse step.
        opts: the run's options.

    Returns:
        The state after the last step.
    """
    n = len(schedule)
    for i in progress_bar(range(n), enabled=opts.progress, total=n, desc="sampling"):
        t, s = schedule[i]
        out = step(x, t, s)
        if opts.callback is not None:
            opts.callback(SamplingState(i, t, x, out.pred_original_sample, out.prev_sample))
        x = out.prev_sample
    return x


def _degradation_step(
    denoise: Denoise, opts: SamplerOptions, rule: Callable[[Tensor, int, Tensor, int], StepOutput]
) -> _Step:
    """A linear degradation's step: ``rule(x0_hat, t, x_t, s)``, or for ``s == t`` (the
    reference's final step) the state itself with the clipped :math:`\\hat x_0`."""

    def step(x: Tensor, t: int, s: int) -> StepOutput:
        x0 = denoise(x, t, s)
        if s == t:
            clip = opts.clip_sample
            return StepOutput(x, x0 if clip is None else x0.clamp(-clip, clip))
        return rule(x0, t, x, s)

    return step


def _gaussian(process: Process, name: str) -> DDPMScheduler:
    if not isinstance(process, DDPMScheduler):
        raise ValueError(
            f"sampler={name!r} needs a DDPMScheduler; a {type(process).__name__} samples "
            "with sampler='ddpm' or 'ddim'"
        )
    return process


def sample_ddpm(
    denoise: Denoise, process: Process, x: Tensor, schedule: Schedule, opts: SamplerOptions
) -> Tensor:
    """Ancestral sampling (Ho et al., 2020, Algorithm 2): :meth:`DDPMScheduler.step
    <scalemix.DDPMScheduler.step>`, or :func:`~scalemix.degradation.reverse_step` (with
    ``opts.method``) through a linear degradation. See the module docstring for the
    signature."""
    gen = opts.generator
    if isinstance(process, DDPMScheduler):
        scheduler = process

        def step(x: Tensor, t: int, s: int) -> StepOutput:
            return scheduler.step(denoise(x, t, s), t, x, prev_t=s, generator=gen)

        return run_steps(x, schedule, step, opts)
    deg = process

    def rule(x0: Tensor, t: int, x: Tensor, s: int) -> StepOutput:
        clip = opts.clip_sample
        return reverse_step(
            deg, x0, t, x, prev_t=s, method=opts.method, generator=gen, clip_sample=clip
        )

    return run_steps(x, schedule, _degradation_step(denoise, opts, rule), opts)


def sample_ddim(
    denoise: Denoise, process: Process, x: Tensor, schedule: Schedule, opts: SamplerOptions
) -> Tensor:
    """DDIM (Song et al., 2021) with ``opts.eta``: :meth:`DDPMScheduler.ddim_step
    <scalemix.DDPMScheduler.ddim_step>`, or :func:`~scalemix.degradation.ddim_step`
    through a linear degradation (``eta = 1`` is then :func:`sample_ddpm` with the exact
    root, for the same seed)."""
    eta, gen = opts.eta, opts.generator
    if isinstance(process, DDPMScheduler):
        scheduler = process

        def step(x: Tensor, t: int, s: int) -> StepOutput:
            return scheduler.ddim_step(denoise(x, t, s), t, x, prev_t=s, eta=eta, generator=gen)

        return run_steps(x, schedule, step, opts)
    deg = process

    def rule(x0: Tensor, t: int, x: Tensor, s: int) -> StepOutput:
        clip = opts.clip_sample
        return degradation_ddim_step(
            deg, x0, t, x, prev_t=s, eta=eta, generator=gen, clip_sample=clip
        )

    return run_steps(x, schedule, _degradation_step(denoise, opts, rule), opts)


def sample_euler(
    denoise: Denoise, process: Process, x: Tensor, schedule: Schedule, opts: SamplerOptions
) -> Tensor:
    """Euler in the noise level of Karras et al. (2022): :meth:`DDPMScheduler.euler_step
    <scalemix.DDPMScheduler.euler_step>` (a :class:`~scalemix.DDPMScheduler` only)."""
    scheduler = _gaussian(process, "euler")

    def step(x: Tensor, t: int, s: int) -> StepOutput:
        return scheduler.euler_step(denoise(x, t, s), t, x, prev_t=s)

    return run_steps(x, schedule, step, opts)


def sample_heun(
    denoise: Denoise, process: Process, x: Tensor, schedule: Schedule, opts: SamplerOptions
) -> Tensor:
    """Heun's method of Karras et al. (2022), Algorithm 1: an Euler step, then (unless it
    lands on clean data) :meth:`DDPMScheduler.heun_step
    <scalemix.DDPMScheduler.heun_step>` with a second model call at the Euler point;
    ``2 n - 1`` model calls for ``n`` steps."""
    scheduler = _gaussian(process, "heun")

    def step(x: Tensor, t: int, s: int) -> StepOutput:
        out = denoise(x, t, s)
        euler = scheduler.euler_step(out, t, x, prev_t=s)
        if s < 0:
            return euler
        x_e = euler.prev_sample
        return scheduler.heun_step(
            out, t, x, prev_t=s, euler_sample=x_e, euler_model_output=denoise(x_e, s, s)
        )

    return run_steps(x, schedule, step, opts)


def _dpmpp(
    denoise: Denoise,
    process: Process,
    x: Tensor,
    schedule: Schedule,
    opts: SamplerOptions,
    sde: bool,
) -> Tensor:
    scheduler = _gaussian(process, "dpmpp_2m_sde" if sde else "dpmpp_2m")
    last: list[tuple[Tensor, int]] = []  # the previous step's x0_hat and t

    def step(x: Tensor, t: int, s: int) -> StepOutput:
        out = scheduler.dpmpp_2m_step(
            denoise(x, t, s),
            t,
            x,
            prev_t=s,
            last_x0=last[0][0] if last else None,
            last_t=last[0][1] if last else None,
            threshold=opts.threshold,
            sde=sde,
            generator=opts.generator,
        )
        last[:] = [(out.pred_original_sample, t)]
        return out

    return run_steps(x, schedule, step, opts)


def sample_dpmpp_2m(
    denoise: Denoise, process: Process, x: Tensor, schedule: Schedule, opts: SamplerOptions
) -> Tensor:
    """The multistep DPM-Solver++ (2M) of Lu et al. (2022): :meth:`DDPMScheduler.dpmpp_2m_step
    <scalemix.DDPMScheduler.dpmpp_2m_step>`, first order on the first and on the last step
    (which returns the model's :math:`\\hat x_0`); ``opts.threshold`` applies."""
    return _dpmpp(denoise, process, x, schedule, opts, sde=False)


def sample_dpmpp_2m_sde(
    denoise: Denoise, process: Process, x: Tensor, schedule: Schedule, opts: SamplerOptions
) -> Tensor:
    """The SDE-DPM-Solver++ (2M): ``dpmpp_2m_step(..., sde=True)``, second-order
    ancestral sampling that converges to the samples of :func:`sample_ddpm` in fewer
    steps."""
    return _dpmpp(denoise, process, x, schedule, opts, sde=True)


#: The lookup :func:`scalemix.sample` uses: sampler name -> sampler function.
SAMPLERS: dict[str, Sampler] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
}
