"""Helpers shared by the supernet tests and importable from them: a tiny search space,
weight randomisation, and importing the official ``ofa`` package (torchvision stubbed)."""

from __future__ import annotations


import pytest

from ofa_sdk.arch import SearchSpace
from ofa_sdk.training.official import import_official

#: Three stages (one without SE, two with SE and h_swish), 8-16 channels, 16-24 px inputs.
TINY = SearchSpace(
    name="tiny_test",
    stage_widths=(8, 16, 16),
    stage_strides=(2, 2, 1),
    stage_acts=("relu", "h_swish", "h_swish"),
    stage_se=(False, True, True),
    resolutions=(16, 20, 24),
    num_classes=5,
    stem_width=8,
    first_block_width=8,
    final_expand_width=32,
    feature_mix_width=48,
)


def randomize_(net, *, seed: int = 0) -> None:
    """Give BN statistics/affines and kernel-transform matrices non-trivial random values."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("_matrix"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


def import_official_ofa():
    """Import the official ``ofa`` package; its utils import torchvision, which we stub."""
    pytest.importorskip("ofa")
    return import_official()
