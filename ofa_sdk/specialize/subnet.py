"""A subnet's weights sliced out of the OFA supernet with numpy (Cai et al., ICLR 2020, section 3.2).

`SupernetWeights` holds the supernet's state dict (the official ``ofa`` key layout, as
``ofa_sdk.training.supernet.OFAMobileNetV3`` saves it) read from safetensors; `SupernetWeights.subnet`
returns the `SubnetParams` of one `ArchSpec`: the same weights ``OFAMobileNetV3.extract`` copies
out, computed the same way:

- elastic width: a block's middle channels are the first ``make_divisible(C_in * e)`` of the
  max-size weights (the supernet keeps them sorted by importance, largest first);
- elastic kernel: the centre of the next larger kernel times the block's ``{k}to{k'}_matrix``,
  applied 7 -> 5 -> 3 in sequence;
- elastic depth: the first ``d`` blocks of every stage.

Nothing here imports torch; the safetensors file is read with ``safetensors.numpy``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import numpy as np

from ofa_sdk.arch import ArchSpec, SearchSpace, make_divisible
from ofa_sdk.errors import ArchSpecError, BackendNotInstalled, ModelLoadError

__all__ = ["BN_EPS", "BatchNorm", "Conv", "SqueezeExcite", "Block", "SubnetParams",
           "SupernetWeights", "se_channels", "middle_channels"]

#: ``nn.BatchNorm2d``'s default epsilon, which the supernet (and the official package) uses.
BN_EPS = 1e-5


def se_channels(channels: int) -> int:
    """Width of the SE bottleneck for ``channels`` (MobileNetV3: ``make_divisible(C // 4, 8)``)."""
    return make_divisible(channels // 4, 8)


def middle_channels(in_channels: int, expand_ratio: float) -> int:
    """Width of an inverted bottleneck with ``in_channels`` inputs and ``expand_ratio``."""
    return make_divisible(round(in_channels * expand_ratio), 8)


@dataclass(frozen=True, eq=False)
class BatchNorm:
    """Affine parameters and running statistics of one BN layer, float32 ``(C,)`` each."""

    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float = BN_EPS

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """``(s, t)`` with ``bn(x) = s * x + t`` in eval mode (float64, for folding)."""
        s = self.weight.astype(np.float64) / np.sqrt(self.var.astype(np.float64) + self.eps)
        return s, self.bias.astype(np.float64) - self.mean.astype(np.float64) * s


@dataclass(frozen=True, eq=False)
class Conv:
    """Conv (torch layout ``(O, I / groups, k, k)``, no bias unless folded) -> BN -> activation.

    ``groups`` is 1 or the channel count (depthwise); ``act`` is ``relu``, ``h_swish`` or None.
    """

    weight: np.ndarray
    stride: int = 1
    groups: int = 1
    bn: BatchNorm | None = None
    act: str | None = None
    bias: np.ndarray | None = None

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[-1])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    def folded(self) -> Conv:
        """The same layer with its BN folded into the weight and bias (eval mode)."""
        if self.bn is None:
            return self
        s, t = self.bn.scale_shift()
        w = (self.weight.astype(np.float64) * s[:, None, None, None]).astype(np.float32)
        b = t if self.bias is None else t + self.bias.astype(np.float64) * s
        return replace(self, weight=w, bias=b.astype(np.float32), bn=None)


@dataclass(frozen=True, eq=False)
class SqueezeExcite:
    """SE: global pool -> 1x1 reduce (+bias) -> ReLU -> 1x1 expand (+bias) -> hard sigmoid."""

    reduce_w: np.ndarray   # (mid, C)
    reduce_b: np.ndarray
    expand_w: np.ndarray   # (C, mid)
    expand_b: np.ndarray


@dataclass(frozen=True, eq=False)
class Block:
    """An inverted-bottleneck block: [1x1 expand] -> depthwise -> [SE] -> 1x1 project (+x)."""

    expand: Conv | None
    depthwise: Conv
    se: SqueezeExcite | None
    project: Conv
    residual: bool


@dataclass(frozen=True, eq=False)
class SubnetParams:
    """Every weight of one static subnet, in the order the forward pass uses them."""

    spec: ArchSpec
    first_conv: Conv
    blocks: tuple[Block, ...]
    final_expand: Conv
    feature_mix: Conv
    classifier_w: np.ndarray   # (num_classes, features)
    classifier_b: np.ndarray

    def convs_with_bn(self) -> list[tuple[str, Conv]]:
        """``(name, conv)`` of every conv followed by BN, in forward order."""
        out = [("first_conv", self.first_conv)]
        for i, b in enumerate(self.blocks):
            for part in ("expand", "depthwise", "project"):
                c = getattr(b, part)
                if c is not None and c.bn is not None:
                    out.append((f"blocks.{i}.{part}", c))
        out.append(("final_expand", self.final_expand))
        return out

    def folded(self) -> SubnetParams:
        """BN folded into every conv (what an exported file holds)."""
        blocks = tuple(replace(b, expand=b.expand.folded() if b.expand else None,
                               depthwise=b.depthwise.folded(), project=b.project.folded())
                       for b in self.blocks)
        return replace(self, first_conv=self.first_conv.folded(), blocks=blocks,
                       final_expand=self.final_expand.folded())


class SupernetWeights:
    """The supernet's tensors, keyed as in its state dict (the file is identified, and verified,
    by the zoo's index)."""

    def __init__(self, space: SearchSpace, tensors: Mapping[str, np.ndarray], *,
                 bn_eps: float = BN_EPS) -> None:
        self.space, self.bn_eps = space, float(bn_eps)
        self._t = {k: np.asarray(v) for k, v in tensors.items()}

    @classmethod
    def load(cls, path: str | os.PathLike, space: SearchSpace, *, bn_eps: float = BN_EPS
             ) -> SupernetWeights:
        """Read a ``.safetensors`` supernet state dict (nothing is unpickled)."""
        try:
            from safetensors import SafetensorError
            from safetensors.numpy import load
        except ImportError:
            raise BackendNotInstalled('reading the supernet needs safetensors: '
                                      'pip install "ofa-sdk[search]"') from None
        path = Path(path)
        try:
            tensors = load(path.read_bytes())
        except FileNotFoundError:
            raise ModelLoadError(f"no supernet weights at {str(path)!r}") from None
        except (OSError, SafetensorError) as e:
            raise ModelLoadError(f"supernet weights {str(path)!r} are unreadable: {e}") from None
        weights = cls(space, tensors, bn_eps=bn_eps)
        weights.check()
        return weights

    def check(self) -> None:
        """`ModelLoadError` unless the tensors are this space's supernet (keys and shapes)."""
        sp = self.space
        c_last = sp.stage_channels[-1]
        expect = {"first_conv.conv.weight": (sp.stem_channels, sp.in_channels, 3, 3),
                  "final_expand_layer.conv.weight": (sp.final_expand_channels, c_last, 1, 1),
                  "classifier.linear.weight": (sp.num_classes, sp.feature_mix_channels)}
        n_blocks = 1 + sp.num_stages * sp.max_depth
        expect[f"blocks.{n_blocks - 1}.conv.point_linear.conv.conv.weight"] = (
            c_last, middle_channels(c_last, max(sp.expand_choices)), 1, 1)
        for key, shape in expect.items():
            got = self._t.get(key)
            if got is None:
                raise ModelLoadError(f"supernet weights lack {key!r}: not an OFA-MobileNetV3 "
                                     f"supernet of space {sp.name!r}")
            if tuple(got.shape) != shape:
                raise ModelLoadError(f"supernet weights {key!r} have shape {tuple(got.shape)}, "
                                     f"space {sp.name!r} needs {shape}")

    def _get(self, key: str) -> np.ndarray:
        try:
            return self._t[key].astype(np.float32, copy=False)
        except KeyError:
            raise ModelLoadError(f"supernet weights lack {key!r}") from None

    def _bn(self, prefix: str, n: int) -> BatchNorm:
        g = self._get
        return BatchNorm(g(prefix + ".weight")[:n].copy(), g(prefix + ".bias")[:n].copy(),
                         g(prefix + ".running_mean")[:n].copy(),
                         g(prefix + ".running_var")[:n].copy(), self.bn_eps)

    def _depthwise(self, prefix: str, channels: int, kernel: int) -> np.ndarray:
        """The ``(C, 1, k, k)`` depthwise weight of the active kernel, transforms applied."""
        ks = tuple(sorted(self.space.kernel_choices))
        if kernel not in ks:
            raise ArchSpecError(f"kernel size {kernel} is not one of {ks}", field="kernel_sizes")
        w = self._get(prefix + ".conv.weight")[:channels]
        for i in range(len(ks) - 1, ks.index(kernel), -1):
            src, tgt = ks[i], ks[i - 1]
            s = (src - tgt) // 2
            centre = w[:, :, s:s + tgt, s:s + tgt].reshape(channels, tgt * tgt)
            m = self._get(f"{prefix}.{src}to{tgt}_matrix")
            # F.linear(centre, M) = centre @ M.T, in float32 as torch computes it
            w = (centre @ m.T).astype(np.float32).reshape(channels, 1, tgt, tgt)
        return w

    def subnet(self, spec: ArchSpec) -> SubnetParams:
        """The weights of ``spec`` (BN statistics as stored: recalibrate before use)."""
        sp = self.space
        if spec.space != sp:
            raise ArchSpecError(f"spec is for space {spec.space.name!r}, the supernet for "
                                f"{sp.name!r}", field="space")
        g = self._get
        first = Conv(g("first_conv.conv.weight"), sp.stem_stride, 1,
                     self._bn("first_conv.bn", sp.stem_channels), "h_swish")
        c_in, fb = sp.stem_channels, sp.first_block_channels
        p0 = "blocks.0.conv"
        se0 = self._se(f"{p0}.depth_conv.se", c_in) if sp.first_block_se else None
        blocks = [Block(None,
                        Conv(g(f"{p0}.depth_conv.conv.weight"), sp.first_block_stride, c_in,
                             self._bn(f"{p0}.depth_conv.bn", c_in), sp.first_block_act),
                        se0,
                        Conv(g(f"{p0}.point_linear.conv.weight"), 1, 1,
                             self._bn(f"{p0}.point_linear.bn", fb), None),
                        sp.first_block_stride == 1 and c_in == fb)]
        c_in = fb
        for slot in spec.active_slots():
            stage = sp.stage_of_slot(slot)
            first_in_stage = slot % sp.max_depth == 0
            stride = sp.stage_strides[stage] if first_in_stage else 1
            c_block_in = c_in if first_in_stage else sp.stage_channels[stage]
            c_out = sp.stage_channels[stage]
            blocks.append(self._block(1 + slot, c_block_in, c_out, stride, sp.stage_acts[stage],
                                      sp.stage_se[stage], spec.kernel_sizes[slot],
                                      spec.expand_ratios[slot]))
            c_in = c_out
        final = Conv(g("final_expand_layer.conv.weight"), 1, 1,
                     self._bn("final_expand_layer.bn", sp.final_expand_channels), "h_swish")
        mix = Conv(g("feature_mix_layer.conv.weight"), 1, 1, None, "h_swish")
        return SubnetParams(spec, first, tuple(blocks), final, mix,
                            g("classifier.linear.weight"), g("classifier.linear.bias"))

    def _se(self, prefix: str, channels: int) -> SqueezeExcite:
        mid = se_channels(channels)
        g = self._get
        return SqueezeExcite(
            g(prefix + ".fc.reduce.weight")[:mid, :channels].reshape(mid, channels).copy(),
            g(prefix + ".fc.reduce.bias")[:mid].copy(),
            g(prefix + ".fc.expand.weight")[:channels, :mid].reshape(channels, mid).copy(),
            g(prefix + ".fc.expand.bias")[:channels].copy())

    def _block(self, index: int, c_in: int, c_out: int, stride: int, act: str, use_se: bool,
               kernel: int, expand: int) -> Block:
        p = f"blocks.{index}.conv"
        g = self._get
        mid = middle_channels(c_in, expand)
        ib = Conv(g(f"{p}.inverted_bottleneck.conv.conv.weight")[:mid, :c_in].copy(), 1, 1,
                  self._bn(f"{p}.inverted_bottleneck.bn.bn", mid), act)
        dw = Conv(self._depthwise(f"{p}.depth_conv.conv", mid, kernel), stride, mid,
                  self._bn(f"{p}.depth_conv.bn.bn", mid), act)
        se = self._se(f"{p}.depth_conv.se", mid) if use_se else None
        pl = Conv(g(f"{p}.point_linear.conv.conv.weight")[:c_out, :mid].copy(), 1, 1,
                  self._bn(f"{p}.point_linear.bn.bn", c_out), None)
        return Block(ib, dw, se, pl, stride == 1 and c_in == c_out)
