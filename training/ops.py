"""Elastic ops of OFA-MobileNetV3 (Cai et al., ICLR 2020, section 3.2) and their static twins.

Each elastic op holds one max-size weight and slices it at forward time; the active width comes
from the input (``x.size(1)``) or an explicit argument, never from a class-level switch. Module
and parameter names follow the official ``ofa`` package so that its state dicts load unchanged.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ofa_sdk.arch import make_divisible
from ofa_sdk.errors import ArchSpecError

__all__ = [
    "SE_REDUCTION",
    "build_act",
    "se_channels",
    "middle_channels",
    "DynamicConv2d",
    "DynamicDepthwiseConv2d",
    "DynamicBatchNorm2d",
    "DynamicSE",
    "DynamicLinear",
    "SqueezeExcite",
    "global_avg_pool",
]

#: SE bottleneck reduction of MobileNetV3 (the SE width is ``make_divisible(C // 4, 8)``).
SE_REDUCTION = 4


def build_act(name: str) -> nn.Module:
    """A native activation module: ``relu`` or ``h_swish``."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "h_swish":
        return nn.Hardswish()
    raise ArchSpecError(f"unknown activation {name!r}", field="act")


def se_channels(channels: int) -> int:
    """Width of the SE bottleneck for ``channels`` input channels."""
    return make_divisible(channels // SE_REDUCTION, 8)


def middle_channels(in_channels: int, expand_ratio: float) -> int:
    """Width of an inverted bottleneck with ``in_channels`` inputs and ``expand_ratio``."""
    return make_divisible(round(in_channels * expand_ratio), 8)


class _GlobalAvgPool(torch.autograd.Function):
    # The backward of x.mean((2, 3)) materialises an NCHW gradient even for a channels-last x;
    # every later elementwise backward then mixes memory formats and falls off the fast path
    # (~20x slower on CPU). Returning the broadcast view keeps the next op's layout.
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        return x.mean((2, 3), keepdim=True)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return (grad / (ctx.shape[2] * ctx.shape[3])).expand(ctx.shape)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """``x.mean((2, 3), keepdim=True)`` with a layout-preserving backward (for training)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _GlobalAvgPool.apply(x)
    return x.mean((2, 3), keepdim=True)


class DynamicConv2d(nn.Module):
    """A 1x1 (or fixed-kernel) conv whose in/out channels are prefixes of a max-size weight."""

    def __init__(self, max_in_channels: int, max_out_channels: int, kernel_size: int = 1,
                 stride: int = 1) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = nn.Conv2d(max_in_channels, max_out_channels, kernel_size, stride=stride,
                              bias=False)

    def active_weight(self, out_channels: int, in_channels: int) -> torch.Tensor:
        w = self.conv.weight
        if out_channels == w.size(0) and in_channels == w.size(1):
            return w
        return w[:out_channels, :in_channels]

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        out = self.conv.out_channels if out_channels is None else out_channels
        return F.conv2d(x, self.active_weight(out, x.size(1)), None, self.stride,
                        self.kernel_size // 2)


class DynamicDepthwiseConv2d(nn.Module):
    """Depthwise conv with elastic kernel size (section 3.2, "elastic kernel size").

    A smaller kernel is the centre of the next larger *transformed* kernel, multiplied per channel
    by a shared ``{k}to{k'}_matrix`` (k'^2 x k'^2, initialised to the identity); 7 -> 5 -> 3 is
    applied in sequence, as in the official package.
    """

    def __init__(self, max_channels: int, kernel_choices: tuple[int, ...] | list[int],
                 stride: int = 1) -> None:
        super().__init__()
        self.kernel_choices = tuple(sorted(set(int(k) for k in kernel_choices)))
        self.max_kernel = self.kernel_choices[-1]
        self.stride = stride
        self.conv = nn.Conv2d(max_channels, max_channels, self.max_kernel, stride=stride,
                              groups=max_channels, bias=False)
        for small, large in zip(self.kernel_choices[:-1], self.kernel_choices[1:]):
            self.register_parameter(f"{large}to{small}_matrix",
                                    nn.Parameter(torch.eye(small * small)))

    def transform_matrix(self, large: int, small: int) -> torch.Tensor:
        return getattr(self, f"{large}to{small}_matrix")

    def active_weight(self, channels: int, kernel_size: int) -> torch.Tensor:
        """The ``(channels, 1, k, k)`` weight of the active kernel, transforms applied."""
        if kernel_size not in self.kernel_choices:
            raise ArchSpecError(f"kernel size {kernel_size} is not one of {self.kernel_choices}",
                                field="kernel_sizes")
        w = self.conv.weight
        if channels != w.size(0):
            w = w[:channels]
        ks = self.kernel_choices
        for i in range(len(ks) - 1, ks.index(kernel_size), -1):
            src, tgt = ks[i], ks[i - 1]
            s = (src - tgt) // 2
            centre = w[:, :, s:s + tgt, s:s + tgt].reshape(channels, tgt * tgt)
            w = F.linear(centre, self.transform_matrix(src, tgt)).view(channels, 1, tgt, tgt)
        return w

    def forward(self, x: torch.Tensor, kernel_size: int | None = None) -> torch.Tensor:
        k = self.max_kernel if kernel_size is None else kernel_size
        c = x.size(1)
        return F.conv2d(x, self.active_weight(c, k), None, self.stride, k // 2, 1, c)


class DynamicBatchNorm2d(nn.Module):
    """BatchNorm over the first ``x.size(1)`` channels of a max-size ``nn.BatchNorm2d``.

    Running statistics of the active prefix are updated in place (they are views of the full
    buffers); ``momentum=None`` gives the cumulative average, as in ``nn.BatchNorm2d``.
    """

    def __init__(self, max_features: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(max_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        c = x.size(1)
        factor = 0.0
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        use_batch_stats = bn.training or bn.running_mean is None
        rm, rv, w, b = bn.running_mean, bn.running_var, bn.weight, bn.bias
        if c != bn.num_features:
            rm = None if rm is None else rm[:c]
            rv = None if rv is None else rv[:c]
            w, b = w[:c], b[:c]
        return F.batch_norm(x, rm, rv, w, b, use_batch_stats, factor, bn.eps)


class _SEFC(nn.Module):
    """The ``fc`` of an SE module: ``reduce`` and ``expand`` 1x1 convs (official key names)."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.expand = nn.Conv2d(mid, channels, 1, bias=True)


def _se_apply(x: torch.Tensor, w_r: torch.Tensor, b_r: torch.Tensor, w_e: torch.Tensor,
              b_e: torch.Tensor) -> torch.Tensor:
    # 1x1 convs on a 1x1 map are linear layers; F.linear skips the conv dispatch.
    y = global_avg_pool(x).flatten(1)
    y = F.relu(F.linear(y, w_r.flatten(1), b_r), inplace=True)
    y = F.hardsigmoid(F.linear(y, w_e.flatten(1), b_e), inplace=True)
    return x * y[:, :, None, None]


class SqueezeExcite(nn.Module):
    """Static squeeze-and-excitation (hard-sigmoid gate) with official key names."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = _SEFC(channels, se_channels(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Plain module calls (not _se_apply) so exporters and hooks see two 1x1 convs.
        y = F.relu(self.fc.reduce(x.mean((2, 3), keepdim=True)), inplace=True)
        return x * F.hardsigmoid(self.fc.expand(y), inplace=True)


class DynamicSE(nn.Module):
    """SE whose width follows the input channels; the bottleneck is ``make_divisible(C // 4)``."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        self.fc = _SEFC(max_channels, se_channels(max_channels))

    def active_weights(self, channels: int) -> tuple[torch.Tensor, ...]:
        fc = self.fc
        mid = se_channels(channels)
        return (fc.reduce.weight[:mid, :channels], fc.reduce.bias[:mid],
                fc.expand.weight[:channels, :mid], fc.expand.bias[:channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _se_apply(x, *self.active_weights(x.size(1)))


class DynamicLinear(nn.Linear):
    """``nn.Linear`` whose in/out features are prefixes of the max-size weight."""

    def active_weights(self, out_features: int, in_features: int
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        w, b = self.weight, self.bias
        if (out_features, in_features) != tuple(w.shape):
            w = w[:out_features, :in_features]
            b = None if b is None else b[:out_features]
        return w, b

    def forward(self, x: torch.Tensor, out_features: int | None = None) -> torch.Tensor:
        out = self.out_features if out_features is None else out_features
        return F.linear(x, *self.active_weights(out, x.size(-1)))


def sequential(**modules: nn.Module | None) -> nn.Sequential:
    """An ``nn.Sequential`` with named children (skipping ``None``), for official key names."""
    return nn.Sequential(OrderedDict((k, m) for k, m in modules.items() if m is not None))
