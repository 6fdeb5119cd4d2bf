r"""What the x0-at-the-next-step loss needs from a degradation, beyond the reverse step.

:func:`scalemix.scale_space.scale_space_loss` trains a model to predict
:math:`D_{0:t-1}(x_0)` from :math:`x_t = \sqrt{\bar\alpha_t} D_{0:t}(x_0) +
\sqrt{1-\bar\alpha_t}\,\epsilon`. Besides :class:`~scalemix.degradation.LinearDegradation`
it needs the marginal (``add_noise``), the target, the SNR and the steps where the
state's shape changes; :class:`~scalemix.degradation.ScaleSpaceDegradation` and
:class:`~scalemix.degradation.BlurDegradation` both provide them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["TrainableDegradation"]


@runtime_checkable
class TrainableDegradation(Protocol):
    """A degradation of square images that the Scale Space Diffusion loss can train on.

    Images are ``(b, c, image_size, image_size)``; ``t`` is an int or an int64 ``(b,)``
    tensor whose items share the state's shape at ``t`` and at ``t - 1``.
    """

    @property
    def image_size(self) -> int:
        """Side of the clean images."""
        ...

    @property
    def num_train_timesteps(self) -> int:
        """``T``."""
        ...

    @property
    def change_steps(self) -> tuple[int, ...]:
        """Ascending timesteps whose state shape differs from that of ``t - 1``."""
        ...

    def resolution(self, t: Tensor | int) -> int:
        """Side of the (square) state at a shared timestep ``t`` in ``[-1, T)``."""
        ...

    def snr(self, t: Tensor | int) -> Tensor:
        r""":math:`\bar\alpha_t / (1 - \bar\alpha_t)`, float64 of ``t``'s shape."""
        ...

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        r""":math:`x_t` from clean ``x0`` and noise of the state's shape at ``t``."""
        ...

    def target(self, x0: Tensor, t: Tensor | int) -> Tensor:
        r"""The training target :math:`D_{0:t-1}(x_0)`."""
        ...
