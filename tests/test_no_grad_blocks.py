"""The no-grad forward of the 2D denoisers runs in row blocks and equals the plain one."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import scalemix.nn.mlp as mlp_module
from scalemix.nn import DualScaleDenoiser, MLPDenoiser

SMALL: dict[str, Any] = {"embedding_dim": 16, "hidden_dim": 32, "num_blocks": 2}


def _models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "baseline": MLPDenoiser(**SMALL),
        "fixed": DualScaleDenoiser.from_preset("fixed", **SMALL),
        "adaptive": DualScaleDenoiser.from_preset("adaptive", **SMALL),
    }


MODELS = _models()


@pytest.mark.parametrize("name", list(MODELS))
@given(batch=st.integers(1, 40), shared=st.booleans(), seed=st.integers(0, 2**16))
def test_blocked_no_grad_forward_equals_the_autograd_forward(
    name: str, batch: int, shared: bool, seed: int
) -> None:
    model = MODELS[name]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2, generator=g)
    t = (
        torch.full((1,), seed % 100).expand(batch)  # one timestep, as the samplers pass it
        if shared
        else torch.randint(0, 100, (batch,), generator=g)
    )
    with torch.enable_grad():
        reference = model(x, t).detach()  # the autograd path: never blocked
    old = mlp_module.NO_GRAD_BLOCK
    mlp_module.NO_GRAD_BLOCK = 7  # several blocks and a shorter last one
    try:
        with torch.no_grad():
            assert mlp_module.no_grad_block_rows(x) == (7 if batch > 7 else None)
            blocked = model(x, t)
    finally:
        mlp_module.NO_GRAD_BLOCK = old
    with torch.no_grad():
        plain = model(x, t)  # batch <= 40 < NO_GRAD_BLOCK: one block, the unblocked path
    assert blocked.shape == (batch, 2)
    # the same operations in the same order per row (exactly equal on MKL)
    torch.testing.assert_close(blocked, plain)
    # the dual model's no-grad trunk adds the bias after the residual: rounding only
    torch.testing.assert_close(blocked, reference)


def test_blocks_are_only_used_without_autograd_on_eager_cpu_batches() -> None:
    big = torch.zeros(mlp_module.NO_GRAD_BLOCK + 1, 2)
    with torch.no_grad():
        assert mlp_module.no_grad_block_rows(big) == mlp_module.NO_GRAD_BLOCK
        assert mlp_module.no_grad_block_rows(big[: mlp_module.NO_GRAD_BLOCK]) is None
    assert mlp_module.no_grad_block_rows(big) is None  # autograd on: never blocked
