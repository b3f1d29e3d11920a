"""Importing the official ``ofa`` package (Cai et al.), the reference our tests and benchmarks use.

Its ``ofa.utils`` imports torchvision at import time, and torchvision does not import beside the
CPU torch we pin. Nothing we call from ``ofa`` touches torchvision, so a stub stands in for it.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["import_official"]


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
