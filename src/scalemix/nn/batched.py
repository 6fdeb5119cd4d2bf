r"""A stack of ``n`` independent linear layers evaluated with one batched matmul.

Several small networks of the same architecture (for instance the global and local
branches of a dual-scale denoiser) run as one computation: layer ``k`` of every
network is one slice of a weight tensor of shape ``(n, in, out)``, and

.. math:: Y_k = X_k W_k + b_k, \qquad k = 0, \dots, n - 1,

is a single :func:`torch.baddbmm` call instead of ``n`` separate ``nn.Linear`` calls.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from .._utils import check_choice

__all__ = ["StackedLayout", "StackedLinear"]

StackedLayout = Literal["in_out", "out_in"]


class StackedLinear(nn.Module):
    r"""``n`` linear layers :math:`Y_k = X_k W_k + b_k` with stacked parameters.

    Each slice is initialised like ``nn.Linear(in_features, out_features)``
    (weights and bias uniform in :math:`\pm 1/\sqrt{\text{in}}`).

    Args:
        num_stacks: ``n``, the number of independent layers.
        in_features: input size.
        out_features: output size.
        bias: whether to add a learned bias.
        layout: how ``weight`` is stored: ``"in_out"``, shape ``(n, in, out)`` (slice
            ``k`` is :math:`W_k`, the transpose of an ``nn.Linear.weight``), or
            ``"out_in"``, shape ``(n, out, in)`` (the ``nn.Linear`` convention). On CPUs
            ``"out_in"`` is much faster for very narrow outputs (e.g. ``out = 2``).

    Shape:
        ``(n, b, in) -> (n, b, out)``.

    Attributes:
        weight: ``(n, in, out)`` or ``(n, out, in)`` according to ``layout``.
        bias: ``(n, 1, out)`` or ``None``.
    """

    bias: nn.Parameter | None

    def __init__(
        self,
        num_stacks: int,
        in_features: int,
        out_features: int,
        bias: bool = True,
        layout: StackedLayout = "in_out",
    ) -> None:
        super().__init__()
        self.layout: StackedLayout = check_choice("layout", layout, get_args(StackedLayout))
        if min(num_stacks, in_features, out_features) < 1:
            raise ValueError(
                "num_stacks, in_features and out_features must be positive, got "
                f"{num_stacks}, {in_features}, {out_features}"
            )
        self.num_stacks = num_stacks
        self.in_features = in_features
        self.out_features = out_features
        shape = (in_features, out_features) if layout == "in_out" else (out_features, in_features)
        self.weight = nn.Parameter(torch.empty(num_stacks, *shape))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_stacks, 1, out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw every slice as ``nn.Linear`` does: uniform in :math:`\\pm 1/\\sqrt{in}`."""
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"num_stacks={self.num_stacks}, in_features={self.in_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}, "
            f"layout={self.layout!r}"
        )

    def matrices(self) -> Tensor:
        """The weights as ``(n, in, out)`` matrices :math:`W_k` (a view, no copy)."""
        return self.weight if self.layout == "in_out" else self.weight.transpose(1, 2)

    @torch.no_grad()
    def load_linear(self, index: int, linear: nn.Linear) -> None:
        """Copy an ``nn.Linear`` of matching size into slice ``index``."""
        if linear.weight.shape != (self.out_features, self.in_features):
            raise ValueError(
                f"expected a Linear({self.in_features}, {self.out_features}), got weight "
                f"shape {tuple(linear.weight.shape)}"
            )
        self.matrices()[index].copy_(linear.weight.t())
        if self.bias is not None:
            if linear.bias is None:
                raise ValueError("the stacked layer has a bias but the given Linear has none")
            self.bias[index, 0].copy_(linear.bias)

    @torch.no_grad()
    def to_linear(self, index: int) -> nn.Linear:
        """Return slice ``index`` as a new ``nn.Linear`` (a copy)."""
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        linear.weight.copy_(self.matrices()[index].t())
        if self.bias is not None and linear.bias is not None:
            linear.bias.copy_(self.bias[index, 0])
        return linear

    def forward(self, x: Tensor) -> Tensor:
        """Apply every layer to its slice of ``x``: ``(n, b, in) -> (n, b, out)``."""
        if x.ndim != 3 or x.shape[0] != self.num_stacks or x.shape[2] != self.in_features:
            raise ValueError(
                f"expected input of shape ({self.num_stacks}, b, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        if self.bias is None:
            return torch.bmm(x, self.matrices())
        return torch.baddbmm(self.bias, x, self.matrices())
