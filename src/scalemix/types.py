"""The types every part of scalemix shares: step results, posteriors, sampler states and
the denoiser call signatures.

This module imports nothing of scalemix, so the scheduler, the degradations, the
samplers, the losses and the networks all depend on it and never on each other for
these names.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from torch import Tensor

__all__ = [
    "ConditionalDenoiser",
    "Denoiser",
    "Posterior",
    "SamplingState",
    "ScaleSpaceDenoiser",
    "StepOutput",
]


class StepOutput(NamedTuple):
    """Result of one reverse step :math:`x_t \\to x_s`.

    Attributes:
        prev_sample: :math:`x_{s}` for the target timestep ``s < t``, shape ``(b, ...)``
            (at the resolution of ``s`` for a resolution-changing process).
        pred_original_sample: the model's :math:`\\hat x_0` (clipped where the step
            clips), at the resolution the step used it.
    """

    prev_sample: Tensor
    pred_original_sample: Tensor


class Posterior(NamedTuple):
    r"""Mean and variance of the Gaussian :math:`q(x_{s} \mid x_t, x_0)`.

    Attributes:
        mean: shape of ``x_t``.
        variance: shape ``(b, 1, ..., 1)`` (broadcasts against ``x_t``).
        log_variance: :math:`\log \max(\text{variance}, 10^{-20})`, same shape.
    """

    mean: Tensor
    variance: Tensor
    log_variance: Tensor


class SamplingState(NamedTuple):
    """What a sampling callback sees after each step.

    Attributes:
        step: step number, ``0 .. n-1``.
        t: the timestep just denoised.
        x_t: the sample at ``t``, shape ``(b, ...)``.
        pred_original_sample: the model's :math:`\\hat x_0` at ``t``, shape ``(b, ...)``
            (at the resolution of the next timestep for a resolution-changing process).
        prev_sample: the new sample at the next timestep, shape ``(b, ...)``.
    """

    step: int
    t: int
    x_t: Tensor
    pred_original_sample: Tensor
    prev_sample: Tensor


class Denoiser(Protocol):
    """Anything that maps a noisy batch and its timesteps to a prediction.

    ``model(x, t)`` with ``x`` of shape ``(b, ...)`` and ``t`` int64 of shape ``(b,)``
    (the samplers pass one timestep for the whole batch as an expanded view, stride 0)
    returns a tensor of the shape of ``x`` (noise, ``x0`` or ``v``, as the scheduler's
    ``prediction_type`` says). Every ``torch.nn.Module`` with that forward qualifies.
    Conditioning comes as keyword arguments, ``model(x, t, **model_kwargs)``, which
    every sampler, loss and trainer passes through (see :class:`ConditionalDenoiser`).
    """

    def __call__(self, x: Tensor, t: Tensor, /) -> Tensor: ...


class ConditionalDenoiser(Protocol):
    """A class-conditional denoiser: ``model(x, t, class_labels=y)``.

    ``class_labels`` is int64 of shape ``(b,)`` with values in ``[0, K]`` for a model of
    ``K`` classes, ``K`` being the learned null class (the unconditional model, which
    :class:`~scalemix.guidance.ClassifierFreeGuidance` uses as its guide); ``None``
    means the null class for every item. scalemix's networks built with
    ``num_classes=K`` qualify.
    """

    def __call__(
        self, x: Tensor, t: Tensor, /, *, class_labels: Tensor | None = None
    ) -> Tensor: ...


class ScaleSpaceDenoiser(Protocol):
    """A network that predicts clean images at the input or the next pyramid resolution.

    ``model(x, t, out_size=r)`` takes noisy images ``x`` of shape ``(b, c, r_in, r_in)``
    and int64 timesteps ``t`` of shape ``(b,)`` and returns the prediction of
    :math:`D_{0:t-1}(x_0)` with shape ``(b, c, out_size, out_size)``, where ``out_size``
    is ``r_in`` (resolution-preserving step) or the next larger pyramid size, e.g.
    ``2 * r_in`` for a halving pyramid or ``40`` for ``r_in = 28`` in ``64/40/28/20``
    (resolution-increasing step); ``None`` means ``r_in``.
    :class:`scalemix.nn.FlexiUNet` qualifies, and so does any ``torch.nn.Module`` or
    function with that signature; see the docs section "Your own network in the scale
    space" for the two ways to build one.
    """

    def __call__(self, x: Tensor, t: Tensor, /, out_size: int | None = None) -> Tensor: ...
