"""The probe networks: one layer of a search space as a standalone model (`build_probe`).

Weights are a short repeating pattern (`fill_pattern_`), not random: fp32 latency does not
depend on weight values, and the pattern lets a format's probes ship as one small archive.
`ofa_sdk.training.probes` exports them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ofa_sdk.arch import LayerInfo
from ofa_sdk.errors import InputError

__all__ = ["NULL_KEY", "NULL_LAYER", "build_probe", "fill_pattern_", "probe_filename"]

#: The weight pattern's seed: fixed and unrelated to any benchmark seed.
_PATTERN_SEED = 20200426


class _Pooled(nn.Module):
    """``layer`` then global average pooling: the final-expand layer and the pool after it."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x).mean((2, 3), keepdim=True)


class _Classifier(nn.Module):
    """Flatten a ``(N, C, 1, 1)`` feature map and apply the linear classifier."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(x, 1))


#: The manifest key of the null probe: a single ReLU on a ``(1, 8, 1, 1)`` tensor. Its latency is a
#: runtime's fixed cost per invoke (binding, input copy, dispatch), which every per-layer probe
#: pays once but a whole model pays only once in total; ``device_bench`` subtracts it.
NULL_KEY = "null"
NULL_LAYER = LayerInfo("null", 8, 8, 1, 1)


def build_probe(layer: LayerInfo) -> nn.Module:
    """A torch module computing exactly ``layer`` (the same modules `extract` builds), eval mode.

    Input is NCHW ``(1, in_channels, in_hw, in_hw)``. Raises `InputError` for an unknown kind.
    """
    from ofa_sdk.training.supernet import ConvLayer, MBConv, ResidualBlock

    if layer.kind == "stem":
        net: nn.Module = ConvLayer(layer.in_channels, layer.out_channels, layer.kernel,
                                   layer.stride, act=layer.act or "h_swish")
    elif layer.kind == "block":
        expand = layer.expand != 1
        net = ResidualBlock(
            MBConv(layer.in_channels, layer.out_channels, layer.kernel, layer.stride,
                   layer.mid_channels, act=layer.act, use_se=layer.se_channels > 0,
                   expand=expand),
            residual=layer.residual)
        if layer.se_channels:
            se = net.conv.depth_conv.se.fc.reduce.out_channels
            if se != layer.se_channels:
                raise InputError(f"probe {layer.key}: SE width {se} != {layer.se_channels}")
    elif layer.kind == "final_expand":
        net = _Pooled(ConvLayer(layer.in_channels, layer.out_channels, act="h_swish"))
    elif layer.kind == "feature_mix":
        net = ConvLayer(layer.in_channels, layer.out_channels, act="h_swish", use_bn=False)
    elif layer.kind == "classifier":
        net = _Classifier(layer.in_channels, layer.out_channels)
    elif layer.kind == "null":
        net = nn.ReLU()
    else:
        raise InputError(f"cannot build a probe for layer kind {layer.kind!r}")
    return net.eval()


#: Period (floats) of the repeating weight pattern. Prime, so the rows of a weight matrix are
#: distinct cyclic shifts (activations keep a sane scale, channels do not collapse to one value),
#: and short, so DEFLATE packs a 1.2 MB probe into ~6 kB (251 floats: ~15 kB; random: no gain).
_PATTERN_PERIOD = 31
_PATTERN = np.random.default_rng(_PATTERN_SEED).uniform(-1.0, 1.0, _PATTERN_PERIOD)


@torch.no_grad()
def fill_pattern_(net: nn.Module) -> None:
    """Give ``net`` deterministic, highly compressible weights (fp32 latency ignores values).

    Weight tensors repeat `_PATTERN` scaled by ``1/sqrt(fan_in)`` (no denormals, no blow-up in
    whole calibration subnets); biases and BN means repeat it scaled by 0.1 (non-zero, so the
    converters keep the same bias ops as for trained weights), BN scale and variance are 1.

    Every tensor's pattern starts at its own phase and has its own small gain, so no two tensors
    of a model are equal: the ONNX exporter stores equal constants once (an ``Identity`` per
    extra use), which made whole calibration subnets ~19 % lighter in weights than any trained
    or random-weight model and ~2-4 % faster under ONNX Runtime, and biased the overhead fit.
    """
    count = iter(range(1 << 30))

    def pattern(t: torch.Tensor, scale: float) -> torch.Tensor:
        k = next(count)
        base = np.roll(_PATTERN, k % _PATTERN_PERIOD) * (1.0 + (k // _PATTERN_PERIOD) / 64)
        vals = np.resize(base, t.numel()).reshape(t.shape) * scale
        return torch.from_numpy(vals.astype(np.float32))

    bn_weights = set()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(pattern(m.running_mean, 0.1))
            m.running_var.fill_(1.0)
            bn_weights.add(id(m.weight))
    for p in net.parameters():
        if p.ndim >= 2:
            p.copy_(pattern(p, 1.0 / np.sqrt(max(p[0].numel(), 1))))
        elif id(p) in bn_weights:
            p.fill_(1.0)
        else:
            p.copy_(pattern(p, 0.1))


def probe_filename(key: str) -> str:
    """A file-system-safe stem for a LUT key (``block:in28:c16:...`` -> ``block_in28_c16_...``)."""
    return key.replace(":", "_")
