r"""A generic dual-scale block: a global and a local branch mixed by a timestep gate.

"Adaptive Dual-Scale Denoising" (eq. 1): the global branch sees the input :math:`x`,
the local branch an upscaled copy :math:`u(x)`, and a gate mixes them,

.. math::
    d(x, t) = \alpha(t)\, g(x, t) + \big(1 - \alpha(t)\big)\, D\big(l(u(x), t)\big),

where :math:`D` brings the local output back to the shape of :math:`x` (the identity
for vectors; area downsampling by default for images).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .._utils import append_dims
from .._validation import model_timesteps
from .gate import TimestepGate
from .rescale import LearnedAffineUpscale

__all__ = ["DualScaleBlock"]


def _in_features(given: int | None, upscale: nn.Module, global_branch: nn.Module) -> int | None:
    """The feature size the block checks: ``given``, else read off the modules (or ``None``)."""
    dim = upscale.dim if isinstance(upscale, LearnedAffineUpscale) else None
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise ValueError(f"in_features must be a positive int or None, got {given!r}")
        if dim is not None and dim != given:
            raise ValueError(
                f"in_features={given} disagrees with the upscale's dim={dim} "
                "(LearnedAffineUpscale maps vectors of that size)"
            )
        return given
    if dim is not None:
        return dim
    for name in ("input_dim", "in_channels"):
        value = getattr(global_branch, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class DualScaleBlock(nn.Module):
    r"""Mix a global and a local branch with a timestep gate (see the module docstring).

    Both branches are any modules called as ``branch(x, t)``: a user can put an MLP, a
    UNet or a single convolution in either slot.

    Args:
        global_branch: :math:`g`, called on ``x``.
        local_branch: :math:`l`, called on ``upscale(x)``.
        gate: a two-branch :class:`TimestepGate`, or a float :math:`\alpha \in [0, 1]`
            for a fixed gate.
        upscale: :math:`u`, e.g. :class:`~scalemix.nn.LearnedAffineUpscale` (vectors),
            :class:`~scalemix.nn.ScaleUpscale` or
            :class:`~scalemix.nn.InterpolateUpscale` (images).
        downscale: :math:`D`, applied to the local output. ``None`` means: identity when
            the local output already has the shape of ``x``; otherwise, for images,
            area downsampling (adaptive average pooling) to the spatial size of ``x``.
        in_features: the size of ``x``'s dimension 1 (``d`` of vectors, ``c`` of
            images) that the block accepts. ``None`` reads it from a
            :class:`~scalemix.nn.LearnedAffineUpscale` (its ``dim``), else from the
            global branch's ``input_dim`` (:class:`~scalemix.nn.MLPDenoiser`) or
            ``in_channels`` (:class:`~scalemix.nn.FlexiUNet`) attribute; when none of
            these exists, the size is not checked.

    Shape:
        - ``x``: ``(b, d)`` vectors or ``(b, c, h, w)`` images; ``t``: ``(b,)`` (or 0-d).
        - output: shape of ``x`` (both branches must return the shape of their input).

    Raises:
        TypeError: if a branch or the upscale is not an ``nn.Module``.
        ValueError: if the gate does not have two branches, a fixed ``alpha`` lies
            outside ``[0, 1]``, ``in_features`` disagrees with the upscale's ``dim``, ``x``
            does not have ``in_features`` features, or the local output cannot be
            brought to the shape of ``x``.
    """

    def __init__(
        self,
        global_branch: nn.Module,
        local_branch: nn.Module,
        gate: TimestepGate | float,
        upscale: nn.Module,
        downscale: nn.Module | None = None,
        *,
        in_features: int | None = None,
    ) -> None:
        super().__init__()
        for name, module in (
            ("global_branch", global_branch),
            ("local_branch", local_branch),
            ("upscale", upscale),
        ):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(module).__name__}")
        if downscale is not None and not isinstance(downscale, nn.Module):
            raise TypeError(f"downscale must be an nn.Module or None, got {type(downscale)}")
        if isinstance(gate, TimestepGate):
            if gate.num_branches != 2:
                raise ValueError(f"the gate must have 2 branches, got {gate.num_branches}")
        else:
            gate = TimestepGate("fixed", value=gate)
        #: the size of dimension 1 of ``x`` that the block accepts, or ``None`` (unchecked)
        self.in_features: int | None = _in_features(in_features, upscale, global_branch)
        self.global_branch = global_branch
        self.local_branch = local_branch
        self.gate = gate
        self.upscale = upscale
        self.downscale = downscale

    @classmethod
    def for_vectors(
        cls, global_branch: nn.Module, local_branch: nn.Module, gate: TimestepGate | float, dim: int
    ) -> DualScaleBlock:
        """The published vector form: a :class:`LearnedAffineUpscale` of size ``dim``."""
        return cls(global_branch, local_branch, gate, LearnedAffineUpscale(dim), in_features=dim)

    def gate_weights(self, t: Tensor) -> Tensor:
        r"""``(b, 2)`` weights :math:`(\alpha(t), 1 - \alpha(t))` without running the branches."""
        weights: Tensor = self.gate(t)
        return weights

    def alpha(self, t: Tensor) -> Tensor:
        r""":math:`\alpha(t)`, shape ``(b,)``, without running the branches."""
        return self.gate.alpha(t)

    def _bring_back(self, local: Tensor, x: Tensor) -> Tensor:
        if self.downscale is not None:
            local = self.downscale(local)
        elif local.shape != x.shape and local.ndim == 4 and x.ndim == 4:
            local = F.adaptive_avg_pool2d(local, (x.shape[-2], x.shape[-1]))
        if local.shape != x.shape:
            raise ValueError(
                f"the local branch output has shape {tuple(local.shape)} after downscaling; "
                f"expected the input shape {tuple(x.shape)}"
            )
        return local

    def branches(self, x: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
        """Run both branches: returns ``(g, D(l), weights)``, shapes ``x``, ``x``, ``(b, 2)``."""
        if not isinstance(x, Tensor) or x.ndim < 2:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape (b, ...), got {got}")
        if self.in_features is not None and x.shape[1] != self.in_features:
            raise ValueError(
                f"x has {x.shape[1]} features (dimension 1 of shape {tuple(x.shape)}); this "
                f"DualScaleBlock expects in_features={self.in_features}"
            )
        t = model_timesteps(t, x.shape[0], x.device)
        weights = self.gate(t)
        g = self.global_branch(x, t)
        if g.shape != x.shape:
            raise ValueError(
                f"the global branch returned shape {tuple(g.shape)}, expected {tuple(x.shape)}"
            )
        local = self._bring_back(self.local_branch(self.upscale(x), t), x)
        return g, local, weights

    def forward(self, x: Tensor, t: Tensor | int) -> Tensor:
        r""":math:`\alpha(t) g(x, t) + (1 - \alpha(t)) D(l(u(x), t))`, shape of ``x``."""
        g, local, weights = self.branches(x, t)
        w_global = append_dims(weights[:, 0], x.ndim).to(g.dtype)
        w_local = append_dims(weights[:, 1], x.ndim).to(g.dtype)
        return w_global * g + w_local * local
