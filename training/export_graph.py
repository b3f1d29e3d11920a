"""Export-friendly rewrites of a subnet (`export_friendly`): BN folded into the convs, the SE
block made converter-friendly, and depthwise convs larger than 5x5 split into windows of at most
5x5 taps (`_SplitDepthwise`), which XNNPACK runs 20-50x faster."""

from __future__ import annotations

import copy

import torch
from torch import nn


__all__ = ["FAST_DEPTHWISE_KERNEL", "export_friendly"]

class _ConvSE(nn.Module):
    """Squeeze-and-excitation as mean -> 1x1 conv -> relu -> 1x1 conv -> hard-sigmoid -> mul.

    The same function as `ofa_sdk.training.ops.SqueezeExcite` (which uses ``F.linear`` on the pooled
    vector); keeping the 4-D shape lets the channels-last converters emit no TRANSPOSE.
    """

    def __init__(self, fc: nn.Module) -> None:
        super().__init__()
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3), keepdim=True)
        y = torch.relu(self.fc.reduce(y))
        return x * nn.functional.hardsigmoid(self.fc.expand(y))


#: Largest depthwise kernel that XNNPACK (ai-edge-litert 2.3, x86) runs on a fast path; a 7x7
#: depthwise conv there is 20-50x slower than a 5x5 one (see benchmarks/results/export.md).
FAST_DEPTHWISE_KERNEL = 5


class _SplitDepthwise(nn.Module):
    """A kxk depthwise conv (odd k > 5, "same" padding) as a sum of small centred depthwise convs.

    The kernel rows split into groups, each a centred (possibly dilated) window: the middle five
    rows (dilation 1), then for each ``j > 2`` the pair of rows ``c - j, c + j`` as a 3-tap window
    of dilation ``j`` whose centre tap is zero (``c = k // 2``). Columns split the same way; every
    (row group, column group) pair becomes one depthwise conv with at most 25 taps and symmetric
    padding, so outputs line up without slicing or asymmetric padding (which the channels-last
    rewrite would wrap in TRANSPOSE ops). For k = 7: 5x5, 5x3, 3x5 and 3x3 windows (64 taps for
    the original 49). Exact up to float summation order.
    """

    def __init__(self, conv: nn.Conv2d, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        k = conv.kernel_size[0]
        c = k // 2
        self.stride, self.groups = conv.stride, conv.groups
        # (kernel rows as indices into the kxk kernel, dilation, which of them carry weights)
        groups = [(list(range(c - 2, c + 3)), 1, set(range(c - 2, c + 3)))]
        groups += [([c - j, c, c + j], j, {c - j, c + j}) for j in range(3, c + 1)]
        w = conv.weight.detach()
        self.windows: list[tuple[tuple[int, int], tuple[int, int]]] = []
        n = 0
        for rows, dr, row_keep in groups:
            for cols, dc, col_keep in groups:
                tile = torch.zeros(w.shape[0], w.shape[1], len(rows), len(cols), dtype=w.dtype)
                for a, r in enumerate(rows):
                    for b, q in enumerate(cols):
                        if r in row_keep and q in col_keep:
                            tile[:, :, a, b] = w[:, :, r, q]
                # One buffer per window: converters see each as a plain constant weight.
                self.register_buffer(f"weight{n}", tile)
                self.windows.append(((dr, dc), (dr * (len(rows) // 2), dc * (len(cols) // 2))))
                n += 1
        b = bias if bias is not None else conv.bias
        self.register_buffer("bias", None if b is None else b.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = None
        for n, (dilation, padding) in enumerate(self.windows):
            part = nn.functional.conv2d(x, getattr(self, f"weight{n}"), None, self.stride,
                                        padding, dilation, self.groups)
            y = part if y is None else y + part
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[nn.Conv2d, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = copy.deepcopy(conv)
    folded.weight.data = conv.weight.detach() * scale.view(-1, 1, 1, 1)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    return folded, (bias - bn.running_mean) * scale + bn.bias


def _is_large_depthwise(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels
            and m.kernel_size[0] == m.kernel_size[1] > FAST_DEPTHWISE_KERNEL
            and m.kernel_size[0] % 2 == 1 and m.padding == (m.kernel_size[0] // 2,) * 2
            and m.dilation == (1, 1) and m.padding_mode == "zeros")


def export_friendly(model: nn.Module, *, split_depthwise: bool = False) -> nn.Module:
    """A copy of ``model`` (eval mode) rewritten for channels-last converters, same outputs.

    SE modules become their conv form (`_ConvSE`); with ``split_depthwise`` every depthwise conv
    larger than 5x5 (with the BatchNorm after it folded in) becomes `_SplitDepthwise`.
    """
    from ofa_sdk.training.ops import SqueezeExcite

    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        children = list(module.named_children())
        for i, (child_name, child) in enumerate(children):
            if isinstance(child, SqueezeExcite):
                setattr(module, child_name, _ConvSE(child.fc))
            elif split_depthwise and _is_large_depthwise(child):
                nxt = children[i + 1] if i + 1 < len(children) else None
                if nxt is not None and isinstance(nxt[1], nn.BatchNorm2d) and isinstance(
                        module, nn.Sequential):
                    folded, bias = _fold_bn(child, nxt[1])
                    setattr(module, child_name, _SplitDepthwise(folded, bias))
                    setattr(module, nxt[0], nn.Identity())
                else:
                    setattr(module, child_name, _SplitDepthwise(child))
    return model
