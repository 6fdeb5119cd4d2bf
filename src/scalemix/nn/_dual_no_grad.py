"""The no-grad forward of :class:`~scalemix.nn.DualScaleDenoiser` through reused buffers."""

from __future__ import annotations

from typing import Protocol, cast

import torch
from torch import Tensor, nn

from .batched import StackedLinear
from .embedding import SinusoidalEmbedding

__all__ = ["forward_blocks", "trunk_no_grad"]


class _DualParts(Protocol):
    """What the no-grad forward reads of a ``DualScaleDenoiser``."""

    hidden_dim: int
    coord_embedding: SinusoidalEmbedding
    coord_layer: StackedLinear
    blocks: nn.ModuleList
    output_layer: StackedLinear


def forward_blocks(
    model: _DualParts, x: Tensor, up: Tensor, h_time: Tensor, inverse: Tensor | None, rows: int
) -> Tensor:
    """The no-grad outputs ``(2, b, d)``, computed in blocks of ``rows`` rows.

    ``h_time`` holds the ``(u, 2H)`` time part of the first layer of the ``u``
    distinct timesteps (spread to each block's rows by ``inverse``), or the time and
    class part of every item (``u = b``, ``inverse=None``). Every row sees the operations
    of the unblocked path in the same order, so the result equals it; two
    ``(2, rows, H)`` buffers serve every block and stay in the cache.
    """
    n_rows = h_time.shape[0]
    batch, block = x.shape[0], min(rows, x.shape[0])
    h_buffer = x.new_empty((2, block, model.hidden_dim))
    feature_buffer = torch.empty_like(h_buffer)
    outputs = []
    for start in range(0, batch, block):
        stop = min(start + block, batch)
        if inverse is not None:
            rows_time = h_time.index_select(0, inverse[start:stop])
        else:
            rows_time = h_time.expand(stop - start, -1) if n_rows == 1 else h_time[start:stop]
        t_global, t_local = rows_time.view(-1, 2, model.hidden_dim).unbind(1)
        features = trunk_no_grad(
            model,
            t_global,
            t_local,
            model.coord_embedding(x[start:stop]).flatten(1),
            model.coord_embedding(up[start:stop]).flatten(1),
            h_buffer[:, : stop - start],
            feature_buffer[:, : stop - start],
        )
        outputs.append(model.output_layer(features))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


def trunk_no_grad(
    model: _DualParts,
    t_global: Tensor,
    t_local: Tensor,
    coords_global: Tensor,
    coords_local: Tensor,
    h: Tensor,
    features: Tensor | None = None,
) -> Tensor:
    """The hidden layers without autograd, updating two ``(2, b, H)`` buffers in place.

    ``h`` (and ``features``, default a new one) are the ``(2, b, H)`` buffers; reusing
    them avoids allocating (and faulting in) fresh tensors for every layer.
    """
    w_global, w_local = model.coord_layer.matrices().unbind(0)
    torch.addmm(t_global, coords_global, w_global, out=h[0])
    torch.addmm(t_local, coords_local, w_local, out=h[1])
    if features is None:
        features = torch.empty_like(h)
    for module in model.blocks:
        block = cast(StackedLinear, module)
        torch.clamp_min(h, 0.0, out=features)
        h.baddbmm_(features, block.matrices())  # h += relu(h) W
        if block.bias is not None:
            h.add_(block.bias)
    return torch.clamp_min(h, 0.0, out=features)
