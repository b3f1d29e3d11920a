"""ofa-sdk: pick and run the Once-for-All subnet that fits a device's latency budget.

The device side needs only numpy plus one runtime (LiteRT or onnxruntime); importing this package
never imports torch or tensorflow.
"""

from ofa_sdk.arch import FMNIST, IMAGENET_W10, IMAGENET_W12, ArchSpec, SearchSpace, get_space
from ofa_sdk.errors import (
    ArchSpecError,
    BackendNotInstalled,
    ModelNotCached,
    NoModelFitsBudget,
    OfaError,
)

__version__ = "0.1.0"

__all__ = [
    "ArchSpec",
    "SearchSpace",
    "get_space",
    "FMNIST",
    "IMAGENET_W10",
    "IMAGENET_W12",
    "OfaError",
    "ArchSpecError",
    "NoModelFitsBudget",
    "ModelNotCached",
    "BackendNotInstalled",
    "__version__",
]
