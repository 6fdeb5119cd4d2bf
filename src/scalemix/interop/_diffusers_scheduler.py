r"""Conversion between :class:`~scalemix.DDPMScheduler` and diffusers' scheduler configs.

A diffusers scheduler is a diffusion process (its betas, what the model predicts) plus
the settings of one solver. The conversion maps the process and the ancestral-step
options name for name:

* ``beta_schedule``: ``"linear"``, ``"scaled_linear"``, ``"squaredcos_cap_v2"`` and
  ``"sigmoid"`` are scalemix's ``"linear"``, ``"quadratic"``, ``"cosine"`` and
  ``"sigmoid"``; ``trained_betas`` is ``betas``;
* ``num_train_timesteps``, ``beta_start``, ``beta_end``, ``prediction_type`` (the same
  three names) and ``rescale_betas_zero_snr`` keep their names;
* ``variance_type``: ``"fixed_small"`` (and ``"fixed_small_log"``, the same step) and
  ``"fixed_large"``;
* ``clip_sample=True`` with ``clip_sample_range=r`` is ``clip_sample=r``;
* ``timestep_spacing`` is the ``spacing=`` of ``timesteps()`` and ``sample()``.

Options that change the computation and have no scalemix counterpart (``thresholding``,
``steps_offset``, ``set_alpha_to_one=False``, Karras or flow sigmas, learned variances,
the ``laplace`` schedule, ...) raise a :class:`ValueError` naming the option and value;
the settings that only configure one of diffusers' own solvers (``solver_order``,
``algorithm_type``, ...) are ignored, since scalemix samples with its own ``ddpm`` and
``ddim`` samplers.

No function here imports diffusers: a scheduler object is read through its ``config``
mapping. The conversions are written once, in ``scalemix._diffusers_config`` (which
does not import the scheduler either); this module names them and builds the
:class:`~scalemix.DDPMScheduler`.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._diffusers_config import scheduler_kwargs_from_diffusers
from .._diffusers_config import scheduler_to_diffusers_config as scheduler_to_diffusers_config
from .._diffusers_config import (
    timestep_spacing_from_diffusers as timestep_spacing_from_diffusers,
)
from ..scheduler import DDPMScheduler

__all__ = [
    "scheduler_from_diffusers",
    "scheduler_to_diffusers_config",
    "timestep_spacing_from_diffusers",
]


def scheduler_from_diffusers(
    scheduler_or_config: object, *, ignore: Iterable[str] = ()
) -> DDPMScheduler:
    r"""A :class:`~scalemix.DDPMScheduler` with the diffusion process of a diffusers scheduler.

    ``DDPMScheduler(**scalemix._diffusers_config.scheduler_kwargs_from_diffusers(...))``:
    accepts any diffusers noise scheduler built on betas (``DDPMScheduler``,
    ``DDIMScheduler``, ``DPMSolverMultistepScheduler``, ``EulerDiscreteScheduler``, ...)
    or its config dict (e.g. a loaded ``scheduler_config.json``). The betas, and so
    :math:`\bar\alpha_t` and the posterior variances, are the same up to diffusers'
    float32 tables (scalemix computes in float64); where the DDPM and DDIM steps of the
    two libraries differ is listed on the page "Coming from diffusers"; the mapping of
    the option names is in the module docstring. A key missing
    from a config dict takes diffusers' ``DDPMScheduler`` default, except
    ``clip_sample``: a config without it does not clip. ``timestep_spacing`` is not
    part of a scalemix scheduler; read it with :func:`timestep_spacing_from_diffusers`.
    :meth:`scalemix.DDPMScheduler.from_diffusers` is the same conversion.

    Args:
        scheduler_or_config: a diffusers scheduler or its config mapping.
        ignore: option names to drop before the conversion, e.g.
            ``ignore=("steps_offset", "set_alpha_to_one")`` to take over the schedule of
            a model whose sampler used those settings.

    Returns:
        A new :class:`~scalemix.DDPMScheduler`.

    Raises:
        ValueError: an option or value with no scalemix counterpart (named in the
            message), or values the scalemix constructor rejects.
        TypeError: neither a scheduler with a ``config`` mapping nor a mapping.
    """
    return DDPMScheduler(**scheduler_kwargs_from_diffusers(scheduler_or_config, ignore=ignore))
