"""The elastic OFA-MobileNetV3 supernet and its static subnets (Cai et al., ICLR 2020, section 3).

`OFAMobileNetV3` is built from an `ofa_sdk.arch.SearchSpace`; its state dict has the same keys and
shapes as the official ``ofa`` package's ``OFAMobileNetV3``, so official checkpoints load with
``strict=True``. `OFAMobileNetV3.extract` returns a `MobileNetV3Subnet` of plain torch modules
(whose keys match the official ``get_active_subnet()`` network).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ofa_sdk.arch import ArchSpec, SearchSpace
from ofa_sdk.errors import ArchSpecError
from ofa_sdk.training.ops import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicDepthwiseConv2d,
    DynamicSE,
    SqueezeExcite,
    build_act,
    global_avg_pool,
    middle_channels,
    sequential,
)

__all__ = [
    "OFAMobileNetV3",
    "MobileNetV3Subnet",
    "MBConv",
    "DynamicMBConv",
    "ResidualBlock",
    "ConvLayer",
    "convert_official_state_dict",
]

logger = logging.getLogger(__name__)


# ---- static layers -----------------------------------------------------------------------------

class ConvLayer(nn.Module):
    """Conv -> (BN) -> act; keys ``conv.weight``, ``bn.*`` as in the official ``ConvLayer``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 *, act: str = "h_swish", use_bn: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels) if use_bn else None
        self.act = build_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


