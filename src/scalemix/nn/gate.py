r"""Timestep-dependent mixing weights for a multi-branch denoiser.

A gate maps the timestep :math:`t` to weights :math:`w(t) \in \Delta^{n-1}` (non-negative,
summing to one) over ``n`` branches. For two branches (global, local) the first weight
is the paper's :math:`\alpha(t)` and the output is
:math:`\alpha(t)\, g + (1-\alpha(t))\, l` ("Adaptive Dual-Scale Denoising", eq. 1).

Modes:

* ``"fixed"``: constant weights, e.g. :math:`\alpha = 0.5` (the study's fixed variant).
* ``"learned"``: a learned constant, :math:`w = \operatorname{softmax}(\theta)`
  (for two branches :math:`\alpha = \sigma(\theta_0 - \theta_1)`), initialised at ``value``.
* ``"mlp"``: the published weight network on the time embedding,
  ``Linear(E, H) - ReLU - Linear(H, n) - softmax``.
* ``"deep"``: the later variant,
  ``Linear(E, H) - LeakyReLU(0.2) - Linear(H, H/2) - LeakyReLU(0.2) - Linear(H/2, n) - softmax``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from .._utils import check_choice
from .._validation import model_timesteps, timestep_batch
from .embedding import SinusoidalEmbedding

__all__ = ["GateMode", "TimestepGate"]

GateMode = Literal["fixed", "learned", "mlp", "deep"]


def _initial_weights(value: float | Sequence[float], num_branches: int) -> Tensor:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if num_branches != 2:
            raise ValueError(
                f"a scalar value sets alpha for two branches; with num_branches={num_branches} "
                "pass a sequence of that many weights"
            )
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {value}")
        weights = [float(value), 1.0 - float(value)]
    else:
        if isinstance(value, bool):
            raise TypeError("value must be a float or a sequence of floats, got a bool")
        weights = [float(v) for v in value]
        if len(weights) != num_branches:
            raise ValueError(f"expected {num_branches} weights, got {len(weights)}")
        if any(not 0.0 <= w <= 1.0 for w in weights) or not math.isclose(
            sum(weights), 1.0, abs_tol=1e-6
        ):
            raise ValueError(f"weights must lie in [0, 1] and sum to 1, got {weights}")
    return torch.tensor(weights, dtype=torch.float32)


class TimestepGate(nn.Module):
    r"""Mixing weights :math:`w(t)` over ``num_branches`` branches (see the module docstring).

    Args:
        mode: ``"fixed"``, ``"learned"``, ``"mlp"`` or ``"deep"``.
        value: for ``"fixed"`` and ``"learned"``: :math:`\alpha` (two branches; must lie
            in ``[0, 1]``, and in ``(0, 1)`` for ``"learned"``) or a sequence of
            ``num_branches`` weights summing to one. Ignored by the network modes.
        num_branches: ``n >= 2``.
        embedding_dim: size ``E`` of the sinusoidal time embedding the network modes read.
        hidden_dim: hidden width ``H`` of the network modes.
        time_scale: scale of the gate's own time embedding (used when no embedding is
            passed to :meth:`forward`).
        negative_slope: LeakyReLU slope of the ``"deep"`` mode.

    Shape:
        - ``t``: ``(b,)`` timesteps (integer or float); ``t_emb``: optional ``(b, E)``.
        - output: ``(b, n)`` weights, each row in the simplex.

    Raises:
        ValueError: unknown mode, weights outside ``[0, 1]`` or not summing to one,
            ``num_branches < 2``, non-positive widths.
    """

    fixed_weights: Tensor | None

    def __init__(
        self,
        mode: GateMode = "mlp",
        *,
        value: float | Sequence[float] = 0.5,
        num_branches: int = 2,
        embedding_dim: int = 128,
        hidden_dim: int = 256,
        time_scale: float = 1.0,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.mode: GateMode = check_choice("gate mode", mode, get_args(GateMode))
        if num_branches < 2:
            raise ValueError(f"num_branches must be >= 2, got {num_branches}")
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be positive, got {hidden_dim}")
        self.num_branches = num_branches
        self.embedding_dim = embedding_dim
        self.time_embedding = SinusoidalEmbedding(embedding_dim, time_scale)
        self.logits: nn.Parameter | None = None
        self.network: nn.Sequential | None = None
        self.register_buffer("fixed_weights", None)
        if mode == "fixed":
            self.register_buffer("fixed_weights", _initial_weights(value, num_branches))
        elif mode == "learned":
            init = _initial_weights(value, num_branches)
            if bool((init <= 0).any()):
                raise ValueError(
                    f"a learned gate needs weights strictly inside (0, 1), got {value}"
                )
            self.logits = nn.Parameter(init.log())
        elif mode == "mlp":
            self.network = nn.Sequential(
                nn.Linear(embedding_dim, hidden_dim),
                nn.ReLU(),
                nn.Linear(hidden_dim, num_branches),
            )
        elif mode == "deep":
            if hidden_dim < 2:
                raise ValueError(f"the deep gate needs hidden_dim >= 2, got {hidden_dim}")
            self.network = nn.Sequential(
                nn.Linear(embedding_dim, hidden_dim),
                nn.LeakyReLU(negative_slope),
                nn.Linear(hidden_dim, hidden_dim // 2),
                nn.LeakyReLU(negative_slope),
                nn.Linear(hidden_dim // 2, num_branches),
            )
        else:  # pragma: no cover - check_choice above rejects everything else
            raise ValueError(f"unknown gate mode {mode!r}; accepted: {get_args(GateMode)}")

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, num_branches={self.num_branches}"

    @property
    def is_time_dependent(self) -> bool:
        """Whether the weights depend on ``t`` (the ``"mlp"`` and ``"deep"`` modes)."""
        return self.network is not None

    def _device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return self.time_embedding.freqs.device

    def forward(self, t: Tensor | int, t_emb: Tensor | None = None) -> Tensor:
        r"""Mixing weights :math:`w(t)`, shape ``(b, n)``; rows sum to one.

        Args:
            t: timesteps of shape ``(b,)``, or a number / 0-d tensor (one timestep:
                ``b = 1``, or ``b`` of ``t_emb`` when given).
            t_emb: optional precomputed time embedding of shape ``(b, E)``, e.g. the
                denoiser's own, so the embedding is computed once per forward pass.
        """
        batch = t_emb.shape[0] if t_emb is not None and t_emb.ndim == 2 else timestep_batch(t)
        t = model_timesteps(t, batch, self._device())
        if self.network is not None:
            if t_emb is None:
                t_emb = self.time_embedding(t)
            elif t_emb.shape != (batch, self.embedding_dim):
                raise ValueError(
                    f"t_emb must have shape ({batch}, {self.embedding_dim}), "
                    f"got {tuple(t_emb.shape)}"
                )
            return torch.softmax(self.network(t_emb), dim=-1)
        if self.logits is not None:
            weights = torch.softmax(self.logits, dim=-1)
        elif self.fixed_weights is not None:
            weights = self.fixed_weights
        else:  # pragma: no cover - every mode sets one of the three
            raise RuntimeError("the gate has neither a network, logits nor fixed weights")
        dtype = t_emb.dtype if t_emb is not None else weights.dtype
        return weights.to(dtype).unsqueeze(0).expand(batch, -1)

    def weights(self, t: Tensor | int, t_emb: Tensor | None = None) -> Tensor:
        """Alias of :meth:`forward`: the ``(b, n)`` branch weights at timesteps ``t``."""
        weights: Tensor = self(t, t_emb)
        return weights

    def alpha(self, t: Tensor | int, t_emb: Tensor | None = None) -> Tensor:
        r"""The first (global) weight :math:`\alpha(t)`, shape ``(b,)``, in ``[0, 1]``."""
        weights: Tensor = self(t, t_emb)
        return weights[:, 0]
