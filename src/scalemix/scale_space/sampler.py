r"""Ancestral sampling for Scale Space Diffusion and any linear degradation.

Starting from :math:`x_{t_0} \sim \mathcal N(0, I)` at the smallest resolution, each
step asks the model for :math:`\hat x_0` at the resolution of the next kept timestep
``s`` (the next pyramid size at a resolution change) and draws
:math:`x_s \sim q(x_s \mid x_t, \hat x_0)` with
:func:`scalemix.degradation.reverse_step`. By default (``final_step="x0_prediction"``)
the last step returns the posterior mean at ``s = -1``, i.e. the (clipped)
:math:`\hat x_0` at full resolution (Mukhopadhyay et al., 2026, Algorithm 2); with
``final_step="reference"`` it returns the state at the last kept timestep itself, as the
reference code does. With one pyramid level this is exactly DDPM ancestral sampling
with an :math:`x_0`-parameterised model (Ho et al., 2020, Algorithm 2).

``sampler="ddim"`` replaces the ancestral step by
:func:`scalemix.degradation.ddim_step`, the DDIM family of the same posterior
(deterministic at ``eta = 0`` except for the frequencies a resolution change adds,
exactly the ancestral step at ``eta = 1``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from .._utils import check_choice, check_finite, check_steps, progress_bar, randn
from .._validation import check_model_dtype, shared_timesteps
from ..degradation.ddim import _check_eta, _supports_ddim, ddim_step
from ..degradation.posterior import ReverseMethod, reverse_step
from ..degradation.protocol import LinearDegradation
from ..degradation.respacing import Spacing, respaced_timesteps
from ..types import SamplingState
from .denoiser import ScaleSpaceDenoiser

__all__ = ["FinalStep", "ScaleSpaceSamplerName", "scale_space_sample"]

FinalStep = Literal["x0_prediction", "reference"]
#: the reverse step of :func:`scale_space_sample`
ScaleSpaceSamplerName = Literal["ancestral", "ddim"]


def _model_channels(model: object) -> int | None:
    """``model.in_channels`` (or that of a wrapped ``model.module``) when it is an int."""
    for m in (model, getattr(model, "module", None)):
        c = getattr(m, "in_channels", None)
        if isinstance(c, int) and not isinstance(c, bool):
            return c
    return None


def _out_size(shape: tuple[int, ...]) -> int:
    if len(shape) == 0:
        raise ValueError("the degradation's states need at least one spatial dimension")
    return int(shape[-1])


@torch.no_grad()
def scale_space_sample(
    model: ScaleSpaceDenoiser,
    degradation: LinearDegradation,
    batch_size: int,
    *,
    channels: int | None = None,
    steps: int | None = None,
    sampler: ScaleSpaceSamplerName = "ancestral",
    eta: float = 0.0,
    method: ReverseMethod = "exact",
    clip_sample: float | None = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[SamplingState], None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    x_T: Tensor | None = None,
    upsample_top_level: bool = False,
    final_step: FinalStep = "x0_prediction",
    spacing: Spacing = "trailing",
) -> Tensor:
    r"""Draw samples through the resolution pyramid (ancestral, or the DDIM family).

    The timesteps are :func:`~scalemix.degradation.respaced_timesteps` (every
    resolution change kept, so one step crosses at most one change). Step ``i`` calls
    ``model(x_t, t, out_size=r(s))`` with ``t = ts[i]`` and ``s = ts[i + 1]`` (``-1``
    after the last), then :func:`~scalemix.degradation.reverse_step` (``sampler=
    "ancestral"``) or :func:`~scalemix.degradation.ddim_step` (``sampler="ddim"``).
    Noise is drawn from ``generator`` in a fixed order: :math:`x_{t_0}` first, then one
    :math:`\xi` per step except the last (``"ddim"``: per step that needs noise, i.e.
    every one for ``eta > 0``, and at ``eta = 0`` only those whose operator
    :math:`D_{s+1:t}` is not the identity: resolution changes, every blur step). So
    ``sampler="ddim", eta=1.0`` gives the ancestral samples of ``method="exact"``
    for the same seed, to rounding.

    The reference code's conventions are options (see the page "Differences from the
    reference implementation"): ``final_step="reference"``, ``upsample_top_level=True``
    and ``spacing="even"`` together reproduce its sampler.

    Args:
        model: a :class:`ScaleSpaceDenoiser`.
        degradation: the forward process the model was trained on, e.g. a
            :class:`~scalemix.degradation.ScaleSpaceDegradation`.
        batch_size: number of samples ``b``.
        channels: image channels ``c``; default: ``x_T``'s, else the model's
            ``in_channels`` (also through a wrapper's ``.module``, e.g.
            :class:`~torch.optim.swa_utils.AveragedModel`), else 3.
        steps: number of base inference steps (``None``: every timestep); change steps
            are added to it.
        spacing: the base grid of a respaced run: ``"trailing"`` (scalemix's default)
            or ``"even"`` (the reference's: guided-diffusion's ``space_timesteps``,
            ``round(j (T-1)/(k-1))``, which keeps ``T - 1`` and 0), plus every change
            step either way; see :func:`~scalemix.degradation.respaced_timesteps`.
        sampler: ``"ancestral"`` (the exact posterior, default) or ``"ddim"`` (the
            DDIM family of :func:`~scalemix.degradation.ddim_step`; needs a degradation
            with a closed-form ``gram_spectrum``, e.g.
            :class:`~scalemix.degradation.ScaleSpaceDegradation`,
            :class:`~scalemix.degradation.BlurDegradation`, or a
            :class:`~scalemix.degradation.GaussianDegradation`).
        eta: noise scale of ``sampler="ddim"``, in ``[0, 1]`` (0: deterministic except
            where a step adds frequencies; 1: ancestral).
        method: covariance root of the ancestral step: ``"exact"`` (closed form),
            ``"lanczos"`` (generic) or ``"isotropic"`` (shortcut, for comparison).
        clip_sample: clamp :math:`\hat x_0` to ``[-clip_sample, clip_sample]``
            (``None``: no clamp). The paper clamps to ``[-1, 1]``.
        generator: source of all noise; same seed, same samples.
        progress: show a tqdm progress bar (needs ``scalemix[examples]``).
        callback: called after every step with a :class:`~scalemix.sampling.SamplingState`
            ``(index, t, x_t, pred_original_sample, prev_sample)``; shapes change with
            the resolution.
        device: device of the samples (default: the generator's device, else CPU).
        dtype: dtype of the samples and of the model's input. With float16 or
            bfloat16 the model runs in that dtype while the state and the reverse
            steps (resize, closed-form root) are kept in float32; the callback sees
            float32 states.
        x_T: optional starting noise of shape ``(b, c, *spatial_shape(T - 1))``.
        upsample_top_level: the reference implementation's variant: on the step into
            full resolution, upsample :math:`x_t` bilinearly to full size and ask the
            model for a resolution-preserving prediction, ``model(up(x_t), t,
            out_size=image_size)``. The posterior still uses the original :math:`x_t`.
            scalemix's default is ``False``; the reference always does it (``True``).
            Train with the same flag (:func:`~scalemix.scale_space.scale_space_loss`).
        final_step: ``"x0_prediction"`` (scalemix's default): the last step goes to
            ``s = -1`` and returns the clipped :math:`\hat x_0`. ``"reference"``: the
            reference's step from ``t`` to ``max(t - 1, 0)``, so the last kept step
            (``t = 0`` with ``spacing="even"``) goes from ``t`` to ``t`` and returns
            :math:`x_t` itself, with its remaining noise (std
            :math:`\sqrt{1-\bar\alpha_0} \approx 0.01`); the model is still called on
            that step, as in the reference, and its prediction only reaches ``callback``.

    Returns:
        Samples of shape ``(b, c, *spatial_shape(-1))``.

    Raises:
        ValueError: bad sizes, a model output of the wrong shape, non-finite values in
            ``x_T`` or in the samples (checked once, at the end: the model returned
            them or the state overflowed), an unknown ``final_step``, ``spacing`` or
            ``sampler``, ``eta`` outside
            ``[0, 1]`` or given to ``sampler="ancestral"``, a ``method`` other than
            ``"exact"`` with ``sampler="ddim"``, or ``final_step="reference"`` with a
            last kept timestep below full resolution.
        TypeError: ``dtype`` differs from the floating dtype of the model's parameters,
            or ``sampler="ddim"`` on a degradation without a closed-form spectrum.
    """
    check_choice("final_step", final_step, get_args(FinalStep))
    check_choice("sampler", sampler, get_args(ScaleSpaceSamplerName))
    if sampler == "ancestral":
        if eta != 0.0:
            raise ValueError("eta only applies to sampler='ddim'; use sampler='ddim' with eta")
    else:
        _check_eta(eta)
        check_choice("method", method, get_args(ReverseMethod))
        if method != "exact":
            raise ValueError(
                f"method={method!r} chooses the ancestral step's covariance root; "
                "sampler='ddim' has its own closed form (leave method='exact')"
            )
        if not _supports_ddim(degradation):
            raise TypeError(
                f"sampler='ddim' needs the spectrum of D^T D in closed form (a "
                f"gram_spectrum method), which {type(degradation).__name__} does not "
                "provide; use sampler='ancestral' with method='lanczos'"
            )
    if channels is None:
        inferred = _model_channels(model)
        channels = int(x_T.shape[1]) if x_T is not None and x_T.ndim > 1 else inferred or 3
    for name, value in (("batch_size", batch_size), ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    check_steps(steps, degradation.num_train_timesteps)
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    if isinstance(model, torch.nn.Module):
        check_model_dtype(model, dtype)
    ts = [int(v) for v in respaced_timesteps(degradation, steps, spacing).tolist()]
    full_shape = degradation.spatial_shape(-1)
    if final_step == "reference" and degradation.spatial_shape(ts[-1]) != full_shape:
        raise ValueError(
            f"final_step='reference' returns the state at the last kept timestep {ts[-1]}, "
            f"whose shape {degradation.spatial_shape(ts[-1])} is not full size {full_shape}; "
            "use spacing='even' (it keeps t=0) or more steps"
        )
    start_shape = (batch_size, channels, *degradation.spatial_shape(ts[0]))
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    if x_T is None:
        x = randn(start_shape, generator=generator, device=device, dtype=dtype).to(work)
    else:
        if tuple(x_T.shape) != start_shape:
            raise ValueError(f"x_T must have shape {start_shape}, got {tuple(x_T.shape)}")
        x = check_finite("x_T", x_T).to(device=device, dtype=dtype).to(work)
    # final_step="reference": the last step goes from t to t (s = max(t - 1, 0) at t = 0)
    targets = [*ts[1:], -1 if final_step == "x0_prediction" else ts[-1]]
    for i in progress_bar(range(len(ts)), enabled=progress, total=len(ts), desc="sampling"):
        t, s = ts[i], targets[i]
        s_shape = degradation.spatial_shape(s)
        t_batch = shared_timesteps(t, batch_size, x.device)
        model_in = x
        if upsample_top_level and s_shape == full_shape != tuple(x.shape[2:]):
            model_in = F.interpolate(x, size=s_shape, mode="bilinear", align_corners=False)
        x0_pred = model(model_in.to(dtype), t_batch, out_size=_out_size(s_shape))
        expected = (batch_size, channels, *s_shape)
        if not isinstance(x0_pred, Tensor) or tuple(x0_pred.shape) != expected:
            got = tuple(x0_pred.shape) if isinstance(x0_pred, Tensor) else type(x0_pred)
            raise ValueError(f"the model returned {got} at t={t}; expected shape {expected}")
        if s == t:  # the reference's last step: mean x_t, covariance 0
            pred = x0_pred.to(dtype=x.dtype)
            if clip_sample is not None:
                pred = pred.clamp(-clip_sample, clip_sample)
            if callback is not None:
                callback(SamplingState(i, t, x, pred, x))
            break
        if sampler == "ddim":
            out = ddim_step(
                degradation,
                x0_pred.to(dtype=x.dtype),
                t,
                x,
                prev_t=s,
                eta=eta,
                generator=generator,
                clip_sample=clip_sample,
            )
        else:
            out = reverse_step(
                degradation,
                x0_pred.to(dtype=x.dtype),
                t,
                x,
                prev_t=s,
                method=method,
                generator=generator,
                clip_sample=clip_sample,
            )
        if callback is not None:
            callback(SamplingState(i, t, x, out.pred_original_sample, out.prev_sample))
        x = out.prev_sample
    samples = x.to(dtype)
    if not bool(torch.isfinite(samples).all()):  # one host synchronisation per call
        raise ValueError(
            f"scale_space_sample() produced NaN or infinite values with the model "
            f"{type(model).__name__} (sampler={sampler!r}, dtype={dtype}); rerun the call "
            "inside `with scalemix.debug.check_values():` to raise at the first step whose "
            "model output or sample is not finite"
        )
    return samples
