"""Layer accounting of an OFA-MobileNetV3 subnet: its layers with their shapes, MACs and params.

Follows the official ``ofa`` package's OFAMobileNetV3 layout exactly, so that counting the modules
of an extracted torch subnet gives the same numbers: MACs count every Conv2d/Linear
multiply-accumulate (SE convs on their 1x1 input), params count every parameter (conv, BN affine,
SE and classifier biases). `ArchSpec.layers`, ``macs`` and ``params`` call this module; the
latency LUT keys its rows by `LayerInfo.key`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["LayerInfo", "make_divisible", "subnet_layers"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor``, never more than 10% below (TF-slim rule)."""
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a subnet, as the exported graph and the latency LUT see it.

    ``kind`` is ``stem``, ``block`` (MBConv; ``slot`` -1 for the fixed first block), ``final_expand``,
    ``feature_mix`` or ``classifier``. ``in_hw`` is the square input size of the layer.
    """

    kind: str
    in_channels: int
    out_channels: int
    in_hw: int
    out_hw: int
    stride: int = 1
    kernel: int = 1
    expand: int = 1
    mid_channels: int = 0
    se_channels: int = 0
    act: str = ""
    residual: bool = False
    slot: int = -1

    @property
    def key(self) -> str:
        """A LUT key: everything that determines this layer's cost, nothing else."""
        if self.kind == "block":
            return (f"block:in{self.in_hw}:c{self.in_channels}:o{self.out_channels}:k{self.kernel}"
                    f":m{self.mid_channels}:s{self.stride}:se{self.se_channels}:{self.act}"
                    f":r{int(self.residual)}")
        return f"{self.kind}:in{self.in_hw}:c{self.in_channels}:o{self.out_channels}"

    def macs(self) -> int:
        o2, i2 = self.out_hw ** 2, self.in_hw ** 2
        if self.kind == "stem":
            return o2 * self.kernel ** 2 * self.in_channels * self.out_channels
        if self.kind == "final_expand":
            return o2 * self.in_channels * self.out_channels
        if self.kind in ("feature_mix", "classifier"):
            return self.in_channels * self.out_channels
        m = self.mid_channels
        total = o2 * self.kernel ** 2 * m + o2 * m * self.out_channels
        if self.expand != 1:
            total += i2 * self.in_channels * m
        if self.se_channels:
            total += 2 * m * self.se_channels
        return total

    def params(self) -> int:
        if self.kind == "stem":
            return self.kernel ** 2 * self.in_channels * self.out_channels + 2 * self.out_channels
        if self.kind == "final_expand":
            return self.in_channels * self.out_channels + 2 * self.out_channels
        if self.kind == "feature_mix":
            return self.in_channels * self.out_channels
        if self.kind == "classifier":
            return self.in_channels * self.out_channels + self.out_channels
        m = self.mid_channels
        total = self.kernel ** 2 * m + 2 * m + m * self.out_channels + 2 * self.out_channels
        if self.expand != 1:
            total += self.in_channels * m + 2 * m
        if self.se_channels:
            total += 2 * m * self.se_channels + self.se_channels + m
        return total


def _conv_out(hw: int, stride: int) -> int:
    # "same" padding k//2 with an odd kernel: out = floor((in - 1) / stride) + 1
    return (hw - 1) // stride + 1


def subnet_layers(spec: Any) -> list[LayerInfo]:
    """The layers of ``spec`` (an `ofa_sdk.arch.ArchSpec`; not imported here, since arch imports
    this module) in execution order, with their shapes (see the module docstring)."""
    sp = spec.space
    out: list[LayerInfo] = []
    hw = spec.resolution
    c_in = sp.in_channels
    stem_out = _conv_out(hw, sp.stem_stride)
    out.append(LayerInfo("stem", c_in, sp.stem_channels, hw, stem_out, sp.stem_stride, 3,
                         act="h_swish"))
    hw, c_in = stem_out, sp.stem_channels
    fb = sp.first_block_channels
    fb_out = _conv_out(hw, sp.first_block_stride)
    out.append(LayerInfo(
        "block", c_in, fb, hw, fb_out, sp.first_block_stride, 3, 1, c_in,
        make_divisible(c_in // 4, 8) if sp.first_block_se else 0, sp.first_block_act,
        residual=sp.first_block_stride == 1 and c_in == fb, slot=-1))
    hw, c_in = fb_out, fb
    md = sp.max_depth
    for stage, depth in enumerate(spec.depths):
        c_out = sp.stage_channels[stage]
        for i in range(depth):
            slot = stage * md + i
            stride = sp.stage_strides[stage] if i == 0 else 1
            e = spec.expand_ratios[slot]
            mid = make_divisible(round(c_in * e), 8)
            hw_out = _conv_out(hw, stride)
            out.append(LayerInfo(
                "block", c_in, c_out, hw, hw_out, stride, spec.kernel_sizes[slot], e, mid,
                make_divisible(mid // 4, 8) if sp.stage_se[stage] else 0,
                sp.stage_acts[stage], residual=stride == 1 and c_in == c_out, slot=slot))
            hw, c_in = hw_out, c_out
    out.append(LayerInfo("final_expand", c_in, sp.final_expand_channels, hw, hw,
                         act="h_swish"))
    out.append(LayerInfo("feature_mix", sp.final_expand_channels, sp.feature_mix_channels,
                         1, 1, act="h_swish"))
    out.append(LayerInfo("classifier", sp.feature_mix_channels, sp.num_classes, 1, 1))
    return out
