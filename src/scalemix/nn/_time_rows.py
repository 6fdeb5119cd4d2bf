"""Time-only work of a batched denoiser, once per distinct timestep where that is free."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["distinct_timesteps", "is_vmapped", "spread"]


def is_vmapped(t: Tensor) -> bool:
    """Whether ``t`` is a batched tensor of :func:`torch.vmap` (e.g. in ``train_ensemble``)."""
    return bool(torch._C._functorch.is_batchedtensor(t))


def distinct_timesteps(t: Tensor) -> tuple[Tensor, Tensor | None]:
    """The rows of ``t`` to compute time-only work for, and how to spread them back.

    * a broadcast timestep (stride 0, e.g. from a 0-d ``t`` or a sampler): one row;
    * a CPU tensor in eager mode: the distinct values and the inverse index
      (:func:`torch.unique` needs no device synchronisation there);
    * otherwise (an accelerator, under :func:`torch.compile` or :func:`torch.vmap`,
      where the data-dependent size of ``unique`` would synchronise, break the graph or
      fail): every row.
    """
    if is_vmapped(t):
        return t, None
    if t.shape[0] > 0 and t.stride(0) == 0:
        return t[:1], None
    if t.device.type == "cpu" and not torch.compiler.is_compiling():
        rows, inverse = torch.unique(t, return_inverse=True)
        return rows, inverse
    return t, None


def spread(values: Tensor, inverse: Tensor | None, batch: int) -> Tensor:
    """Rows of ``values`` (one per entry of ``distinct_timesteps``) for the whole batch."""
    if inverse is not None:
        # index_select, whose backward (index_add) is much faster than indexing's
        return values.index_select(0, inverse)
    return values.expand(batch, -1)
