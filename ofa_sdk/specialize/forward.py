"""The forward pass of a `SubnetParams` in numpy, and BN recalibration with it (OFA section 3.2).

Activations are NHWC float32: a 1x1 conv is one matmul, a depthwise conv a sum of ``k * k``
shifted, strided slices, the stem conv a matmul over its ``k * k`` patches. `recalibrate_bn`
runs the calibration batches with every BN in training mode (normalised by the batch's own
statistics) and sets each layer's running statistics to the mean over batches of the batch
means and unbiased variances: exactly what ``ofa_sdk.training.bn.recalibrate_bn`` does with torch
(``momentum=None``), so the same images give the same statistics.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

import numpy as np

from ofa_sdk.errors import InputError
from ofa_sdk.specialize.subnet import BatchNorm, Block, Conv, SqueezeExcite, SubnetParams

__all__ = ["forward", "recalibrate_bn", "resize_batch", "normalise"]


def _act(x: np.ndarray, act: str | None) -> np.ndarray:
    if act is None:
        return x
    if act == "relu":
        return np.maximum(x, 0, out=x)
    if act == "h_swish":
        return x * (np.clip(x + 3.0, 0.0, 6.0) / 6.0)
    raise InputError(f"unknown activation {act!r}")


def _hard_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


def _pad(x: np.ndarray, p: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (p, p), (p, p), (0, 0))) if p else x


def _conv(x: np.ndarray, c: Conv) -> np.ndarray:
    """The conv of ``c`` (no BN, no activation) on NHWC ``x``; padding ``k // 2``."""
    k, s = c.kernel, c.stride
    n, h, w, cin = x.shape
    ho, wo = (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1
    if k == 1 and c.groups == 1:
        xs = x[:, ::s, ::s, :] if s > 1 else x
        out = xs.reshape(-1, cin) @ c.weight.reshape(c.out_channels, cin).T
        out = out.reshape(n, ho, wo, c.out_channels)
    elif c.groups == 1:
        xp = _pad(x, k // 2)
        patches = np.concatenate(
            [xp[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :]
             for i in range(k) for j in range(k)], axis=-1)
        wmat = c.weight.transpose(2, 3, 1, 0).reshape(k * k * cin, c.out_channels)
        out = (patches.reshape(-1, k * k * cin) @ wmat).reshape(n, ho, wo, c.out_channels)
    elif c.groups == cin == c.out_channels:
        xp = _pad(x, k // 2)
        wk = c.weight[:, 0].transpose(1, 2, 0)  # (k, k, C)
        out = np.zeros((n, ho, wo, cin), dtype=np.float32)
        for i in range(k):
            for j in range(k):
                out += xp[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :] * wk[i, j]
    else:
        raise InputError(f"conv with {c.groups} groups on {cin} channels is not supported")
    if c.bias is not None:
        out += c.bias
    return out


def _bn(x: np.ndarray, bn: BatchNorm, stats: list | None) -> np.ndarray:
    """BN in eval mode, or (``stats`` given) in training mode, appending ``(mean, var)``."""
    if stats is None:
        s, t = bn.scale_shift()
        return x * s.astype(np.float32) + t.astype(np.float32)
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    mean = flat.mean(axis=0)
    var = flat.var(axis=0)
    m = flat.shape[0]
    stats.append((mean, var * m / max(m - 1, 1)))
    inv = bn.weight.astype(np.float64) / np.sqrt(var + bn.eps)
    return (x * inv.astype(np.float32) + (bn.bias - mean * inv).astype(np.float32)
            ).astype(np.float32)


def _layer(x: np.ndarray, c: Conv, stats: list | None) -> np.ndarray:
    y = _conv(x, c)
    if c.bn is not None:
        y = _bn(y, c.bn, stats)
    return _act(y, c.act)


def _se(x: np.ndarray, se: SqueezeExcite) -> np.ndarray:
    y = x.mean(axis=(1, 2))
    y = np.maximum(y @ se.reduce_w.T + se.reduce_b, 0)
    y = _hard_sigmoid(y @ se.expand_w.T + se.expand_b)
    return x * y[:, None, None, :]


def _block(x: np.ndarray, b: Block, stats: list | None) -> np.ndarray:
    y = _layer(x, b.expand, stats) if b.expand is not None else x
    y = _layer(y, b.depthwise, stats)
    if b.se is not None:
        y = _se(y, b.se)
    y = _layer(y, b.project, stats)
    return y + x if b.residual else y


def forward(params: SubnetParams, x: np.ndarray, *, layout: str = "NCHW",
            _stats: list | None = None) -> np.ndarray:
    """Logits ``(N, classes)`` of normalised input ``x`` (NCHW, or NHWC with ``layout``)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise InputError(f"expected a 4-D batch, got shape {x.shape}")
    if layout == "NCHW":
        x = x.transpose(0, 2, 3, 1)
    x = np.ascontiguousarray(x)
    x = _layer(x, params.first_conv, _stats)
    for b in params.blocks:
        x = _block(x, b, _stats)
    x = _layer(x, params.final_expand, _stats)
    x = x.mean(axis=(1, 2), keepdims=True)
    x = _layer(x, params.feature_mix, _stats).reshape(len(x), -1)
    return x @ params.classifier_w.T + params.classifier_b


def recalibrate_bn(params: SubnetParams, batches: Iterable[np.ndarray], *,
                   layout: str = "NCHW") -> SubnetParams:
    """``params`` with every BN layer's running statistics re-estimated on ``batches``.

    Each batch runs with batch-statistics BN; a layer's new ``mean`` is the mean of its batch
    means and its ``var`` the mean of its unbiased batch variances (``ofa_sdk.training.bn``'s
    cumulative average). Batches should be the same size, as there.
    """
    per_batch: list[list] = []
    for x in batches:
        stats: list = []
        forward(params, x, layout=layout, _stats=stats)
        per_batch.append(stats)
    if not per_batch:
        raise InputError("BN recalibration got no batches")
    names = params.convs_with_bn()
    if any(len(s) != len(names) for s in per_batch):
        raise AssertionError("forward pass visited a different number of BN layers")
    new = {}
    for i, (name, conv) in enumerate(names):
        mean = np.mean([s[i][0] for s in per_batch], axis=0).astype(np.float32)
        var = np.mean([s[i][1] for s in per_batch], axis=0).astype(np.float32)
        new[name] = replace(conv, bn=replace(conv.bn, mean=mean, var=var))
    blocks = []
    for i, b in enumerate(params.blocks):
        blocks.append(replace(
            b, expand=new.get(f"blocks.{i}.expand", b.expand),
            depthwise=new[f"blocks.{i}.depthwise"], project=new[f"blocks.{i}.project"]))
    return replace(params, first_conv=new["first_conv"], blocks=tuple(blocks),
                   final_expand=new["final_expand"])


def _aa_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` antialiased bilinear weights (torch ``antialias=True``, PIL's filter)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    inv = 1.0 / support
    w = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        j = np.arange(lo, hi)
        t = np.clip(1.0 - np.abs((j - centre + 0.5) * inv), 0.0, None)
        total = t.sum()
        w[i, lo:hi] = t / total if total > 0 else t
    return w


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` -> float32 in [0, 1] at ``size`` x ``size``, as ``ofa_sdk.training.data
    .to_input`` resizes (bilinear, antialiased, ``align_corners=False``)."""
    x = np.asarray(images, dtype=np.float32) / np.float32(255)
    n, c, h, w = x.shape
    if (h, w) != (size, size):
        wy = _aa_weights(h, size).astype(np.float32)
        wx = _aa_weights(w, size).astype(np.float32)
        x = np.einsum("oh,nchw->ncow", wy, x)
        x = np.einsum("pw,ncow->ncop", wx, x)
    return np.ascontiguousarray(x, dtype=np.float32)


def normalise(x: np.ndarray, mean: Iterable[float], std: Iterable[float]) -> np.ndarray:
    """``(x - mean) / std`` per channel of NCHW ``x``."""
    m = np.asarray(list(mean), dtype=np.float32)[None, :, None, None]
    s = np.asarray(list(std), dtype=np.float32)[None, :, None, None]
    return ((x - m) / s).astype(np.float32)
