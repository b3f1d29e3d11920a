"""Importing the official ``ofa`` package (Cai et al.), the reference our tests and benchmarks use.

Its ``ofa.utils`` imports torchvision at import time, and torchvision does not import beside the
CPU torch we pin. Nothing we call from ``ofa`` touches torchvision, so a stub stands in for it.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["import_official", "write_random_checkpoint"]


def _stub_torchvision() -> None:
    if "torchvision" in sys.modules:
        return
    tv = types.ModuleType("torchvision")
    for sub in ("transforms", "datasets", "models", "transforms.functional"):
        sys.modules[f"torchvision.{sub}"] = types.ModuleType(f"torchvision.{sub}")
    tv.transforms = sys.modules["torchvision.transforms"]
    tv.datasets = sys.modules["torchvision.datasets"]
    tv.models = sys.modules["torchvision.models"]
    tv.transforms.functional = sys.modules["torchvision.transforms.functional"]
    # Only base classes of the official data-loader helpers; never instantiated here.
    tv.transforms.RandomResizedCrop = type("RandomResizedCrop", (), {})
    tv.transforms.RandomCrop = type("RandomCrop", (), {})
    sys.modules["torchvision"] = tv


def import_official(module: str = "ofa.imagenet_classification.elastic_nn.networks") -> Any:
    """Import ``module`` from the official ``ofa`` package (``pip install ofa``)."""
    import importlib

    _stub_torchvision()
    return importlib.import_module(module)


def write_random_checkpoint(path: str, *, width_mult: float = 1.0, seed: int = 0,
                            n_classes: int = 1000) -> Any:
    """Write an official-layout checkpoint with random weights: the official package's
    ``OFAMobileNetV3`` (k357 e346 d234) saved as ``{"state_dict": {"module.<key>": tensor}}``,
    as the released ``.pth`` files are (a stand-in for them in tests and recipe dry runs)."""
    import torch

    networks = import_official()
    torch.manual_seed(seed)
    net = networks.OFAMobileNetV3(n_classes=n_classes, ks_list=[3, 5, 7],
                                  expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4],
                                  width_mult=width_mult)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-trivial BN statistics, so recalibration has work to do
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return net
