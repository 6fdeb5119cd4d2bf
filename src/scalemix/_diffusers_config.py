r"""Conversion of a diffusion process to and from diffusers' scheduler configs.

Each conversion is written once here, on the constructor arguments of
:class:`~scalemix.DDPMScheduler`; its ``from_diffusers`` and ``to_diffusers_config``,
:mod:`scalemix.interop` and :mod:`scalemix.hub` call these functions. This module
imports neither diffusers (a scheduler object is read through its ``config`` mapping)
nor the scheduler (it is read through :class:`DiffusionProcess`). The mapping of the
option names is in the docstring of :mod:`scalemix.interop`'s scheduler conversion.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol, get_args

import torch
from torch import Tensor

from ._schedule_match import match_schedule
from .schedules import alphas_cumprod_from_betas, check_betas

__all__ = [
    "BETA_SCHEDULE_NAMES",
    "DiffusersSpacing",
    "DiffusionProcess",
    "scheduler_kwargs_from_diffusers",
    "scheduler_to_diffusers_config",
    "timestep_spacing_from_diffusers",
]

#: the ``timestep_spacing`` values that diffusers and scalemix share (scalemix has more)
DiffusersSpacing = Literal["leading", "linspace", "trailing"]


class DiffusionProcess(Protocol):
    """What :func:`scheduler_to_diffusers_config` reads of a scheduler.

    :class:`~scalemix.DDPMScheduler` has these attributes; the protocol spares this
    module an import of the scheduler.

    Attributes:
        betas: the noise schedule, shape ``(T,)``.
        num_train_timesteps: ``T``.
        prediction_type: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        variance_type: ``"fixed_small"`` or ``"fixed_large"``.
        clip_sample: the range ``x0`` is clipped to, or ``None`` (no clipping).
    """

    @property
    def betas(self) -> Tensor: ...
    @property
    def num_train_timesteps(self) -> int: ...
    @property
    def prediction_type(self) -> str: ...
    @property
    def variance_type(self) -> str: ...
    @property
    def clip_sample(self) -> float | None: ...


#: diffusers' ``beta_schedule`` names and their scalemix counterparts.
BETA_SCHEDULE_NAMES: dict[str, str] = {
    "linear": "linear",
    "scaled_linear": "quadratic",
    "squaredcos_cap_v2": "cosine",
    "sigmoid": "sigmoid",
}
# "fixed_small_log" draws sqrt(max(var, 1e-20)) * z, the same step as "fixed_small".
_VARIANCE_TYPES = {
    None: "fixed_small",
    "fixed_small": "fixed_small",
    "fixed_small_log": "fixed_small",
    "fixed_large": "fixed_large",
}
# Values a key left out of a hand-written config takes: diffusers' DDPMScheduler
# defaults, except clip_sample (schedulers without the key, e.g. DPM-Solver, never clip).
_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "variance_type": "fixed_small",
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "rescale_betas_zero_snr": False,
    "timestep_spacing": "leading",
}
# Options that must keep the value given here: anything else changes the computation in
# a way scalemix's DDPMScheduler and samplers have no counterpart for.
_NEUTRAL: dict[str, tuple[Any, str]] = {
    "thresholding": (
        False,
        "scalemix's scheduler clips x0 to a fixed range only; sample(sampler='dpmpp_2m', "
        "threshold=scalemix.solvers.DynamicThreshold(ratio, max_value)) thresholds",
    ),
    "steps_offset": (0, "scalemix's timestep spacings have no offset"),
    "set_alpha_to_one": (True, "scalemix's last step always goes to clean data"),
    "timestep_type": ("discrete", "scalemix models take integer timesteps"),
    "shift_terminal": (None, "scalemix does not shift the terminal timestep"),
    "use_karras_sigmas": (False, "scalemix samples on the training timesteps"),
    "use_exponential_sigmas": (False, "scalemix samples on the training timesteps"),
    "use_beta_sigmas": (False, "scalemix samples on the training timesteps"),
    "use_lu_lambdas": (False, "scalemix samples on the training timesteps"),
    "use_flow_sigmas": (False, "scalemix is a Gaussian (DDPM) diffusion, not flow matching"),
    "use_dynamic_shifting": (False, "scalemix's schedules do not depend on the resolution"),
}
# Settings of diffusers' own solvers, or only read when a neutral option above is on.
_SOLVER_ONLY = frozenset(
    {
        "algorithm_type",
        "disable_corrector",
        "dynamic_thresholding_ratio",
        "euler_at_final",
        "final_sigmas_type",
        "flow_shift",
        "interpolation_type",
        "lambda_min_clipped",
        "lower_order_final",
        "original_inference_steps",
        "predict_x0",
        "sample_max_value",
        "sigma_max",
        "sigma_min",
        "skip_prk_steps",
        "solver_order",
        "solver_p",
        "solver_type",
        "time_shift_type",
        "timestep_scaling",
    }
)
_NAMES_BACK = {ours: theirs for theirs, ours in BETA_SCHEDULE_NAMES.items()}


def _config_of(scheduler_or_config: object) -> Mapping[str, Any]:
    """The config mapping of a diffusers scheduler (its ``.config``) or the mapping itself."""
    if isinstance(scheduler_or_config, Mapping):
        return scheduler_or_config
    config = getattr(scheduler_or_config, "config", None)
    if isinstance(config, Mapping):
        return config
    raise TypeError(
        "scheduler_or_config must be a diffusers scheduler (an object with a .config "
        f"mapping) or its config dict, got {type(scheduler_or_config).__name__}"
    )


def _checked_config(scheduler_or_config: object, ignore: Iterable[str]) -> dict[str, Any]:
    """Every key of the config validated; returns the mapped keys with defaults filled in."""
    config = _config_of(scheduler_or_config)
    if isinstance(ignore, str):
        raise TypeError(f"ignore must be an iterable of option names, got the string {ignore!r}")
    dropped = set(ignore)
    out = dict(_DEFAULTS)
    for key, value in config.items():
        if not isinstance(key, str):
            raise TypeError(f"config keys must be strings, got {key!r}")
        if key.startswith("_") or key in dropped or key in _SOLVER_ONLY:
            continue
        if key in _NEUTRAL:
            neutral, why = _NEUTRAL[key]
            if value != neutral:
                raise ValueError(
                    f"diffusers option {key}={value!r} has no scalemix counterpart ({why}); "
                    f"only {key}={neutral!r} converts. Pass ignore=({key!r},) to drop it."
                )
            continue
        if key not in _DEFAULTS:
            raise ValueError(
                f"unknown diffusers scheduler option {key}={value!r}; pass ignore=({key!r},) "
                "to convert without it"
            )
        out[key] = value
    return out


def timestep_spacing_from_diffusers(
    scheduler_or_config: object, *, ignore: Iterable[str] = ()
) -> DiffusersSpacing:
    """The ``spacing=`` of :func:`scalemix.sample` for a diffusers ``timestep_spacing``.

    diffusers keeps the spacing in the scheduler; scalemix passes it to
    :meth:`~scalemix.DDPMScheduler.timesteps` and :func:`~scalemix.sample`. The names are
    the same (``"leading"``, ``"linspace"``, ``"trailing"``); the ``"linspace"`` and
    ``"trailing"`` grids round exact halves up where diffusers rounds them to even, so
    the two can differ by one at a timestep that falls exactly on a half (see the page
    "Coming from diffusers").

    Args:
        scheduler_or_config: a diffusers scheduler or its config dict.
        ignore: option names to drop before the checks (as in
            :func:`scheduler_kwargs_from_diffusers`).

    Raises:
        ValueError: an unknown spacing, or an option without a scalemix counterpart
            (e.g. ``steps_offset != 0``).
    """
    spacing = _checked_config(scheduler_or_config, ignore)["timestep_spacing"]
    if spacing not in get_args(DiffusersSpacing):
        raise ValueError(
            f"diffusers option timestep_spacing={spacing!r} has no scalemix counterpart; "
            f"accepted: {', '.join(map(repr, get_args(DiffusersSpacing)))}"
        )
    result: DiffusersSpacing = spacing
    return result


def _zero_snr_preimage(betas: Tensor) -> Tensor:
    r"""Betas whose zero-terminal-SNR rescaling gives ``betas`` (whose last entry is 1).

    With :math:`a'_t = \sqrt{\bar\alpha'_t}` (so :math:`a'_{T-1} = 0`), the schedule
    :math:`a_t = a'_t / 2 + a'_0 / 2` has :math:`a_0 = a'_0` and :math:`a_{T-1} = a'_0/2`,
    and Algorithm 1 of Lin et al. (2024) maps it back to :math:`a'_t` exactly.
    Shapes: ``(T,)`` to ``(T,)``, float64.
    """
    a_rescaled = alphas_cumprod_from_betas(betas).clamp(min=0.0).sqrt()
    a = 0.5 * a_rescaled + 0.5 * a_rescaled[0]
    abar = a**2
    return 1.0 - torch.cat([abar[:1], abar[1:] / abar[:-1]])


def scheduler_kwargs_from_diffusers(
    scheduler_or_config: object, *, ignore: Iterable[str] = ()
) -> dict[str, Any]:
    r"""The arguments of ``DDPMScheduler(**kwargs)`` for the process of a diffusers scheduler.

    Accepts any diffusers noise scheduler built on betas (``DDPMScheduler``,
    ``DDIMScheduler``, ``DPMSolverMultistepScheduler``, ``EulerDiscreteScheduler``, ...)
    or its config dict (e.g. a loaded ``scheduler_config.json``). The betas, and so
    :math:`\bar\alpha_t = \prod_{s \le t}(1-\beta_s)` and the posterior variances, are
    the same up to diffusers' float32 tables (scalemix computes in float64). The mapping
    of the option names is on the page "Coming from diffusers". A key missing from a
    config dict takes diffusers' ``DDPMScheduler`` default, except ``clip_sample``: a
    config without it does not clip. ``timestep_spacing`` is checked but is no argument of the
    scheduler; read it with :func:`timestep_spacing_from_diffusers`.

    Args:
        scheduler_or_config: a diffusers scheduler or its config mapping.
        ignore: option names to drop before the conversion, e.g.
            ``("steps_offset", "set_alpha_to_one")`` to take over the schedule of a
            model whose sampler used those settings.

    Returns:
        ``num_train_timesteps``, ``prediction_type``, ``variance_type``,
        ``clip_sample``, ``rescale_betas_zero_snr`` and either ``betas`` (a float64
        tensor of shape ``(T,)``, from ``trained_betas``) or ``beta_schedule``,
        ``beta_start``, ``beta_end``.

    Raises:
        ValueError: an option or value with no scalemix counterpart (named in the
            message).
        TypeError: neither a scheduler with a ``config`` mapping nor a mapping, or
            ``ignore`` given as one string.
    """
    cfg = _checked_config(scheduler_or_config, ignore)
    timestep_spacing_from_diffusers(cfg)  # the spacing must convert too
    variance = cfg["variance_type"]
    if variance not in _VARIANCE_TYPES:
        raise ValueError(
            f"diffusers option variance_type={variance!r} has no scalemix counterpart; "
            "accepted: 'fixed_small', 'fixed_small_log', 'fixed_large' (scalemix models "
            "predict no variance)"
        )
    prediction = cfg["prediction_type"]
    if prediction not in ("epsilon", "sample", "v_prediction"):
        raise ValueError(
            f"diffusers option prediction_type={prediction!r} has no scalemix counterpart; "
            "accepted: 'epsilon', 'sample', 'v_prediction'"
        )
    clip = cfg["clip_sample"]
    if not isinstance(clip, bool):
        raise ValueError(f"diffusers option clip_sample must be a bool, got {clip!r}")
    num_t = cfg["num_train_timesteps"]
    kwargs: dict[str, Any] = {
        "num_train_timesteps": num_t,
        "prediction_type": prediction,
        "variance_type": _VARIANCE_TYPES[variance],
        "clip_sample": float(cfg["clip_sample_range"]) if clip else None,
        "rescale_betas_zero_snr": bool(cfg["rescale_betas_zero_snr"]),
    }
    trained = cfg["trained_betas"]
    if trained is not None:
        betas = torch.as_tensor(trained, dtype=torch.float64).reshape(-1)
        if betas.numel() != num_t:
            raise ValueError(
                f"diffusers option trained_betas has {betas.numel()} entries but "
                f"num_train_timesteps={num_t}"
            )
        checked = check_betas(betas, allow_terminal_one=True)
        if float(checked[-1]) == 1.0:  # already zero terminal SNR; rescaling keeps it
            checked, kwargs["rescale_betas_zero_snr"] = _zero_snr_preimage(checked), True
        return {**kwargs, "betas": checked}
    name = cfg["beta_schedule"]
    if name not in BETA_SCHEDULE_NAMES:
        raise ValueError(
            f"diffusers option beta_schedule={name!r} has no scalemix counterpart; "
            f"accepted: {', '.join(map(repr, BETA_SCHEDULE_NAMES))} or trained_betas"
        )
    return {
        **kwargs,
        "beta_schedule": BETA_SCHEDULE_NAMES[name],
        "beta_start": float(cfg["beta_start"]),
        "beta_end": float(cfg["beta_end"]),
    }


# ------------------------------------------------------------ scalemix -> diffusers
def scheduler_to_diffusers_config(
    scheduler: DiffusionProcess, spacing: str = "trailing"
) -> dict[str, object]:
    r"""The diffusers ``DDPMScheduler`` config of the same diffusion process.

    A scalemix scheduler keeps its betas, not the name of their schedule, so the
    schedule is recognised from the betas: linear, quadratic (diffusers'
    ``"scaled_linear"``), cosine (``"squaredcos_cap_v2"``) and sigmoid schedules,
    rescaled to zero terminal SNR or not, are written by name with their
    ``beta_start``/``beta_end`` (matched to a relative :math:`10^{-10}`, the range
    rounded to the fewest significant digits that still match); any other
    schedule is written as ``trained_betas``. Build the diffusers scheduler with
    ``diffusers.DDPMScheduler.from_config(config)`` (or ``DDIMScheduler``, ...).

    Args:
        scheduler: a :class:`~scalemix.DDPMScheduler` (anything with the attributes of
            ``DiffusionProcess``: ``betas``, ``num_train_timesteps``, ``prediction_type``,
            ``variance_type``, ``clip_sample``).
        spacing: the ``timestep_spacing`` to write, i.e. the ``spacing=`` you sample
            with in scalemix (its default, ``"trailing"``, here too).

    Returns:
        A plain dict of JSON-serialisable values (``trained_betas`` is a list of floats).

    Raises:
        ValueError: an unknown ``spacing``.
    """
    if spacing not in get_args(DiffusersSpacing):
        raise ValueError(
            f"spacing must be one of {', '.join(map(repr, get_args(DiffusersSpacing)))}, "
            f"got {spacing!r}"
        )
    betas = scheduler.betas
    found = match_schedule(betas)
    config: dict[str, object] = {"num_train_timesteps": scheduler.num_train_timesteps}
    if found is None:
        config.update(
            beta_start=1e-4,
            beta_end=0.02,
            beta_schedule="linear",
            trained_betas=[float(b) for b in betas.tolist()],
        )
        rescale = False  # the betas are written as they are, terminal 1 included
    else:
        name, start, end, rescale = found
        config.update(
            beta_start=start, beta_end=end, beta_schedule=_NAMES_BACK[name], trained_betas=None
        )
    clip = scheduler.clip_sample
    config.update(
        variance_type=scheduler.variance_type,
        clip_sample=clip is not None,
        clip_sample_range=1.0 if clip is None else float(clip),
        prediction_type=scheduler.prediction_type,
        thresholding=False,
        dynamic_thresholding_ratio=0.995,  # diffusers' defaults; read only when thresholding
        sample_max_value=1.0,
        timestep_spacing=spacing,
        steps_offset=0,
        rescale_betas_zero_snr=rescale,
    )
    return config
