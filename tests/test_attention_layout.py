"""AttentionBlock: the (b, h w, 3c) layout handed to the fused CPU attention kernel
computes the textbook multi-head attention, in either memory format."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from scalemix.nn.unet_blocks import AttentionBlock


def _reference(block: AttentionBlock, x: Tensor) -> Tensor:
    """``x + W_o softmax(Q K^T / sqrt(d)) V`` per head, written out."""
    b, c, h, w = x.shape
    n = block.num_heads
    qkv = block.qkv(block.norm(x)).reshape(b, 3, n, c // n, h * w)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # (b, n, d, hw)
    weights = torch.softmax(q.transpose(-1, -2) @ k / (c // n) ** 0.5, dim=-1)
    a = (v @ weights.transpose(-1, -2)).reshape(b, c, h, w)
    return x + block.proj(a)


@pytest.mark.parametrize("channels_last", [False, True])
def test_attention_block_matches_the_formula(channels_last: bool) -> None:
    torch.manual_seed(0)
    block = AttentionBlock(32, 2)
    torch.nn.init.normal_(block.proj.weight, std=0.2)  # zero-initialised otherwise
    x = torch.randn(3, 32, 8, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    out = block(x)
    ref = _reference(block, x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4)


def test_attention_block_under_bf16_autocast_stays_close() -> None:
    """bf16 keeps the strided layout (the unfused math, faster there): same formula."""
    torch.manual_seed(1)
    block = AttentionBlock(16, 2)
    torch.nn.init.normal_(block.proj.weight, std=0.2)
    x = torch.randn(2, 16, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x)
    torch.testing.assert_close(out.float(), _reference(block, x), rtol=0.05, atol=0.05)