class MBConv(nn.Module):
    """A static inverted-bottleneck block (1x1 expand, depthwise kxk, optional SE, 1x1 project)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 mid_channels: int, *, act: str, use_se: bool, expand: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.mid_channels = kernel_size, stride, mid_channels
        self.inverted_bottleneck = sequential(
            conv=nn.Conv2d(in_channels, mid_channels, 1, bias=False),
            bn=nn.BatchNorm2d(mid_channels),
            act=build_act(act),
        ) if expand else None
        self.depth_conv = sequential(
            conv=nn.Conv2d(mid_channels, mid_channels, kernel_size, stride, kernel_size // 2,
                           groups=mid_channels, bias=False),
            bn=nn.BatchNorm2d(mid_channels),
            act=build_act(act),
            se=SqueezeExcite(mid_channels) if use_se else None,
        )
        self.point_linear = sequential(
            conv=nn.Conv2d(mid_channels, out_channels, 1, bias=False),
            bn=nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


class ResidualBlock(nn.Module):
    """``conv(x) (+ x)``; the identity shortcut has no parameters, so it is just a flag here."""

    def __init__(self, conv: nn.Module, *, residual: bool) -> None:
        super().__init__()
        self.conv = conv
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y + x if self.residual else y


def _classifier(in_features: int, num_classes: int, dropout: float) -> nn.Sequential:
    return sequential(dropout=nn.Dropout(dropout) if dropout > 0 else None,
                      linear=nn.Linear(in_features, num_classes))


class MobileNetV3Subnet(nn.Module):
    """A plain (non-elastic) OFA-MobileNetV3 subnet, as returned by `OFAMobileNetV3.extract`.

    ``spec`` is the `ArchSpec` it was extracted for.
    """

    def __init__(self, first_conv: nn.Module, blocks: list[nn.Module],
                 final_expand_layer: nn.Module, feature_mix_layer: nn.Module,
                 classifier: nn.Module, *, spec: ArchSpec) -> None:
        super().__init__()
        self.first_conv = first_conv
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer = final_expand_layer
        self.feature_mix_layer = feature_mix_layer
        self.classifier = classifier
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        x = self.final_expand_layer(x)
        x = self.feature_mix_layer(x.mean((2, 3), keepdim=True))
        return self.classifier(torch.flatten(x, 1))


# ---- elastic block -----------------------------------------------------------------------------

def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d) -> None:
    n = dst.num_features
    dst.weight.copy_(src.weight[:n])
    dst.bias.copy_(src.bias[:n])
    dst.running_mean.copy_(src.running_mean[:n])
    dst.running_var.copy_(src.running_var[:n])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)
    dst.momentum, dst.eps = src.momentum, src.eps


def _permute_(tensor: torch.Tensor, dim: int, order: torch.Tensor) -> None:
    tensor.copy_(tensor.index_select(dim, order))


def _permute_bn_(bn: nn.BatchNorm2d, order: torch.Tensor) -> None:
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        _permute_(t, 0, order)


class DynamicMBConv(nn.Module):
    """An MBConv block with elastic kernel size and expand ratio (fixed in/out channels)."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_choices: tuple[int, ...],
                 expand_choices: tuple[int, ...], stride: int, act: str, use_se: bool) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_choices, self.expand_choices = tuple(kernel_choices), tuple(expand_choices)
        self.stride, self.act, self.use_se = stride, act, use_se
        max_mid = middle_channels(in_channels, max(expand_choices))
        self.inverted_bottleneck = sequential(
            conv=DynamicConv2d(in_channels, max_mid),
            bn=DynamicBatchNorm2d(max_mid),
            act=build_act(act),
        )
        self.depth_conv = sequential(
            conv=DynamicDepthwiseConv2d(max_mid, kernel_choices, stride),
            bn=DynamicBatchNorm2d(max_mid),
            act=build_act(act),
            se=DynamicSE(max_mid) if use_se else None,
        )
        self.point_linear = sequential(
            conv=DynamicConv2d(max_mid, out_channels),
            bn=DynamicBatchNorm2d(out_channels),
        )
        self.active_kernel = max(kernel_choices)
        self.active_expand = max(expand_choices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = middle_channels(x.size(1), self.active_expand)
        ib, dc, pl = self.inverted_bottleneck, self.depth_conv, self.point_linear
        x = ib.act(ib.bn(ib.conv(x, mid)))
        x = dc.act(dc.bn(dc.conv(x, self.active_kernel)))
        if self.use_se:
            x = dc.se(x)
        return pl.bn(pl.conv(x))

    @torch.no_grad()
    def extract(self, kernel_size: int, expand_ratio: int) -> MBConv:
        """A static `MBConv` equal to this block at ``(kernel_size, expand_ratio)``."""
        mid = middle_channels(self.in_channels, expand_ratio)
        ref = self.point_linear.conv.conv.weight
        out = MBConv(self.in_channels, self.out_channels, kernel_size, self.stride, mid,
                     act=self.act, use_se=self.use_se).to(device=ref.device, dtype=ref.dtype)
        ib, dc, pl = self.inverted_bottleneck, self.depth_conv, self.point_linear
        out.inverted_bottleneck.conv.weight.copy_(ib.conv.active_weight(mid, self.in_channels))
        _copy_bn(out.inverted_bottleneck.bn, ib.bn.bn)
        out.depth_conv.conv.weight.copy_(dc.conv.active_weight(mid, kernel_size))
        _copy_bn(out.depth_conv.bn, dc.bn.bn)
        if self.use_se:
            fc = out.depth_conv.se.fc
            dst = (fc.reduce.weight, fc.reduce.bias, fc.expand.weight, fc.expand.bias)
            for d, s in zip(dst, dc.se.active_weights(mid)):
                d.copy_(s)
        out.point_linear.conv.weight.copy_(pl.conv.active_weight(self.out_channels, mid))
        _copy_bn(out.point_linear.bn, pl.bn.bn)
        out.train(self.training)
        return out

    @torch.no_grad()
    def sort_channels(self, *, expand_stage: int = 0) -> None:
        """Reorder the middle channels by L1 norm of the point-linear weights, largest first.

        With ``expand_stage`` = s > 0, channels are only sorted within the groups bounded by the
        widths of the s next-smaller expand ratios, so already-trained narrow subnets keep their
        channels (the official ``re_organize_middle_weights(expand_ratio_stage=s)``).
        """
        pl_w = self.point_linear.conv.conv.weight
        importance = pl_w.abs().sum(dim=(0, 2, 3))
        order = torch.argsort(importance, descending=True, stable=True)
        if expand_stage > 0:
            widths = sorted({middle_channels(self.in_channels, e) for e in self.expand_choices},
                            reverse=True)
            bounds = widths[1:1 + expand_stage]
            pos = torch.arange(importance.numel(), device=importance.device)
            group = sum((pos >= b).long() for b in bounds)
            order = order[torch.argsort(group[order], stable=True)]
        _permute_(pl_w, 1, order)
        dc, ib = self.depth_conv, self.inverted_bottleneck
        _permute_(dc.conv.conv.weight, 0, order)
        _permute_bn_(dc.bn.bn, order)
        _permute_(ib.conv.conv.weight, 0, order)
        _permute_bn_(ib.bn.bn, order)
        if self.use_se:
            fc = dc.se.fc
            _permute_(fc.reduce.weight, 1, order)
            _permute_(fc.expand.weight, 0, order)
            _permute_(fc.expand.bias, 0, order)
            se_order = torch.argsort(fc.expand.weight.abs().sum(dim=(0, 2, 3)), descending=True,
                                     stable=True)
            _permute_(fc.expand.weight, 1, se_order)
            _permute_(fc.reduce.weight, 0, se_order)
            _permute_(fc.reduce.bias, 0, se_order)


# ---- the supernet ------------------------------------------------------------------------------

class OFAMobileNetV3(nn.Module):
    """The OFA-MobileNetV3 supernet of a `SearchSpace` (elastic kernel, expand ratio, depth).

    The active subnet is set with `set_active` / `sample` / `set_max`; the forward pass runs it at
    whatever resolution the input has.

    >>> from ofa_sdk.arch import FMNIST
    >>> net = OFAMobileNetV3(FMNIST)
    >>> spec = net.sample(np.random.default_rng(0))
    >>> net(torch.zeros(2, 1, spec.resolution, spec.resolution)).shape
    torch.Size([2, 10])
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        if not isinstance(space, SearchSpace):
            raise ArchSpecError(f"space must be a SearchSpace, got {type(space).__name__}",
                                field="space")
        self.space = space
        sp = space
        self.first_conv = ConvLayer(sp.in_channels, sp.stem_channels, 3, sp.stem_stride,
                                    act="h_swish")
        c_in, fb = sp.stem_channels, sp.first_block_channels
        blocks: list[nn.Module] = [ResidualBlock(
            MBConv(c_in, fb, 3, sp.first_block_stride, c_in, act=sp.first_block_act,
                   use_se=sp.first_block_se, expand=False),
            residual=sp.first_block_stride == 1 and c_in == fb)]
        c_in = fb
        for stage, c_out in enumerate(sp.stage_channels):
            for i in range(sp.max_depth):
                stride = sp.stage_strides[stage] if i == 0 else 1
                blocks.append(ResidualBlock(
                    DynamicMBConv(c_in, c_out, kernel_choices=sp.kernel_choices,
                                  expand_choices=sp.expand_choices, stride=stride,
                                  act=sp.stage_acts[stage], use_se=sp.stage_se[stage]),
                    residual=stride == 1 and c_in == c_out))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer = ConvLayer(c_in, sp.final_expand_channels, act="h_swish")
        self.feature_mix_layer = ConvLayer(sp.final_expand_channels, sp.feature_mix_channels,
                                           act="h_swish", use_bn=False)
        self.classifier = _classifier(sp.feature_mix_channels, sp.num_classes, sp.dropout)
        self._active_blocks: list[int] = []
        self._active: ArchSpec = sp.largest()
        self.set_active(self._active)

    # ---- the active subnet ---------------------------------------------------------------------
    @property
    def active(self) -> ArchSpec:
        """The active subnet's spec (its ``resolution`` is informative only)."""
        return self._active

    def set_active(self, spec: ArchSpec) -> None:
        """Make ``spec`` the subnet that `forward` runs."""
        if not isinstance(spec, ArchSpec):
            raise ArchSpecError(f"expected an ArchSpec, got {type(spec).__name__}")
        if spec.space != self.space:
            raise ArchSpecError(f"spec is for space {spec.space.name!r}, this supernet is for "
                                f"{self.space.name!r}", field="space")
        for slot, (k, e) in enumerate(zip(spec.kernel_sizes, spec.expand_ratios)):
            block = self.blocks[1 + slot].conv
            block.active_kernel, block.active_expand = k, e
        self._active_blocks = [1 + slot for slot in spec.active_slots()]
        self._active = spec

    def set_max(self) -> ArchSpec:
        """Activate the largest subnet and return its spec."""
        spec = self.space.largest()
        self.set_active(spec)
        return spec

    def sample(self, rng: np.random.Generator, **restrictions) -> ArchSpec:
        """Activate a random subnet (``SearchSpace.sample`` with ``restrictions``) and return it."""
        spec = self.space.sample(rng, **restrictions)
        self.set_active(spec)
        return spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        x = self.blocks[0](x)
        for i in self._active_blocks:
            x = self.blocks[i](x)
        x = self.final_expand_layer(x)
        x = self.feature_mix_layer(global_avg_pool(x))
        return self.classifier(torch.flatten(x, 1))

    # ---- static subnets ------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, spec: ArchSpec | None = None) -> MobileNetV3Subnet:
        """A plain network with the weights of ``spec`` (default: the active subnet) copied out.

        Kernel transforms are already applied; outputs equal the supernet's in eval and in train
        mode. The result is in the supernet's train/eval mode and on its device.
        """
        if spec is None:
            spec = self._active
        elif not isinstance(spec, ArchSpec) or spec.space != self.space:
            raise ArchSpecError("extract() needs an ArchSpec of this supernet's space",
                                field="space")
        blocks = [copy.deepcopy(self.blocks[0])]
        for slot in spec.active_slots():
            src = self.blocks[1 + slot]
            blocks.append(ResidualBlock(
                src.conv.extract(spec.kernel_sizes[slot], spec.expand_ratios[slot]),
                residual=src.residual))
        net = MobileNetV3Subnet(copy.deepcopy(self.first_conv), blocks,
                                copy.deepcopy(self.final_expand_layer),
                                copy.deepcopy(self.feature_mix_layer),
                                copy.deepcopy(self.classifier), spec=spec)
        return net.train(self.training)

    @torch.no_grad()
    def sort_channels(self, *, expand_stage: int = 0) -> None:
        """Sort every elastic block's middle channels by importance (section 3.2, elastic width).

        The largest subnet computes the same function afterwards; smaller expand ratios keep the
        most important channels. Parameters are permuted in place (same tensor objects), so reset
        any optimizer momentum after calling this.
        """
        for block in self.blocks[1:]:
            block.conv.sort_channels(expand_stage=expand_stage)
        logger.debug("sorted middle channels of %d blocks (expand_stage=%d)",
                     len(self.blocks) - 1, expand_stage)

    # ---- official checkpoints ------------------------------------------------------------------
    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor], *,
                                 strict: bool = True):
        """Load an official ``ofa`` checkpoint's state dict (old key names are converted)."""
        return self.load_state_dict(convert_official_state_dict(state_dict), strict=strict)


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename keys of older official checkpoints (``module.`` prefix, ``mobile_inverted_conv``)."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module."):]
        out[key.replace(".mobile_inverted_conv.", ".conv.")] = value
    return out
